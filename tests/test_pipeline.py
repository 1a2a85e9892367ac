"""The fast experiment end to end (data -> training -> certification -> tables): sanity, not hoped-for outcomes."""
import json
import shutil

import pandas as pd
import pytest
import yaml

from diffsmooth.grid import build_grid, cell_id, load_config
from diffsmooth.rows import read_rows
from diffsmooth.statistics import max_radius

from conftest import run

pytestmark = pytest.mark.slow


def _grid(root):
    return build_grid(load_config(root / "config" / "fast.yaml"))


def _cell_rows(root, results, cell):
    return read_rows(root / results / "digits-fast" / "cells" / cell_id(cell) / "rows.tsv").drop(columns="time")


def test_denoiser_and_classifiers_are_sane(fast_run):
    ckpt = fast_run / "results" / "digits-fast" / "checkpoints"
    report = json.loads((ckpt / "diffusion.report.json").read_text())
    for sigma, r in report["denoise_mse"].items():
        assert r["denoised_mse"] < 0.5 * r["noisy_mse"], sigma
    for name in ("gaussian_0.00", "gaussian_0.12", "gaussian_0.25", "smoothadv_0.25"):
        assert json.loads((ckpt / f"{name}.report.json").read_text())["clean_accuracy"] >= 0.85, name


def test_every_radius_within_what_n_can_certify(fast_run):
    grid = _grid(fast_run)
    for c in grid.cells:
        rows = read_rows(fast_run / "results" / "digits-fast" / "cells" / cell_id(c) / "rows.tsv")
        assert len(rows) == len(grid.images())
        assert rows["radius"].max() <= max_radius(c.N, c.alpha, c.sigma) + 1e-12, cell_id(c)
        assert ((rows["predict"] == -1) == (rows["pA_lower"] < 0.5)).all()
        assert (rows["correct"] == (rows["predict"] == rows["label"]).astype(int)).all()


def test_more_local_draws_not_worse(fast_run):
    fig = pd.read_csv(fast_run / "results" / "tables" / "digits-fast" / "figure3.cells.csv")
    acr = fig[fig.column == "ACR"].set_index("row")["value"].astype(float)
    labels = fig[fig.column == "ACR"].set_index("row")["row_label"]
    by_m = {label.split("|")[-1].strip(): acr[i] for i, label in labels.items()}
    assert by_m["5"] >= by_m["1"], by_m


def test_tables_rendered_and_traceable(fast_run):
    out = fast_run / "results" / "tables" / "digits-fast"
    grid = _grid(fast_run)
    for spec in grid.tables:
        md = (out / f"{spec.id}.md").read_text()
        assert md.count("\n|") == len(spec.rows) + 2  # header, rule, one line per row
        tex = (out / f"{spec.id}.tex").read_text()  # a booktabs table float around the tabular (#18)
        assert "\\begin{table}" in tex and "\\begin{tabular}" in tex and "\\caption{" in tex
        index = pd.read_csv(out / f"{spec.id}.cells.csv")
        assert set(index.row) == set(range(1, len(spec.rows) + 1))
    assert (out / "figure3.png").stat().st_size > 1000 and (out / "figure3.pdf").stat().st_size > 1000


def test_second_run_does_nothing(fast_run):
    proc = run(["snakemake", "-c2", "all_tables", "--configfile", "config/fast.yaml", "-n"], fast_run)
    assert "Nothing to be done" in proc.stdout + proc.stderr


def test_rows_identical_for_other_shard_size_and_per_cell_mode(fast_run, tmp_path):
    """Re-certifying with one shard of 40 instead of two of 20, one cell at a time, gives identical rows."""
    config = yaml.safe_load((fast_run / "config" / "fast.yaml").read_text())
    config["certify"]["shard_size"] = 40
    cfg = fast_run / "config" / "fast-one-shard.yaml"
    cfg.write_text(yaml.safe_dump(config))
    grid = _grid(fast_run)
    picked = [c for c in grid.cells if c.method == "diffsmooth" and c.m == 5][:1] + \
             [c for c in grid.cells if c.method == "rs"][:1]
    for c in picked:
        run(["diffsmooth", "certify", "--configfile", str(cfg), "--cell", cell_id(c), "--results", "results-alt",
             "--no-progress"], fast_run)
        run(["diffsmooth", "merge", "--configfile", str(cfg), "--cell", cell_id(c), "--results", "results-alt"],
            fast_run)
        pd.testing.assert_frame_equal(_cell_rows(fast_run, "results-alt", c), _cell_rows(fast_run, "results", c))
    shutil.rmtree(fast_run / "results-alt")
    cfg.unlink()
