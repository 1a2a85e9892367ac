"""DVC on top of the Snakemake workflow: dvc.yaml, .dvc/, .dvcignore and data/checkpoints/*.dvc.

Every DVC command runs in a copy of the repository made a git repository with a throwaway identity,
with analytics off (DVC_NO_ANALYTICS=1 from `pipeline_env`) and no network: the checkpoints' import
stages must not be fetched by anything here."""
import hashlib
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from conftest import REPO, copy_repo, pipeline_env, run

IDENTITY = {"GIT_AUTHOR_NAME": "DiffSmooth test", "GIT_AUTHOR_EMAIL": "test@example.invalid",
            "GIT_COMMITTER_NAME": "DiffSmooth test", "GIT_COMMITTER_EMAIL": "test@example.invalid"}
STAGES = ("data", "train", "certify", "tables")
CHECKPOINT_SOURCES = {  # .dvc file -> public URL of its import-url stage
    "cifar10_uncond_50M_500K.pt.dvc":
        "https://openaipublic.blob.core.windows.net/diffusion/march-2021/cifar10_uncond_50M_500K.pt",
    "256x256_diffusion_uncond.pt.dvc":
        "https://openaipublic.blob.core.windows.net/diffusion/jul-2021/256x256_diffusion_uncond.pt",
    "cohen_models.tar.dvc": "https://drive.usercontent.google.com/download?"
                            "id=1h_TpbXm5haY5f-l4--IKylmdz6tvPoR4&export=download&confirm=t",
    "smoothadv_models.tar.gz.dvc": "https://drive.usercontent.google.com/download?"
                                   "id=1GH7OeKUzOGiouKhendC-501pLYNRvU8c&export=download&confirm=t",
}
MANUAL_CHECKPOINTS = {"beit_large_patch16_224.dvc": "beit_large_patch16_224"}


def git_copy(dest: Path, fast: bool = False) -> Path:
    """A copy of the working tree as a fresh git repository with one commit (what a clone gives).
    fast: config/config.yaml holds the fast experiment, so DVC and Snakemake both read it."""
    root = copy_repo(dest)
    if fast:
        shutil.copy(root / "config" / "fast.yaml", root / "config" / "config.yaml")
    env = {**pipeline_env(root), **IDENTITY}
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-q", "-m", "copy"]):
        subprocess.run(cmd, cwd=root, env=env, check=True, capture_output=True)
    return root


def dvc(args, root: Path, **kw) -> str:
    proc = run(["dvc", *args], root, **kw)
    return proc.stdout + proc.stderr


def stages_ran(output: str) -> set:
    ran = set(re.findall(r"Running stage '([^']+)'", output))
    skipped = set(re.findall(r"Stage '([^']+)' didn't change, skipping", output))
    assert not ran & skipped, output
    return ran


def edit_config(root: Path, change) -> None:
    path = root / "config" / "config.yaml"
    cfg = yaml.safe_load(path.read_text())
    change(cfg)
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))


def lock(root: Path) -> dict:
    return yaml.safe_load((root / "dvc.lock").read_text())


def out_files(root: Path) -> dict:
    """sha256 of every file under every out recorded in dvc.lock."""
    digests = {}
    for stage in lock(root)["stages"].values():
        for out in stage.get("outs", []):
            top = root / out["path"]
            for f in sorted([top] if top.is_file() else top.rglob("*")):
                if f.is_file():
                    digests[str(f.relative_to(root))] = hashlib.sha256(f.read_bytes()).hexdigest()
    return digests


# ---------------------------------------------------------------------------------------------------
# Committed configuration (no DVC run)


def test_dvc_config_committed():
    from dvc.config import Config

    conf = Config(dvc_dir=str(REPO / ".dvc"), validate=False).load_one("repo")
    assert str(conf["core"]["analytics"]).lower() == "false", "telemetry must be off in the committed config"
    assert conf["core"]["remote"] == "local"
    # stored relative to .dvc/, so every clone gets a sibling folder of its own checkout
    assert Path(conf["remote"]["local"]["url"]) == REPO.parent / "diffsmooth-dvc-remote"
    assert "../../diffsmooth-dvc-remote" in (REPO / ".dvc" / "config").read_text()
    assert "cache" not in conf or "type" not in conf["cache"], "links into the cache would let Snakemake corrupt it"
    ignored = (REPO / ".dvcignore").read_text().split()
    assert "__pycache__/" in ignored and "*.pyc" in ignored


def test_checkpoint_files_are_committed_and_binaries_ignored():
    def ignored(path):
        return subprocess.run(["git", "check-ignore", "-q", path], cwd=REPO).returncode == 0

    names = [*CHECKPOINT_SOURCES, *MANUAL_CHECKPOINTS, "README.md"]
    assert sorted(p.name for p in (REPO / "data/checkpoints").glob("*.dvc")) == sorted(names[:-1])
    for name in names:
        assert not ignored(f"data/checkpoints/{name}"), f"data/checkpoints/{name} must be committable"
    for path in ("data/checkpoints/cifar10_uncond_50M_500K.pt", "data/checkpoints/cohen_models.tar",
                 "data/checkpoints/cohen/models/cifar10/resnet110/noise_0.25/checkpoint.pth.tar",
                 "data/checkpoints/smoothadv/cifar10/PGD_2steps/eps_64/cifar10/resnet110/noise_0.12/checkpoint.pth.tar",
                 "data/checkpoints/beit_large_patch16_224/noise_sd0.25/checkpoint.pth.tar"):
        assert ignored(path), f"{path} must stay out of git"
    # DVC's own matcher must not read the folder as ignored, or it never collects the .dvc files in it
    from scmrepo.git import Git

    assert not Git(str(REPO)).is_ignored(str(REPO / "data" / "checkpoints") + os.sep)


def test_checkpoint_imports_record_sources_and_work_offline(tmp_path):
    root = git_copy(tmp_path / "repo")
    for name, url in CHECKPOINT_SOURCES.items():
        spec = yaml.safe_load((root / "data/checkpoints" / name).read_text())
        assert spec["frozen"] is True and spec["deps"][0]["path"] == url
        assert spec["outs"][0]["path"] == name[: -len(".dvc")]
        assert spec["meta"]["source"] and spec["desc"]
    for name, out in MANUAL_CHECKPOINTS.items():
        spec = yaml.safe_load((root / "data/checkpoints" / name).read_text())
        assert "deps" not in spec and spec["outs"][0]["path"] == out and "sharepoint" in spec["meta"]["source"]

    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        seen = {Path(s.path).resolve().relative_to(root.resolve()).as_posix() for s in repo.index.stages}
    assert {f"data/checkpoints/{n}" for n in [*CHECKPOINT_SOURCES, *MANUAL_CHECKPOINTS]} <= seen

    files = sorted(f"data/checkpoints/{n}" for n in [*CHECKPOINT_SOURCES, *MANUAL_CHECKPOINTS])
    status = dvc(["status", *files], root, timeout=120)
    for name in files:
        assert name in status
    assert status.count("deleted:") == len(files), status  # not downloaded, and nothing fetched


@pytest.mark.slow
def test_dvc_data_status_offline(tmp_path):
    """`dvc data status` asks the import sources for their metadata; offline every request fails after
    its retries (about 25 s here), and the command still succeeds."""
    root = git_copy(tmp_path / "repo")
    assert "No changes" in dvc(["data", "status"], root, timeout=300)


# ---------------------------------------------------------------------------------------------------
# dvc.yaml against the Snakemake workflow


def _dry_run_jobs(root: Path) -> list:
    """(rule, inputs, outputs) of every job of the four stage targets, from a forced dry run."""
    out = run(["snakemake", "-n", "--forceall", "all_data", "all_models", "all_certified", "all_tables"],
              root, timeout=600).stdout
    jobs, cur = [], None
    for line in out.splitlines():
        m = re.match(r"^(?:local)?rule (\w+):$", line)
        if m:
            cur = {"rule": m.group(1), "input": [], "output": []}
            jobs.append(cur)
        elif cur is not None:
            m = re.match(r"^    (input|output): (.*)$", line)
            if m:
                cur[m.group(1)] = [p.strip() for p in m.group(2).split(",") if p.strip()]
            elif not line.startswith("    "):
                cur = None
    assert jobs, out
    return jobs


def _allowed_rules(cmd: str) -> tuple:
    tokens = cmd.split()
    assert tokens[0] == "snakemake", cmd
    target = tokens[1]
    i = tokens.index("--allowed-rules")
    allowed = []
    for tok in tokens[i + 1:]:
        if tok.startswith("-") or tok == "&&":
            break
        allowed.append(tok)
    return target, set(allowed)


def _covered(path: str, paths) -> bool:
    return any(path == p or path.startswith(p.rstrip("/") + "/") for p in paths)


def test_dvc_stages_match_the_workflow(tmp_path):
    """Each stage's command runs its target with only its own rules; every rule of the workflow belongs
    to one stage; that stage lists the rule's library inputs and upstream files as deps and holds its
    outputs in its outs. Fails when a rule, output folder or library module is added to the workflow
    but not to dvc.yaml."""
    root = git_copy(tmp_path / "repo")  # the embedded default, as `dvc repro` reads it
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        stages = {s.name: s for s in repo.index.stages if getattr(s, "name", None) in STAGES}
        assert sorted(stages) == sorted(STAGES)
        spec = {}
        for name, s in stages.items():
            target, allowed = _allowed_rules(s.cmd)
            assert target in allowed
            deps = [d.def_path for d in s.deps]
            for d in deps:
                assert (root / d).exists() or any(_covered(d, [o.def_path for o in t.outs])
                                                  for t in stages.values()), f"{name}: dep {d} does not exist"
            assert all(o.persist for o in s.outs), f"{name}: every out must be persist: true"
            spec[name] = dict(target=target, allowed=allowed, deps=deps, outs=[o.def_path for o in s.outs])
    owner = {}
    for name, st in spec.items():
        for rule in st["allowed"]:
            assert rule not in owner, f"rule {rule} allowed in stages {owner.get(rule)} and {name}"
            owner[rule] = name

    jobs = _dry_run_jobs(root)
    producer = {}
    for job in jobs:
        assert job["rule"] in owner, f"rule {job['rule']} is in no dvc.yaml stage's --allowed-rules"
        for o in job["output"]:
            producer[o] = owner[job["rule"]]
    assert {spec[s]["target"] for s in spec} <= {j["rule"] for j in jobs}
    for job in jobs:
        st = spec[owner[job["rule"]]]
        for o in job["output"]:
            assert _covered(o, st["outs"]), f"{job['rule']} writes {o}, outside the outs of its stage"
        for i in job["input"]:
            if producer.get(i) == owner[job["rule"]]:
                continue  # made inside the same stage
            assert _covered(i, st["deps"]), (f"{job['rule']} reads {i}: add it (or its folder) to the deps "
                                             f"of stage {owner[job['rule']]}")


# ---------------------------------------------------------------------------------------------------
# End to end on the fast experiment


@pytest.mark.slow
def test_dvc_repro_noop_params_push_pull(tmp_path):
    root = git_copy(tmp_path / "repo", fast=True)
    exp = yaml.safe_load((root / "config/config.yaml").read_text())["experiment"]
    tables = root / "results" / "tables" / exp

    # 1. fresh: every stage runs, end to end
    out = dvc(["repro"], root, timeout=900)
    assert stages_ran(out) == set(STAGES), out
    assert (tables / "table1.md").is_file() and (tables / "figure3.png").is_file()
    assert lock(root)["stages"].keys() == set(STAGES)
    status = subprocess.run(["git", "status", "--porcelain"], cwd=root, capture_output=True, text=True).stdout
    assert status.split("\n")[0:1] == ["?? dvc.lock"] and status.count("\n") == 1, \
        f"DVC must leave nothing but dvc.lock for git (no .gitignore files):\n{status}"
    ckpt = root / "results" / exp / "checkpoints" / "diffusion.pt"
    assert not ckpt.is_symlink() and os.stat(ckpt).st_nlink == 1, "outs must be copies, not links into the cache"

    # 2. again: nothing runs, status is clean
    out = dvc(["repro"], root)
    assert stages_ran(out) == set(), out
    assert "up to date" in dvc(["status", "dvc.yaml"], root)

    # 3. push to the committed default remote (a folder next to the clone), wipe outs and cache, pull
    before = out_files(root)
    assert len(before) > 20
    dvc(["push"], root, timeout=300)
    remote = root.parent / "diffsmooth-dvc-remote"
    assert remote.is_dir() and any(remote.rglob("*"))
    for stage in lock(root)["stages"].values():
        for o in stage["outs"]:
            p = root / o["path"]
            shutil.rmtree(p) if p.is_dir() else p.unlink()
    shutil.rmtree(root / ".dvc" / "cache")
    shutil.rmtree(root / ".snakemake", ignore_errors=True)  # as in a fresh clone
    assert "deleted" in dvc(["status", "dvc.yaml"], root)
    dvc(["pull", "dvc.yaml"], root, timeout=300)
    assert out_files(root) == before
    assert "up to date" in dvc(["status", "dvc.yaml"], root)
    assert stages_ran(dvc(["repro"], root)) == set()

    # 4. a table-only parameter: only `tables` runs, and Snakemake runs only the table rules there,
    #    even with the modification times `dvc pull` left behind
    old_step = yaml.safe_load((root / "config/config.yaml").read_text())["radii"]["step"]
    edit_config(root, lambda c: c["radii"].update(step=round(2 * old_step, 6)))
    out = dvc(["repro"], root)
    assert stages_ran(out) == {"tables"}, out
    assert not re.search(r"rule (train_|certify_|merge_|prepare_)", out), out
    header = next(line for line in (tables / "table1.md").read_text().splitlines() if line.startswith("| Method"))
    assert f"{2 * old_step:.2f}" in header and f"{old_step:.2f}" not in header, header
    assert lock(root)["stages"]["tables"]["params"]["config/config.yaml"]["radii"]["step"] == round(2 * old_step, 6)

    # 5. a certification parameter: `certify` and `tables` run, not `data`/`train`; the new cells are
    #    certified (Snakemake alone would not notice: the group files do not name N) and tabulated
    old_n = yaml.safe_load((root / "config/config.yaml").read_text())["certify"]["N"]
    new_n = old_n * 2 // 5  # not a multiple used elsewhere in the grid (table6 uses N = 100)
    edit_config(root, lambda c: c["certify"].update(N=new_n))
    out = dvc(["repro"], root)
    assert stages_ran(out) == {"certify", "tables"}, out
    assert not re.search(r"rule (train_|prepare_)", out), out
    assert f"_N{new_n}_" in (tables / "table1.cells.csv").read_text()
    assert lock(root)["stages"]["certify"]["params"]["config/config.yaml"]["certify"]["N"] == new_n
    assert stages_ran(dvc(["repro"], root)) == set()
