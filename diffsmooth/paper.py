"""The DiffSmooth paper's reported numbers (Tables 1-12) as data.

The transcriptions ship as package data, ``diffsmooth/paper_tables/tableNN.csv`` (see the README.md
there for the columns and every fix made to rows that the PDF text had misaligned), read through
``importlib.resources`` so an installed wheel finds them. This module only loads them:

    >>> df = load_paper_table(4)                     # DiffSmooth on CIFAR-10, the sigma/sigma' grid
    >>> radius_columns(df)                            # [0.0, 0.25, ..., 2.25]
    >>> curve(df.iloc[0])                             # that row's certified accuracies, radius order

Certified accuracies are in percent, exactly as printed. Cells printed as "-" are NaN.
"""
from __future__ import annotations

import re

import pandas as pd

from .resources import resource, resource_names

PAPER_TABLES = "paper_tables"  # package folder of the transcriptions

# Tables with certified-accuracy curves, and the hyper-parameter tables of Appendix B.1.
ACCURACY_TABLES = (1, 2, 3, 4, 5, 6, 7, 8, 11, 12)
HYPERPARAMETER_TABLES = (9, 10)
TABLES = tuple(sorted(ACCURACY_TABLES + HYPERPARAMETER_TABLES))

BOOL_COLUMNS = ("extra_data", "reported_only", "purification", "local_smoothing", "acr_bold")
INT_COLUMNS = ("table", "row_order", "N", "m", "steps", "epsilon", "m_train")
FLOAT_COLUMNS = ("sigma", "sigma_local", "acr", "weight")
TEXT_COLUMNS = ("row_id", "dataset", "architecture", "label", "method", "family", "setting", "attack", "bold", "note")

_RADIUS = re.compile(r"^r(\d+\.\d+)$")
_TABLE_ID = re.compile(r"^(?:table)?\s*0*(\d+)(?:\.csv)?$", re.IGNORECASE)


def table_number(table_id: int | str) -> int:
    """4, "4", "04", "table04", "Table 4", "table04.csv" -> 4."""
    if isinstance(table_id, bool):
        raise TypeError("table id must be an int or a str")
    if isinstance(table_id, int):
        number = table_id
    else:
        match = _TABLE_ID.match(str(table_id).strip().replace(" ", ""))
        if match is None:
            raise ValueError(f"cannot read a table number from {table_id!r}")
        number = int(match.group(1))
    if number not in TABLES:
        raise ValueError(f"the paper's Table {number} is not transcribed; available: {list(TABLES)}")
    return number


def table_resource(table_id: int | str) -> str:
    """The package path of a table's CSV, e.g. "paper_tables/table04.csv"."""
    return f"{PAPER_TABLES}/table{table_number(table_id):02d}.csv"


def table_files() -> list[str]:
    """The transcribed tables' file names that this installation ships."""
    return [n for n in resource_names(PAPER_TABLES) if n.endswith(".csv")]


def load_paper_table(table_id: int | str) -> pd.DataFrame:
    """One transcribed table, one row per printed row, in the paper's order (``row_order``).

    Key columns are typed (booleans, nullable integers for N and m, floats for sigma/sigma_local/acr);
    radius columns ``r0.00, r0.25, ...`` are floats in percent with NaN for the paper's "-" cells.
    """
    name = table_resource(table_id)
    with resource(name).open("r", encoding="utf-8") as f:
        df = pd.read_csv(f, dtype=str, keep_default_na=False, na_values=[""])
    for col in df.columns:
        if col in BOOL_COLUMNS:
            df[col] = _to_bool(df[col], col, name)
        elif col in INT_COLUMNS:
            df[col] = pd.to_numeric(df[col]).astype("Int64")
        elif col in FLOAT_COLUMNS or _RADIUS.match(col):
            df[col] = pd.to_numeric(df[col]).astype(float)
        elif col in TEXT_COLUMNS:
            df[col] = df[col].astype(object).where(df[col].notna(), None)
    if "bold" in df.columns:
        df["bold"] = df["bold"].fillna("")
    if "note" in df.columns:
        df["note"] = df["note"].fillna("")
    return df.sort_values("row_order", kind="stable").reset_index(drop=True)


def _to_bool(series: pd.Series, col: str, name: str) -> pd.Series:
    mapping = {"true": True, "false": False}
    bad = sorted(set(series.dropna().str.lower()) - set(mapping))
    if bad or series.isna().any():
        raise ValueError(f"{name}: column {col} must be true/false everywhere, found {bad or 'empty cells'}")
    return series.str.lower().map(mapping).astype(bool)


def radius_column_names(df: pd.DataFrame) -> list[str]:
    """The radius columns of a loaded table, in order: ["r0.00", "r0.25", ...]."""
    return [c for c in df.columns if _RADIUS.match(str(c))]


def radius_columns(df: pd.DataFrame) -> list[float]:
    """The radii of a loaded table's value columns, in order: [0.0, 0.25, ...]."""
    return [float(_RADIUS.match(c).group(1)) for c in radius_column_names(df)]


def radius_column(radius: float) -> str:
    """0.5 -> "r0.50"."""
    return f"r{radius:.2f}"


def curve(row: pd.Series, radii: list[float] | None = None) -> list[float]:
    """A row's certified accuracies (percent) at ``radii`` (default: all its radius columns)."""
    names = [radius_column(r) for r in radii] if radii is not None else [c for c in row.index if _RADIUS.match(str(c))]
    return [float(row[c]) for c in names]


def common_radii(*tables: pd.DataFrame) -> list[float]:
    """Radii present in every given table, in increasing order."""
    sets = [set(radius_columns(t)) for t in tables]
    return sorted(set.intersection(*sets))


def select(df: pd.DataFrame, **keys) -> pd.DataFrame:
    """Rows whose key columns equal the given values (floats compared with a 1e-9 tolerance).

    >>> select(load_paper_table(4), family="SmoothAdv", extra_data=True, sigma=0.5)
    """
    mask = pd.Series(True, index=df.index)
    for col, value in keys.items():
        if col not in df.columns:
            raise KeyError(f"no column {col!r} in this table")
        if value is None:
            mask &= df[col].isna()
        elif isinstance(value, float) and not isinstance(value, bool):
            mask &= (df[col].astype(float) - value).abs() < 1e-9
        else:
            mask &= df[col] == value
    return df[mask]


def row(df: pd.DataFrame, row_id: str) -> pd.Series:
    """The single row with this ``row_id``."""
    hit = df[df["row_id"] == row_id]
    if len(hit) != 1:
        raise KeyError(f"row_id {row_id!r} matches {len(hit)} rows")
    return hit.iloc[0]


def bold_radii(row: pd.Series) -> list[float]:
    """Radii whose value the paper printed in bold for this row."""
    text = row.get("bold", "") or ""
    return [float(_RADIUS.match(c).group(1)) for c in text.split(";") if c]
