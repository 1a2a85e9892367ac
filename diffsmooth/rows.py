"""Per-image certification rows (TSV) and atomic/durable file writing.

Columns: idx label predict radius correct time nA n pA_lower. The first six follow Cohen et al.'s
certify.py, except that `radius` is written at full precision (repr) and `time` in seconds; the
metrics apply the reference's 3-significant-digit rounding when asked to.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import pandas as pd

COLUMNS = ("idx", "label", "predict", "radius", "correct", "time", "nA", "n", "pA_lower")
HEADER = "\t".join(COLUMNS) + "\n"
_INT = {"idx", "label", "predict", "correct", "nA", "n"}


class CorruptRowsError(ValueError):
    """A rows file that is not a complete, well-formed certification TSV."""


def format_row(idx, label, predict, radius, correct, time, n_a, n, p_a_lower) -> str:
    return (f"{int(idx)}\t{int(label)}\t{int(predict)}\t{float(radius)!r}\t{int(correct)}\t"
            f"{float(time):.6f}\t{int(n_a)}\t{int(n)}\t{float(p_a_lower)!r}\n")


def _fix(path) -> str:
    """What to do about a damaged rows file: which command rewrites it."""
    path = Path(path)
    parts = path.parts
    at = len(parts) - 1 - parts[::-1].index("cells") if "cells" in parts else None  # results/<exp>/cells/<id>/...
    if path.name == "rows.tsv":
        cell = "/".join(parts[at + 1:-1]) if at is not None else "<cell id>"
        return f"delete it and re-run the merge (`diffsmooth merge --configfile <config> --cell {cell}`)"
    if path.parent.name == "shards" and path.suffix == ".tsv" and path.stem.isdigit():
        cell = "/".join(parts[at + 1:-2]) if at is not None else "<cell id>"
        return (f"delete it and {path.with_suffix('.json').name}, then re-run shard {path.stem} "
                f"(`diffsmooth certify --configfile <config> --cell {cell} --shard {int(path.stem)}`)")
    if path.name.endswith(".tsv.partial"):
        return "delete it (the unfinished rows of an interrupted job) and re-run that shard to start it afresh"
    return f"delete {path} and re-run the job that wrote it"


def parse_lines(path, text: str, allow_torn_tail: bool = False) -> tuple[list[dict], int]:
    """Parse TSV text; returns (rows, byte length of the complete part). Errors name file, line and the fix."""
    if not text.startswith(HEADER):
        first = text.splitlines()[0] if text else "<empty file>"
        raise CorruptRowsError(f"{path}:1: header is {first!r}, expected {HEADER.strip()!r}; "
                               f"the file is not a rows file of this version: {_fix(path)}")
    rows, good_len = [], len(HEADER)
    lines = text[len(HEADER):].split("\n")
    tail = lines.pop()  # text after the last newline: '' for a complete file
    for lineno, line in enumerate(lines, start=2):
        rows.append(_parse_line(path, lineno, line))
        good_len += len(line) + 1
    if tail:
        if not allow_torn_tail:
            raise CorruptRowsError(f"{path}:{len(lines) + 2}: truncated last line {tail!r} (no newline): "
                                   f"the file was cut short (a killed copy or a full disk); {_fix(path)}")
    return rows, good_len


def _parse_line(path, lineno: int, line: str) -> dict:
    fields = line.split("\t")
    if len(fields) != len(COLUMNS):
        raise CorruptRowsError(f"{path}:{lineno}: {len(fields)} fields, expected {len(COLUMNS)}: {line!r}; "
                               f"the file is damaged: {_fix(path)}")
    row = {}
    for name, value in zip(COLUMNS, fields):
        try:
            row[name] = int(value) if name in _INT else float(value)
        except ValueError:
            raise CorruptRowsError(f"{path}:{lineno}: column {name} = {value!r} is not a number; "
                                   f"the file is damaged: {_fix(path)}") from None
    if row["correct"] not in (0, 1) or row["radius"] < 0 or not 0 <= row["nA"] <= row["n"]:
        raise CorruptRowsError(f"{path}:{lineno}: inconsistent values {line!r} (correct must be 0/1, radius >= 0, "
                               f"0 <= nA <= n); the file is damaged: {_fix(path)}")
    return row


def read_rows(path) -> pd.DataFrame:
    """Read a complete rows file into a DataFrame (strict: torn or malformed lines are errors)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"rows file {path} does not exist: run the certification that produces it")
    rows, _ = parse_lines(path, path.read_text())
    return pd.DataFrame(rows, columns=list(COLUMNS))


def atomic_write_bytes(path, data: bytes) -> None:
    """Write to a temporary file in the same directory, fsync, then rename over `path`: a crash never
    leaves a half-written file under its final name."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_json(path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


class DurableRowsWriter:
    """Appends rows to a `.partial` file, flushed and fsynced per image, so a killed job resumes."""

    def __init__(self, partial_path):
        self.path = Path(partial_path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            rows, good_len = parse_lines(self.path, self.path.read_text(), allow_torn_tail=True)
            with open(self.path, "r+") as f:  # drop a torn last line left by a kill
                f.truncate(good_len)
            self.done = [r["idx"] for r in rows]
        else:
            atomic_write_text(self.path, HEADER)
            self.done = []
        self._file = open(self.path, "a")

    def append(self, line: str) -> None:
        self._file.write(line)
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()
