"""Golden certification rows: the fused Certifier on fixed digits models must reproduce, byte for byte,
the rows recorded with the certification code of 2026-12-01 (before the GPU fast path, issue #17).

The rows (tests/data/golden/certify_rows_digits.tsv) were written by `_rows(batch_size=1100)` below on
that code. Any change of the counting code (batching, the m loop, softmax, the counts) must leave them
unchanged in fp32; a deliberate change of the numbers needs a new certification-code version and a
regenerated file (DIFFSMOOTH_REGENERATE_GOLDEN=1 pytest tests/test_golden_rows.py), never a silent edit.
"""
import os
from pathlib import Path

import pytest
import torch

from diffsmooth.cell import CERTIFY_VERSION
from diffsmooth.models import DigitsEpsMLP, digits_mlp
from diffsmooth.purifier import OneShotPurifier
from diffsmooth.rows import HEADER, format_row
from diffsmooth.schedules import Schedule
from diffsmooth.smoothing import Cell, Certifier

GOLDEN = Path(__file__).parent / "data" / "golden" / "certify_rows_digits.tsv"
# The CERTIFY_VERSION (diffsmooth/cell.py) the golden rows were made with. Certification jobs rerun only when
# that version changes, so results may change only together with it: these tests fail otherwise.
GOLDEN_VERSION = 1
CHANGED = ("certification rows changed: if that is deliberate, bump CERTIFY_VERSION in diffsmooth/cell.py, "
           "regenerate (DIFFSMOOTH_REGENERATE_GOLDEN=1) and set GOLDEN_VERSION; otherwise the change is a bug")
SHAPE = (1, 8, 8)
IMAGES = range(4)


def _models():
    torch.manual_seed(1234)
    clfs = {name: digits_mlp(width=48).eval() for name in ("std", "a", "b")}
    eps = DigitsEpsMLP(width=48, blocks=1).eval()
    return clfs, OneShotPurifier(eps, Schedule("linear", 1000), 0.25)


def _cells():
    base = dict(dataset="digits", sigma=0.25, N=700, n0=60, alpha=0.001, seed=5)
    return [
        Cell(method="rs", classifier="a", **base),
        Cell(method="dds", classifier="std", **base),
        Cell(method="dds", classifier="b", **{**base, "N": 333}),
        Cell(method="diffsmooth", classifier="a", sigma_local=0.12, shift=0.02, m=9, **base),
        Cell(method="diffsmooth", classifier="a", sigma_local=0.12, shift=0.02, m=4, **base),
        Cell(method="diffsmooth", classifier="a", sigma_local=0.12, shift=0.02, m=1, **{**base, "N": 250}),
        Cell(method="diffsmooth", classifier="b", sigma_local=0.25, m=6, **base),
        Cell(method="local", classifier="b", sigma_local=0.25, m=5, **base),
        Cell(method="diffsmooth", classifier="a", sigma_local=0.12, m=3, local_noise="fresh", **base),
    ]


def _image(i):
    return torch.rand(SHAPE, generator=torch.Generator().manual_seed(500 + i))


def _rows(batch_size: int, **certifier_kwargs) -> str:
    """Rows of every cell and image (time column 0; the label is image index mod 10), cells in order."""
    clfs, purifier = _models()
    cells = _cells()
    cert = Certifier(cells, clfs, purifier, 10, SHAPE, batch_size=batch_size, **certifier_kwargs)
    results = {i: cert.certify(_image(i), i) for i in IMAGES}
    text = HEADER
    for c in cells:
        for i in IMAGES:
            r = results[i][c]
            text += format_row(i, i % 10, r.predict, r.radius, int(r.predict == i % 10), 0.0, r.n_a, r.n, r.p_a_lower)
    return text


if os.environ.get("DIFFSMOOTH_REGENERATE_GOLDEN"):  # pragma: no cover - deliberate regeneration only
    GOLDEN.write_text(_rows(1100))


def test_golden_rows_belong_to_this_certification_version():
    assert CERTIFY_VERSION == GOLDEN_VERSION, ("CERTIFY_VERSION was bumped: regenerate the golden rows "
                                               "(DIFFSMOOTH_REGENERATE_GOLDEN=1) and set GOLDEN_VERSION to it")


@pytest.mark.parametrize("batch_size", [1100, 64, 257])
def test_rows_equal_the_golden_rows(batch_size):
    assert _rows(batch_size) == GOLDEN.read_text(), CHANGED


def test_golden_rows_are_not_trivial():
    """The guard would be weak if every row abstained or every cell agreed."""
    lines = GOLDEN.read_text().splitlines()[1:]
    assert len(lines) == len(_cells()) * len(IMAGES)
    predicts = {line.split("\t")[2] for line in lines}
    radii = {line.split("\t")[3] for line in lines}
    assert len(predicts) >= 3 and len(radii) >= 10


@pytest.mark.parametrize("classifier_batch_size", [1, 1000, 100_000])
def test_rows_do_not_depend_on_how_local_draws_are_folded(classifier_batch_size):
    """1: one classifier forward per draw (today's loop before the fold); larger: draws folded together."""
    assert _rows(300, classifier_batch_size=classifier_batch_size) == GOLDEN.read_text()
