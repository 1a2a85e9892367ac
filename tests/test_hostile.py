"""Hostile and clumsy input (issue #15) and what users bring (issue #14, items 3-5): names that would reach a
shell or escape results/, concurrent writers, deleted intermediates, faults of the file system, config values
that must be refused before any work, user files that must never be a rule's output, rows that must never be
reused for other images, and outputs readable as the umask says."""
from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import BIN, copy_repo, pipeline_env, run
from diffsmooth.config import ConfigError, load_config
from diffsmooth.grid import build_grid, cell_id
from diffsmooth.paths import Layout, OutsideResultsError, contained
from diffsmooth.rows import CorruptRowsError, ShardBusyError, ShardLock, atomic_write_text, read_json_object, read_rows

FAST = Path(__file__).resolve().parent.parent / "config" / "fast.yaml"
GROUP = "digits/sigma0.25"


def fast_config() -> dict:
    return yaml.safe_load(FAST.read_text())


def write_config(tmp_path, config, name="cfg.yaml") -> Path:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def refused(tmp_path, mutate=None, text=None) -> str:
    if text is None:
        config = fast_config()
        mutate(config)
        path = write_config(tmp_path, config)
    else:
        path = tmp_path / "cfg.yaml"
        path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return str(info.value)


# --------------------------------------------------------------------------------------------------
# config values refused before any work (#15.5) and names (#15.1)

def _rename_classifier(config, old, new):
    config["classifiers"][new] = config["classifiers"].pop(old)
    for mod in config["models"]:
        mod["classifiers"] = {k: (new if v == old else v) for k, v in mod["classifiers"].items()}
        if mod.get("standard") == old:
            mod["standard"] = new


@pytest.mark.parametrize("name", ["g`touch pwned`", "../../elsewhere", "a b", "x;rm -rf ~", "$(id)"])
def test_names_that_reach_paths_or_shells_are_refused(tmp_path, name):
    msg = refused(tmp_path, lambda c: _rename_classifier(c, "gaussian_0.25", name))
    assert "names become file paths" in msg and "classifiers" in msg
    msg = refused(tmp_path, lambda c: c["tables"].__setitem__(name, c["tables"].pop("table4")))
    assert "names become file paths" in msg
    msg = refused(tmp_path, lambda c: c["models"][0].__setitem__("id", name))
    assert "names become file paths" in msg


@pytest.mark.parametrize("mutate, parts", [
    (lambda c: c["certify"].__setitem__("N", 500.0), ["certify/N", "integer", "without a decimal point"]),
    (lambda c: c["certify"].__setitem__("shard_size", 20.0), ["certify/shard_size", "integer"]),
    (lambda c: c["models"][0].__setitem__("shift", float("nan")), ["models/0/shift", "NaN or infinity"]),
    (lambda c: c["models"][0].__setitem__("shift", {"0.25": float("inf")}), ["NaN or infinity"]),
    (lambda c: c["radii"].__setitem__("stop", float("nan")), ["radii/stop", "NaN or infinity"]),
    (lambda c: c["radii"].__setitem__("step", 1e-7), ["radii: step=1e-07", "radius columns", "larger step"]),
    (lambda c: c.__setitem__("radii", {"start": 1.0, "stop": 0.2, "step": 0.1}), ["start=1.0 > stop=0.2", "swap"]),
    (lambda c: c["tables"]["table1"].__setitem__("radii", {"start": 0.5, "stop": 0.0, "step": 0.1}),
     ["tables/table1/radii", "swap"]),
    (lambda c: c.__setitem__("sigmas", [0.25, 0.251]), ["sigma0.25", "first two decimals"]),
    (lambda c: c["tables"]["table6"].__setitem__("settings", [{"N": 100, "m": 4}]),
     ["tables/table6/settings", "N=100 x m=4", "budget 500"]),
    (lambda c: c["models"][0]["classifiers"].__setitem__("0.250", "gaussian_0.25"), ["same sigma"]),
])
def test_bad_values_are_refused_with_the_key_and_the_fix(tmp_path, mutate, parts):
    msg = refused(tmp_path, mutate)
    for part in parts:
        assert part in msg, msg


def test_a_key_repeated_in_one_mapping_is_refused(tmp_path):
    text = FAST.read_text().replace("  N: 500\n", "  N: 500\n  N: 100000\n")
    assert text.count("  N: ") == 2
    msg = refused(tmp_path, text=text)
    assert "'N' appears twice" in msg and "keep one" in msg and "line" in msg


def test_cli_refuses_a_non_integral_n_before_any_work(tmp_path):
    config = fast_config()
    config["certify"]["N"] = 500.0
    path = write_config(tmp_path, config)
    proc = subprocess.run([sys.executable, "-m", "diffsmooth", "certify", "--configfile", str(path), "--group",
                           GROUP, "--shard", "0", "--results", str(tmp_path / "results")],
                          capture_output=True, text=True, env=pipeline_env(Path.cwd()))
    assert proc.returncode == 2 and "certify/N" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "results").exists()


# --------------------------------------------------------------------------------------------------
# paths (#15.1)

def test_writers_refuse_paths_outside_the_results_tree(tmp_path):
    results = tmp_path / "results"
    (results / "exp").mkdir(parents=True)
    assert contained(Layout(results, "exp").rows("digits/sigma0.25/rs/a/b"), results)
    with pytest.raises(OutsideResultsError, match="outside"):
        contained(Layout(results, "exp").rows("../../../../etc/x"), results)
    (results / "exp" / "cells").symlink_to(tmp_path / "elsewhere")  # a symlink that leaves the tree
    with pytest.raises(OutsideResultsError):
        contained(Layout(results, "exp").rows("digits/x"), results)


def test_config_path_with_spaces_and_shell_characters(fast_run, tmp_path):
    """The config's path reaches every job as one quoted argument: it runs nothing and breaks nothing."""
    root = copy_repo(tmp_path / "repo")
    weird = root / "my configs" / "a `touch PWNED` $(touch PWNED2); b.yaml"
    weird.parent.mkdir()
    config = fast_config()
    config["dataset"]["root"] = "data/weird digits"
    weird.write_text(yaml.safe_dump(config, sort_keys=False))
    run(["snakemake", "-c1", "prepare_data", "--configfile", str(weird.relative_to(root))], root)
    assert (root / "data" / "weird digits" / "test.npz").exists()
    assert not list(root.rglob("PWNED*"))


# --------------------------------------------------------------------------------------------------
# one writer per shard (#15.2)

def test_shard_lock_names_the_holder_and_dies_with_it(tmp_path):
    lock_path = tmp_path / "shards" / "0001.lock"
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; sys.path.insert(0, %r); from diffsmooth.rows import ShardLock; "
        "ShardLock(%r).acquire(); print('held', flush=True); time.sleep(60)") % (str(Path.cwd()), str(lock_path))],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(ShardBusyError, match=f"PID {holder.pid}"):
            ShardLock(lock_path).acquire()
    finally:
        os.kill(holder.pid, signal.SIGKILL)  # kill -9: the kernel releases the lock
        holder.wait()
    lock = ShardLock(lock_path)
    lock.acquire()
    lock.release()


@pytest.fixture
def tree(fast_run, tmp_path) -> Path:
    root = tmp_path / "repo"
    shutil.copytree(fast_run, root, symlinks=True, ignore=shutil.ignore_patterns(".snakemake", "__pycache__"))
    return root


def _drop_shard(root: Path, shard: int) -> None:
    for p in (root / "results" / "digits-fast" / "cells").rglob(f"shards/{shard:04d}.*"):
        p.unlink()


def _shard_rows(root: Path, shard: int) -> dict:
    """relative path -> the shard's rows without the `time` column (seconds differ between runs)."""
    out = {}
    for p in sorted((root / "results" / "digits-fast" / "cells").rglob(f"shards/{shard:04d}.tsv")):
        lines = [ln.split("\t") for ln in p.read_text().splitlines()]
        out[p.relative_to(root)] = [fields[:5] + fields[6:] for fields in lines]
    return out


@pytest.mark.parametrize("second", ["group", "cell"])
def test_two_writers_on_one_shard_never_duplicate_rows(tree, second):
    """Two `diffsmooth certify` at once on the same shard (fused + fused, fused + per-cell): one writes, the
    other stops with the holder's PID or finds the shard complete; every image appears once."""
    reference = _shard_rows(tree, 1)
    assert reference
    _drop_shard(tree, 1)
    grid = build_grid(load_config(tree / "config" / "fast.yaml"))
    cell = next(cell_id(c) for c in grid.groups()[GROUP] if c.method == "diffsmooth")
    base = [str(BIN / "diffsmooth"), "certify", "--configfile", "config/fast.yaml", "--shard", "1", "--no-progress"]
    cmds = [base + ["--group", GROUP], base + (["--group", GROUP] if second == "group" else ["--cell", str(cell)])]
    procs = [subprocess.Popen(c, cwd=tree, env=pipeline_env(tree), stderr=subprocess.PIPE, text=True) for c in cmds]
    outs = [(p.wait(timeout=600), p.stderr.read()) for p in procs]
    for rc, err in outs:
        assert rc in (0, 2), err
        assert "Traceback" not in err, err
        if rc == 2:
            assert "is being written by PID" in err, err
    assert any(rc == 0 for rc, _ in outs)
    subprocess.run(base + ["--group", GROUP], cwd=tree, env=pipeline_env(tree), check=True, capture_output=True)
    assert _shard_rows(tree, 1) == reference  # each image once, identical to the undisturbed run (but for times)


# --------------------------------------------------------------------------------------------------
# faults with one clear line (#15.4)

def test_undecodable_rows_and_wrong_json_types_name_the_file(tmp_path):
    rows = tmp_path / "rows.tsv"
    rows.write_bytes(b"idx\tlabel\xff\n")
    with pytest.raises(CorruptRowsError, match=f"{rows}: byte 9 is not UTF-8"):
        read_rows(rows)
    meta = tmp_path / "meta.json"
    meta.write_text("[1, 2]")
    with pytest.raises(ValueError, match="holds a JSON list, not the object"):
        read_json_object(meta, "delete it")


def test_deleted_shard_meta_is_named_not_called_other_settings(tree):
    meta = next((tree / "results" / "digits-fast" / "cells").rglob("shards/0000.json"))
    meta.unlink()
    proc = run(["diffsmooth", "certify", "--configfile", "config/fast.yaml", "--group", GROUP, "--shard", "0",
                "--no-progress"], tree, check=False)
    assert proc.returncode == 2
    assert "metadata 0000.json is" in proc.stderr and "missing" in proc.stderr
    assert "other settings" not in proc.stderr and "Traceback" not in proc.stderr


def _mount_tmpfs(path: Path, size: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True).returncode == 0


@pytest.mark.parametrize("fault", ["full", "read-only"])
def test_full_or_read_only_disk_gives_one_line_and_a_rerun_recovers(tree, tmp_path, fault):
    mnt = tmp_path / "mnt"
    if not _mount_tmpfs(mnt, "64k"):
        if os.environ.get("CI"):
            pytest.fail("CI runs as root and must be able to mount a tmpfs for this test")
        pytest.skip("needs root to mount a small tmpfs")
    try:
        if fault == "full":
            (mnt / "filler").write_bytes(b"\0" * 60_000)
        else:
            subprocess.run(["mount", "-o", "remount,ro", str(mnt)], check=True)
        cmd = ["diffsmooth", "tables", "--configfile", "config/fast.yaml", "--out", str(mnt / "tables")]
        proc = run(cmd, tree, check=False)
        assert proc.returncode == 2, proc.stderr
        lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
        assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
        want = "No space left on device" if fault == "full" else "Read-only file system"
        assert want in lines[0] and ("free space" in lines[0] or "writable" in lines[0]), lines[0]
        reference = tree / "results" / "tables" / "digits-fast"
        assert not list(mnt.rglob("*.tmp"))  # no temporary file left behind
        for p in (mnt / "tables").glob("*") if (mnt / "tables").exists() else []:  # what exists is complete
            assert p.read_bytes() == (reference / p.name).read_bytes(), p
        subprocess.run(["mount", "-o", "remount,rw,size=4m", str(mnt)], check=True)
        (mnt / "filler").unlink(missing_ok=True)
        run(cmd, tree)
        for name in ("table4.md", "table4.tex", "table1.cells.csv"):
            assert (mnt / "tables" / name).read_bytes() == (reference / name).read_bytes()
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)


# --------------------------------------------------------------------------------------------------
# deleted intermediates (#15.3)

def test_deleted_merged_summary_is_rebuilt_and_a_deleted_rows_file_is_named(fast_run, tmp_path):
    root = tmp_path / "repo"
    shutil.copytree(fast_run, root, symlinks=True, ignore=shutil.ignore_patterns("__pycache__", "locks"))
    tables = root / "results" / "tables" / "digits-fast"
    before = {p.name: p.read_bytes() for p in tables.glob("*.md")}
    merged = next((root / "results" / "digits-fast" / "groups").rglob("merged-*.json"))
    merged.unlink()
    out = run(["snakemake", "-c1", "all_tables", "--configfile", "config/fast.yaml"], root)
    assert merged.exists(), out.stdout[-2000:]
    assert {p.name: p.read_bytes() for p in tables.glob("*.md")} == before
    rows = next((root / "results" / "digits-fast" / "cells").rglob("rows.tsv"))
    rows.unlink()
    proc = run(["snakemake", "-c1", "all_tables", "--configfile", "config/fast.yaml"], root, check=False)
    assert proc.returncode != 0
    said = proc.stderr + proc.stdout
    assert str(rows.relative_to(root)) in said and "snakemake all_tables --forcerun merge_group" in said, said[-3000:]
    run(["snakemake", "-c1", "all_tables", "--configfile", "config/fast.yaml", "--forcerun", "merge_group"], root)
    assert rows.exists() and {p.name: p.read_bytes() for p in tables.glob("*.md")} == before


# --------------------------------------------------------------------------------------------------
# what users bring (#14.3-5)

def test_a_users_checkpoint_is_never_a_rule_output(tmp_path):
    """A paper config whose checkpoints were downloaded with their old dates, after a fresh `git pull` of the
    training code: no training is scheduled, no 'missing metadata', and a failing run keeps the file intact."""
    root = copy_repo(tmp_path / "repo")
    config = load_config(root / "config" / "cifar10.yaml")
    old = time.mktime((2021, 3, 1, 0, 0, 0, 0, 0, -1))
    files = [config["diffusion"]["checkpoint"]] + [c["checkpoint"] for c in config["classifiers"].values()]
    for f in files:
        p = root / f
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"not really a checkpoint: " + f.encode())
        os.utime(p, (old, old))
    (root / "diffsmooth" / "training.py").touch()
    dry = run(["snakemake", "-n", "all_tables", "--configfile", "config/cifar10.yaml"], root)
    assert "train_diffusion" not in dry.stdout and "train_classifier" not in dry.stdout
    assert "missing metadata" not in (dry.stdout + dry.stderr).lower()
    digests = {f: (root / f).read_bytes() for f in files}
    test_batch = root / "data" / "cifar10" / "cifar-10-batches-py" / "test_batch"
    test_batch.parent.mkdir(parents=True)
    test_batch.write_bytes(b"junk")
    proc = run(["snakemake", "-c1", "all_tables", "--configfile", "config/cifar10.yaml"], root, check=False)
    assert proc.returncode != 0
    assert {f: (root / f).read_bytes() for f in files} == digests
    assert all((root / f).stat().st_mtime == old for f in files)


def test_rows_of_other_images_are_never_reused(tree):
    """Same indices, other images (a re-made test split): the stored identity holds the images' content."""
    data = tree / "data" / "digits" / "test.npz"
    with np.load(data) as z:
        x, y = z["x"].copy(), z["y"].copy()
    x[0] = 1.0 - x[0]  # image 0 is now another image
    np.savez(data, x=x, y=y)
    proc = run(["diffsmooth", "certify", "--configfile", "config/fast.yaml", "--group", GROUP, "--shard", "0",
                "--no-progress"], tree, check=False)
    assert proc.returncode == 2, proc.stderr
    assert "images_sha256: stored" in proc.stderr and "refusing to overwrite" in proc.stderr


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o027, 0o640), (0o002, 0o664)])
def test_outputs_respect_the_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        atomic_write_text(tmp_path / "t.md", "x\n")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "t.md").stat().st_mode) == mode


def test_pipeline_outputs_are_readable_as_the_umask_says(fast_run):
    """Every product of the fast run (rows, meta, shards, summaries, tables, figures, data, checkpoints) has the
    mode a new file gets under this process's umask, not mkstemp's 0600."""
    umask = os.umask(0)
    os.umask(umask)
    files = [p for d in ("results", "data") for p in (fast_run / d).rglob("*") if p.is_file()]
    assert len(files) > 100
    bad = [f"{p}: {stat.S_IMODE(p.stat().st_mode):o}" for p in files
           if stat.S_IMODE(p.stat().st_mode) != 0o666 & ~umask]
    assert not bad, bad[:5]


def test_trusted_pickle_checkpoints_are_an_opt_in_of_the_config(tree, tmp_path):
    """A checkpoint holding Python objects (here an argparse.Namespace, as some training scripts save) is
    refused by torch.load(weights_only=True); the message names the config key that opts in, and it works."""
    import argparse

    import torch

    ckpt = torch.load(tree / "results" / "digits-fast" / "checkpoints" / "gaussian_0.25.pt", weights_only=True)
    path = tmp_path / "with_args.pth.tar"
    torch.save({**ckpt, "args": argparse.Namespace(lr=0.1)}, path)
    config = fast_config()
    config["classifiers"]["gaussian_0.25"]["checkpoint"] = str(path)
    cfg = write_config(tmp_path, config)
    grid = build_grid(load_config(cfg))
    cell = next(cell_id(c) for c in grid.cells if c.method == "rs" and c.classifier == "gaussian_0.25")
    cmd = ["diffsmooth", "certify", "--configfile", str(cfg), "--cell", cell, "--shard", "0", "--no-progress",
           "--results", str(tmp_path / "results")]
    proc = run(cmd, tree, check=False)
    assert proc.returncode == 2 and "`trust_pickle: true`" in proc.stderr and "Traceback" not in proc.stderr
    config["classifiers"]["gaussian_0.25"]["trust_pickle"] = True
    write_config(tmp_path, config)
    run(cmd, tree)
    assert list((tmp_path / "results").rglob("0000.tsv"))


def test_override_files_layer_on_a_complete_base_config(tmp_path):
    """`--configfile BASE OVERRIDE` merges OVERRIDE key by key into BASE; the jobs read the merged config
    (results/<exp>/config.yaml). Two complete configs are refused: their merge would mix two grids."""
    root = copy_repo(tmp_path / "repo")
    (root / "over.yaml").write_text("dataset:\n  test_size: 200\n")
    run(["snakemake", "-c1", "prepare_data", "--configfile", "config/fast.yaml", "over.yaml"], root)
    with np.load(root / "data" / "digits" / "test.npz") as z:
        assert len(z["y"]) == 200
    merged = yaml.safe_load((root / "results" / "digits-fast" / "config.yaml").read_text())
    assert merged["dataset"]["test_size"] == 200 and merged["certify"]["N"] == 500  # the base's keys stay
    proc = run(["snakemake", "-n", "all_tables", "--configfile", "config/fast.yaml", "config/config.yaml"], root,
               check=False)
    assert proc.returncode != 0 and "would mix two grids" in proc.stdout + proc.stderr
