"""workflow/scripts/update_readme_results.py: the README's results block (tables, Figure 3 and the sentences about
them) comes from one run's tables, every number of the prose included. Golden block: tests/data/golden/.

Regenerate the golden file after an intended change with:  UPDATE_GOLDEN=1 pytest tests/test_readme_results.py
"""
from __future__ import annotations

import csv
import importlib.util
import os
import re

import pytest
import yaml

from diffsmooth.grid import build_grid
from diffsmooth.report import render_all

from conftest import REPO, write_synthetic_rows

GOLDEN = REPO / "tests" / "data" / "golden" / "readme_block_fast.md"
README = ("# Project\n\nText above.\n\n<!-- results:start -->\nold block 61.0% vs. 50.3%\n<!-- results:end -->\n"
          "\nBelow.\n")


def _script():
    spec = importlib.util.spec_from_file_location("update_readme_results",
                                                  REPO / "workflow" / "scripts" / "update_readme_results.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def synthetic_rows(results, grid) -> None:
    """Deterministic rows that differ between cells: cell j, image i is correct when (7i + 3j) % 10 < 6 + j % 3,
    at radius 0.05 * ((i * (j + 1)) % 11)."""
    def outcome(i, j):
        correct = int((7 * i + 3 * j) % 10 < 6 + j % 3)
        return correct, 0.05 * ((i * (j + 1)) % 11) if correct else 0.0

    write_synthetic_rows(results, grid, outcome)


@pytest.fixture(scope="module")
def tables_dir(tmp_path_factory):
    """The fast experiment's tables, rendered from deterministic synthetic rows."""
    cfg = yaml.safe_load((REPO / "config" / "fast.yaml").read_text())
    grid = build_grid(cfg)
    results = tmp_path_factory.mktemp("results")
    synthetic_rows(results, grid)
    out = tmp_path_factory.mktemp("tables")
    render_all(grid, results, out)
    return out


def test_block_is_golden(tables_dir):
    block = _script().block(tables_dir)
    if os.environ.get("UPDATE_GOLDEN") == "1":
        GOLDEN.write_text(block + "\n")
    assert block + "\n" == GOLDEN.read_text(), f"README block differs from {GOLDEN} (UPDATE_GOLDEN=1 if intended)"


def test_prose_numbers_are_the_tables(tables_dir):
    """Each percentage the sentences quote for Table 1 is that row's value at that radius in table1.cells.csv."""
    script = _script()
    text = script.summary(tables_dir)
    cells = list(csv.DictReader((tables_dir / "table1.cells.csv").open(encoding="utf-8")))
    value = {(c["row_label"], c["column"]): c["value"] for c in cells}
    quoted = re.findall(r": ([^:\n]+?) is above (.+?) at \d+ of \d+ radii.*?largest difference is (\d+\.\d)% vs\. "
                        r"(\d+\.\d)% at r = (\d+\.\d+)", text)
    assert len(quoted) == 3, text
    for ours, theirs, a, b, r in quoted:
        assert (value[(ours, r)], value[(theirs, r)]) == (a, b), (ours, theirs, r)
    acr = {c["row_label"]: c["value"] for c in csv.DictReader((tables_dir / "figure3.cells.csv").open(encoding="utf-8"))
           if c["column"] == "ACR"}
    m1, m5 = re.search(r"\(([\d.]+) → ([\d.]+) at σ = 0\.25", text).groups()
    assert (acr["Gaussian | 0.25 | 0.25 | 1"], acr["Gaussian | 0.25 | 0.25 | 5"]) == (m1, m5)
    assert "n = 40" in text and "±" in text


def test_readme_and_docs_are_updated_in_place(tables_dir, tmp_path):
    script = _script()
    (tmp_path / "README.md").write_text(README)
    script.main(tables_dir, tmp_path)
    first = (tmp_path / "README.md").read_text()
    assert first.startswith("# Project\n\nText above.\n\n<!-- results:start -->\nWhat this run shows")
    assert first.endswith("<!-- results:end -->\n\nBelow.\n") and "61.0% vs. 50.3%" not in first
    assert script.block(tables_dir) in first
    for name in ("table1.md", "table4.md", "table12.md", "figure3.md", "figure3.png"):
        assert (tmp_path / "docs" / "results" / name).read_bytes() == (tables_dir / name).read_bytes()
    script.main(tables_dir, tmp_path)  # idempotent
    assert (tmp_path / "README.md").read_text() == first


def test_refuses_without_markers_or_tables(tables_dir, tmp_path):
    script = _script()
    (tmp_path / "README.md").write_text("# no markers\n")
    with pytest.raises(SystemExit, match="needs exactly one"):
        script.main(tables_dir, tmp_path)
    (tmp_path / "README.md").write_text(README)
    with pytest.raises(SystemExit, match="lacks table1.md"):
        script.main(tmp_path / "nothing", tmp_path)
    assert (tmp_path / "README.md").read_text() == README
