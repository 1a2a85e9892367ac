#!/bin/sh
# Run one of this project's commands (snakemake, diffsmooth) for a dvc.yaml stage: the one on PATH when an
# environment is active (a conda env on a cluster, an activated venv), else the one in the checkout's .venv/
# (what `make tables` sets up), so `.venv/bin/dvc repro` works without activating anything.
#   sh workflow/scripts/with_env.sh snakemake all_tables -c2
if ! command -v "$1" >/dev/null 2>&1; then
    venv_bin="$(cd "$(dirname "$0")/../.." && pwd)/.venv/bin"
    if [ ! -x "$venv_bin/$1" ]; then
        echo "with_env.sh: $1 is neither on PATH nor in $venv_bin: run \`make setup\` (or activate the environment that has it)" >&2
        exit 127
    fi
    PATH="$venv_bin:$PATH"
    export PATH
fi
exec "$@"
