"""Rendering of a small synthetic cell set: golden Markdown/LaTeX files (tests/data/golden/), the LaTeX compiles
in a minimal document where pdflatex is installed, HTML for the report, and the Snakemake report itself.

Regenerate the golden files after an intended change with:  UPDATE_GOLDEN=1 pytest tests/test_tables_render.py
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest
import yaml

from diffsmooth.grid import build_grid, cell_id, validate_config
from diffsmooth.rows import HEADER, format_row
from diffsmooth.tables import RowCache, compute_table, to_html, to_latex, to_markdown

from conftest import REPO, run, small_cifar10_config

GOLDEN = REPO / "tests" / "data" / "golden"
UPDATE = os.environ.get("UPDATE_GOLDEN") == "1"


def digits_config() -> dict:
    """fast.yaml cut to 10 images and three table kinds (one with ACR, one envelope, one with "−" columns)."""
    cfg = yaml.safe_load((REPO / "config" / "fast.yaml").read_text())
    cfg["experiment"] = "render-digits"
    cfg["dataset"]["images"] = {"start": 0, "stop": 10, "skip": 1}
    cfg["tables"] = {k: cfg["tables"][k] for k in ("table1", "table4", "table12")}
    cfg["tables"]["table4"]["title"] = "DiffSmooth per σ and σ' (synthetic rows)"
    validate_config(cfg)
    return cfg


def cifar_config() -> dict:
    """The CIFAR-10 config cut to sigma = 0.25 and Table 1, whose reported rows come from data/paper/."""
    return small_cifar10_config("render-cifar", 200, ("table1",))


def synthetic_rows(results, grid) -> None:
    """Deterministic rows: cell j, image i is correct unless (i + j) % 4 == 0, radius 0.05 * ((7i + 3j) % 10)."""
    for j, cell in enumerate(grid.cells):
        lines = [HEADER]
        for i, idx in enumerate(grid.images()):
            correct = int((i + j) % 4 != 0)
            radius = 0.05 * ((7 * i + 3 * j) % 10) if correct else 0.0
            lines.append(format_row(idx, 1, 1 if correct else -1, radius, correct, 0.01, 9 if correct else 0,
                                    cell.N, 0.9 if correct else 0.0))
        path = results / grid.experiment / "cells" / cell_id(cell) / "rows.tsv"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(lines))


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    out = {}
    for name, cfg in (("digits", digits_config()), ("cifar", cifar_config())):
        grid = build_grid(cfg)
        results = tmp_path_factory.mktemp(name)
        synthetic_rows(results, grid)
        cache = RowCache(results, grid.experiment)
        for spec in grid.tables:
            out[f"{name}_{spec.id}"] = compute_table(grid, spec, cache)
    return out


CASES = ["digits_table1", "digits_table4", "digits_table12", "cifar_table1"]


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("fmt", ["md", "tex"])
def test_golden(rendered, case, fmt):
    text = (to_markdown if fmt == "md" else to_latex)(rendered[case])
    path = GOLDEN / f"render_{case}.{fmt}"
    if UPDATE:
        path.write_text(text)
    assert path.exists(), f"{path} missing: run UPDATE_GOLDEN=1 pytest {__file__}"
    assert text == path.read_text(), f"{case}.{fmt} differs from {path} (UPDATE_GOLDEN=1 if intended)"


def test_golden_contents_make_sense(rendered):
    """What the golden files pin down, stated once: bold per block, dashes, reported rows."""
    md = to_markdown(rendered["digits_table4"])
    assert md.count("\n|") == len(rendered["digits_table4"].rows) + 2  # header, rule, one line per row
    assert "**" in md and "−" in md  # bold best values; radius 0.60 is beyond N = 500's 0.55 at sigma = 0.25
    cifar = to_markdown(rendered["cifar_table1"])
    assert sum("(reported)" in line for line in cifar.splitlines() if line.startswith("|")) == 4
    assert "MACER (reported)" in cifar and "81.0" in cifar
    assert cifar.count("\n|") == len(rendered["cifar_table1"].rows) + 2
    assert "this pipeline does not compute them" in cifar
    assert "(reported)" not in to_markdown(rendered["digits_table1"])
    for case in CASES:
        tex = to_latex(rendered[case])
        assert tex.startswith("\\begin{tabular}") and tex.isascii(), case


def test_html_has_every_row_and_bold(rendered):
    for case in CASES:
        t = rendered[case]
        page = to_html(t)
        assert page.startswith("<!DOCTYPE html>") and page.count("<tr>") == len(t.rows) + 1
        assert len(re.findall(r"<b>[0-9.]+</b>", page)) == sum(len(b) for b in t.bold), case


@pytest.mark.parametrize("case", CASES)
def test_latex_compiles(rendered, case, tmp_path):
    if shutil.which("pdflatex") is None:
        pytest.skip("pdflatex is not installed (TeX is deliberately not installed in CI): LaTeX compile check skipped")
    (tmp_path / "table.tex").write_text(to_latex(rendered[case]))
    (tmp_path / "doc.tex").write_text("\\documentclass{article}\n\\usepackage{booktabs}\n\\usepackage{graphicx}\n"
                                      "\\begin{document}\n\\resizebox{\\textwidth}{!}{\\input{table}}\n"
                                      "\\end{document}\n")
    proc = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "doc.tex"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert (tmp_path / "doc.pdf").stat().st_size > 1000


@pytest.mark.slow
def test_snakemake_report(fast_run):
    """`snakemake --report` after a run: tables (HTML), Figure 3 and the comparison summary, with captions."""
    run(["snakemake", "all_tables", "--configfile", "config/fast.yaml", "--report", "report.html"], fast_run)
    page = (fast_run / "report.html").read_text()
    grid = build_grid(yaml.safe_load((fast_run / "config" / "fast.yaml").read_text()))
    for spec in grid.tables:
        assert f"{spec.id}.html" in page, spec.id
    for item in ("figure3.png", "comparison.html", "Paper vs. reproduced", "Figures", "Tables"):
        assert item in page, item
    for caption in ("per-radius best over its cells", "Figure 3: certified accuracy", "Paper vs. reproduced: how many"):
        assert caption in page, caption
    summary = (fast_run / "results" / "tables" / "digits-fast" / "comparison.md").read_text()
    assert "does not evaluate" in summary and not list((fast_run / "results" / "tables").rglob("*.compare.csv"))
