"""Copy the embedded default's rendered results into README.md (between the results markers) and
docs/results/, so the README shows what one run of the pipeline produced: Tables 4 and 1, Figure 3, and the
sentences about them, whose every number is read from that same run's cell indexes (`<table>.cells.csv`).
Run after `make tables`:

    python workflow/scripts/update_readme_results.py [results/tables/digits]
"""
from __future__ import annotations

import csv
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
START, END = "<!-- results:start -->", "<!-- results:end -->"
SHOWN = ("table1", "table4", "table12", "figure3")  # copied to docs/results/
IN_README = ("table4", "table1")
READ = ("table1", "table6", "figure3")  # cell indexes the sentences quote
DASH = "−"


def _cells(tables_dir: Path, table: str) -> list[dict]:
    with open(tables_dir / f"{table}.cells.csv", newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _curve(cells: list, label: str) -> dict:
    """column -> number (None for "−") of the row with this label; KeyError naming the labels there are."""
    got = {c["column"]: (None if c["value"] == DASH else float(c["value"])) for c in cells if c["row_label"] == label}
    if not got:
        raise KeyError(f"no row {label!r} in {cells[0]['table'] if cells else 'an empty table'}; rows: "
                       f"{sorted({c['row_label'] for c in cells})}")
    return got


def _pct(x: float) -> str:
    return f"{x:.1f}%"


def _versus(cells: list, ours: str, theirs: str) -> tuple:
    """(radii where ours > theirs, ==, <, (gap, radius) of the largest difference) over shared numeric radii."""
    a, b = _curve(cells, ours), _curve(cells, theirs)
    cols = [c for c in a if c != "ACR" and a[c] is not None and b.get(c) is not None]
    above = [c for c in cols if a[c] > b[c]]
    tie = [c for c in cols if a[c] == b[c]]
    below = [c for c in cols if a[c] < b[c]]
    lead = max(((abs(a[c] - b[c]), c) for c in cols), default=(0.0, None))  # first radius on ties
    return above, tie, below, lead, a, b, len(cols)


def _comparison_sentence(cells, ours, theirs, what) -> str:
    above, tie, below, (gap, col), a, b, n = _versus(cells, ours, theirs)
    text = (f"{what}: {ours} is above {theirs} at {len(above)} of {n} radii, equal at {len(tie)} and below at "
            f"{len(below)}")
    if col is not None and gap > 0:
        text += f"; the largest difference is {_pct(a[col])} vs. {_pct(b[col])} at r = {float(col):.2f}"
    return text + "."


def _figure3_sentence(cells) -> str:
    """ACR at the smallest and the largest m, per (sigma, sigma') panel of Figure 3."""
    panels: dict = {}
    for c in cells:
        if c["column"] == "ACR":
            model, s, sl, m = c["row_label"].split(" | ")[-4:]
            panels.setdefault((model, s, sl), {})[int(m)] = float(c["value"])
    parts, grew = [], 0
    for (model, s, sl), by_m in panels.items():
        lo, hi = min(by_m), max(by_m)
        grew += by_m[hi] > by_m[lo]
        parts.append(f"{by_m[lo]:.3f} → {by_m[hi]:.3f} at σ = {s}, σ' = {sl}")
    m_lo, m_hi = min(min(p) for p in panels.values()), max(max(p) for p in panels.values())
    verb = ("grows" if grew == len(panels) else "does not grow" if grew == 0
            else f"grows in {grew} of {len(panels)} panels")
    return f"In Figure 3 the ACR {verb} from m = {m_lo} to m = {m_hi} local draws ({'; '.join(parts)})."


def _equal_budget_sentence(cells) -> str:
    """Which row has the best certified accuracy at how many radii of Table 6 (ties: every best row counts)."""
    by_col: dict = {}
    for c in cells:
        if c["column"] != "ACR" and c["value"] != DASH:
            by_col.setdefault(c["column"], []).append((float(c["value"]), c["row_label"]))
    wins: dict = {}
    for values in by_col.values():
        best = max(v for v, _ in values)
        if best <= 0:
            continue
        for v, label in values:
            if v == best:
                wins[label] = wins.get(label, 0) + 1
    counted = sum(1 for values in by_col.values() if max(v for v, _ in values) > 0)
    ranked = sorted(wins.items(), key=lambda kv: (-kv[1], kv[0]))
    def name(label: str) -> str:  # "DDS(Smoothed) | N = 1,000" -> "DDS(Smoothed) (N = 1,000)"
        method, *rest = label.split(" | ")
        return f"{method} ({', '.join(rest)})" if rest else method

    top = "; ".join(f"{name(label)} at {k}" for label, k in ranked[:3])
    return (f"With an equal budget of predictions per image (Table 6), the best certified accuracy per radius "
            f"(of {counted} radii with a nonzero best) is: {top}.")


def _interval_sentence(tables_dir: Path) -> str:
    """How wide the 95 % Clopper-Pearson interval of a shown accuracy is: the counts behind every number."""
    from scipy.stats import beta

    widest, n_images = 0.0, set()
    for table in IN_README:
        for c in _cells(tables_dir, table):
            if c["k"] and c["n"] and c["source"] == "computed":
                k, n = int(c["k"]), int(c["n"])
                lo = 0.0 if k == 0 else beta.ppf(0.025, k, n - k + 1)
                hi = 1.0 if k == n else beta.ppf(0.975, k + 1, n - k)
                widest = max(widest, 100 * (hi - lo) / 2)
                n_images.add(n)
    n = ", ".join(str(x) for x in sorted(n_images))
    return (f"Every accuracy above counts certified images among n = {n}: its 95 % Clopper–Pearson interval is up "
            f"to ±{widest:.1f} points wide, so differences of a few points between rows are within sampling noise. "
            "How much the numbers move with another seed (which retrains every model) was measured: see "
            "[docs/results/variation.md](docs/results/variation.md).")


def summary(tables_dir: Path) -> str:
    t1 = _cells(tables_dir, "table1")
    return "\n\n".join([
        "What this run shows (every number below is read from the tables of this run):",
        "- " + _figure3_sentence(_cells(tables_dir, "figure3")),
        "- " + _comparison_sentence(t1, "DiffSmooth(Gaussian)", "Gaussian (RS)",
                                    "DiffSmooth against plain Gaussian smoothing (Table 1)"),
        "- " + _comparison_sentence(t1, "DDS(Smoothed)", "DiffSmooth(Gaussian)",
                                    "Purification without local smoothing against DiffSmooth"),
        "- " + _comparison_sentence(t1, "SmoothAdv (RS)", "DiffSmooth(SmoothAdv)",
                                    "SmoothAdv without purification against DiffSmooth on SmoothAdv models"),
        "- " + _equal_budget_sentence(_cells(tables_dir, "table6")),
        _interval_sentence(tables_dir),
    ]).replace("\n\n- ", "\n- ")


def block(tables_dir: Path) -> str:
    body = "\n\n".join((tables_dir / f"{t}.md").read_text(encoding="utf-8").strip() for t in IN_README)
    return f"{START}\n{summary(tables_dir)}\n\n{body}\n\n![Figure 3 on digits](docs/results/figure3.png)\n{END}"


def main(tables_dir: Path, root: Path = ROOT) -> None:
    needed = [f"{t}.md" for t in SHOWN] + [f"{t}.cells.csv" for t in READ] + ["figure3.png"]
    missing = [name for name in needed if not (tables_dir / name).exists()]
    if missing:
        sys.exit(f"{tables_dir} lacks {', '.join(missing)}: run `make tables` first")
    readme_path = root / "README.md"
    readme = readme_path.read_text(encoding="utf-8")
    if readme.count(START) != 1 or readme.count(END) != 1 or readme.index(START) > readme.index(END):
        sys.exit(f"{readme_path} needs exactly one {START} ... {END} pair")
    text = block(tables_dir)  # every number read before anything is written
    from diffsmooth.rows import atomic_write_bytes, atomic_write_text

    out = root / "docs" / "results"
    for t in SHOWN:
        atomic_write_text(out / f"{t}.md", (tables_dir / f"{t}.md").read_text(encoding="utf-8"))
    atomic_write_bytes(out / "figure3.png", (tables_dir / "figure3.png").read_bytes())
    head, rest = readme.split(START, 1)
    atomic_write_text(readme_path, head + text + rest.split(END, 1)[1])
    print(f"{readme_path} and {out}/ updated from {tables_dir}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "results" / "tables" / "digits")
