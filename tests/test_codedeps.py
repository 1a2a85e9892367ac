"""Code dependencies come from the import graph, one source for Snakemake and DVC (issue #13, item 5)."""
import shutil

import yaml

from conftest import REPO, run
from diffsmooth.codedeps import PRODUCTS, closure, product_sources

DVC_STAGE_PRODUCT = {"data": "data", "train": "train", "certify": "merge", "tables": "tables",
                     "experiment": "experiment"}


def test_closure_follows_lazy_and_relative_imports():
    mods = closure("diffsmooth.report")
    # tables -> metrics -> statistics (round_sig decides every reference-rounded number)
    assert {"diffsmooth.tables", "diffsmooth.metrics", "diffsmooth.statistics", "diffsmooth.rows"} <= set(mods)
    assert "diffsmooth.smoothing" not in mods  # rendering does not depend on the certifier
    train = product_sources("train")
    assert "diffsmooth/models/digits.py" in train and "diffsmooth/training.py" in train


def test_dvc_stage_deps_are_the_import_closure():
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    assert set(DVC_STAGE_PRODUCT) == set(stages)
    for stage, product in DVC_STAGE_PRODUCT.items():
        spec = stages[stage].get("do", stages[stage])  # a foreach stage's deps are under `do:`
        listed = sorted(d for d in spec["deps"] if d.startswith("diffsmooth/") and d.endswith(".py"))
        assert listed == product_sources(product), f"dvc.yaml stage {stage}: run workflow/scripts/update_dvc_deps.py"
    assert set(DVC_STAGE_PRODUCT.values()) <= set(PRODUCTS)


def _scheduled(root, config="config/fast.yaml") -> dict:
    out = run(["snakemake", "-n", "all_tables", "--configfile", config], root).stdout
    jobs = {}
    in_stats = False
    for line in out.splitlines():
        if line.startswith("job ") and "count" in line:
            in_stats = True
            continue
        if in_stats:
            parts = line.split()
            if len(parts) == 2 and parts[1].isdigit():
                jobs[parts[0]] = int(parts[1])
            elif line.strip() == "" and jobs:
                break
    return jobs


def test_edits_rerun_exactly_what_they_affect(fast_run, tmp_path):
    root = tmp_path / "repo"  # the finished fast run with its own code, results and Snakemake metadata
    shutil.copytree(fast_run, root, symlinks=True, ignore=shutil.ignore_patterns("locks", "incomplete", "__pycache__"))
    assert _scheduled(root) == {}  # the copy is up to date
    # (i) a comment in the noise module changes no result: no certification job, nothing at all
    noise = root / "diffsmooth" / "noise.py"
    noise.write_text(noise.read_text() + "\n# a comment\n")
    assert _scheduled(root) == {}
    # (ii) the rounding function decides every reference-rounded number: the tables are rendered again
    stats = root / "diffsmooth" / "statistics.py"
    stats.write_text(stats.read_text().replace('"""Python\'s \'{:.3}\' formatting', '"""Python\'s {:.3} formatting'))
    jobs = _scheduled(root)
    assert jobs.get("render_tables") == 1
    assert "certify_group" not in jobs and "certify_cell" not in jobs
