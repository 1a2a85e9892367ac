"""Bring your own certification logs: a Cohen-format TSV (`certify.py` of locuslab/smoothing, also written by
DiffSmooth's and SmoothAdv's scripts) or a rows file of this pipeline becomes a cell of the experiment.

The config's `imports:` entries declare each log's parameters (method, classifier, sigma, [sigma', shift, m],
N, n0, alpha); with the config's dataset, seed and local-noise mode they name a cell, which must be a cell
of the experiment's tables. Importing parses the log, checks every line (radius within what N and alpha
can certify, correct == (predict == label), abstentions at radius 0, no repeated idx; for this pipeline's
format also pA_lower against nA and n, and the radius against pA_lower), keeps the configured images (in
the config's order; a configured image the log lacks is an error naming it) and writes the cell's rows.tsv
(nA, n and pA_lower empty where the log lacks them) and meta.json (`meta["imported"]`: source, sha256,
format, ...) atomically. Tables then read the cell like a computed one. Plain Python plus scipy: the
workflow builds the grid, and so validates the entries, without importing torch.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

from .cell import Cell, cell_id
from .paths import META, ROWS
from .rows import COLUMNS, HEADER, atomic_write_json, atomic_write_text, sha256_file
from .statistics import ABSTAIN, max_radius, round_sig

COHEN_COLUMNS = ("idx", "label", "predict", "radius", "correct", "time")
FORMATS = {"cohen": COHEN_COLUMNS, "diffsmooth": COLUMNS}
DECLARED = ("method", "classifier", "sigma", "sigma_local", "shift", "m", "N", "n0", "alpha")
_TIMEDELTA = re.compile(r"^(?:(?P<days>-?\d+) days?, )?(?P<h>\d+):(?P<m>\d{2}):(?P<s>\d{2}(?:\.\d+)?)$")
# Relative slack on float round-off when comparing a radius with N's maximum or with sigma * Phi^-1(pA_lower).
_REL = 1e-9


class LogImportError(ValueError):
    """A log that cannot become a cell; the message names the file, the line and column, and the fix."""


@dataclass(frozen=True)
class ImportEntry:
    """One `imports:` entry of the config, resolved to the cell it fills."""
    index: int  # position in `imports:` (for messages)
    log: str  # the log's path as written in the config (relative to the directory the workflow runs in)
    cell: Cell
    source: str = ""  # free text: where the log came from (URL, repository path)

    @property
    def id(self) -> str:
        return cell_id(self.cell)

    def where(self) -> str:
        return f"imports[{self.index}] (log {self.log})"


# ------------------------------------------------------------------------------------------------------
# Config: entries -> cells of the grid


def entry_cell(config: dict, entry: dict) -> Cell:
    """The cell an `imports:` entry declares: its parameters with the config's dataset, seed and local-noise mode."""
    declared = {k: entry[k] for k in DECLARED if k in entry}
    return Cell(dataset=config["dataset"]["name"], seed=config["seed"],
                local_noise=config["certify"]["local_noise"], **declared)


def _differences(a: Cell, b: Cell) -> list:
    return [f"{k}={getattr(b, k)!r}" for k in DECLARED if getattr(a, k) != getattr(b, k)]


def imported_cells(config: dict, cells, source: str = "config") -> dict:
    """cell id -> ImportEntry for the config's `imports:`; ConfigError when an entry names no cell of the grid."""
    from .config import ConfigError

    out: dict = {}
    ids = {cell_id(c): c for c in cells}
    for i, raw in enumerate(config.get("imports") or []):
        where = f"{source}: imports[{i}] (log {raw.get('log')!r})"
        try:
            cell = entry_cell(config, raw)
        except ValueError as e:
            raise ConfigError(f"{where}: {e}") from None
        cid = cell_id(cell)
        if cid not in ids:
            near = sorted(cells, key=lambda c: (len(_differences(cell, c)), cell_id(c)))[:3]
            hint = "; ".join(f"{cell_id(c)} (there: {', '.join(_differences(cell, c))})" for c in near)
            raise ConfigError(f"{where}: declares cell {cid}, which no table of the experiment shows; nearest cells: "
                              f"{hint or 'none (the experiment has no cells)'}. Fix the entry's parameters to match "
                              "the log and one of these cells, or add the model/table that shows it")
        if cid in out:
            raise ConfigError(f"{where}: cell {cid} is already imported by {out[cid].where()}: "
                              "remove one of the two entries")
        out[cid] = ImportEntry(i, str(raw["log"]), cell, str(raw.get("source", "")))
    return out


# ------------------------------------------------------------------------------------------------------
# Parsing and checks


@dataclass
class ParsedLog:
    path: Path
    format: str  # "cohen" or "diffsmooth"
    rows: list  # dicts in our columns (nA, n, pA_lower None for Cohen's format), file order
    lines: dict  # idx -> line number in the file
    time_formats: set  # "timedelta" and/or "seconds"


def _fail(path, lineno, column, message, fix) -> LogImportError:
    col = f", column {column}" if column else ""
    return LogImportError(f"{path}:{lineno}{col}: {message}; {fix}")


def _seconds(text: str):
    """Cohen's `time` field: str(timedelta) ('0:02:31.238689', '1 day, 0:00:01') or float seconds (old logs)."""
    m = _TIMEDELTA.match(text)
    if m:
        return ("timedelta", int(m["days"] or 0) * 86400 + int(m["h"]) * 3600 + int(m["m"]) * 60 + float(m["s"]))
    value = float(text)  # ValueError for neither
    if not math.isfinite(value) or value < 0:
        raise ValueError(text)
    return "seconds", value


def parse_log(path) -> ParsedLog:
    """Read a log of either format; errors name the line and column. No check of the declared parameters."""
    path = Path(path)
    if not path.is_file():
        raise LogImportError(f"{path}: no such log file: place the log there, or fix `log:` of its `imports:` entry "
                             "(relative paths are relative to the directory the workflow runs in)")
    try:
        text = path.read_text()
    except UnicodeDecodeError:
        raise LogImportError(f"{path}: not a text file: point `log:` at the TSV that certify.py wrote") from None
    lines = text.replace("\r\n", "\n").split("\n")
    while lines and not lines[-1].strip():  # the final newline, and blank lines an editor may have added
        lines.pop()
    header = tuple(lines[0].rstrip().split("\t")) if lines else ()
    fmt = next((name for name, cols in FORMATS.items() if header == cols), None)
    if fmt is None:
        expected = " or ".join(f"{name}: {' '.join(cols)!r}" for name, cols in FORMATS.items())
        raise _fail(path, 1, None, f"header is {lines[0] if lines else '<empty file>'!r}, expected ({expected})",
                    "import a log written by certify.py (Cohen et al., DiffSmooth) or a rows.tsv of this pipeline")
    columns = FORMATS[fmt]
    rows, where, time_formats = [], {}, set()
    for lineno, line in enumerate(lines[1:], start=2):
        fields = line.rstrip("\r").split("\t")
        if len(fields) != len(columns):
            raise _fail(path, lineno, None, f"{len(fields)} fields, expected {len(columns)} ({' '.join(columns)}): "
                        f"{line!r}", "the log is damaged or cut short: restore it from its source")
        row = dict.fromkeys(COLUMNS)
        for name, value in zip(columns, fields):
            try:
                if name == "time" and fmt == "cohen":
                    kind, row[name] = _seconds(value)
                    time_formats.add(kind)
                elif name in ("nA", "n", "pA_lower") and value == "":
                    row[name] = None  # a re-imported imported cell
                elif name in ("radius", "time", "pA_lower"):
                    row[name] = float(value)
                    if not math.isfinite(row[name]):
                        raise ValueError(value)
                else:
                    row[name] = int(value)
            except ValueError:
                what = ("a duration (H:MM:SS.ffffff) or seconds" if name == "time" and fmt == "cohen"
                        else "a finite number" if name in ("radius", "time", "pA_lower") else "an integer")
                raise _fail(path, lineno, name, f"{value!r} is not {what}",
                            "the log is damaged: restore it from its source") from None
        if row["idx"] in where:
            raise _fail(path, lineno, "idx", f"image {row['idx']} repeats line {where[row['idx']]}",
                        "keep one line per image (a log appended to by two runs?)")
        where[row["idx"]] = lineno
        rows.append(row)
    return ParsedLog(path, fmt, rows, where, time_formats)


def check_rows(log: ParsedLog, cell: Cell) -> list:
    """Every line against the declared cell; returns the names of the checks run. Raises at the first failure."""
    from scipy.stats import beta, norm

    path, fix_decl = log.path, "fix the declared N, alpha or sigma of its `imports:` entry, or the log"
    limit = max_radius(cell.N, cell.alpha, cell.sigma)
    # the printed radius of Cohen's format is round_sig(true radius) <= round_sig(limit): rounding is monotone
    allowed = max(limit, round_sig(limit)) * (1 + _REL)
    checks = ["idx unique", "label >= 0, predict >= -1", "correct == (predict == label)", "abstention: radius 0",
              f"radius <= {allowed:.6g} (N={cell.N}, alpha={cell.alpha:g}, sigma={cell.sigma:g})"]
    for row in log.rows:
        ln = log.lines[row["idx"]]
        if row["idx"] < 0:
            raise _fail(path, ln, "idx", f"{row['idx']} is negative", "the log is damaged: restore it")
        if row["label"] < 0:
            raise _fail(path, ln, "label", f"{row['label']} is negative", "the log is damaged: restore it")
        if row["predict"] < ABSTAIN:
            raise _fail(path, ln, "predict", f"{row['predict']} is below -1 (the abstention)",
                        "the log is damaged: restore it")
        expect = int(row["predict"] == row["label"])
        if row["correct"] != expect:
            raise _fail(path, ln, "correct", f"{row['correct']}, but predict {row['predict']} "
                        f"{'==' if expect else '!='} label {row['label']} (certify.py writes int(predict == label))",
                        "the log is damaged or was edited: restore it")
        if row["predict"] == ABSTAIN and row["radius"] != 0:
            raise _fail(path, ln, "radius", f"{row['radius']!r} for an abstention (predict -1); certify.py writes 0.0",
                        "the log is damaged or was edited: restore it")
        if not 0 <= row["radius"] <= allowed:
            raise _fail(path, ln, "radius", f"{row['radius']!r} is outside [0, {allowed:.6g}], the radii N={cell.N} "
                        f"samples can certify at alpha={cell.alpha:g}, sigma={cell.sigma:g}"
                        + _needed(row["radius"], cell, log.format), fix_decl)
        if row["time"] < 0:
            raise _fail(path, ln, "time", f"{row['time']!r} is negative", "the log is damaged: restore it")
    if log.format == "diffsmooth":
        checks += _check_counts(log, cell, beta, norm)
    return checks


def _needed(radius: float, cell: Cell, fmt: str) -> str:
    """What a radius above N's maximum needs: the alpha at the declared N, or the N at the declared alpha."""
    from scipy.stats import norm

    low = radius
    if fmt == "cohen":  # the smallest true radius that prints as this one
        exponent = math.floor(math.log10(radius)) - 2
        low = radius - 0.5 * 10 ** exponent
    p = float(norm.cdf(low / cell.sigma))  # alpha^(1/N) >= p is what certifying `low` takes
    if not 0 < p < 1:
        return ""
    alpha, n = p ** cell.N, math.log(cell.alpha) / math.log(p)
    return (f" (it takes alpha >= {alpha:.2g} at N={cell.N}, or N >= {math.ceil(n):,} at alpha={cell.alpha:g}; "
            "Cohen et al.'s released CIFAR-10 logs need alpha=0.01 at N=100000: docs/import.md)")


def _check_counts(log: ParsedLog, cell: Cell, beta, norm) -> list:
    """This pipeline's format carries nA, n and pA_lower: re-derive pA_lower and the radius from them."""
    path = log.path
    for row in log.rows:
        ln = log.lines[row["idx"]]
        if row["n"] is None:  # imported from a Cohen-format log before: nothing more to re-derive
            if row["nA"] is not None or row["pA_lower"] is not None:
                raise _fail(path, ln, "n", "empty while nA or pA_lower is given", "the file is damaged: restore it")
            continue
        if row["nA"] is None or row["pA_lower"] is None:
            raise _fail(path, ln, "nA" if row["nA"] is None else "pA_lower", "empty while n is given",
                        "the file is damaged: restore it")
        if row["n"] != cell.N:
            raise _fail(path, ln, "n", f"{row['n']} samples, but the entry declares N={cell.N}",
                        "fix `N:` of its `imports:` entry")
        if not 0 <= row["nA"] <= row["n"]:
            raise _fail(path, ln, "nA", f"{row['nA']} is outside [0, n={row['n']}]", "the file is damaged: restore it")
        want = 0.0 if row["nA"] == 0 else float(beta.ppf(cell.alpha, row["nA"], row["n"] - row["nA"] + 1))
        if not math.isclose(row["pA_lower"], want, rel_tol=1e-6, abs_tol=1e-12):
            raise _fail(path, ln, "pA_lower", f"{row['pA_lower']!r}, but the Clopper-Pearson bound of nA={row['nA']} "
                        f"of n={row['n']} at alpha={cell.alpha:g} is {want!r}",
                        "fix `alpha:` of its `imports:` entry, or restore the file")
        abstain = row["pA_lower"] < 0.5
        if abstain != (row["predict"] == ABSTAIN):
            raise _fail(path, ln, "predict", f"{row['predict']} with pA_lower={row['pA_lower']!r}: CERTIFY abstains "
                        "exactly when pA_lower < 0.5", "the file is damaged: restore it")
        if not abstain:
            radius = cell.sigma * float(norm.ppf(row["pA_lower"]))
            if not math.isclose(row["radius"], radius, rel_tol=1e-6, abs_tol=1e-9):
                raise _fail(path, ln, "radius", f"{row['radius']!r}, but sigma * Phi^-1(pA_lower) = {radius!r} at "
                            f"the declared sigma={cell.sigma:g}", "fix `sigma:` of its `imports:` entry")
    return ["n == N", "pA_lower == Clopper-Pearson(nA, n, alpha)", "abstain iff pA_lower < 0.5",
            "radius == sigma * Phi^-1(pA_lower)"]


def select(log: ParsedLog, images: list, selection: str) -> list:
    """The log's rows of the configured images, in their order; an image the log lacks is an error naming it."""
    by_idx = {row["idx"]: row for row in log.rows}
    missing = [i for i in images if i not in by_idx]
    if missing:
        shown = ", ".join(map(str, missing[:20])) + (f", ... ({len(missing)} in all)" if len(missing) > 20 else "")
        raise LogImportError(f"{log.path}: {len(missing)} of the {len(images)} configured images are not in the log "
                             f"(idx {shown}); `dataset.images` selects {selection}: import a log that certifies them, "
                           "or narrow `dataset.images` to the images the log holds")
    return [by_idx[i] for i in images]


# ------------------------------------------------------------------------------------------------------
# Writing the cell


def _field(value, kind) -> str:
    if value is None:
        return ""
    return f"{float(value)!r}" if kind == "float" else f"{int(value)}"


def rows_text(rows: list) -> str:
    """Rows in our columns: radius and pA_lower at full precision (the log's digits), time in seconds."""
    kinds = {"radius": "float", "pA_lower": "float"}
    out = [HEADER]
    for r in rows:
        fields = [f"{float(r['time']):.6f}" if c == "time" else _field(r[c], kinds.get(c, "int")) for c in COLUMNS]
        out.append("\t".join(fields) + "\n")
    return "".join(out)


def _selection(config: dict) -> str:
    sel = config["dataset"]["images"]
    return f"idx {sel['start']}, {sel['start'] + sel['skip']}, ... < {sel['stop']}"


def prepare_import(grid, entry: ImportEntry) -> tuple[str, dict]:
    """Parse, check and select one configured log; returns (rows text, meta). Writes nothing."""
    log = parse_log(entry.log)
    checks = check_rows(log, entry.cell)
    images = grid.images()
    rows = select(log, images, _selection(grid.config))
    meta = {
        "cell_id": entry.id, "cell": entry.cell.to_dict(), "experiment": grid.experiment,
        "images": images, "rounding_default": grid.settings.rounding,
        "imported": {
            "source": entry.log, "source_resolved": str(Path(entry.log).resolve()), "sha256": sha256_file(log.path),
            "format": log.format, "time_format": "+".join(sorted(log.time_formats)) or "seconds",
            "lines": len(log.rows), "selected": len(rows), "dropped": len(log.rows) - len(rows),
            "origin": entry.source, "entry": entry.index,
            "declared": {"dataset": entry.cell.dataset, **{k: getattr(entry.cell, k) for k in DECLARED}},
            "checks": checks,
            # what an audit cannot do for these rows: the noise draws and the model are not ours
            "recertifiable": False,
            "radius_digits": 3 if log.format == "cohen" else None,
        },
    }
    return rows_text(rows), meta


def write_cell(results, experiment: str, cell_or_id, text: str, meta: dict) -> Path:
    """Atomically write rows.tsv then meta.json of a cell under results/ (paths.Layout)."""
    from .paths import Layout, contained

    layout = Layout(results, experiment)
    rows_path = contained(layout.rows(cell_or_id), results)
    atomic_write_text(rows_path, text)
    atomic_write_json(contained(layout.meta(cell_or_id), results), meta)
    return rows_path


def import_cells(grid, results="results", only: str | None = None) -> list:
    """Import every configured log (or the one of cell `only`): all are checked before the first is written."""
    if only is not None and only not in grid.imported:
        listed = ", ".join(grid.imported) or "none (the config has no `imports:`)"
        raise LogImportError(f"cell {only!r} is not imported by the config: its imported cells are {listed}")
    entries = [grid.imported[only]] if only else list(grid.imported.values())
    prepared = []
    for entry in entries:
        try:
            prepared.append((entry, *prepare_import(grid, entry)))
        except LogImportError as e:
            raise LogImportError(f"imports[{entry.index}]: {e}") from None
    return [write_cell(results, grid.experiment, entry.id, text, meta) for entry, text, meta in prepared]


def check_imported_cells(grid, results="results") -> None:
    """Before tables are rendered: each imported cell was imported, from the log the config names now."""
    import json

    from .paths import Layout

    layout = Layout(results, grid.experiment)
    for cid, entry in grid.imported.items():
        fix = f"run `diffsmooth import --configfile <config> --cell {cid}` (or let Snakemake run import_cell)"
        meta_path = layout.meta(cid)
        if not layout.rows(cid).exists() or not meta_path.exists():
            raise LogImportError(f"{layout.rows(cid)}: imported cell not imported yet (log {entry.log}): {fix}")
        try:
            meta = json.loads(meta_path.read_text())
        except json.JSONDecodeError:
            raise LogImportError(f"{meta_path}: not valid JSON: delete it and {fix}") from None
        info = meta.get("imported") or {}
        if not info:
            raise LogImportError(f"{meta_path}: the cell holds computed rows, but the config imports it from "
                                 f"{entry.log}: {fix}")
        changed = Path(entry.log).is_file() and sha256_file(entry.log) != info.get("sha256")
        if info.get("source") != entry.log or changed:  # a log that is gone leaves the imported rows standing
            raise LogImportError(f"{meta_path}: imported from {info.get('source')} "
                                 f"(sha256 {info.get('sha256', '')[:12]}), but the config now names {entry.log} "
                                 f"with other contents: {fix}")


def import_log_to(grid, log, out, declared: dict) -> Path:
    """A log not in the config (`diffsmooth import --log FILE --out DIR --method ... --alpha ...`): checked
    like an `imports:` entry and written to `out`, not into the results tree. Returns the rows file."""
    need = [f"--{k}" for k in ("method", "classifier", "sigma", "N", "n0", "alpha") if declared.get(k) is None]
    if not out or need:
        raise LogImportError(f"--log {log} needs --out DIR and the parameters the log was made with "
                             f"(missing: {', '.join(need + ([] if out else ['--out']))})")
    entry = ImportEntry(-1, log, entry_cell(grid.config, declared))
    text, meta = prepare_import(grid, entry)
    out = Path(out)
    atomic_write_text(out / ROWS, text)
    atomic_write_json(out / META, meta)
    info = meta["imported"]
    print(f"{entry.log}: {info['format']} format, {info['lines']} lines, {info['selected']} configured images "
          f"kept ({info['dropped']} outside dataset.images dropped); cell {entry.id}")
    return out / ROWS
