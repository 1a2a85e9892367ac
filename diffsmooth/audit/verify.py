"""Re-certification: some images of a cell certified again, alone, with the recorded seeds, settings,
batch shapes and device, and compared field by field with the stored rows."""
from __future__ import annotations

import copy
import time

from ..cell import Cell, group_id
from .indices import compact_indices
from .checks import INFO, MISMATCH, OK, SKIPPED, AuditError, Checks


def choose_images(images: list, k: int, given=None) -> list:
    """`given` (comma-separated indices, each in the cell) or k images evenly spaced over the cell's images."""
    if given:
        try:
            wanted = [int(x) for x in str(given).replace(" ", "").split(",") if x]
        except ValueError:
            raise AuditError(f"--images {given!r}: give comma-separated image indices, e.g. 3,17") from None
        missing = [i for i in wanted if i not in images]
        if missing:
            raise AuditError(f"--images: {missing} not among the cell's images ({compact_indices(images)})")
        return list(dict.fromkeys(wanted))
    n = len(images)
    if k >= n:
        return list(images)
    return [images[int((j + 0.5) * n / k)] for j in range(k)]


def _empty(**changes) -> dict:
    return {"images": [], "device": None, "recorded_device": None, "batch_size": None, "threads": None,
            "batch_shapes": "", "checkpoints_loaded": [], "results": [], "all_match": False, "status": SKIPPED,
            "reason": "", **changes}


def not_recertifiable(why: str, checks: Checks, requested: bool) -> dict | None:
    """An imported cell: nothing to re-run it with. Said whether or not --verify was asked for."""
    reason = f"{why}: cannot re-certify, no checkpoints or seeds were recorded"
    checks.skip("verify", reason)
    return _empty(reason=reason) if requested else None


def with_recorded_settings(config: dict, settings: dict) -> dict:
    """The config with `certify:` settings replaced by the recorded ones, so the models run as they did."""
    out = copy.deepcopy(config)
    for key, value in settings.items():
        if key in out["certify"] and value is not None:
            out["certify"][key] = value
    return out


def verify_cell(config, grid, cell: Cell, meta: dict, rows, dataset, ckpts, checks: Checks, k: int,
                given, threads, settings: dict) -> dict:
    import torch

    from ..certify import load_models, resolve_device
    from ..data import dataset_info
    from ..smoothing import Certifier

    chosen = choose_images(list(rows["idx"]), k, given)
    batch_size = int(settings.get("batch_size") or meta.get("batch_size") or config["certify"]["batch_size"])
    out = _empty(images=chosen, recorded_device=meta.get("device"), batch_size=batch_size)
    bad_ckpt = [c for c in ckpts if not c["matches"]]
    if bad_ckpt:
        out["reason"] = ("checkpoint(s) differ from the ones recorded (" + ", ".join(c["path"] for c in bad_ckpt)
                         + "): re-certifying with other weights cannot reproduce the rows")
        checks.skip("verify", out["reason"])
        return out
    if dataset is None:
        out["reason"] = "dataset not available: nothing to re-certify"
        checks.skip("verify", out["reason"])
        return out
    config = with_recorded_settings(config, settings)
    recorded = str(meta.get("device") or config["device"])
    try:
        device = resolve_device(recorded)
    except RuntimeError:
        device = resolve_device(config["device"])
        checks.add("verify.device", INFO, f"recorded on {recorded}, which is not available here: re-certifying on "
                   f"{device}; exact equality is only expected on the recorded device type")
    nthreads = threads or meta.get("threads") or config["threads"]
    torch.set_num_threads(int(nthreads))
    out.update(device=str(device), threads=int(nthreads))
    # Batch shapes as in the job that wrote the rows: a fused job ran max(N) / max(n0) of its group in one
    # stream, so a padding cell with the same head (no extra classifier passes) reproduces its batches.
    cells = [cell]
    group = grid.groups().get(group_id(cell), [cell])
    if meta.get("mode") == "fused":
        big_n, big_n0 = max(c.N for c in group), max(c.n0 for c in group)
        if big_n > cell.N or big_n0 > cell.n0:
            cells.append(Cell(**{**cell.to_dict(), "N": big_n, "n0": big_n0}))
            out["batch_shapes"] = (f"as in the fused job: samples drawn up to N = {big_n}, n0 = {big_n0} of the "
                                   f"sigma group, batch size {batch_size}")
    if not out["batch_shapes"]:
        out["batch_shapes"] = f"this cell's N = {cell.N}, n0 = {cell.n0}, batch size {batch_size}"
    shape, num_classes = dataset_info(config["dataset"]["name"])
    classifiers, purifier, clf_infos, diff_info = load_models(config, [cell], device, config["dataset"]["name"])
    loaded = {"classifier": clf_infos[cell.classifier]}
    if cell.uses_diffusion:
        loaded["diffusion"] = diff_info
    ok_load = True
    for role, info in loaded.items():
        rec = meta["checkpoints"].get(role, {}).get("sha256")
        out["checkpoints_loaded"].append({"role": role, "path": info.get("path"), "sha256": info.get("sha256"),
                                          "matches": info.get("sha256") == rec})
        ok_load &= info.get("sha256") == rec
    if cell.uses_diffusion:
        rec_t = meta["checkpoints"].get("diffusion", {}).get("t_star")
        if rec_t is not None and rec_t != diff_info.get("t_star"):
            ok_load = False
            checks.add("verify.t_star", MISMATCH, f"purifier t* = {diff_info.get('t_star')}, recorded {rec_t}")
    checks.ok_if("verify.checkpoints", ok_load, "the loaded checkpoints have the recorded sha256",
                 "the checkpoints load_models read differ from the recorded ones")
    certifier = Certifier(cells, classifiers, purifier, num_classes, shape, batch_size=batch_size, device=device)
    stored = rows.set_index("idx")
    for i in chosen:
        x, label = dataset.get(int(i))
        t0 = time.perf_counter()
        r = certifier.certify(x, int(i))[cell]
        elapsed = time.perf_counter() - t0
        s = stored.loc[int(i)]
        now = {"nA": int(r.n_a), "predict": int(r.predict), "radius": float(r.radius),
               "pA_lower": float(r.p_a_lower), "correct": int(r.predict == label)}
        was = {"nA": int(s["nA"]), "predict": int(s["predict"]), "radius": float(s["radius"]),
               "pA_lower": float(s["pA_lower"]), "correct": int(s["correct"])}
        fields = {name: {"stored": was[name], "recomputed": now[name], "match": now[name] == was[name],
                         "difference": now[name] - was[name]} for name in now}
        out["results"].append({"idx": int(i), "label": int(label), "match": all(f["match"] for f in fields.values()),
                               "fields": fields, "time_s": elapsed, "stored_time_s": float(s["time"])})
    bad = [r for r in out["results"] if not r["match"]]
    out["all_match"] = not bad
    out["status"] = OK if not bad else MISMATCH
    checks.ok_if("verify.rows", not bad,
                 f"{len(chosen)} image(s) re-certified: nA, predict, radius, pA_lower identical to the stored rows",
                 "re-certification differs from the stored rows: " + "; ".join(
                     f"image {r['idx']}: " + ", ".join(f"{n} stored {f['stored']!r} now {f['recomputed']!r} "
                                                       f"(diff {f['difference']:+.6g})"
                                                       for n, f in r["fields"].items() if not f["match"])
                     for r in bad))
    return out
