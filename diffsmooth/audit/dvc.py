"""What DVC records for a file: its md5 in ./dvc.lock (a stage's outs/deps) or in the `.dvc` file of it or of a
folder above it (data/checkpoints/*.dvc, a DVC project of its own with its own cache)."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import yaml


def file_md5(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def _rel(path) -> str:
    p = Path(path)
    try:
        return str(p.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(p)


def _yaml(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError:
        return {}
    return data if isinstance(data, dict) else {}


def _project(dvc_file: Path) -> Path:
    """The DVC project a .dvc file belongs to: the nearest folder above it holding a .dvc/ directory."""
    for folder in dvc_file.parents:
        if (folder / ".dvc").is_dir():
            return folder
    return Path(".")


def dvc_record(path: Path) -> dict | None:
    """{source, md5} for `path` (md5 None when only a tracked directory's manifest, absent here, would say)."""
    rel = _rel(path)
    sources = []
    lock = Path("dvc.lock")
    if lock.is_file():
        for stage, spec in (_yaml(lock).get("stages") or {}).items():
            for kind in ("outs", "deps"):
                for out in (spec or {}).get(kind) or []:
                    sources.append((f"dvc.lock stage {stage} ({kind})", out, Path(out.get("path", "")), Path(".")))
    for tracked in (Path(path), *Path(path).parents):
        dvc_file = Path(str(tracked) + ".dvc")
        if tracked.name and dvc_file.is_file():
            for out in _yaml(dvc_file).get("outs") or []:
                sources.append((_rel(dvc_file), out, dvc_file.parent / out.get("path", ""), _project(dvc_file)))
    for where, out, opath, _ in sources:
        if _rel(opath) == rel and out.get("md5"):
            md5 = str(out["md5"])
            if md5.endswith(".dir"):
                continue
            return {"source": where, "md5": md5}
    for where, out, opath, project in sources:  # a file inside a tracked directory
        orel = _rel(opath)
        md5 = str(out.get("md5", ""))
        if md5.endswith(".dir") and rel.startswith(orel.rstrip("/") + "/"):
            inner = rel[len(orel.rstrip("/")) + 1:]
            manifest = project / ".dvc/cache/files/md5" / md5[:2] / md5[2:]
            if manifest.is_file():
                for item in json.loads(manifest.read_text()):
                    if item.get("relpath") == inner:
                        return {"source": f"{where}, directory {orel}", "md5": item["md5"]}
            return {"source": f"{where}, directory {orel}", "md5": None}
    return None
