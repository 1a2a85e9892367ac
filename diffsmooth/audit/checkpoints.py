"""Are the checkpoints on disk the ones the cell was certified with? sha256 against the recorded one and
the config's `sha256:`, md5 against DVC's record."""
from __future__ import annotations

from pathlib import Path

from ..cell import Cell
from .checks import INFO, MISMATCH, Checks
from .dvc import dvc_record, file_md5


def file_sha256(path: Path) -> str | None:
    from ..models import sha256_file

    return sha256_file(path) if path.is_file() else None


def audit_checkpoints(config: dict, cell: Cell, meta: dict, checks: Checks) -> list[dict]:
    out = []
    for role, info in sorted(meta.get("checkpoints", {}).items()):
        spec = config["classifiers"][cell.classifier] if role == "classifier" else config["diffusion"]
        name = cell.classifier if role == "classifier" else spec.get("name", "diffusion")
        config_path = spec["checkpoint"]
        recorded_path, recorded = info.get("path"), info.get("sha256")
        path = Path(config_path)
        current = file_sha256(path)
        item = {"role": role, "name": name, "path": str(config_path), "recorded_path": recorded_path,
                "recorded_sha256": recorded, "current_sha256": current, "matches": current == recorded,
                "dvc": None, "size": path.stat().st_size if path.is_file() else None,
                "config_sha256": spec.get("sha256")}
        if current is None:
            checks.add(f"checkpoint.{role}.sha256", MISMATCH, f"{config_path} ({name}) is missing; "
                       f"it had sha256 {recorded}: restore it (`dvc pull`, or retrain it with the same settings)")
        else:
            checks.ok_if(f"checkpoint.{role}.sha256", current == recorded,
                         f"{config_path}: sha256 {current[:16]}... as recorded",
                         f"{config_path} ({name}) changed since certification: sha256 on disk {current}, "
                         f"recorded {recorded}")
        if spec.get("sha256") and current is not None:
            checks.ok_if(f"checkpoint.{role}.config_sha256", current == spec["sha256"],
                         f"{config_path}: sha256 as the config's `sha256:`",
                         f"{config_path}: sha256 on disk {current}, the config's `sha256:` is {spec['sha256']}")
        if recorded_path and Path(recorded_path) != path:
            checks.add(f"checkpoint.{role}.path", INFO, f"recorded at {recorded_path}, the config now names {config_path}")
        rec = dvc_record(path)
        if rec is not None:
            md5 = file_md5(path) if path.is_file() else None
            rec = {**rec, "current_md5": md5, "matches": None if rec["md5"] is None else md5 == rec["md5"]}
            if rec["md5"] is None:
                checks.skip(f"checkpoint.{role}.dvc", f"tracked by {rec['source']}; its manifest is not in the "
                            "local DVC cache, so the file's md5 was not compared (`dvc fetch` brings it)")
            else:
                checks.ok_if(f"checkpoint.{role}.dvc", md5 == rec["md5"], f"md5 {md5} matches {rec['source']}",
                             f"{config_path}: md5 on disk {md5}, {rec['source']} records {rec['md5']}")
        item["dvc"] = rec
        out.append(item)
    return out
