"""A certification job killed with SIGKILL at any point resumes and ends with the rows of an
uninterrupted run: no torn, duplicated or missing rows (compared byte for byte except `time`)."""
import os
import shutil
import signal
import subprocess
import time

import pytest
import yaml

from conftest import pipeline_env, run

pytestmark = pytest.mark.slow
GROUP = "digits/sigma0.25"


@pytest.fixture(scope="module")
def tree(fast_run, tmp_path_factory):
    """The fast run's data and models, with a one-shard config so a job lasts long enough to be killed."""
    root = tmp_path_factory.mktemp("resume") / "repo"
    shutil.copytree(fast_run, root, symlinks=True, ignore=shutil.ignore_patterns(".snakemake"))
    config = yaml.safe_load((root / "config" / "fast.yaml").read_text())
    config["certify"]["shard_size"] = 40
    (root / "config" / "one-shard.yaml").write_text(yaml.safe_dump(config))
    return root


def _certify_cmd(results):
    return ["diffsmooth", "certify", "--configfile", "config/one-shard.yaml", "--group", GROUP, "--shard", "0",
            "--results", results, "--no-progress"]


def _rows_without_time(root, results):
    """Every cell's shard file of the group, with the time column removed, as {relative path: text}."""
    out = {}
    for p in sorted((root / results).rglob("shards/0000.tsv")):
        lines = [l.split("\t") for l in p.read_text().splitlines()]
        out[str(p.relative_to(root / results))] = "\n".join("\t".join(f[:5] + f[6:]) for f in lines) + "\n"
    return out


def _partial_lines(root, results):
    files = list((root / results).rglob("*.tsv.partial"))
    return min((len(f.read_text().splitlines()) - 1 for f in files), default=-1)


@pytest.fixture(scope="module")
def reference_rows(tree):
    run(_certify_cmd("results-ref"), tree)
    rows = _rows_without_time(tree, "results-ref")
    assert len(rows) == 19 and all(len(t.splitlines()) == 41 for t in rows.values())
    return rows


@pytest.mark.parametrize("kill_after_rows", [-1, 1, 9, 23, 38])
def test_sigkill_then_resume_gives_identical_rows(tree, reference_rows, kill_after_rows):
    results = f"results-kill{kill_after_rows}"
    proc = subprocess.Popen(_certify_cmd(results), cwd=tree, env=pipeline_env(tree),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 120
    while proc.poll() is None and time.time() < deadline:
        if _partial_lines(tree, results) >= kill_after_rows:
            break
        time.sleep(0.01)
    assert proc.poll() is None, "the job finished before it could be killed; make the workload larger"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not list((tree / results).rglob("shards/0000.tsv")), "no final rows file after a kill"
    run(_certify_cmd(results), tree)  # resume
    assert _rows_without_time(tree, results) == reference_rows
    assert not list((tree / results).rglob("*.partial*")), "partial files are cleaned up"


def test_finished_cell_is_not_recomputed(tree, reference_rows):
    before = {p: p.stat().st_mtime_ns for p in (tree / "results-ref").rglob("*.tsv")}
    proc = run(_certify_cmd("results-ref"), tree)
    assert "0 cells certified, 19 already complete" in proc.stdout
    assert {p: p.stat().st_mtime_ns for p in (tree / "results-ref").rglob("*.tsv")} == before


def test_changed_parameter_cannot_overwrite_a_cell(tree, reference_rows):
    """Same cell path, other images: the job refuses and explains; the stored rows stay untouched."""
    config = yaml.safe_load((tree / "config" / "one-shard.yaml").read_text())
    config["dataset"]["images"]["start"] = 1
    (tree / "config" / "shifted.yaml").write_text(yaml.safe_dump(config))
    before = _rows_without_time(tree, "results-ref")
    proc = run(["diffsmooth", "certify", "--configfile", "config/shifted.yaml", "--group", GROUP, "--shard", "0",
                "--results", "results-ref", "--no-progress"], tree, check=False)
    assert proc.returncode != 0
    assert "refusing to overwrite" in proc.stderr and "images" in proc.stderr
    assert _rows_without_time(tree, "results-ref") == before


def test_snakemake_killed_mid_certification_resumes(fast_run, tmp_path):
    root = tmp_path / "repo"
    shutil.copytree(fast_run, root, symlinks=True, ignore=shutil.ignore_patterns("locks"))
    for done in ("cells", "groups"):  # keep data and models, redo certification
        shutil.rmtree(root / "results" / "digits-fast" / done)
    shutil.rmtree(root / "results" / "tables")
    cmd = ["snakemake", "-c1", "all_tables", "--configfile", "config/fast.yaml"]
    proc = subprocess.Popen(cmd, cwd=root, env=pipeline_env(root), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 180
    while time.time() < deadline and _partial_lines(root, "results") < 5 and proc.poll() is None:
        time.sleep(0.02)
    assert proc.poll() is None
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    run(["snakemake", "--unlock", "--configfile", "config/fast.yaml"], root)
    # the job's output is written last, atomically: Snakemake sees it missing (never half-done) and reruns it
    plan = run(cmd + ["-n"], root).stdout
    assert "certify_group" in plan
    assert list((root / "results").rglob("*.tsv.partial")), "the killed job's finished images were kept"
    run(cmd + ["--rerun-incomplete"], root)
    for table in sorted((fast_run / "results" / "tables" / "digits-fast").glob("*.md")):
        assert (root / "results" / "tables" / "digits-fast" / table.name).read_text() == table.read_text()
