"""Per-image certification rows (TSV) and atomic/durable file writing.

Columns: idx label predict radius correct time nA n pA_lower. The first six follow Cohen et al.'s
certify.py, except that `radius` is written at full precision (repr) and `time` in seconds; the
metrics apply the reference's 3-significant-digit rounding when asked to.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import tempfile
from pathlib import Path

import pandas as pd

COLUMNS = ("idx", "label", "predict", "radius", "correct", "time", "nA", "n", "pA_lower")
HEADER = "\t".join(COLUMNS) + "\n"
_INT = {"idx", "label", "predict", "correct", "nA", "n"}
# Imported rows (diffsmooth/importing.py) leave these empty when their source log lacks them (Cohen's format).
OPTIONAL = {"nA", "n", "pA_lower"}


class CorruptRowsError(ValueError):
    """A rows file that is not a complete, well-formed certification TSV."""


def format_row(idx, label, predict, radius, correct, time, n_a, n, p_a_lower) -> str:
    return (f"{int(idx)}\t{int(label)}\t{int(predict)}\t{float(radius)!r}\t{int(correct)}\t"
            f"{float(time):.6f}\t{int(n_a)}\t{int(n)}\t{float(p_a_lower)!r}\n")


def _fix(path) -> str:
    """What to do about a damaged rows file: which command rewrites it."""
    from .paths import locate

    path, where = Path(path), locate(path)
    kind = where["kind"] if where else None
    if kind == "rows":
        return f"delete it and re-run the merge (`diffsmooth merge --configfile <config> --cell {where['cell']}`)"
    if kind == "shard_rows":
        return (f"delete it and {path.with_suffix('.json').name}, then re-run shard {path.stem} "
                f"(`diffsmooth certify --configfile <config> --cell {where['cell']} --shard {where['shard']}`)")
    if kind == "partial_rows":
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
        if value == "" and name in OPTIONAL:
            row[name] = None
            continue
        try:
            row[name] = int(value) if name in _INT else float(value)
        except ValueError:
            raise CorruptRowsError(f"{path}:{lineno}: column {name} = {value!r} is not a number; "
                                   f"the file is damaged: {_fix(path)}") from None
    counts_bad = None not in (row["nA"], row["n"]) and not 0 <= row["nA"] <= row["n"]
    if row["correct"] not in (0, 1) or row["radius"] < 0 or counts_bad or (row["nA"] is None) != (row["n"] is None):
        raise CorruptRowsError(f"{path}:{lineno}: inconsistent values {line!r} (correct must be 0/1, radius >= 0, "
                               f"0 <= nA <= n, nA and n both given or both empty); the file is damaged: {_fix(path)}")
    return row


def read_rows(path) -> pd.DataFrame:
    """Read a complete rows file into a DataFrame (strict: torn or malformed lines are errors)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"rows file {path} does not exist: run the certification that produces it")
    rows, _ = parse_lines(path, read_text(path))
    return pd.DataFrame(rows, columns=list(COLUMNS))


def read_text(path) -> str:
    """A rows file's text; undecodable bytes are a CorruptRowsError naming the file and the fix."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise CorruptRowsError(f"{path}: byte {e.start} is not UTF-8 text ({e.reason}): the file is damaged; "
                               f"{_fix(path)}") from None


def sha256_file(path, chunk_size: int = 1 << 20) -> str:
    """sha256 of a file's bytes, read in chunks (checkpoints are gigabytes)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk_size):
            digest.update(block)
    return digest.hexdigest()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path, data: bytes) -> None:
    """Write to a temporary file in the same directory, fsync, then rename over `path`: a crash never
    leaves a half-written file under its final name. The file gets the mode the user's umask gives a new
    file (mkstemp alone makes 0600, which collaborators on a shared results directory cannot read)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fchmod(f.fileno(), 0o666 & ~_umask())
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def read_json_object(path, fix: str, error=ValueError) -> dict:
    """A JSON object this pipeline wrote (meta, summary); anything else raises `error` naming the file and `fix`."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError
        raise error(f"{path} is not valid JSON ({e}): the file is damaged; {fix}") from None
    if not isinstance(data, dict):
        raise error(f"{path} holds a JSON {type(data).__name__}, not the object this pipeline writes: the file "
                    f"was replaced or damaged; {fix}")
    return data


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
            rows, good_len = parse_lines(self.path, read_text(self.path), allow_torn_tail=True)
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


class ShardBusyError(RuntimeError):
    """Another process is writing this shard."""


class ShardLock:
    """Exclusive writer lock on one shard: `fcntl.flock` on `<shard>.lock`. The kernel releases it when the
    writer exits, even by kill -9, so a lock file left behind never blocks a rerun."""

    def __init__(self, path):
        self.path = Path(path)
        self._fd = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise ShardBusyError(f"shard {self.path.stem} of {self.path.parent.parent} is being written by PID "
                                 f"{holder} (another certify job or Snakemake run on the same results); a second "
                                 "writer would duplicate its rows, so this one stops. Rerun when that one has "
                                 "finished: finished cells are skipped.") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the lock
            self._fd = None
