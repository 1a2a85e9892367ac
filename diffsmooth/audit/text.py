"""The audit report as text for a terminal: value, cell, data, rows, checkpoints, code, settings,
commands, verification; then every note, every skipped check with its reason, and the verdict."""
from __future__ import annotations

import json

from .checks import INFO, MISMATCH, OK, SKIPPED

ROUNDING_TEXT = {
    "reference": "reference: radii rounded to 3 significant digits before comparing with r "
                 "(what Cohen et al.'s certify.py stored)",
    "exact": "exact: full-precision radii compared with r",
}
MARK = {OK: "OK", MISMATCH: "MISMATCH", SKIPPED: "skipped", INFO: "note"}


def _short(sha: str | None) -> str:
    return sha[:16] + "..." if sha else "-"


def _cand_label(c: dict) -> str:
    """How an envelope row tells its cells apart: sigma and sigma' (DiffSmooth) or the classifier (RS, DDS)."""
    if c["m"]:
        return f"σ = {c['sigma']:.2f}, σ' = {c['sigma_local']:.2f}"
    return f"σ = {c['sigma']:.2f}, classifier {c['classifier']}"


def _setting(value) -> str:
    return json.dumps(value, sort_keys=True) if isinstance(value, (dict, list)) else str(value)


def _value(add, rep, st) -> None:
    t, v = rep["target"], rep["value"]
    add("")
    add("Value")
    md = f", {v['rendered_markdown']} in {t['table']}.md" if v["rendered_markdown"] is not None else ""
    rendered = v["rendered"] if v["rendered"] is not None else "(no entry)"
    add(f"  rendered     {rendered} (cells.csv){md}")
    if v.get("source") == "imported":
        add(f"  source       imported cell: rows from {v['source_file']}")
    add(f"  computed as  {v['formula']}")
    if v["kind"] == "certified_accuracy":
        add(f"  rounding     {ROUNDING_TEXT.get(v['rounding'], v['rounding'])}")
        add(f"               k = {v['k_reference']} with reference rounding, k = {v['k_exact']} with exact radii")
    add(f"  recomputed   {v['recomputed']} from the rows  {st('value.recomputed')}")
    if rep.get("renderings"):
        add("  renderings   " + ", ".join(f"{r['path'].rsplit('/', 1)[-1]} [{MARK[r['status']]}]"
                                          for r in rep["renderings"]) + "  (each file re-rendered from the rows)")
    env = v.get("envelope")
    if env:
        add(f"  envelope     per-radius maximum over {len(env['candidates'])} cells (first in config order wins ties):")
        for c in env["candidates"]:
            win = "  <- winner" if c["cell_id"] == env["winner"] else ""
            kn = f"  ({c['k']}/{c['n']})" if c["k"] is not None else f"  ({c['note']})"
            add(f"    {_cand_label(c)}: {c['value']:>5}{kn}  {c['cell_id']}{win}")


def _cell(add, ca, st, by_name) -> None:
    p = ca["parameters"]
    add("")
    add(f"Cell  {ca['cell_id']}")
    local = ""
    if p["m"]:
        local = (f", σ' = {p['sigma_local']:g} (+ shift {p['shift']:g} = {p['sigma_local_effective']:g} effective), "
                 f"m = {p['m']}, local noise {p['local_noise']}")
    add(f"  method {p['method']}, classifier {p['classifier']}, σ = {p['sigma']:g}{local}")
    add(f"  N = {p['N']}, n0 = {p['n0']}, alpha = {p['alpha']:g}, seed {p['seed']}; max certifiable radius "
        f"{p['max_certifiable_radius']:.4f}" + (f"; purifier t* = {p['t_star']}" if p.get("t_star") is not None else ""))
    imp = ca.get("imported")
    if imp:
        on_disk = ("not here" if imp["current_sha256"] is None else
                   "same on disk" if imp["matches"] else f"ON DISK {imp['current_sha256']}")
        add(f"  imported from {imp['source']} ({imp.get('format') or 'unknown'} format), sha256 "
            f"{_short(imp.get('sha256'))} ({on_disk})  {st('imported.sha256')}")
        add("  cannot re-certify: no checkpoints or seeds were recorded for imported rows")
    d = ca["data"]
    add("")
    where = "imported" if imp else f"{len(d['shards'])} shard(s)"
    add(f"Data  {d['dataset']} test images {d['images_compact']} ({d['count']} images, {where})  "
        f"{st('data.images_sha256')}" + (f"  labels {st('data.labels')}" if "data.labels" in by_name else ""))
    for s in d["shards"]:
        same = "" if s["matches"] is None else ("= recomputed" if s["matches"] else f"!= recomputed {_short(s['current_sha256'])}")
        add(f"  shard {s['shard']}: images {s['images_compact']}  sha256 {_short(s['stored_sha256'])} {same}")
    r = ca["rows"]
    add("")
    add(f"Rows  {r['path']}")
    add(f"  {r['count']} rows, {r['correct']} correct, {r['abstained']} abstained; sha256 {_short(r['sha256'])}")
    for name, label in (("rows.pipeline_sha256", "sha256 vs the pipeline's summary"),
                        ("rows.shards", "equals its shard files"),
                        ("rows.statistics", "rows consistent with CERTIFY's statistics"),
                        ("rows.images", "one row per recorded image")):
        if name in by_name:
            add(f"  {label:<42} {st(name)}" + ("" if by_name[name]["status"] == OK else f" {by_name[name]['detail']}"))
    add("")
    add("Checkpoints")
    if not ca["checkpoints"]:
        add("  none recorded" + (" (imported rows)" if imp else ""))
    for c in ca["checkpoints"]:
        add(f"  {c['role']:<10} {c['name']}  {c['path']}")
        now = "missing" if c["current_sha256"] is None else ("same on disk" if c["matches"] else
                                                             f"ON DISK {c['current_sha256']}")
        add(f"             sha256 {c['recorded_sha256']}  ({now})  {st('checkpoint.' + c['role'] + '.sha256')}")
        if c["dvc"]:
            add(f"             dvc md5 {c['dvc']['md5']} ({c['dvc']['source']}), file md5 {c['dvc']['current_md5']}  "
                f"{st('checkpoint.' + c['role'] + '.dvc')}")
        else:
            add("             not tracked by DVC (no dvc.lock entry or .dvc file)")
    add("")
    codes = {(c.get("commit"), c.get("dirty")) for c in ca["code"]["recorded"]}
    rec = "; ".join((f"{cm[:12]} ({'dirty tree' if dt else 'clean tree'})" if cm else
                     "unknown (not certified from a git checkout)") for cm, dt in sorted(codes, key=str)) or "none"
    cur = ca["code"]["current"]
    now = (f"{cur['commit'][:12]}" + (" (dirty)" if cur.get("dirty") else "")) if cur.get("commit") else "not a git checkout"
    add(f"Code  recorded commit {'not recorded (imported rows)' if imp else rec}; this checkout: {now}")
    vr = ca["versions"]["recorded"]
    add("Libraries  " + (", ".join(f"{k} {v}" for k, v in sorted(vr.items())) or "not recorded")
        + ("" if not vr else "  (same now)" if not ca["versions"]["differences"] else
           "  (now: " + "; ".join(ca["versions"]["differences"]) + ")"))
    dv = ca["device"]
    if dv["device"] is None and imp:
        add("Device  not recorded (imported rows)")
    else:
        add(f"Device  {dv['device']} ({dv['device_name']}), {dv['threads']} thread(s), batch size {dv['batch_size']}, "
            f"{dv['mode']} mode" + (f" ({dv['cells_in_job']} cell(s) in the job)" if dv["cells_in_job"] else ""))
    se = ca["settings"]
    if se["recorded"]:
        add("Settings  as recorded when the rows were computed: "
            + ", ".join(f"{k} {_setting(v)}" for k, v in se["values"].items())
            + (f"; not recorded: {', '.join(se['missing'])}" if se["missing"] else ""))
    else:
        add("Settings  not recorded in meta.json (" + ("imported rows" if imp else "written before settings were "
            "recorded") + "): precision, channels_last, batch size, noise block, rounding and code version unknown")
    sd = ca["seeds"]
    add(f"Seeds  seed {sd.get('seed') if sd.get('seed') is not None else 'not recorded'}; "
        f"noise {sd.get('noise', 'not recorded')}; local noise {sd.get('local_noise', 'not recorded')}")
    add("")
    add("Produced by")
    if imp:
        add(f"  `diffsmooth import` of {imp['source']}")
    for pv in ca["provenance"]:
        add(f"  shard {pv['shard']} (images {pv['images_compact']}): rule {pv['snakemake_rule'] or '-'}")
        add(f"    $ {pv['command_text']}")
    tm = ca["timing"]
    add("")
    add(f"Timing  {tm['scope']}: mean {tm['mean_s']:.3f} s, median {tm['median_s']:.3f} s, "
        f"min {tm['min_s']:.3f} s, max {tm['max_s']:.3f} s, total {tm['total_s']:.1f} s over {tm['images']} images")
    vf = ca["verification"]
    if vf:
        add("")
        if vf["status"] == SKIPPED and not vf["results"]:
            add(f"Verification  skipped: {vf['reason']}")
        else:
            add(f"Verification  {len(vf['images'])} image(s) re-certified on {vf['device']}, "
                f"{vf['threads']} thread(s); batch shapes {vf['batch_shapes']}")
            for res in vf["results"]:
                f = res["fields"]
                line = (f"  image {res['idx']:>5}: nA {f['nA']['recomputed']:>7} predict {f['predict']['recomputed']:>4} "
                        f"radius {f['radius']['recomputed']:.6f} pA_lower {f['pA_lower']['recomputed']:.6f}  "
                        f"({res['time_s']:.3f} s; stored {res['stored_time_s']:.3f} s)  ")
                if res["match"]:
                    line += "[OK] identical to the stored row"
                else:
                    line += "[MISMATCH] " + ", ".join(
                        f"{n} stored {x['stored']!r} (diff {x['difference']:+.6g})" for n, x in f.items() if not x["match"])
                add(line)
    elif not imp:
        add("")
        add("Verification  not requested (`--verify K` re-certifies K images)")


def format_text(rep: dict) -> str:
    lines: list[str] = []
    add = lines.append
    t = rep["target"]
    by_name = {c["name"]: c for c in rep["checks"]}

    def st(name):
        c = by_name.get(name)
        return f"[{MARK[c['status']]}]" if c else ""

    if t["table"]:
        col = "ACR" if t["column"] == "ACR" else f"r = {t['column']}"
        add(f"Audit of {t['table']}, row {t['row']} ({t['row_label']}), {col} -- experiment {rep['experiment']}")
    else:
        add(f"Audit of cell {t['cell_id']} -- experiment {rep['experiment']}")
        for a in t.get("appears_in") or []:
            add(f"  shown in {a['table']} row {a['row']} ({a['row_label']}), column {a['column']}: {a['value']}")
    if rep["value"]:
        _value(add, rep, st)
    if rep["cell_audit"]:
        _cell(add, rep["cell_audit"], st, by_name)
    add("")
    for c in rep["checks"]:
        if c["status"] == INFO:
            add(f"note: {c['detail']}")
    skipped = [c for c in rep["checks"] if c["status"] == SKIPPED]
    for c in skipped:
        add(f"skipped {c['name']}: {c['detail']}")
    bad = [c for c in rep["checks"] if c["status"] == MISMATCH]
    n_ok = sum(c["status"] == OK for c in rep["checks"])
    more = f", {len(skipped)} skipped (reasons above)" if skipped else ""
    if bad:
        add(f"RESULT: MISMATCH -- {len(bad)} of {len(rep['checks'])} checks failed ({n_ok} passed{more}):")
        for c in bad:
            add(f"  - {c['name']}: {c['detail']}")
    else:
        add(f"RESULT: OK -- {n_ok} checks passed{more}")
    return "\n".join(lines)
