"""Aggregate per-cell rows into the paper's table shapes and render them (Markdown, LaTeX, HTML, cell index).

Every computed number comes from per-image rows through `metrics`: certified accuracy in percent with
one decimal, ACR with three, "−" where a radius is beyond what the cell's N can certify, the best value
per column (within a block of rows) in bold, following the paper's own rule (`bold_positions`). Envelope
rows (Tables 1/2/6/7) show the per-radius maximum over their cells (`metrics.envelope_winners`) and
remember which cell won each radius, so an audit can follow it. Reported rows (MACER, Consistency, ... in
Tables 1/2) are the paper's own numbers (diffsmooth/paper_tables/), labelled "(reported)" and marked
`source = reported` in the cell index; they are never computed. Captions are derived from the cells'
own parameters (`title_of`), so a copied config cannot make them stale.
"""
from __future__ import annotations

import csv
import io
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

from . import document, metrics
from .grid import PAPER_DATASET_NAMES, Grid, TableSpec, cell_id, max_certifiable_radius
from .paths import Layout
from .rows import read_rows

DASH = "−"


@dataclass
class Value:
    """One rendered number and where it came from."""
    text: str  # as rendered, without bold
    number: float | None  # None for "−"
    cell: str | None = None  # the cell id it was read from (the winning one for envelopes)
    k: int | None = None  # images certified at this radius (None for ACR)
    n: int | None = None  # images in the cell
    candidates: list = field(default_factory=list)  # envelope: all cell ids compared
    source: str = "computed"  # or "reported": the paper's number, copied from diffsmooth/paper_tables/
    # or "imported": read from a cell whose rows came from a user's log (`imports:`), named here
    source_file: str = ""
    # or "imported": read from a cell whose rows came from a user's log (`imports:`), named here
    source_file: str = ""


@dataclass
class RenderedTable:
    spec: TableSpec
    header: list
    rows: list  # list of (labels list, values list of Value)
    bold: list  # list of sets of value-column indices in bold, per row
    caption: str = ""  # title_of(spec, ...): what the table shows, from its cells' parameters
    experiment: str = ""  # for the LaTeX label


class RowCache:
    def __init__(self, results: Path, experiment: str):
        self.results, self.experiment, self._rows = Path(results), experiment, {}

    def get(self, cell):
        cid = cell_id(cell)
        if cid not in self._rows:
            self._rows[cid] = read_rows(Layout(self.results, self.experiment).rows(cid))
        return self._rows[cid]


def _accuracy_value(cache, cell, r, rounding) -> Value:
    if r > radius_limit(cell):
        return Value(DASH, None, cell_id(cell))
    rows = cache.get(cell)
    k = metrics.certified_count(rows, r, rounding)
    return Value(f"{100 * k / len(rows):.1f}", round(100 * k / len(rows), 1), cell_id(cell), k, len(rows))


def candidate_values(cache: RowCache, cells, r: float, rounding: str) -> list:
    """Each cell's value at radius r, in config order, as compute_table computes it (what envelopes compare)."""
    return [_accuracy_value(cache, c, r, rounding) for c in cells]


def radius_limit(cell) -> float:
    """The largest radius column shown as a number for this cell (beyond it: "−")."""
    # a rendered radius r is certifiable when some row could reach it (3-digit rounding may lift it slightly)
    return max_certifiable_radius(cell) * (1 + 5e-3)


def paper_table_of(grid: Grid, spec: TableSpec) -> str | None:
    """The `paper:` entry of a table (e.g. "table04", "figure3"), or None."""
    return grid.config["tables"].get(spec.id, {}).get("paper")


def _reported_values(grid: Grid, spec: TableSpec, row) -> list:
    """A reported row's values: the paper's numbers at this table's columns ("−" where it has none)."""
    from . import paper

    df = paper.load_paper_table(paper_table_of(grid, spec))
    prow = paper.row(df, row.paper_row)
    values = []
    columns = (["acr"] if spec.show_acr else []) + [paper.radius_column(r) for r in spec.radii]
    for col in columns:
        x = prow.get(col)
        if x is None or (isinstance(x, float) and x != x):
            values.append(Value(DASH, None, source="reported"))
        else:
            x = float(x)
            values.append(Value(f"{x:.3f}" if col == "acr" else f"{x:.1f}", x, source="reported"))
    return values


def table_cells(spec: TableSpec) -> list:
    """The computed cells of a table, in row order, each once."""
    return list(dict.fromkeys(c for row in spec.rows for c in row.cells))


def compute_table(grid: Grid, spec: TableSpec, cache: RowCache) -> RenderedTable:
    rounding = grid.settings.rounding
    radius_cols = [f"{r:.2f}" for r in spec.radii]
    header = spec.key_columns + (["ACR"] if spec.show_acr else []) + radius_cols
    out_rows = []
    for row in spec.rows:
        labels = [row.labels.get(k, "") for k in spec.key_columns]
        if row.source == "reported":
            out_rows.append((labels, _reported_values(grid, spec, row)))
            continue
        values = []
        if spec.show_acr:
            if len(row.cells) == 1:
                rows = cache.get(row.cells[0])
                a = metrics.acr(rows)
                values.append(Value(f"{a:.3f}", round(a, 3), cell_id(row.cells[0]), None, len(rows)))
            else:
                values.append(Value(DASH, None))
        by_radius = [candidate_values(cache, row.cells, r, rounding) for r in spec.radii]
        curves = [list(curve) for curve in zip(*by_radius)]  # one per cell
        winners = metrics.envelope_winners([[v.number for v in curve] for curve in curves])
        candidates = [cell_id(c) for c in row.cells] if len(row.cells) > 1 else []
        for j, w in enumerate(winners):  # the first cell (config order) wins ties
            best = Value(DASH, None) if w is None else curves[w][j]
            values.append(Value(best.text, best.number, best.cell, best.k, best.n, candidates))
        out_rows.append((labels, values))
    for _, values in out_rows:  # values read from an imported cell name the log they came from
        for v in values:
            if v.cell in grid.imported:
                v.source, v.source_file = "imported", grid.imported[v.cell].log
    caption = title_of(spec, table_cells(spec), paper_table_of(grid, spec))
    return RenderedTable(spec, header, out_rows, _bold(spec, out_rows), caption, grid.experiment)


def _mark_imported(grid: Grid, v: Value) -> Value:
    """A value read from an imported cell names the log its rows came from."""
    entry = getattr(grid, "imported", {}).get(v.cell) if v.cell else None
    if entry is not None:
        v.source, v.source_file = "imported", str(entry.log)
    return v


# Rows compared for bold: the paper bolds per (method, sigma) block in Tables 4/5/8, per method in 11/12.
BLOCK_COLUMNS = {"diffsmooth": ("Architecture", "Method", "σ"), "diffsmooth_noshift": ("Architecture", "Method", "σ"),
                 "rs": ("Architecture", "Method"), "m_ladder": ("Model", "σ", "σ'")}


def block_columns(spec: TableSpec) -> tuple:
    return BLOCK_COLUMNS.get(spec.kind, ("Architecture",))


def block_key(spec: TableSpec, labels) -> tuple:
    keys = dict(zip(spec.key_columns, labels))
    return tuple(keys.get(c) for c in block_columns(spec))


def bold_positions(numbers: list, blocks: list) -> list:
    """The paper's bold rule: per block of rows and column, the largest value is bold (every row that ties
    for it), provided the block has at least two rows and the value is above 0: a 0.0 is never bold, even
    where a whole column ties at 0.0. `numbers`: one list per row (None where "−"); `blocks`: one key per row.
    Applied to the paper's own numbers it gives the paper's bold markers of Tables 1-4, 8, 11, 12 exactly
    (tests/test_tables_render.py), Tables 5-7 with the slips listed there."""
    members: dict = {}
    for i, key in enumerate(blocks):
        members.setdefault(key, []).append(i)
    bold = [set() for _ in numbers]
    for rows in members.values():
        if len(rows) < 2:
            continue
        for j in range(len(numbers[rows[0]])):
            nums = [numbers[i][j] for i in rows if numbers[i][j] is not None]
            if not nums or max(nums) <= 0:
                continue
            for i in rows:
                if numbers[i][j] == max(nums):
                    bold[i].add(j)
    return bold


def _bold(spec, out_rows) -> list:
    return bold_positions([[v.number for v in values] for _, values in out_rows],
                          [block_key(spec, labels) for labels, _ in out_rows])


# ---------------------------------------------------------------- captions

def _eq(name: str, values, fmt) -> str:
    """"N = 1,000" for one value, "N ∈ {500, 1,000}" for several."""
    values = sorted(set(values))
    if len(values) == 1:
        return f"{name} = {fmt(values[0])}"
    return f"{name} ∈ {{" + ", ".join(fmt(v) for v in values) + "}"


def _sigma(x: float) -> str:
    return f"{x:.2f}"


def _shift_text(cells) -> str | None:
    """Local-noise shift of DiffSmooth cells: "σ' + 0.03", or per σ: "σ' + 0.01 (σ = 0.25), + 0.02 (σ = 0.50)"."""
    by_sigma: dict = {}
    for c in cells:
        if c.method == "diffsmooth":
            by_sigma.setdefault(round(c.shift, 6), set()).add(c.sigma)
    by_sigma.pop(0.0, None)
    if not by_sigma:
        return None
    if len(by_sigma) == 1:
        return f"local noise σ' + {_sigma(next(iter(by_sigma)))}"
    parts = [f"+ {_sigma(shift)} (σ = {', '.join(_sigma(s) for s in sorted(sigmas))})"
             for shift, sigmas in sorted(by_sigma.items(), key=lambda kv: min(kv[1]))]
    return "local noise σ' " + ", ".join(parts)


def _paper_ref(paper: str | None) -> str:
    match = re.fullmatch(r"(table|figure)\s*0*(\d+)", (paper or "").strip().lower())
    return f" Layout of the paper's {match.group(1).title()} {match.group(2)}." if match else ""


def title_of(spec: TableSpec, cells=None, paper: str | None = None) -> str:
    """What a table shows, from its kind and its cells' own parameters (dataset, σ, σ', m, N, shift, α),
    plus the paper's table it lays out and the config's optional `title:` as extra text."""
    cells = table_cells(spec) if cells is None else list(cells)
    datasets = sorted({c.dataset for c in cells})
    ds = ", ".join(PAPER_DATASET_NAMES.get(d, d) for d in datasets) or "no cells"
    sigmas = _eq("σ", [c.sigma for c in cells], _sigma) if cells else "σ"
    local = [c for c in cells if c.method in ("diffsmooth", "local")]
    heads = {
        "envelope": f"Certified accuracy on {ds}: per-radius best over {sigmas} (and σ')",
        "diffsmooth": f"DiffSmooth on {ds} per σ and σ'",
        "diffsmooth_noshift": f"DiffSmooth on {ds} per σ and σ', without the σ' shift",
        "rs": f"Randomized smoothing without purification on {ds}, per σ",
        "local_only": f"Local smoothing without diffusion purification on {ds}, {sigmas}",
        "m_ladder": f"DiffSmooth on {ds} by the number m of local draws",
        "equal_budget": f"{ds} at an equal budget of predictions per image, "
                        f"{_eq('N × m', [c.N * max(c.m, 1) for c in cells], lambda v: f'{v:,}')}",
    }
    if spec.kind not in heads:
        raise ValueError(f"{spec.id}: no caption for table kind {spec.kind!r}")
    params = []
    if cells:
        params.append(_eq("N", [c.N for c in cells], lambda v: f"{v:,}"))
    if local:
        params.append(_eq("m", [c.m for c in local], str))
    shift = _shift_text(cells)
    if shift and spec.kind != "diffsmooth_noshift":
        params.append(shift)
    if cells:
        params.append(_eq("α", [c.alpha for c in cells], lambda v: f"{v:g}"))
    text = heads[spec.kind] + (f" ({', '.join(params)})" if params else "") + "." + _paper_ref(paper)
    text = text[0].upper() + text[1:]  # a caption is a sentence, even when it starts with "digits"
    return text + (f" {spec.title.strip()}" if spec.title and spec.title.strip() else "")


REPORTED_NOTE = ("Rows marked (reported) show the paper's own numbers (diffsmooth/paper_tables/), "
                 "copied for comparison; this pipeline does not compute them.")
DASH_NOTE = f"{DASH}: a radius beyond what the cell's N samples can certify at its α."
BOLD_NOTE = "Bold: the best value of its column within a block of rows (a 0.0 is never bold), as in the paper."


def _has_reported(t: RenderedTable) -> bool:
    return any(v.source == "reported" for _, values in t.rows for v in values)


def notes(t: RenderedTable) -> list:
    """The notes under a table, in every format."""
    nkeys = len(t.spec.key_columns)
    radii = t.header[nkeys + (1 if t.spec.show_acr else 0):]
    out = [f"Columns {radii[0]} … {radii[-1]}: certified accuracy (%) at that ℓ2 radius"
           + ("; ACR: average certified radius." if t.spec.show_acr else ".")] if radii else []
    if any(b for b in t.bold):
        out.append(BOLD_NOTE)
    if any(v.text == DASH and v.source != "reported" for _, values in t.rows for v in values):
        out.append(DASH_NOTE)
    if _has_reported(t):
        out.append(REPORTED_NOTE)
    logs = sorted({v.source_file for _, values in t.rows for v in values if v.source == "imported"})
    if logs:
        out.append(f"Values of {len(logs)} cell(s) are imported from certification logs ({', '.join(logs)}; "
                   f"per value: {t.spec.id}.cells.csv, column source_file).")
    return out


def table_document(t: RenderedTable) -> document.Document:
    doc = document.Document(t.spec.id)
    doc.paragraph(("b", t.spec.id), f": {t.caption or t.spec.title}")
    body = [labels + [("b", v.text) if j in bold else v.text for j, v in enumerate(values)]
            for (labels, values), bold in zip(t.rows, t.bold)]
    nkeys = len(t.spec.key_columns)
    doc.table(t.header, body, ["left"] * nkeys + ["right"] * (len(t.header) - nkeys))
    for note in notes(t):
        doc.paragraph(note)
    return doc


def to_markdown(t: RenderedTable) -> str:
    return document.to_markdown(table_document(t))


def to_html(t: RenderedTable) -> str:
    return document.to_html(table_document(t))


# ---------------------------------------------------------------- LaTeX

_LATEX_SPECIALS = {"\\": r"\textbackslash{}", "{": r"\{", "}": r"\}", "$": r"\$", "&": r"\&", "#": r"\#",
                   "^": r"\textasciicircum{}", "_": r"\_", "~": r"\textasciitilde{}", "%": r"\%",
                   "<": r"\textless{}", ">": r"\textgreater{}", "|": r"\textbar{}"}
_GREEK = ("alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho sigma tau "
          "upsilon phi chi psi omega").split()
_LATEX_MATH = {"ℓ": r"\ell", "−": "-", "×": r"\times", "·": r"\cdot", "≤": r"\leq", "≥": r"\geq",
               "±": r"\pm", "∈": r"\in", "≈": r"\approx", "∞": r"\infty", "ς": r"\varsigma"}
_LATEX_TEXT = {"…": r"\dots{}", "–": "--", "—": "---", "’": "'", "‘": "`", "“": "``", "”": "''",
               "\u00a0": "~"}


def _math_symbol(ch: str) -> str | None:
    if ch in _LATEX_MATH:
        return _LATEX_MATH[ch]
    name = unicodedata.name(ch, "").replace("LAMDA", "LAMBDA")
    for case, fmt in (("GREEK SMALL LETTER ", str.lower), ("GREEK CAPITAL LETTER ", str.title)):
        if name.startswith(case) and name[len(case):].lower() in _GREEK:
            letter = name[len(case):].lower()
            if letter == "omicron":
                return "o" if case.startswith("GREEK SMALL") else "O"
            if case.startswith("GREEK CAPITAL") and letter.title() not in (
                    "Gamma", "Delta", "Theta", "Lambda", "Xi", "Pi", "Sigma", "Upsilon", "Phi", "Psi", "Omega"):
                return {"alpha": "A", "beta": "B", "epsilon": "E", "zeta": "Z", "eta": "H", "iota": "I",
                        "kappa": "K", "mu": "M", "nu": "N", "rho": "P", "tau": "T", "chi": "X"}[letter]
            return "\\" + fmt(letter)
    return None


def latex_escape(text: str) -> str:
    """Any label as LaTeX text: the ten specials (and < > |) escaped, Greek letters, ℓ, −, × ... in math mode
    (a following ' or ′ stays in it: σ' -> $\\sigma'$), accented Latin letters as they are (pdflatex reads
    UTF-8). Other characters raise ValueError naming them, rather than writing LaTeX that fails to compile."""
    out, i = [], 0
    while i < len(text):
        ch = text[i]
        sym = _math_symbol(ch)
        if sym is not None:
            run = []  # one $...$ for a run of symbols, with the primes and ℓ's subscript digits that follow
            while i < len(text) and (sym := _math_symbol(text[i])) is not None:
                if run and run[-1][-1].isalpha() and run[-1].startswith("\\") and sym[0].isalpha():
                    run.append(" ")  # \times a, not \timesa
                run.append(sym)
                i += 1
                if sym == r"\ell" and i < len(text) and text[i].isdigit():
                    j = i
                    while j < len(text) and text[j].isdigit():
                        j += 1
                    run.append("_{" + text[i:j] + "}")
                    i = j
                while i < len(text) and text[i] in "'′":
                    run.append("'")
                    i += 1
            out.append("$" + "".join(run) + "$")
            continue
        if ch in _LATEX_SPECIALS:
            out.append(_LATEX_SPECIALS[ch])
        elif ch in _LATEX_TEXT:
            out.append(_LATEX_TEXT[ch])
        elif ch.isascii():
            out.append(ch)
        elif unicodedata.category(ch).startswith("L") and "LATIN" in unicodedata.name(ch, ""):
            out.append(ch)
        else:
            raise ValueError(f"cannot write {ch!r} (U+{ord(ch):04X}, {unicodedata.name(ch, 'unnamed')}) in a "
                             f"LaTeX table label {text!r}: use ASCII or add it to diffsmooth.tables._LATEX_MATH")
        i += 1
    return "".join(out)


def latex_label(t: RenderedTable) -> str:
    return "tab:" + re.sub(r"[^A-Za-z0-9.-]+", "-", f"{t.experiment}-{t.spec.id}" if t.experiment else t.spec.id)


def to_latex(t: RenderedTable) -> str:
    """A booktabs `table` float to \\input{} (needs \\usepackage{booktabs}): caption, label, a header naming
    the radius and the unit over the radius columns, bold as in the paper, the notes under the tabular."""
    nkeys = len(t.spec.key_columns)
    nvalues = len(t.header) - nkeys
    nradii = len(t.spec.radii)
    first = nkeys + nvalues - nradii + 1  # first radius column, 1-based
    cols = "l" * nkeys + "r" * nvalues
    top = [latex_escape(h) for h in t.header[:first - 1]] + (
        [r"\multicolumn{%d}{c}{Certified accuracy (\%%) at $\ell_2$ radius $r$}" % nradii] if nradii else [])
    lines = [f"% {t.spec.id} ({t.experiment or 'experiment'}): written by diffsmooth from per-image rows; "
             f"every number's source is in {t.spec.id}.cells.csv. Needs \\usepackage{{booktabs}}.",
             r"\begin{table}[tbp]", r"\centering",
             r"\caption{" + latex_escape(t.caption or t.spec.title or t.spec.id) + "}",
             r"\label{" + latex_label(t) + "}",
             r"\begin{tabular}{" + cols + "}", r"\toprule", " & ".join(top) + r" \\"]
    if nradii:
        lines.append(r"\cmidrule(lr){%d-%d}" % (first, first + nradii - 1))
        lines.append(" & " * (first - 1) + " & ".join(latex_escape(h) for h in t.header[first - 1:]) + r" \\")
    lines.append(r"\midrule")
    for (labels, values), bold in zip(t.rows, t.bold):
        cells = [latex_escape(x) for x in labels] + [
            ("--" if v.text == DASH else (r"\textbf{" + latex_escape(v.text) + "}" if j in bold
                                          else latex_escape(v.text))) for j, v in enumerate(values)]
        lines.append(" & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    # the "−" note names what the LaTeX shows for it
    note_lines = ["--" + latex_escape(n[1:]) if n.startswith(DASH) else latex_escape(n) for n in notes(t)]
    if note_lines:
        lines += [r"\par\smallskip", r"{\footnotesize " + r" \\ ".join(note_lines) + r"\par}"]
    lines.append(r"\end{table}")
    return "\n".join(lines) + "\n"


def cell_index(t: RenderedTable, rounding: str) -> str:
    """Machine-readable map (table, row, column) -> value and the cell that produced it."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["table", "row", "row_label", "column", "value", "source", "cell_id", "k", "n", "rounding",
                "envelope_candidates", "source_file"])
    nkeys = len(t.spec.key_columns)
    for i, (labels, values) in enumerate(t.rows, start=1):
        for j, v in enumerate(values):
            col = t.header[nkeys + j]
            w.writerow([t.spec.id, i, " | ".join(x for x in labels if x), col, v.text, v.source,
                        v.cell or "", "" if v.k is None else v.k, "" if v.n is None else v.n,
                        "" if col == "ACR" or v.source == "reported" else rounding, ";".join(v.candidates),
                        v.source_file])
    return buf.getvalue()


def renderings(t: RenderedTable, rounding: str) -> dict:
    """Every text file written for a table, suffix -> text (`diffsmooth audit` re-renders them to check the files)."""
    return {".md": to_markdown(t), ".tex": to_latex(t), ".cells.csv": cell_index(t, rounding), ".html": to_html(t)}
