"""Integration test: the workflow on a real (throwaway) SLURM cluster.

Opt-in, because it needs running SLURM daemons:

    bash .ci/slurm-cluster.sh up
    DIFFSMOOTH_SLURM_TESTS=1 python -m pytest -m slurm tests/test_slurm.py -rs -v

Two cases:

* ``toy``  -- a tiny self-contained workflow (GPU rule, CPU rule, local rule)
  run with the repository's ``slurm/`` profile. Checks cluster + profile
  (partitions, account, ``gpu: 1`` -> gres/gpu, sacct status polling) without
  depending on the DiffSmooth rules.
* ``repo`` -- the real workflow: ``snakemake --profile slurm all_tables
  --configfile config/fast.yaml`` in a copy of the working tree. Skipped while
  the repository has no ``Snakefile`` / ``config/fast.yaml``.

Each case runs the target once through SLURM and once locally (``-c2``), each
in its own copy, and checks that

* the SLURM run exits 0 (under ``timeout -k 30 900``),
* every job Snakemake did not run as a local rule was one SLURM job: the SLURM
  job ids Snakemake reports equal the jobs ``sacct`` lists under the run's job
  name, all COMPLETED, and their number equals the non-local jobs of the run,
* jobs of the certification rules got a GPU (``gres/gpu`` in sacct AllocTRES),
* the rendered tables ``results/tables/*/*.md`` are byte-identical.

Environment:
  DIFFSMOOTH_SLURM_TESTS=1        enable (otherwise skipped)
  DIFFSMOOTH_SLURM_TIMEOUT        seconds per snakemake run (default 900)
  DIFFSMOOTH_SLURM_INIT_SECONDS   profile setting, default here 3 (fast polling)
"""

from __future__ import annotations

import datetime as _dt
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SKIP_REASON = (
    "set DIFFSMOOTH_SLURM_TESTS=1 after `bash .ci/slurm-cluster.sh up`, see README"
)
TIMEOUT_S = int(os.environ.get("DIFFSMOOTH_SLURM_TIMEOUT", "900"))
TARGET = "all_tables"
CONFIGFILE = "config/fast.yaml"
GPU_RULES = ("certify_cell", "certify_group")

pytestmark = [
    pytest.mark.slurm,
    pytest.mark.skipif(
        os.environ.get("DIFFSMOOTH_SLURM_TESTS") != "1", reason=SKIP_REASON
    ),
]

# --------------------------------------------------------------------------
# toy workflow: same shape as the real one (GPU certification rules, a CPU
# aggregation, a local target rule, tables under results/tables/<name>/*.md)

TOY_SNAKEFILE = r'''
configfile: "config/fast.yaml"
CELLS = config["cells"]

localrules: all_tables

rule all_tables:
    input:
        "results/tables/toy/cells.md",
        "results/tables/toy/summary.md",

rule certify_cell:
    output: "results/cells/{cell}.txt"
    resources: runtime=5, mem_mb=200
    # inside a SLURM job the (fake) GPU must have been allocated
    shell:
        'if [ -n "${{SLURM_JOB_ID:-}}" ] && [ -z "${{CUDA_VISIBLE_DEVICES:-}}" ]; '
        'then echo "no GPU allocated" >&2; exit 3; fi; '
        'echo "{wildcards.cell} $(( {wildcards.cell} * {wildcards.cell} ))" > {output}'

rule certify_group:
    input: expand("results/cells/{cell}.txt", cell=CELLS)
    output: "results/groups/all.txt"
    resources: runtime=5, mem_mb=200
    shell: "cat {input} > {output}"

rule table:
    input: "results/groups/all.txt"
    output:
        cells="results/tables/toy/cells.md",
        summary="results/tables/toy/summary.md",
    shell:
        "(echo '| cell | value |'; echo '|---|---|'; "
        "awk '{{print \"| \" $1 \" | \" $2 \" |\"}}' {input}) > {output.cells}; "
        "awk '{{s += $2}} END {{print \"| total |\"; print \"|---|\"; print \"| \" s \" |\"}}' "
        "{input} > {output.summary}"
'''

TOY_CONFIG = "cells: [1, 2, 3]\n"


def _make_toy(dst: Path) -> None:
    dst.mkdir(parents=True)
    (dst / "Snakefile").write_text(TOY_SNAKEFILE)
    (dst / "config").mkdir()
    (dst / "config" / "fast.yaml").write_text(TOY_CONFIG)
    shutil.copytree(REPO / "slurm", dst / "slurm")


# --------------------------------------------------------------------------
# helpers


def _git_files() -> list[str]:
    out = subprocess.run(
        ["git", "ls-files", "-z", "-co", "--exclude-standard"],
        cwd=REPO, check=True, capture_output=True,
    ).stdout.decode()
    return [f for f in out.split("\0") if f]


def _copy_repo(dst: Path) -> None:
    """Copy the working tree: tracked + untracked files that git does not ignore.

    Ignored paths (results/, data/digits/, .snakemake/, ...) are left out, so
    each copy builds everything from scratch, like a fresh clone.
    """
    for rel in _git_files():
        src = REPO / rel
        if not src.exists() and not src.is_symlink():
            continue  # deleted in the working tree
        target = dst / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, target, follow_symlinks=False)


def _env() -> dict[str, str]:
    env = dict(os.environ)
    # rules call `diffsmooth ...` / `python`: use this interpreter's environment (venv)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.setdefault("DIFFSMOOTH_SLURM_INIT_SECONDS", "3")
    env.pop("SNAKEMAKE_PROFILE", None)
    return env


class _Snakemake:
    """`timeout -k 30 $TIMEOUT python -m snakemake ARGS` in WORKDIR, output to LOG."""

    def __init__(self, workdir: Path, args: list[str], log: Path):
        cmd = ["timeout", "-k", "30", str(TIMEOUT_S), sys.executable, "-m", "snakemake", *args]
        self.log = log
        self._fh = open(log, "w")
        self._t0 = time.monotonic()
        self._proc = subprocess.Popen(
            cmd, cwd=workdir, env=_env(), stdout=self._fh, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        self._elapsed: float | None = None
        self._waiter = threading.Thread(target=self._wait_proc, daemon=True)
        self._waiter.start()

    def _wait_proc(self) -> None:
        self._proc.wait()
        self._elapsed = time.monotonic() - self._t0

    def wait(self) -> tuple[int, str, float]:
        """Return code, output and the run's own wall time."""
        self._waiter.join()
        self._fh.close()
        return self._proc.returncode, self.log.read_text(errors="replace"), self._elapsed

    def kill(self) -> None:
        if self._proc.poll() is None:
            self._proc.terminate()  # `timeout` passes SIGTERM on to snakemake
            try:
                self._proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                self._proc.kill()
        self._fh.close()


def _tail(text: str, n: int = 60) -> str:
    return "\n".join(text.splitlines()[-n:])


def _slurm_logs(workdir: Path, n: int = 30) -> str:
    parts = []
    for f in sorted((workdir / ".snakemake" / "slurm_logs").rglob("*.log")):
        parts.append(f"----- {f}\n{_tail(f.read_text(errors='replace'), n)}")
    return "\n".join(parts)


def _sacct(name: str) -> list[dict[str, str]]:
    start = (_dt.datetime.now() - _dt.timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%S")
    out = subprocess.run(
        ["sacct", "-X", "--parsable2", "--noheader", "--name", name,
         "--starttime", start, "--endtime", "now",
         "--format", "JobIDRaw,State,Partition,Account,AllocTRES"],
        check=True, capture_output=True, text=True, timeout=60,
    ).stdout
    keys = ["id", "state", "partition", "account", "tres"]
    return [dict(zip(keys, line.split("|"))) for line in out.splitlines() if line.strip()]


def _tables(workdir: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(workdir)): p.read_bytes()
        for p in sorted(workdir.glob("results/tables/*/*.md"))
    }


@pytest.fixture(scope="module")
def cluster_ready():
    """Fail (not skip) when the tests were asked for but no cluster answers."""
    try:
        out = subprocess.run(
            ["sinfo", "-h", "-o", "%P %T"], capture_output=True, text=True, timeout=30
        )
    except (FileNotFoundError, subprocess.TimeoutExpired) as exc:
        pytest.fail(f"SLURM not usable ({exc}); run `bash .ci/slurm-cluster.sh up` first")
    if out.returncode != 0 or not re.search(r"\b(idle|mixed|allocated)\b", out.stdout):
        pytest.fail(
            "SLURM cluster not up (sinfo: "
            f"{(out.stdout + out.stderr).strip()!r}); run `bash .ci/slurm-cluster.sh up`"
        )


def _prepare(source: str, dst: Path) -> None:
    if source == "toy":
        _make_toy(dst)
        return
    missing = [p for p in ("Snakefile", CONFIGFILE) if not (REPO / p).exists()]
    if missing:
        pytest.skip(f"real workflow not present yet (missing {', '.join(missing)})")
    _copy_repo(dst)


# --------------------------------------------------------------------------


@pytest.mark.parametrize("source", ["toy", "repo"])
def test_all_tables_on_slurm_matches_local(source, tmp_path, cluster_ready):
    slurm_dir, local_dir = tmp_path / "slurm-run", tmp_path / "local-run"
    _prepare(source, slurm_dir)
    _prepare(source, local_dir)

    # The local run goes in parallel: the SLURM run mostly waits (job start-up,
    # status polling), so this saves wall time; the copies share nothing.
    local = _Snakemake(
        local_dir, ["-c2", TARGET, "--configfile", CONFIGFILE], tmp_path / "local-run.log"
    )
    try:
        _check_slurm_run_and_compare(source, slurm_dir, local_dir, local, tmp_path)
    finally:
        local.kill()  # no-op when it has finished


def _check_slurm_run_and_compare(source, slurm_dir, local_dir, local, tmp_path):
    # ---- through SLURM, with the repository's profile
    rc, out, dt_slurm = _Snakemake(
        slurm_dir,
        ["--profile", "slurm", TARGET, "--configfile", CONFIGFILE, "--retries", "0"],
        tmp_path / "slurm-run.log",
    ).wait()
    assert rc == 0, (
        f"SLURM run failed (rc={rc}; 124/137 = timeout after {TIMEOUT_S}s)\n"
        f"{_tail(out)}\n{_slurm_logs(slurm_dir)}"
    )

    m = re.search(r"SLURM run ID: (\S+)", out)
    assert m, f"no 'SLURM run ID' in the snakemake output:\n{_tail(out)}"
    run_name = m.group(1)
    planned = re.search(r"^total\s+(\d+)\s*$", out, re.M)
    assert planned, f"no job stats in the snakemake output:\n{_tail(out)}"
    n_planned = int(planned.group(1))
    remote_rules = re.findall(r"^rule (\w+):", out, re.M)
    local_rules = re.findall(r"^localrule (\w+):", out, re.M)
    # "Job 3 has been submitted with SLURM jobid 12 (log: .../rule_certify_cell/a/12.log)."
    submissions = dict(
        re.findall(r"submitted with SLURM jobid (\d+) \(log: (\S+?)\)?\.?$", out, re.M)
    )
    submitted = set(submissions)

    assert len(remote_rules) + len(local_rules) == n_planned, (
        f"planned {n_planned} jobs, ran {len(remote_rules)} remote + "
        f"{len(local_rules)} local"
    )
    assert remote_rules, "no job was submitted to SLURM"
    # one SLURM job per non-local job (no --groups in this run)
    assert len(submitted) == len(remote_rules), (
        f"{len(remote_rules)} non-local jobs but {len(submitted)} SLURM submissions"
    )

    # ---- what SLURM itself recorded (sacct = the plugin's status source)
    rows = _sacct(run_name)
    assert {r["id"] for r in rows} == submitted, (
        f"sacct --name {run_name} lists {sorted(r['id'] for r in rows)}, "
        f"snakemake submitted {sorted(submitted)}"
    )
    bad = [r for r in rows if r["state"] != "COMPLETED"]
    assert not bad, f"SLURM jobs not COMPLETED: {bad}"
    gpu_ids = {
        jid for jid, log in submissions.items()
        if any(f"/rule_{g}/" in log for g in GPU_RULES)
    }
    gpu_rows = [r for r in rows if r["id"] in gpu_ids]
    assert gpu_rows, f"no certification job ({', '.join(GPU_RULES)}) among {submissions}"
    for r in gpu_rows:
        assert "gres/gpu=1" in r["tres"], f"GPU job without a GPU: {r}"

    # ---- same target locally, in a separate copy (started before the SLURM run)
    rc, lout, dt_local = local.wait()
    assert rc == 0, f"local run failed (rc={rc})\n{_tail(lout)}"

    slurm_tables, local_tables = _tables(slurm_dir), _tables(local_dir)
    assert local_tables, "local run rendered no results/tables/*/*.md"
    assert sorted(slurm_tables) == sorted(local_tables)
    differing = [k for k in local_tables if slurm_tables[k] != local_tables[k]]
    assert not differing, f"tables differ between SLURM and local run: {differing}"

    print(
        f"\n[{source}] SLURM run {dt_slurm:.1f}s ({len(submitted)} SLURM jobs, "
        f"{len(local_rules)} local), local run {dt_local:.1f}s (in parallel), "
        f"{len(local_tables)} tables identical"
    )


def test_measure_throughput_runs_as_a_gpu_job(tmp_path, cluster_ready):
    """`snakemake --profile slurm measure_throughput`: one SLURM job with a GPU, writing the record that
    `diffsmooth plan` then reports as measured."""
    workdir = tmp_path / "repo"
    _prepare("repo", workdir)
    rc, out, _ = _Snakemake(
        workdir, ["--profile", "slurm", "measure_throughput", "--configfile", CONFIGFILE, "--retries", "0"],
        tmp_path / "throughput.log",
    ).wait()
    assert rc == 0, f"SLURM run failed (rc={rc})\n{_tail(out)}\n{_slurm_logs(workdir)}"
    run_name = re.search(r"SLURM run ID: (\S+)", out).group(1)
    rows = _sacct(run_name)
    assert len(rows) == 1 and rows[0]["state"] == "COMPLETED", rows
    assert "gres/gpu=1" in rows[0]["tres"], f"measure_throughput got no GPU: {rows[0]}"
    record = workdir / "results" / "digits-fast" / "throughput.json"
    assert record.exists(), _tail(out)
    plan = subprocess.run(["diffsmooth", "plan", "--configfile", CONFIGFILE], cwd=workdir, env=_env(),
                          capture_output=True, text=True, timeout=120)
    assert plan.returncode == 0 and "(measured on cpu" in plan.stdout, plan.stdout + plan.stderr
