"""The workflow follows the Snakemake catalogue's conventions: snakefmt-clean and `snakemake --lint`-clean but
for the one item justified in workflow/rules/common.smk (no conda env per rule)."""
import subprocess
import sys
from pathlib import Path

from conftest import BIN, REPO, copy_repo, run

JUSTIFIED = ("Specify a conda environment or container for each rule.",)


def test_snakefmt_clean():
    proc = subprocess.run([str(BIN / "snakefmt"), "--check", "Snakefile", "workflow/rules/"], cwd=REPO,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_lint_clean_but_for_the_justified_item(tmp_path):
    root = copy_repo(tmp_path / "repo")
    proc = run(["snakemake", "--lint"], root, check=False)
    said = proc.stdout + proc.stderr
    items = [line.strip()[2:].rstrip(":") for line in said.splitlines() if line.strip().startswith("* ")]
    assert items, said[-2000:]  # the linter ran
    assert [i for i in items if i not in JUSTIFIED] == [], said[-4000:]
    assert "conda env or container" in (REPO / "workflow" / "rules" / "common.smk").read_text()


def test_parsing_the_workflow_imports_no_torch(tmp_path):
    """Every `snakemake` call parses the Snakefile: it must not pay torch's import (about 2 s)."""
    code = ("import sys, runpy; sys.argv = ['snakemake', '-n', 'all_tables', '-q']; "
            "import snakemake.cli as c\ntry:\n    c.main()\nexcept SystemExit:\n    pass\n"
            "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH')")
    root = copy_repo(tmp_path / "repo")
    proc = run([sys.executable, "-c", code], root)
    assert proc.stdout.strip().splitlines()[-1] == "NO-TORCH", proc.stdout[-2000:]
