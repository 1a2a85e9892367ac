"""The experiment grid: from a validated config to certification cells, sigma groups, shards and tables.

One source of truth for Snakemake (which jobs exist), the CLI (what a job computes), the planner and
the table renderer (which cells make up which table row).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .smoothing import Cell

REPO_ROOT = Path(__file__).resolve().parent.parent
SCHEMA = REPO_ROOT / "workflow" / "schemas" / "config.schema.yaml"


class ConfigError(ValueError):
    """A config that does not describe a valid experiment; the message names the key and the fix."""


def load_config(path) -> dict:
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"config file {path} does not exist (configs live in config/, e.g. config/config.yaml)")
    try:
        with open(path) as f:  # a stream, so YAML's error marks name the file
            config = yaml.safe_load(f)
    except yaml.YAMLError as e:
        raise ConfigError(f"{path} is not valid YAML: {e}\nFix the syntax at the line and column shown "
                          "(indentation, an unclosed bracket or quote, a missing space after `:`)") from None
    validate_config(config, source=str(path))
    return config


def validate_config(config, source: str = "config") -> None:
    """JSON-schema validation (the same schema Snakemake's `validate` uses) plus cross-key checks."""
    import jsonschema

    schema = yaml.safe_load(SCHEMA.read_text())
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: [str(p) for p in e.path])
    if errors:
        lines = [f"  - {'/'.join(str(p) for p in e.path) or '<top>'}: {e.message}{_schema_fix(e)}" for e in errors[:10]]
        raise ConfigError(f"{source} does not match {SCHEMA.relative_to(REPO_ROOT)}:\n" + "\n".join(lines)
                          + f"\nEdit these keys in {source} (the schema describes every key).")
    problems = []
    sel = config["dataset"]["images"]
    if sel.get("start", 0) >= sel["stop"]:
        problems.append(f"dataset/images: start={sel.get('start', 0)} >= stop={sel['stop']} selects no image; "
                        "set stop above start")
    names = set(config["classifiers"])
    for model in config["models"]:
        for key in ("standard",):
            if model.get(key) and model[key] not in names:
                problems.append(f"models/{model['id']}/{key}: unknown classifier {model[key]!r}")
        for s, name in model["classifiers"].items():
            if name not in names:
                problems.append(f"models/{model['id']}/classifiers/{s}: unknown classifier {name!r} "
                                f"(define it under `classifiers:`)")
        for s, locals_ in model.get("grid", {}).items():
            if float(s) not in [float(x) for x in config["sigmas"]]:
                problems.append(f"models/{model['id']}/grid: sigma {s} is not in `sigmas`")
            for sl in locals_:
                if sl > float(s):
                    problems.append(f"models/{model['id']}/grid/{s}: sigma'={sl} > sigma={s}; "
                                    "DiffSmooth needs sigma' <= sigma (Appendix B.2): lower sigma' or drop it "
                                    "from this grid entry")
                if f"{sl:g}" not in {f"{float(k):g}" for k in model["classifiers"]}:
                    problems.append(f"models/{model['id']}/grid/{s}: no classifier trained at sigma'={sl} "
                                    "in this model's `classifiers`")
        shift = model.get("shift")
        if isinstance(shift, dict):
            sig = {f"{float(x):g}" for x in config["sigmas"]}
            for s in shift:
                if f"{float(s):g}" not in sig:
                    problems.append(f"models/{model['id']}/shift: sigma {s} is not in `sigmas`")
        for s, by_local in model.get("sigma_classifiers", {}).items():
            if float(s) not in [float(x) for x in config["sigmas"]]:
                problems.append(f"models/{model['id']}/sigma_classifiers: sigma {s} is not in `sigmas`")
            for sl, name in by_local.items():
                if name not in names:
                    problems.append(f"models/{model['id']}/sigma_classifiers/{s}/{sl}: unknown classifier {name!r}")
    ids = [m["id"] for m in config["models"]]
    for tid, spec in config["tables"].items():
        for key in ("models",):
            for mid in spec.get(key, []) or []:
                if mid not in ids:
                    problems.append(f"tables/{tid}/{key}: unknown model {mid!r} (use one of {ids})")
        for mid in (spec.get("model_sigmas") or {}):
            if mid not in ids:
                problems.append(f"tables/{tid}/model_sigmas: unknown model {mid!r} (use one of {ids})")
    if problems:
        raise ConfigError(f"{source}: " + "; ".join(problems))


def _schema_fix(error) -> str:
    """The fix for one JSON-schema violation, appended to jsonschema's description of the problem."""
    kind, value = error.validator, error.validator_value
    if kind == "additionalProperties" and isinstance(error.schema.get("properties"), dict):
        return f": remove or rename it (allowed keys here: {', '.join(error.schema['properties'])})"
    fixes = {
        "required": "add the missing key",
        "enum": "use one of the values listed",
        "minimum": f"use a value >= {value}",
        "exclusiveMinimum": f"use a value > {value}",
        "maximum": f"use a value <= {value}",
        "exclusiveMaximum": f"use a value < {value}",
        "type": f"give a value of type {value}",
        "pattern": f"write it to match {value}",
        "minItems": f"give at least {value} item(s)",
        "minProperties": f"give at least {value} entry(ies)",
        "uniqueItems": "remove the duplicates",
    }
    return f": {fixes[kind]}" if kind in fixes else ""


def sigma_str(sigma: float) -> str:
    return f"{sigma:.2f}"


def cell_id(cell: Cell) -> str:
    """The cell's identity: a path that includes every parameter that changes its rows."""
    return (f"{cell.dataset}/sigma{sigma_str(cell.sigma)}/{cell.method}/{cell.classifier}/"
            f"sl{cell.sigma_local:g}_shift{cell.shift:g}_m{cell.m}_N{cell.N}_n0{cell.n0}_"
            f"alpha{cell.alpha:g}_seed{cell.seed}_{cell.local_noise}")


@dataclass
class TableRow:
    labels: dict  # column name -> text, e.g. {"Method": "DiffSmooth (Gaussian)", "σ": "0.25"}
    cells: list  # one cell, or several whose per-radius maximum is shown (envelope)
    envelope: bool = False
    acr: bool = False
    # Matching keys of the paper's row this one reproduces (data/paper/ columns: dataset, architecture,
    # method, family, extra_data, sigma, sigma_local, N, m); used by `compare` only.
    paper_key: dict = field(default_factory=dict)
    # "computed" (from cells), or "reported": the paper's own numbers (row `paper_row` of the spec's
    # paper table), for baselines the pipeline does not compute (MACER, Consistency, ...). No cells.
    source: str = "computed"
    paper_row: str | None = None


@dataclass
class TableSpec:
    id: str
    title: str
    kind: str
    key_columns: list
    radii: list
    rows: list = field(default_factory=list)
    show_acr: bool = False
    reported: list = field(default_factory=list)  # paper rows shown as reported values


@dataclass
class Grid:
    config: dict
    cells: list
    tables: list

    @property
    def experiment(self) -> str:
        return self.config["experiment"]

    def groups(self) -> dict:
        """sigma-group id ('dataset/sigmaX') -> cells sharing noisy samples."""
        out: dict = {}
        for c in self.cells:
            out.setdefault(group_id(c), []).append(c)
        return out

    def images(self) -> list:
        sel = self.config["dataset"]["images"]
        return list(range(sel.get("start", 0), sel["stop"], sel.get("skip", 1)))

    def shards(self) -> list:
        size = self.config["certify"]["shard_size"]
        imgs = self.images()
        return [imgs[k:k + size] for k in range(0, len(imgs), size)]

    def cell_by_id(self, cid: str) -> Cell:
        for c in self.cells:
            if cell_id(c) == cid:
                return c
        raise ConfigError(f"no cell {cid!r} in experiment {self.experiment!r}: "
                          "list them with `diffsmooth cells --configfile ...`")


def group_id(cell: Cell) -> str:
    return f"{cell.dataset}/sigma{sigma_str(cell.sigma)}"


def group_summary_path(grid: "Grid", group: str, shard: int | None = None, results="results") -> str:
    """The fused jobs' output files. Their names carry a digest of the group's cell ids and images, so a
    changed grid is a new file that Snakemake must make, even when its metadata (params) was lost."""
    import hashlib
    import json

    cells = sorted(cell_id(c) for c in grid.groups()[group])
    images = grid.shards()[shard] if shard is not None else grid.shards()
    key = hashlib.sha256(json.dumps([cells, images]).encode()).hexdigest()[:10]
    base = f"{results}/{grid.experiment}/groups/{group}"
    return f"{base}/merged-{key}.json" if shard is None else f"{base}/shards/{shard:04d}-{key}.json"


def _shift(model: dict, sigma: float) -> float:
    shift = model.get("shift", 0.0)
    if isinstance(shift, dict):  # keys compared as numbers: "1", "1.0" and "1.00" all mean sigma = 1
        for key, value in shift.items():
            if abs(float(key) - sigma) < 1e-9:
                return float(value)
        return 0.0
    return float(shift)


PAPER_DATASET_NAMES = {"cifar10": "CIFAR-10", "imagenet": "ImageNet"}


def _reported_rows(spec: dict, dataset: str) -> list:
    """The paper's rows a table shows as reported values (`reported:` row ids of its `paper` table)."""
    ids = spec.get("reported") or []
    if not ids:
        return []
    from . import paper

    if not spec.get("paper"):
        raise ConfigError("a table with `reported:` rows needs `paper:` (the paper table they come from)")
    df = paper.load_paper_table(spec["paper"])
    out = []
    for rid in ids:
        hit = df[df["row_id"] == rid]
        if len(hit) != 1:
            raise ConfigError(f"reported row {rid!r} is not a row_id of the paper's {spec['paper']} "
                              f"(data/paper/): use one of {list(df['row_id'])}")
        row = hit.iloc[0]
        if PAPER_DATASET_NAMES.get(dataset) != row["dataset"]:
            raise ConfigError(f"reported row {rid!r} is a {row['dataset']} row; this experiment's dataset is {dataset}")
        out.append(row)
    return out


def build_grid(config: dict) -> Grid:
    """Expand the config into cells (deduplicated, deterministic order) and table specs."""
    cert = config["certify"]
    dataset = config["dataset"]["name"]
    base = dict(dataset=dataset, N=cert["N"], n0=cert["n0"], alpha=cert["alpha"],
                seed=config["seed"], local_noise=cert["local_noise"])
    sigmas = [float(s) for s in config["sigmas"]]
    m = config["m"]
    models = config["models"]
    clf = {mod["id"]: {float(k): v for k, v in mod["classifiers"].items()} for mod in models}
    grid_of = {mod["id"]: {float(k): [float(x) for x in v] for k, v in mod.get("grid", {}).items()} for mod in models}
    # Optional: the classifier a purified (DDS / DiffSmooth) cell uses at smoothing level sigma with sigma',
    # when it is not `classifiers[sigma']` (Appendix B.1: ImageNet SmoothAdv at sigma = 0.25).
    purified_clf = {mod["id"]: {(float(s), float(sl)): name for s, by in mod.get("sigma_classifiers", {}).items()
                                for sl, name in by.items()} for mod in models}
    cells: dict = {}

    def add(**kw) -> Cell:
        c = Cell(**{**base, **kw})
        cells.setdefault(c, None)
        return c

    def rs(mod, s):
        name = clf[mod["id"]].get(s)
        return add(method="rs", classifier=name, sigma=s) if name else None

    def pclf(mod, s, sl):
        return purified_clf[mod["id"]].get((s, sl), clf[mod["id"]][sl])

    def diffsmooth(mod, s, sl, shift=None, m_=m, N=None):
        return add(method="diffsmooth", classifier=pclf(mod, s, sl), sigma=s, sigma_local=sl,
                   shift=_shift(mod, s) if shift is None else shift, m=m_, N=N or cert["N"])

    def dds(mod, s, sl, N=None):
        return add(method="dds", classifier=pclf(mod, s, sl), sigma=s, **({"N": N} if N else {}))

    radii = radius_list(config["radii"])
    tables = []
    wanted = config["tables"]
    label = {mod["id"]: mod["label"] for mod in models}
    arch = {mod["id"]: mod.get("architecture", "") for mod in models}
    multi_arch = len({a for a in arch.values()}) > 1
    key_arch = ["Architecture"] if multi_arch else []
    paper_dataset = PAPER_DATASET_NAMES.get(dataset, dataset)

    def fam(mod) -> dict:
        """Paper keys of a model's family: its `paper_family` (default: label) and `extra_data`."""
        return {"family": mod.get("paper_family", mod["label"]), "extra_data": bool(mod.get("extra_data", False))}

    def pkey(a, **kw) -> dict:
        return {"dataset": paper_dataset, **({"architecture": a} if a else {}), **kw}

    def pre(a) -> dict:
        return {"Architecture": a} if multi_arch else {}

    def sigmas_of(spec, mod):
        only = (spec.get("model_sigmas") or {}).get(mod["id"])
        return [s for s in sigmas if only is None or any(abs(s - float(x)) < 1e-9 for x in only)]

    def selected(spec, mod) -> bool:
        return not spec.get("models") or mod["id"] in spec["models"]

    def reported(spec, a, method_is_dds_standard: bool) -> list:
        """Reported-only rows of architecture `a` (all rows when the table has no architecture column)."""
        out = []
        for row in _reported_rows(spec, dataset):
            if multi_arch and row["architecture"] != a:
                continue
            if (row["method"] == "DDS(Standard)") != method_is_dds_standard:
                continue
            out.append(TableRow({**pre(a), "Method": f"{row['label']} (reported)"}, [],
                                paper_key={"row_id": row["row_id"]}, source="reported", paper_row=row["row_id"]))
        return out

    for tid, spec in wanted.items():
        kind = spec["kind"]
        title = spec.get("title", "")
        t_radii = radius_list(spec["radii"]) if spec.get("radii") else radii
        if kind == "envelope":  # Tables 1/2: per-radius maxima over the sigma / sigma' grid
            rows = []
            for a in dict.fromkeys(arch.values()):  # one block per architecture, in config order
                mods = [mod for mod in models if arch[mod["id"]] == a]
                for mod in mods:
                    cs = [c for s in sigmas if (c := rs(mod, s))]
                    f = fam(mod)
                    if cs:
                        rows.append(TableRow({**pre(a), "Method": f"{label[mod['id']]} (RS)"}, cs, envelope=True,
                                             paper_key=pkey(a, method=f["family"], **f)))
                rows += reported(spec, a, False)
                std = next((mod["standard"] for mod in mods if mod.get("standard")), None)
                if std:
                    rows.append(TableRow({**pre(a), "Method": "DDS(Standard)"},
                                         [add(method="dds", classifier=std, sigma=s) for s in sigmas], envelope=True,
                                         paper_key=pkey(a, method="DDS(Standard)")))
                rows += reported(spec, a, True)
                cs = [dds(mod, s, sl) for mod in mods for s in sigmas for sl in grid_of[mod["id"]].get(s, [])]
                if cs:
                    rows.append(TableRow({**pre(a), "Method": "DDS(Smoothed)"}, cs, envelope=True,
                                         paper_key=pkey(a, method="DDS(Smoothed)")))
                for mod in mods:
                    cs = [diffsmooth(mod, s, sl) for s in sigmas for sl in grid_of[mod["id"]].get(s, [])]
                    if cs:
                        rows.append(TableRow({**pre(a), "Method": f"DiffSmooth({label[mod['id']]})"}, cs,
                                             envelope=True, paper_key=pkey(a, method="DiffSmooth", **fam(mod))))
            tables.append(TableSpec(tid, title, kind, key_arch + ["Method"], t_radii, rows,
                                    reported=spec.get("reported", [])))
        elif kind in ("diffsmooth", "diffsmooth_noshift"):  # Tables 4/5 and 8
            rows = []
            for mod in models:
                if not selected(spec, mod):
                    continue
                for s in sigmas_of(spec, mod):
                    for sl in grid_of[mod["id"]].get(s, []):
                        c = diffsmooth(mod, s, sl, shift=0.0 if kind == "diffsmooth_noshift" else None)
                        rows.append(TableRow({**pre(arch[mod["id"]]),
                                              "Method": f"DiffSmooth ({label[mod['id']]})",
                                              "σ": f"{s:.2f}", "σ'": f"{sl:.2f}"}, [c], acr=True,
                                             paper_key=pkey(arch[mod["id"]], method="DiffSmooth", **fam(mod),
                                                            sigma=s, sigma_local=sl)))
            tables.append(TableSpec(tid, title, kind, key_arch + ["Method", "σ", "σ'"], t_radii, rows, show_acr=True))
        elif kind == "rs":  # Tables 11/12
            rows = [TableRow({**pre(arch[mod["id"]]), "Method": label[mod["id"]], "σ": f"{s:.2f}"}, [c], acr=True,
                             paper_key=pkey(arch[mod["id"]], method=fam(mod)["family"], **fam(mod), sigma=s))
                    for mod in models if selected(spec, mod) for s in sigmas_of(spec, mod) if (c := rs(mod, s))]
            tables.append(TableSpec(tid, title, kind, key_arch + ["Method", "σ"], t_radii, rows, show_acr=True))
        elif kind == "local_only":  # Table 3
            mod = next(mm for mm in models if mm["id"] == spec["model"])
            s = float(spec["sigma"])
            name = clf[mod["id"]][float(spec.get("classifier_sigma", s))]
            a = arch[mod["id"]]
            rows = [TableRow({"σ'": "-"}, [add(method="rs", classifier=name, sigma=s)], acr=True,
                             paper_key=pkey(a, sigma=s, sigma_local=None))]
            for sl in spec["sigma_local"]:
                c = add(method="local", classifier=name, sigma=s, sigma_local=float(sl), m=m)
                rows.append(TableRow({"σ'": f"{float(sl):.2f}"}, [c], acr=True,
                                     paper_key=pkey(a, sigma=s, sigma_local=float(sl))))
            tables.append(TableSpec(tid, title, kind, ["σ'"], t_radii, rows, show_acr=True))
        elif kind == "equal_budget":  # Tables 6/7
            rows = []
            budget = spec["budget"]
            for a in dict.fromkeys(arch.values()):
                mods = [mod for mod in models if arch[mod["id"]] == a]
                std = next((mod["standard"] for mod in mods if mod.get("standard")), None)
                if std:
                    rows.append(TableRow({**pre(a), "Method": "DDS(Standard)", "Setting": f"N = {budget:,}"},
                                         [add(method="dds", classifier=std, sigma=s, N=budget) for s in sigmas],
                                         envelope=True, paper_key=pkey(a, method="DDS(Standard)", N=budget)))
                for r in reported(spec, a, True):
                    r.labels["Setting"] = f"N = {budget:,}"
                    rows.append(r)
                rows.append(TableRow({**pre(a), "Method": "DDS(Smoothed)", "Setting": f"N = {budget:,}"},
                                     [dds(mod, s, sl, N=budget)
                                      for mod in mods for s in sigmas for sl in grid_of[mod["id"]].get(s, [])],
                                     envelope=True, paper_key=pkey(a, method="DDS(Smoothed)", N=budget)))
                for mod in mods:
                    for setting in spec["settings"]:
                        cs = [diffsmooth(mod, s, sl, m_=setting["m"], N=setting["N"])
                              for s in sigmas for sl in grid_of[mod["id"]].get(s, [])]
                        rows.append(TableRow({**pre(a), "Method": f"DiffSmooth({label[mod['id']]})",
                                              "Setting": f"N = {setting['N']:,}, m = {setting['m']}"},
                                             cs, envelope=True,
                                             paper_key=pkey(a, method="DiffSmooth", **fam(mod),
                                                            N=setting["N"], m=setting["m"])))
            tables.append(TableSpec(tid, title, kind, key_arch + ["Method", "Setting"], t_radii, rows,
                                    reported=spec.get("reported", [])))
        elif kind == "m_ladder":  # Figure 3
            rows = []
            for mod in models:
                if mod["id"] not in spec.get("models", [mod["id"]]):
                    continue
                for s in sigmas_of(spec, mod):
                    for sl in grid_of[mod["id"]].get(s, []):
                        if spec.get("pairs") and [s, sl] not in [[float(a), float(b)] for a, b in spec["pairs"]]:
                            continue
                        for mm in spec["m"]:
                            rows.append(TableRow({**pre(arch[mod["id"]]), "Model": label[mod["id"]],
                                                  "σ": f"{s:.2f}", "σ'": f"{sl:.2f}", "m": str(mm)},
                                                 [diffsmooth(mod, s, sl, m_=mm)], acr=True))
            tables.append(TableSpec(tid, title, kind, key_arch + ["Model", "σ", "σ'", "m"], t_radii, rows,
                                    show_acr=True))
        else:
            raise ConfigError(f"tables/{tid}: unknown kind {kind!r}")
    return Grid(config, list(cells), tables)


def radius_list(spec: dict) -> list:
    from .metrics import radius_grid

    return radius_grid(spec["start"], spec["stop"], spec["step"])


def max_certifiable_radius(cell: Cell) -> float:
    from .statistics import max_radius

    return max_radius(cell.N, cell.alpha, cell.sigma)


def envelope_max_radius(cells) -> float:
    return max(max_certifiable_radius(c) for c in cells) if cells else math.inf
