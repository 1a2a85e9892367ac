"""`diffsmooth audit`: a table number traced to its cell, rows, data, checkpoints, code and command, and
re-certified exactly; edited rows, changed checkpoint bytes and stale rendered values make it fail."""
from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import os
import re
import shutil
from pathlib import Path
from types import SimpleNamespace

import jsonschema
import pytest
import yaml

from diffsmooth.statistics import round_sig

from diffsmooth import cli
from diffsmooth.audit import SCHEMA, AuditError, _norm_label, _resolve_row, choose_images, compact_indices, dvc_record

from conftest import run

pytestmark = pytest.mark.slow

EXP = "digits-fast"
CONFIG = "config/fast.yaml"


def audit(root: Path, *args, check=True, subprocess=False):
    """`diffsmooth audit` in `root`: in this process by default (saves ~3 s of imports per call),
    or as the installed command when `subprocess` is set. Returns an object with returncode/stdout/stderr."""
    argv = ["audit", "--configfile", CONFIG, *map(str, args)]
    if subprocess:
        proc = run(["diffsmooth", *argv], root, check=False, timeout=300)
    else:
        out, err, cwd = io.StringIO(), io.StringIO(), os.getcwd()
        try:
            os.chdir(root)
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                rc = cli.main(argv)
        finally:
            os.chdir(cwd)
        proc = SimpleNamespace(returncode=rc, stdout=out.getvalue(), stderr=err.getvalue())
    if check and proc.returncode != 0:
        raise AssertionError(f"audit {args} exited {proc.returncode}:\n{proc.stdout[-6000:]}\n{proc.stderr[-3000:]}")
    return proc


def audit_json(root: Path, *args, expect_rc=0) -> dict:
    proc = audit(root, *args, "--json", check=False)
    assert proc.returncode == expect_rc, f"exit {proc.returncode}:\n{proc.stdout[-4000:]}\n{proc.stderr[-3000:]}"
    report = json.loads(proc.stdout)
    jsonschema.Draft202012Validator(json.loads(SCHEMA.read_text())).validate(report)
    return report


def cells_csv(root: Path, table: str) -> list[dict]:
    with open(root / "results" / "tables" / EXP / f"{table}.cells.csv", newline="") as f:
        return list(csv.DictReader(f))


def failed(report) -> dict:
    return {c["name"]: c["detail"] for c in report["checks"] if c["status"] == "mismatch"}


@pytest.fixture
def mutable_run(fast_run, tmp_path) -> Path:
    """A private copy of the shared fast run, safe to edit."""
    dest = tmp_path / "repo"
    shutil.copytree(fast_run, dest, symlinks=True, ignore=shutil.ignore_patterns(".snakemake"))
    return dest


# ---------------------------------------------------------------------------------------------------
# Cells that reproduce


def test_plain_cell_traced_and_reproduced(fast_run):
    proc = audit(fast_run, "table4", "2", "0.30", "--verify", "3", subprocess=True)  # the installed command
    out = proc.stdout
    entry = next(e for e in cells_csv(fast_run, "table4") if e["row"] == "2" and e["column"] == "0.30")
    assert f"rendered     {entry['value']} (cells.csv), {entry['value']} in table4.md" in out
    assert f"100 * {entry['k']} / {entry['n']} = {entry['value']}" in out
    assert "rounding     reference" in out
    assert entry["cell_id"] in out
    assert "Data  digits test images 0-39 (40 images, 2 shard(s))  [OK]" in out
    assert "rule certify_group" in out and "$ diffsmooth certify --configfile config/fast.yaml --group" in out
    assert out.count("[OK] identical to the stored row") == 3
    assert "RESULT: OK" in out


def test_acr_cell_by_label_json(fast_run):
    label = "DiffSmooth (SmoothAdv), σ = 0.25, σ′ = 0.25"  # the row's label text, loosely written
    rep = audit_json(fast_run, "table4", label, "acr", "--verify", "3")
    entry = next(e for e in cells_csv(fast_run, "table4") if e["row_label"] == "DiffSmooth (SmoothAdv) | 0.25 | 0.25"
                 and e["column"] == "ACR")
    v = rep["value"]
    assert rep["ok"] and v["kind"] == "acr" and v["matches"] and v["recomputed"] == entry["value"]
    assert rep["target"]["cell_id"] == entry["cell_id"] == rep["cell_audit"]["cell_id"]
    ca = rep["cell_audit"]
    assert ca["parameters"]["classifier"] == "smoothadv_0.25" and ca["parameters"]["m"] == 5
    assert all(c["matches"] and len(c["recorded_sha256"]) == 64 for c in ca["checkpoints"])
    assert {c["role"] for c in ca["checkpoints"]} == {"classifier", "diffusion"}
    assert all(s["matches"] for s in ca["data"]["shards"])
    assert ca["seeds"]["seed"] == 0 and ca["device"]["batch_size"] == 550 and ca["device"]["mode"] == "fused"
    assert [p["snakemake_rule"] for p in ca["provenance"]] == ["certify_group", "certify_group"]
    assert ca["versions"]["recorded"]["torch"] and ca["timing"]["images"] == 40
    vf = ca["verification"]
    assert vf["status"] == "ok" and vf["all_match"] and len(vf["results"]) == 3 == len(set(vf["images"]))
    for r in vf["results"]:
        assert all(f["match"] and f["difference"] == 0 for f in r["fields"].values())


@pytest.mark.parametrize("table", ["table1", "table6"])
def test_envelope_cell_audits_the_winner(fast_run, table):
    """Tables 1/6 rows are per-radius maxima: the audit names the sigma/sigma' cell that won and re-certifies it
    (Table 6's N = 100 cells were certified inside the fused N = 500 job: same batch shapes are replayed)."""
    entries = [e for e in cells_csv(fast_run, table) if ";" in e["envelope_candidates"] and e["cell_id"]
               and "diffsmooth/gaussian_0.12" in e["cell_id"] and e["column"] == "0.30"]
    assert entries, f"{table} has no multi-cell envelope entry at 0.30"
    e = entries[0]
    rep = audit_json(fast_run, table, e["row"], e["column"], "--verify", "3")
    env = rep["value"]["envelope"]
    assert env["winner"] == e["cell_id"] == rep["target"]["cell_id"] == rep["cell_audit"]["cell_id"]
    assert [c["cell_id"] for c in env["candidates"]] == e["envelope_candidates"].split(";")
    won = next(c for c in env["candidates"] if c["cell_id"] == env["winner"])
    assert won["value"] == e["value"] == rep["value"]["recomputed"]
    assert won["sigma"] == 0.25 and won["sigma_local"] == 0.12
    assert rep["ok"] and rep["cell_audit"]["verification"]["all_match"]
    text = audit(fast_run, table, e["row"], e["column"]).stdout
    assert "<- winner" in text and "σ = 0.25, σ' = 0.12" in text


def test_cell_id_and_dash(fast_run):
    cid = next(e for e in cells_csv(fast_run, "table3") if e["row"] == "2" and e["column"] == "ACR")["cell_id"]
    rep = audit_json(fast_run, cid, "--images", "3,17")  # `diffsmooth audit <cell id>`
    assert rep["value"] is None and rep["target"]["cell_id"] == cid
    assert any(a["table"] == "table3" and a["column"] == "ACR" for a in rep["target"]["appears_in"])
    assert [r["idx"] for r in rep["cell_audit"]["verification"]["results"]] == [3, 17]
    assert rep["cell_audit"]["verification"]["all_match"]
    dash = audit_json(fast_run, "table4", "1", "0.6")  # beyond what N = 500 can certify
    assert dash["value"]["kind"] == "dash" and dash["value"]["recomputed"] == dash["value"]["rendered"] == "−"


def test_bad_requests_name_the_fix(fast_run):
    for args, words in [(["table9", "1", "0.3"], "use one of table1"), (["table4", "9", "0.3"], "rows 1..3"),
                        (["table4", "Gaussian", "0.3"], "matches several rows"), (["table4", "2", "0.35"], "no radius column"),
                        (["table4", "2", "0.3", "--images", "3,99"], "not among the cell's images")]:
        proc = audit(fast_run, *args, check=False)
        assert proc.returncode == 2 and words in proc.stderr, (args, proc.stderr)


# ---------------------------------------------------------------------------------------------------
# Things that do not match


def _edit_row(path: Path, idx: int, **changes) -> None:
    lines = path.read_text().split("\n")
    header = lines[0].split("\t")
    for i, line in enumerate(lines[1:], start=1):
        fields = line.split("\t")
        if fields[0] == str(idx):
            for k, v in changes.items():
                fields[header.index(k)] = str(v)
            lines[i] = "\t".join(fields)
            path.write_text("\n".join(lines))
            return
    raise AssertionError(f"image {idx} not in {path}")


def _cell_dir(root: Path, cid: str) -> Path:
    return root / "results" / EXP / "cells" / cid


def test_edited_row_is_reported(mutable_run):
    root = mutable_run
    e = next(x for x in cells_csv(root, "table4") if x["row"] == "2" and x["column"] == "0.30")
    cdir = _cell_dir(root, e["cell_id"])
    rows = [r for r in csv.DictReader(open(cdir / "rows.tsv"), delimiter="\t")]
    # an image that counts at r = 0.30 (and lies in shard 0): lower its nA so that it no longer does
    r = next(r for r in rows if r["correct"] == "1" and float(r["radius"]) >= 0.31 and int(r["idx"]) < 20)
    idx, n_a = int(r["idx"]), int(r["nA"])
    for path in (cdir / "rows.tsv", cdir / "shards" / "0000.tsv"):
        _edit_row(path, idx, nA=n_a - 40, radius=0.25)
    proc = audit(root, "table4", "2", "0.30", "--images", f"{idx},20", check=False, subprocess=True)
    assert proc.returncode == 1
    out = proc.stdout
    assert "RESULT: MISMATCH" in out
    assert f"image {idx}: nA stored {n_a - 40} now {n_a}" in out  # re-certification names the field and values
    assert "[OK] identical to the stored row" in out  # image 20 is untouched
    bad = failed(audit_json(root, "table4", "2", "0.30", "--images", str(idx), expect_rc=1))
    assert {"value.recomputed", "rows.statistics", "rows.pipeline_sha256", "shard0.pipeline_sha256",
            "verify.rows"} <= set(bad)
    assert f"rendered {e['value']!r}" in bad["value.recomputed"]
    assert f"image {idx}:" in bad["rows.statistics"]


def test_edited_rows_file_only(mutable_run):
    """A change that keeps the rendered value (pA_lower in its last digits) is still caught, in rows.tsv only."""
    e = next(x for x in cells_csv(mutable_run, "table4") if x["row"] == "1" and x["column"] == "ACR")
    path = _cell_dir(mutable_run, e["cell_id"]) / "rows.tsv"
    row = next(csv.DictReader(open(path), delimiter="\t"))
    _edit_row(path, int(row["idx"]), pA_lower=repr(float(row["pA_lower"]) + 1e-12))
    rep = audit_json(mutable_run, "table4", "1", "ACR", expect_rc=1)
    assert set(failed(rep)) == {"rows.shards", "rows.statistics", "rows.pipeline_sha256"}
    assert rep["value"]["matches"]


def test_changed_checkpoint_byte_is_reported(mutable_run):
    root = mutable_run
    e = next(x for x in cells_csv(root, "table4") if x["row"] == "1" and x["column"] == "0.20")
    ckpt = root / "results" / EXP / "checkpoints" / "gaussian_0.12.pt"
    data = bytearray(ckpt.read_bytes())
    md5 = hashlib.md5(data).hexdigest()
    (root / "dvc.lock").write_text(yaml.safe_dump({"schema": "2.0", "stages": {"train_classifier@gaussian_0.12": {
        "cmd": "diffsmooth train-classifier", "outs": [
            {"path": f"results/{EXP}/checkpoints/gaussian_0.12.pt", "hash": "md5", "md5": md5, "size": len(data)}]}}}))
    ok = audit_json(root, "table4", "1", "0.20")
    ckpts = {c["role"]: c for c in ok["cell_audit"]["checkpoints"]}
    assert ckpts["classifier"]["dvc"]["matches"] and ckpts["classifier"]["dvc"]["md5"] == md5
    assert ckpts["diffusion"]["dvc"] is None  # not listed in dvc.lock
    data[len(data) // 2] ^= 0x01
    ckpt.write_bytes(bytes(data))
    proc = audit(root, "table4", "1", "0.20", "--verify", "3", check=False)
    assert proc.returncode == 1
    assert "ON DISK" in proc.stdout and "Verification  skipped: checkpoint(s) differ" in proc.stdout
    rep = audit_json(root, "table4", "1", "0.20", "--verify", "3", expect_rc=1)
    bad = failed(rep)
    assert set(bad) == {"checkpoint.classifier.sha256", "checkpoint.classifier.dvc"}
    assert hashlib.sha256(data).hexdigest() in bad["checkpoint.classifier.sha256"]
    assert rep["cell_audit"]["verification"]["status"] == "skipped"
    assert rep["value"]["matches"]  # the rows themselves are untouched


def test_stale_rendered_value_is_reported(mutable_run):
    path = mutable_run / "results" / "tables" / EXP / "table4.cells.csv"
    entries = cells_csv(mutable_run, "table4")
    e = next(x for x in entries if x["row"] == "2" and x["column"] == "0.30")
    e["value"] = f"{float(e['value']) + 2.5:.1f}"
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(entries[0]), lineterminator="\n")
        w.writeheader()
        w.writerows(entries)
    proc = audit(mutable_run, "table4", "2", "0.30", check=False)
    assert proc.returncode == 1
    assert "value.recomputed" in proc.stdout and "value.markdown" in proc.stdout
    assert f"rendering.cells.csv: results/tables/{EXP}/table4.cells.csv differs" in proc.stdout


@pytest.mark.parametrize("suffix", [".md", ".tex", ".html", ".cells.csv"])
def test_edited_number_in_any_rendering_is_reported(mutable_run, suffix):
    """Every rendering is re-rendered from the rows and compared: an edited number fails the audit of any
    cell of that table, naming the file."""
    path = mutable_run / "results" / "tables" / EXP / f"table4{suffix}"
    text = path.read_text()
    # the first certified-accuracy number (one decimal; radii have two, ACR three) after the header line
    start = text.index("\n", text.index("0.30")) + 1
    m = re.compile(r"(?<![\d.])(\d{1,3}\.\d)(?![\d.])").search(text, start)
    assert m, f"no certified-accuracy number in {path}"
    path.write_text(text[:m.start()] + f"{float(m.group(1)) + 2.5:.1f}" + text[m.end():])
    for row, column in (("2", "0.30"), ("1", "ACR")):
        rep = audit_json(mutable_run, "table4", row, column, expect_rc=1)
        bad = failed(rep)
        assert f"rendering{suffix}" in bad and f"table4{suffix}" in bad[f"rendering{suffix}"], bad
        assert f"{float(m.group(1)) + 2.5:.1f}" in bad[f"rendering{suffix}"]  # the line it differs on
        assert {r["format"]: r["status"] for r in rep["renderings"]}[suffix.lstrip(".")] == "mismatch"
    out = audit(mutable_run, "table4", "2", "0.30", check=False).stdout
    assert f"rendering{suffix}: results/tables/{EXP}/table4{suffix} differs" in out


def test_unedited_renderings_all_checked(fast_run):
    rep = audit_json(fast_run, "table4", "2", "0.30")
    checks = {c["name"]: c["status"] for c in rep["checks"]}
    assert all(checks[f"rendering.{f}"] == "ok" for f in ("md", "tex", "html", "cells.csv"))
    assert [r["format"] for r in rep["renderings"]] == ["md", "tex", "cells.csv", "html"]


def test_skipped_checks_say_why(mutable_run):
    """A deleted shard file, merged summary or rendering shows as a skipped check with its reason (text and
    JSON), never as fewer checks."""
    root = mutable_run
    e = next(x for x in cells_csv(root, "table4") if x["row"] == "2" and x["column"] == "0.30")
    before = {c["name"] for c in audit_json(root, "table4", "2", "0.30")["checks"]}
    summaries = list((root / "results" / EXP / "groups").rglob("merged-*.json"))
    assert summaries
    for f in summaries:
        f.unlink()
    (root / "results" / "tables" / EXP / "table4.tex").unlink()
    rep = audit_json(root, "table4", "2", "0.30")  # nothing contradicts the rows: still OK, with skips
    skipped = {c["name"]: c["detail"] for c in rep["checks"] if c["status"] == "skipped"}
    assert before <= {c["name"] for c in rep["checks"]}
    assert "does not exist" in skipped["rows.pipeline_sha256"] and "merged-" in skipped["rows.pipeline_sha256"]
    assert "table4.tex does not exist" in skipped["rendering.tex"]
    out = audit(root, "table4", "2", "0.30").stdout
    assert "skipped rows.pipeline_sha256: " in out and "skipped rendering.tex: " in out
    assert f"{len(skipped)} skipped (reasons above)" in out

    shard = _cell_dir(root, e["cell_id"]) / "shards" / "0001.tsv"
    shard.unlink()
    rep = audit_json(root, "table4", "2", "0.30", expect_rc=1)
    skipped = {c["name"]: c["detail"] for c in rep["checks"] if c["status"] == "skipped"}
    assert str(shard.relative_to(root)) in skipped["rows.shards"] and "not compared" in skipped["rows.shards"]
    assert "shard1.rows" in failed(rep)
    assert "skipped rows.shards: " in audit(root, "table4", "2", "0.30", check=False).stdout


def test_damaged_meta_names_the_file(mutable_run):
    e = next(x for x in cells_csv(mutable_run, "table4") if x["row"] == "2" and x["column"] == "0.30")
    meta = _cell_dir(mutable_run, e["cell_id"]) / "meta.json"
    for text, words in (("[1, 2]", "holds a JSON list, not an object"), ("{", "is not valid JSON")):
        meta.write_text(text)
        proc = audit(mutable_run, "table4", "2", "0.30", check=False)
        assert proc.returncode == 2 and words in proc.stderr and str(meta.relative_to(mutable_run)) in proc.stderr
        assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_recorded_settings_not_the_config(mutable_run):
    """The audit shows the settings the rows were computed with (meta.json), not today's config."""
    root = mutable_run
    e = next(x for x in cells_csv(root, "table4") if x["row"] == "2" and x["column"] == "0.30")
    meta_path = _cell_dir(root, e["cell_id"]) / "meta.json"
    meta = json.loads(meta_path.read_text())
    assert meta.get("settings"), "the merged meta.json records no settings"
    rep = audit_json(root, "table4", "2", "0.30")
    se = rep["cell_audit"]["settings"]
    assert se["recorded"] and se["values"] == {**se["values"], **meta["settings"]}
    meta["settings"] = {**meta["settings"], "precision": "bf16", "channels_last": True}
    meta_path.write_text(json.dumps(meta))
    rep = audit_json(root, "table4", "2", "0.30")
    assert rep["cell_audit"]["settings"]["values"]["precision"] == "bf16"
    notes = {c["name"]: c["detail"] for c in rep["checks"] if c["status"] == "info"}
    assert "precision: recorded 'bf16'" in notes["settings.changed"]
    out = audit(root, "table4", "2", "0.30").stdout
    assert "Settings  as recorded when the rows were computed: precision bf16" in out
    del meta["settings"]
    meta_path.write_text(json.dumps(meta))
    rep = audit_json(root, "table4", "2", "0.30")
    assert not rep["cell_audit"]["settings"]["recorded"] and rep["cell_audit"]["settings"]["values"] == {}
    assert "Settings  not recorded in meta.json" in audit(root, "table4", "2", "0.30").stdout


def _import_by_hand(root: Path, cid: str) -> Path:
    """Replace a cell by an imported one, as `diffsmooth import` of a Cohen-format log leaves it: rows with
    3-digit radii and no nA / n / pA_lower, meta.json with `imported` and no shards, checkpoints or seeds."""
    cdir = _cell_dir(root, cid)
    rows = list(csv.DictReader(open(cdir / "rows.tsv"), delimiter="\t"))
    old = json.loads((cdir / "meta.json").read_text())
    log = root / "logs" / "cohen_sigma0.25.tsv"
    log.parent.mkdir(exist_ok=True)
    log.write_text("idx\tlabel\tpredict\tradius\tcorrect\ttime\n" + "".join(
        f"{r['idx']}\t{r['label']}\t{r['predict']}\t{round_sig(float(r['radius'])):.3}\t{r['correct']}\t0:00:01.5\n"
        for r in rows))
    (cdir / "rows.tsv").write_text("idx\tlabel\tpredict\tradius\tcorrect\ttime\tnA\tn\tpA_lower\n" + "".join(
        f"{r['idx']}\t{r['label']}\t{r['predict']}\t{round_sig(float(r['radius']))!r}\t{r['correct']}\t1.500000\t\t\t\n"
        for r in rows))
    shutil.rmtree(cdir / "shards")
    (cdir / "meta.json").write_text(json.dumps({
        "cell_id": cid, "cell": old["cell"], "experiment": EXP, "images": old["images"],
        "imported": {"source": "logs/cohen_sigma0.25.tsv", "sha256": hashlib.sha256(log.read_bytes()).hexdigest(),
                     "format": "cohen"}}))
    return cdir


def test_imported_cell(mutable_run):
    root = mutable_run
    e = next(x for x in cells_csv(root, "table4") if x["row"] == "1" and x["column"] == "0.20")
    cdir = _import_by_hand(root, e["cell_id"])
    run(["diffsmooth", "tables", "--configfile", CONFIG], root)  # the tables now show the imported rows
    rep = audit_json(root, "table4", "1", "0.20", "--verify", "2")
    ca, checks = rep["cell_audit"], {c["name"]: c for c in rep["checks"]}
    assert rep["ok"] and rep["value"]["matches"]
    assert ca["imported"]["source"] == "logs/cohen_sigma0.25.tsv" and ca["imported"]["matches"]
    assert checks["imported.sha256"]["status"] == "ok" and checks["rows.statistics"]["status"] == "ok"
    assert checks["data.labels"]["status"] == "ok"
    why = "imported from logs/cohen_sigma0.25.tsv: cannot re-certify, no checkpoints or seeds were recorded"
    assert ca["verification"]["status"] == "skipped" and ca["verification"]["reason"] == why
    assert checks["verify"] == {"name": "verify", "status": "skipped", "detail": why}
    for name in ("rows.shards", "rows.pipeline_sha256", "checkpoints"):
        assert checks[name]["status"] == "skipped" and "imported from logs/cohen_sigma0.25.tsv" in checks[name]["detail"]
    assert ca["checkpoints"] == [] and ca["provenance"] == [] and ca["seeds"]["seed"] is None
    out = audit(root, "--cell-id", e["cell_id"], "--verify", "2").stdout
    assert "imported from logs/cohen_sigma0.25.tsv (cohen format)" in out and f"skipped verify: {why}" in out
    assert "Verification  skipped: " + why in out

    # what can still be re-checked: the log's bytes, and the rows against each other, N, alpha and the data
    log = root / "logs" / "cohen_sigma0.25.tsv"
    log.write_text(log.read_text() + "# edited\n")
    lines = (cdir / "rows.tsv").read_text().split("\n")
    wrong = [1, 2, 3, 4]  # rows (lines) edited below
    f = [ln.split("\t") for ln in lines]
    f[1][4] = "1" if f[1][2] != f[1][1] else "0"  # correct contradicts predict == label
    f[2][2], f[2][3], f[2][4] = "-1", "0.2", "0"  # an abstention with a radius
    f[3][3] = "9.0"  # beyond what N = 500 can certify
    f[4][1] = str((int(f[4][1]) + 1) % 10)  # a label that is not the dataset's
    f[4][4] = str(int(f[4][2] == f[4][1]))
    (cdir / "rows.tsv").write_text("\n".join("\t".join(x) for x in f))
    bad = failed(audit_json(root, "--cell-id", e["cell_id"], expect_rc=1))
    assert {"imported.sha256", "rows.statistics", "data.labels"} <= set(bad), bad
    idx = [f[i][0] for i in wrong]
    assert f"image {idx[0]}: correct = " in bad["rows.statistics"]
    assert f"image {idx[1]}: radius = 0.2 for an abstention" in bad["rows.statistics"]
    assert f"image {idx[2]}: radius = 9.0 > " in bad["rows.statistics"]
    assert f"image {idx[3]}: label " in bad["data.labels"]


def test_imported_rows_with_counts_are_rechecked(mutable_run):
    """An imported log in this pipeline's format carries nA: pA_lower and the radius are re-derived from it."""
    root = mutable_run
    e = next(x for x in cells_csv(root, "table4") if x["row"] == "1" and x["column"] == "0.20")
    cdir = _cell_dir(root, e["cell_id"])
    merged = (cdir / "rows.tsv").read_text()
    _import_by_hand(root, e["cell_id"])
    meta = json.loads((cdir / "meta.json").read_text())
    meta["imported"]["format"] = "diffsmooth"
    (cdir / "meta.json").write_text(json.dumps(meta))
    (cdir / "rows.tsv").write_text(merged)
    rep = audit_json(root, "--cell-id", e["cell_id"])
    assert {c["name"]: c["status"] for c in rep["checks"]}["rows.statistics"] == "ok"
    row = next(csv.DictReader(open(cdir / "rows.tsv"), delimiter="\t"))
    _edit_row(cdir / "rows.tsv", int(row["idx"]), pA_lower=repr(float(row["pA_lower"]) * 0.9))
    bad = failed(audit_json(root, "--cell-id", e["cell_id"], expect_rc=1))
    assert f"image {row['idx']}: pA_lower = " in bad["rows.statistics"]


# ---------------------------------------------------------------------------------------------------
# Helpers


def test_compact_indices_and_choice():
    assert compact_indices(range(40)) == "0-39"
    assert compact_indices([0, 2, 4, 6, 7, 20]) == "0-6 step 2, 7, 20"
    assert compact_indices([3, 17]) == "3, 17"
    assert compact_indices([]) == ""
    imgs = list(range(0, 80, 2))
    assert choose_images(imgs, 3) == choose_images(imgs, 3) == [12, 40, 66]
    assert choose_images(imgs, 100) == imgs
    assert choose_images(imgs, 3, "4, 8,4") == [4, 8]
    with pytest.raises(AuditError, match="not among"):
        choose_images(imgs, 0, "5")


def test_row_labels():
    entries = [{"row": "1", "row_label": "DiffSmooth (Gaussian) | 0.50 | 0.25"},
               {"row": "2", "row_label": "DiffSmooth (Gaussian) | 0.50 | 0.50"}]
    assert _norm_label("DiffSmooth (Gaussian), σ = 0.50, σ′ = 0.25") == ["diffsmooth (gaussian)", "0.50", "0.25"]
    assert _resolve_row(entries, "DiffSmooth (Gaussian), σ = 0.50, σ′ = 0.25", "t") == 1
    assert _resolve_row(entries, "diffsmooth (gaussian) | 0.50 | 0.50", "t") == 2
    assert _resolve_row(entries, "2", "t") == 2
    with pytest.raises(AuditError, match="several rows"):
        _resolve_row(entries, "DiffSmooth", "t")


def test_dvc_record_file_and_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    f = tmp_path / "data" / "checkpoints" / "model.pt"
    f.parent.mkdir(parents=True)
    f.write_bytes(b"weights")
    md5 = hashlib.md5(b"weights").hexdigest()
    assert dvc_record(f) is None
    (f.parent / "model.pt.dvc").write_text(yaml.safe_dump({"outs": [{"md5": md5, "path": "model.pt", "size": 7}]}))
    rec = dvc_record(f)
    assert rec["md5"] == md5 and rec["source"].endswith("model.pt.dvc")
    (f.parent / "model.pt.dvc").unlink()
    (tmp_path / "dvc.lock").write_text(yaml.safe_dump({"schema": "2.0", "stages": {"get": {"cmd": "x", "outs": [
        {"path": "data/checkpoints", "md5": "ab" * 16 + ".dir"}]}}}))
    rec = dvc_record(f)
    assert rec["md5"] is None and "directory data/checkpoints" in rec["source"]


def test_dvc_record_of_a_folder_tracked_in_the_checkpoints_project(tmp_path, monkeypatch):
    """data/checkpoints/ is a DVC project of its own: a file inside a folder its `<folder>.dvc` tracks is
    found through that file, and the folder's manifest is read from that project's cache, not the root's."""
    monkeypatch.chdir(tmp_path)
    project = tmp_path / "data" / "checkpoints"
    f = project / "beit_large_patch16_224" / "noise_sd0.25" / "checkpoint.pth.tar"
    f.parent.mkdir(parents=True)
    f.write_bytes(b"beit")
    (tmp_path / ".dvc").mkdir()
    (project / ".dvc").mkdir()
    dir_md5 = "cd" * 16
    (project / "beit_large_patch16_224.dvc").write_text(yaml.safe_dump(
        {"outs": [{"md5": dir_md5 + ".dir", "path": "beit_large_patch16_224"}]}))
    rec = dvc_record(f)
    assert rec["md5"] is None and "beit_large_patch16_224.dvc" in rec["source"]
    manifest = project / ".dvc/cache/files/md5" / dir_md5[:2] / (dir_md5[2:] + ".dir")
    manifest.parent.mkdir(parents=True)
    file_md5 = hashlib.md5(b"beit").hexdigest()
    manifest.write_text(json.dumps([{"md5": file_md5, "relpath": "noise_sd0.25/checkpoint.pth.tar"}]))
    assert dvc_record(f) == {"source": "data/checkpoints/beit_large_patch16_224.dvc, directory "
                                       "data/checkpoints/beit_large_patch16_224", "md5": file_md5}
