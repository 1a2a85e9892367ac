"""DVC on top of the Snakemake workflow: dvc.yaml, params.yaml, .dvc/, .dvcignore, config/experiments.yaml and
the checkpoints' own DVC project, data/checkpoints/ (.dvc/ and *.dvc).

Every DVC command runs in a copy of the repository made a git repository with a throwaway identity,
with analytics off (DVC_NO_ANALYTICS=1 from `pipeline_env`) and no network: the checkpoints' import
stages must not be fetched by anything here."""
import hashlib
import json
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
    for cmd in (["git", "init", "-q"], ["git", "config", "user.name", IDENTITY["GIT_AUTHOR_NAME"]],
                ["git", "config", "user.email", IDENTITY["GIT_AUTHOR_EMAIL"]],  # `dvc exp run` commits
                ["git", "add", "-A"], ["git", "commit", "-q", "-m", "copy"]):
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
    # one config under both default names: DVC's params.yaml holds it (DVC reads past revisions from git,
    # where it cannot follow a link), Snakemake's config/config.yaml links to it
    assert (REPO / "params.yaml").is_file() and not (REPO / "params.yaml").is_symlink()
    assert os.readlink(REPO / "config" / "config.yaml") == "../params.yaml"


def test_two_files_under_the_default_config_names_are_refused(tmp_path):
    from diffsmooth.config import ConfigError, check_default_config

    (tmp_path / "config").mkdir()
    (tmp_path / "params.yaml").write_text("seed: 0\n")
    (tmp_path / "config" / "config.yaml").symlink_to("../params.yaml")
    check_default_config(tmp_path)
    (tmp_path / "config" / "config.yaml").unlink()
    (tmp_path / "config" / "config.yaml").write_text("seed: 0\n")  # what `mv edited.yaml config/config.yaml` leaves
    with pytest.raises(ConfigError, match=r"ln -sf \.\./params\.yaml config/config\.yaml"):
        check_default_config(tmp_path)


def test_checkpoints_are_a_dvc_project_of_their_own():
    """data/checkpoints/ has its own .dvc/: telemetry off, and a default remote next to the clone, apart from
    the pipeline's (a `dvc gc -c` in one project must not delete the other's objects)."""
    from dvc.config import Config

    project = REPO / "data" / "checkpoints"
    conf = Config(dvc_dir=str(project / ".dvc"), validate=False).load_one("repo")
    assert str(conf["core"]["analytics"]).lower() == "false"
    assert Path(conf["remote"][conf["core"]["remote"]]["url"]) == REPO.parent / "diffsmooth-checkpoints-dvc-remote"
    root = Config(dvc_dir=str(REPO / ".dvc"), validate=False).load_one("repo")
    assert root["remote"]["local"]["url"] != conf["remote"][conf["core"]["remote"]]["url"]


def test_checkpoint_files_are_committed_and_binaries_ignored():
    def ignored(path):
        return subprocess.run(["git", "check-ignore", "-q", path], cwd=REPO).returncode == 0

    names = [*CHECKPOINT_SOURCES, *MANUAL_CHECKPOINTS, "README.md"]
    assert sorted(p.name for p in (REPO / "data/checkpoints").glob("*.dvc") if p.is_file()) == sorted(names[:-1])
    for name in [*names, ".dvc/config", ".dvc/.gitignore", ".dvcignore", ".gitignore"]:
        assert not ignored(f"data/checkpoints/{name}"), f"data/checkpoints/{name} must be committable"
    for path in ("data/checkpoints/cifar10_uncond_50M_500K.pt", "data/checkpoints/cohen_models.tar",
                 "data/checkpoints/cohen/models/cifar10/resnet110/noise_0.25/checkpoint.pth.tar",
                 "data/checkpoints/smoothadv/cifar10/PGD_2steps/eps_64/cifar10/resnet110/noise_0.12/checkpoint.pth.tar",
                 "data/checkpoints/beit_large_patch16_224/noise_sd0.25/checkpoint.pth.tar",
                 "data/checkpoints/.dvc/cache/files/md5/ab/cdef", "data/checkpoints/.dvc/config.local"):
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

    def stage_files(path):
        with Repo(str(path)) as repo:
            return {Path(s.path).resolve().relative_to(path.resolve()).as_posix() for s in repo.index.stages}

    names = sorted([*CHECKPOINT_SOURCES, *MANUAL_CHECKPOINTS])
    assert stage_files(root / "data/checkpoints") == set(names)  # their own project ...
    assert not any(f.startswith("data/checkpoints/") for f in stage_files(root))  # ... not the pipeline's

    status = dvc(["--cd", "data/checkpoints", "status"], root, timeout=120)
    for name in names:
        assert f"{name}:" in status
    assert status.count("deleted:") == len(names), status  # not downloaded, and nothing fetched
    assert "data/checkpoints" not in dvc(["status"], root)  # the root project reports its own stages only


@pytest.mark.slow
def test_dvc_data_status_offline(tmp_path):
    """`dvc data status` in the checkpoints' project asks the import sources for their metadata; offline every
    request fails after its retries (about 25 s here), and the command still succeeds."""
    root = git_copy(tmp_path / "repo")
    assert "No changes" in dvc(["--cd", "data/checkpoints", "data", "status"], root, timeout=300)


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
    assert tokens[:3] == ["sh", "workflow/scripts/with_env.sh", "snakemake"], cmd
    tokens = tokens[2:]
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


def test_a_stage_runs_with_nothing_activated(tmp_path):
    """`.venv/bin/dvc repro` from a shell where nothing is activated: the stage commands find snakemake and
    diffsmooth in the checkout's .venv/ through workflow/scripts/with_env.sh (the data stage, end to end)."""
    if not (REPO / ".venv" / "bin" / "dvc").is_file():
        pytest.skip("needs the checkout's .venv/ (make setup), which the stages fall back to")
    root = git_copy(tmp_path / "repo")
    (root / ".venv").symlink_to(REPO / ".venv")  # a clone with `make setup` done (.venv/ is git-ignored)
    bare = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "DVC_NO_ANALYTICS": "1", "LANG": "C.UTF-8"}
    proc = subprocess.run([str(root / ".venv/bin/dvc"), "repro", "data"], cwd=root, env=bare, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (root / "data/digits/test.npz").is_file() and stages_ran(proc.stdout + proc.stderr) == {"data"}
    missing = subprocess.run(["sh", "workflow/scripts/with_env.sh", "no-such-tool"], cwd=root, env=bare,
                             capture_output=True, text=True)
    assert missing.returncode == 127 and "make setup" in missing.stderr


# ---------------------------------------------------------------------------------------------------
# End to end on the fast experiment


@pytest.fixture(scope="module")
def fast_repro(tmp_path_factory):
    """A clone of the fast experiment after its first `dvc repro`, and that run's output (run once: each test
    works on a copy of it, `reproduced`)."""
    root = git_copy(tmp_path_factory.mktemp("dvc-fast") / "repo", fast=True)
    return root, dvc(["repro"], root, timeout=900)


def reproduced(fast_repro, dest: Path) -> Path:
    """A copy of the reproduced clone: git, DVC cache, results and their modification times. The committed
    remote is a folder next to the clone, so every copy has a remote of its own."""
    shutil.copytree(fast_repro[0], dest, symlinks=True)
    return dest


@pytest.mark.slow
def test_dvc_repro_noop_params_push_pull(fast_repro, tmp_path):
    root = reproduced(fast_repro, tmp_path / "repo")
    exp = yaml.safe_load((root / "config/config.yaml").read_text())["experiment"]
    tables = root / "results" / "tables" / exp

    # 1. fresh: every stage runs, end to end
    out = fast_repro[1]
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
    assert "Data and pipelines are up to date." in dvc(["status"], root)

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
    assert "deleted" in dvc(["status"], root)
    dvc(["pull"], root, timeout=300)  # bare: the pipeline's outs only (the checkpoints are another project)
    assert out_files(root) == before
    assert "up to date" in dvc(["status"], root)
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
    assert lock(root)["stages"]["tables"]["params"]["params.yaml"]["radii"]["step"] == round(2 * old_step, 6)

    # 5. a certification parameter: `certify` and `tables` run, not `data`/`train`; the new cells are
    #    certified (Snakemake alone would not notice: the group files do not name N) and tabulated
    old_n = yaml.safe_load((root / "config/config.yaml").read_text())["certify"]["N"]
    new_n = old_n * 2 // 5  # not a multiple used elsewhere in the grid (table6 uses N = 100)
    edit_config(root, lambda c: c["certify"].update(N=new_n))
    out = dvc(["repro"], root)
    assert stages_ran(out) == {"certify", "tables"}, out
    assert not re.search(r"rule (train_|prepare_)", out), out
    assert f"_N{new_n}_" in (tables / "table1.cells.csv").read_text()
    assert lock(root)["stages"]["certify"]["params"]["params.yaml"]["certify"]["N"] == new_n
    assert stages_ran(dvc(["repro"], root)) == set()


# ---------------------------------------------------------------------------------------------------
# Metrics and plots: `dvc metrics show`, `dvc plots show`, `dvc exp run -S certify.N=...`, experiment@<name>


def test_metrics_and_plot_data_follow_the_rendered_values():
    """What `diffsmooth tables` hands DVC is the rendered values: "−" left out, reported (paper) rows left
    out, repeated row labels numbered."""
    from types import SimpleNamespace

    from diffsmooth.report import dvc_metrics, plot_csv
    from diffsmooth.tables import DASH, RenderedTable, Value

    spec = SimpleNamespace(key_columns=["Method", "σ"])
    rows = [(["Gaussian", "0.25"], [Value("0.412", 0.412), Value("**90.0**", 90.0), Value(DASH, None)]),
            (["MACER (reported)", ""], [Value("0.5", 0.5, source="reported"), Value("80", 80.0, source="reported"),
                                        Value(DASH, None, source="reported")]),
            (["Gaussian", "0.25"], [Value(DASH, None), Value("85.0", 85.0), Value("0.0", 0.0)])]
    t = RenderedTable(spec, ["Method", "σ", "ACR", "0.00", "0.25"], rows, [set(), set(), set()])
    assert dvc_metrics({"table4": t}) == {"table4": {"Gaussian · 0.25": {"ACR": 0.412, "0.00": 90.0},
                                                     "Gaussian · 0.25 #2": {"0.00": 85.0, "0.25": 0.0}}}
    assert plot_csv(t).splitlines() == ["radius,certified_accuracy,row", "0.00,90.0,Gaussian · 0.25",
                                        "0.00,85.0,Gaussian · 0.25 #2", "0.25,0.0,Gaussian · 0.25 #2"]


def test_tables_stage_declares_metrics_and_plots(tmp_path):
    root = git_copy(tmp_path / "repo")
    from dvc.repo import Repo

    from diffsmooth.paths import Layout

    exp = yaml.safe_load((root / "config/config.yaml").read_text())["experiment"]
    layout = Layout("results", exp)
    with Repo(str(root)) as repo:
        tables = next(s for s in repo.index.stages if getattr(s, "name", None) == "tables")
        metrics = [o.def_path for o in tables.outs if o.metric]
        plots = {o.def_path: o.plot for o in tables.outs if o.plot}
    assert metrics == [str(layout.metrics)]
    assert list(plots) == [str(layout.plots_dir)]
    props = plots[str(layout.plots_dir)]
    assert (props["x"], props["y"], props["template"]) == ("radius", "certified_accuracy", "certified_accuracy")
    template = json.loads((root / ".dvc" / "plots" / "certified_accuracy.json").read_text())
    assert template["encoding"]["color"]["field"] == "row" and "<DVC_METRIC_DATA>" in json.dumps(template)


def _markdown_rows(path: Path) -> list:
    """(label, {column: number}) of a rendered Markdown table's rows, in order, as `dvc_metrics` names them."""
    lines = [line for line in path.read_text().splitlines() if line.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    numeric = [h == "ACR" or re.fullmatch(r"\d+\.\d+", h) is not None for h in header]
    out, seen = [], {}
    for line in lines[2:]:
        cells = [c.strip().strip("*") for c in line.strip("|").split("|")]
        label = " · ".join(c for c, num in zip(cells, numeric) if not num and c) or "row"
        seen[label] = seen.get(label, 0) + 1
        label = label if seen[label] == 1 else f"{label} #{seen[label]}"
        out.append((label, {h: float(c) for h, c, num in zip(header, cells, numeric) if num and c != "−"}))
    return out


def _paper_like(fast: dict) -> dict:
    """A grid on the fast experiment's trained checkpoints, named as given (no `train:` blocks): what the
    paper's configs are, on user-supplied checkpoints. Ten images, one table."""
    cfg = json.loads(json.dumps(fast))
    cfg["experiment"] = "digits-paper"
    cfg["dataset"]["images"] = {"start": 0, "stop": 10, "skip": 1}
    cfg["diffusion"].pop("train")
    for clf in cfg["classifiers"].values():
        clf.pop("train")
    cfg["tables"] = {"table4": cfg["tables"]["table4"]}
    return cfg


@pytest.mark.slow
def test_dvc_metrics_plots_status_and_exp_run(fast_repro, tmp_path):
    """After `dvc repro` of the fast experiment: `dvc metrics show` and `dvc plots show` show every table's
    numbers (the Markdown tables' own) and a bare `dvc status` is clean; a bare `dvc exp run -S certify.N=…`
    (config/config.yaml is params.yaml) reruns certify and tables and records the experiment with its
    metrics; an entry added to config/experiments.yaml runs as stage experiment@<name>, with its own
    metrics, and `dvc status` is clean again."""
    root = reproduced(fast_repro, tmp_path / "repo")
    exp = yaml.safe_load((root / "config/config.yaml").read_text())["experiment"]
    table_ids = list(yaml.safe_load((root / "config/config.yaml").read_text())["tables"])
    assert stages_ran(fast_repro[1]) == set(STAGES)

    metrics_file = f"results/{exp}/metrics.json"
    shown = json.loads(run(["dvc", "metrics", "show", "--json"], root).stdout)
    metrics = shown[""]["data"][metrics_file]["data"]
    assert sorted(metrics) == sorted(table_ids)
    for tid in table_ids:
        md_rows = [r for r in _markdown_rows(root / "results/tables" / exp / f"{tid}.md") if "(reported)" not in r[0]]
        assert list(metrics[tid].items()) == md_rows, tid
    text = dvc(["metrics", "show"], root)
    assert metrics_file in text and "table4." in text and ".ACR" in text

    plots = json.loads(run(["dvc", "plots", "show", "--json"], root).stdout)["data"]
    assert sorted(plots) == sorted(f"results/{exp}/plots/{tid}.csv" for tid in table_ids)
    for tid in table_ids:
        values = plots[f"results/{exp}/plots/{tid}.csv"][0]["content"]["data"]["values"]
        expected = [(col, num, label) for label, nums in metrics[tid].items() for col, num in nums.items()
                    if col != "ACR"]
        assert sorted((v["radius"], float(v["certified_accuracy"]), v["row"]) for v in values) == sorted(expected)
    html = dvc(["plots", "show", "-o", str(tmp_path / "plots")], root)
    assert "index.html" in html and "certified_accuracy" in (tmp_path / "plots" / "index.html").read_text()

    assert "Data and pipelines are up to date." in dvc(["status"], root)

    old_n = yaml.safe_load((root / "config/config.yaml").read_text())["certify"]["N"]
    new_n = old_n * 3 // 5
    out = dvc(["exp", "run", "-S", f"certify.N={new_n}"], root, timeout=900)
    assert stages_ran(out) == {"certify", "tables"}, out
    assert (root / "config/config.yaml").is_symlink(), "DVC must edit params.yaml in place, keeping the link"
    assert yaml.safe_load((root / "config/config.yaml").read_text())["certify"]["N"] == new_n
    assert f"N = {new_n}" in (root / "results/tables" / exp / "table4.md").read_text()
    status = subprocess.run(["git", "status", "--porcelain"], cwd=root, capture_output=True, text=True).stdout
    assert sorted(status.splitlines()) == [" M params.yaml", "?? dvc.lock"], status
    exps = json.loads(run(["dvc", "exp", "show", "--json"], root).stdout)
    runs = [r for e in exps for x in (e.get("experiments") or []) for r in x["revs"]]
    assert [r["data"]["params"]["params.yaml"]["data"]["certify"]["N"] for r in runs] == [new_n]
    assert sorted(runs[0]["data"]["metrics"][metrics_file]["data"]) == sorted(table_ids)
    assert "Data and pipelines are up to date." in dvc(["status"], root)

    # A second experiment through DVC, as a paper grid is added: its config, then its entry.
    paper = _paper_like(yaml.safe_load((root / "config/fast.yaml").read_text()))
    (root / "config/digits-paper.yaml").write_text(yaml.safe_dump(paper, sort_keys=False))
    subprocess.run(["git", "add", "config/digits-paper.yaml"], cwd=root, check=True)
    subprocess.run(["git", "commit", "-q", "-m", "paper-like grid"], cwd=root, check=True, env={**os.environ, **IDENTITY})
    entry = "config/experiments.yaml:+experiments.digits-paper=config/digits-paper.yaml"
    out = dvc(["exp", "run", "-S", entry], root, timeout=900)
    assert stages_ran(out) == {"experiment@digits-paper"}, out
    assert not re.search(r"rule train_", out), out  # its models are the given checkpoints
    assert yaml.safe_load((root / "config/experiments.yaml").read_text()) == {
        "experiments": {"digits-paper": "config/digits-paper.yaml"}}
    assert (root / "results/tables/digits-paper/table4.md").is_file()
    shown = json.loads(run(["dvc", "metrics", "show", "--json"], root).stdout)[""]["data"]
    assert list(shown["results/digits-paper/metrics.json"]["data"]) == ["table4"]
    assert "Data and pipelines are up to date." in dvc(["status"], root)
    assert stages_ran(dvc(["repro"], root)) == set()
