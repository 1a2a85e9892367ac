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
        config = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{path} is not valid YAML: {e}") from None
    validate_config(config, source=str(path))
    return config


def validate_config(config, source: str = "config") -> None:
    """JSON-schema validation (the same schema Snakemake's `validate` uses) plus cross-key checks."""
    import jsonschema

    schema = yaml.safe_load(SCHEMA.read_text())
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: list(e.path))
    if errors:
        lines = [f"  - {'/'.join(str(p) for p in e.path) or '<top>'}: {e.message}" for e in errors[:10]]
        raise ConfigError(f"{source} does not match {SCHEMA.relative_to(REPO_ROOT)}:\n" + "\n".join(lines))
    problems = []
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
                                    "DiffSmooth needs sigma' <= sigma (Appendix B.2)")
                if f"{sl:g}" not in {f"{float(k):g}" for k in model["classifiers"]}:
                    problems.append(f"models/{model['id']}/grid/{s}: no classifier trained at sigma'={sl} "
                                    "in this model's `classifiers`")
    if problems:
        raise ConfigError(f"{source}: " + "; ".join(problems))


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


def _shift(model: dict, sigma: float) -> float:
    shift = model.get("shift", 0.0)
    if isinstance(shift, dict):
        return float(shift.get(f"{sigma:g}", shift.get(sigma_str(sigma), 0.0)))
    return float(shift)


def build_grid(config: dict) -> Grid:
    """Expand the config into cells (deduplicated, deterministic order) and table specs."""
    cert = config["certify"]
    base = dict(dataset=config["dataset"]["name"], N=cert["N"], n0=cert["n0"], alpha=cert["alpha"],
                seed=config["seed"], local_noise=cert["local_noise"])
    sigmas = [float(s) for s in config["sigmas"]]
    m = config["m"]
    models = config["models"]
    clf = {mod["id"]: {float(k): v for k, v in mod["classifiers"].items()} for mod in models}
    grid_of = {mod["id"]: {float(k): [float(x) for x in v] for k, v in mod.get("grid", {}).items()} for mod in models}
    cells: dict = {}

    def add(**kw) -> Cell:
        c = Cell(**{**base, **kw})
        cells.setdefault(c, None)
        return c

    def rs(mod, s):
        name = clf[mod["id"]].get(s)
        return add(method="rs", classifier=name, sigma=s) if name else None

    def diffsmooth(mod, s, sl, shift=None, m_=m, N=None):
        return add(method="diffsmooth", classifier=clf[mod["id"]][sl], sigma=s, sigma_local=sl,
                   shift=_shift(mod, s) if shift is None else shift, m=m_, N=N or cert["N"])

    radii = radius_list(config["radii"])
    tables = []
    wanted = config["tables"]
    label = {mod["id"]: mod["label"] for mod in models}
    arch = {mod["id"]: mod.get("architecture", "") for mod in models}
    multi_arch = len({a for a in arch.values()}) > 1
    key_arch = ["Architecture"] if multi_arch else []

    def envelope_rows(method_rows):
        return [TableRow({**({"Architecture": a} if multi_arch else {}), "Method": lab}, cs, envelope=True)
                for a, lab, cs in method_rows if cs]

    for tid, spec in wanted.items():
        kind = spec["kind"]
        title = spec.get("title", "")
        if kind == "envelope":  # Tables 1/2: per-radius maxima over the sigma / sigma' grid
            rows = []
            for mod in models:
                rows.append((arch[mod["id"]], f"{label[mod['id']]} (RS)",
                             [c for s in sigmas if (c := rs(mod, s))]))
            for a in dict.fromkeys(arch.values()):
                mods = [mod for mod in models if arch[mod["id"]] == a]
                std = next((mod["standard"] for mod in mods if mod.get("standard")), None)
                if std:
                    rows.append((a, "DDS(Standard)", [add(method="dds", classifier=std, sigma=s) for s in sigmas]))
                rows.append((a, "DDS(Smoothed)", [add(method="dds", classifier=clf[mod["id"]][sl], sigma=s)
                                                  for mod in mods for s in sigmas
                                                  for sl in grid_of[mod["id"]].get(s, [])]))
                for mod in mods:
                    rows.append((a, f"DiffSmooth({label[mod['id']]})",
                                 [diffsmooth(mod, s, sl) for s in sigmas for sl in grid_of[mod["id"]].get(s, [])]))
            tables.append(TableSpec(tid, title, kind, key_arch + ["Method"], radii, envelope_rows(rows),
                                    reported=spec.get("reported", [])))
        elif kind in ("diffsmooth", "diffsmooth_noshift"):  # Tables 4/5 and 8
            rows = []
            for mod in models:
                if spec.get("models") and mod["id"] not in spec["models"]:
                    continue
                for s in sigmas:
                    for sl in grid_of[mod["id"]].get(s, []):
                        c = diffsmooth(mod, s, sl, shift=0.0 if kind == "diffsmooth_noshift" else None)
                        rows.append(TableRow({**({"Architecture": arch[mod["id"]]} if multi_arch else {}),
                                              "Method": f"DiffSmooth ({label[mod['id']]})",
                                              "σ": f"{s:.2f}", "σ'": f"{sl:.2f}"}, [c], acr=True))
            tables.append(TableSpec(tid, title, kind, key_arch + ["Method", "σ", "σ'"], radii, rows, show_acr=True))
        elif kind == "rs":  # Tables 11/12
            rows = [TableRow({**({"Architecture": arch[mod["id"]]} if multi_arch else {}),
                              "Method": label[mod["id"]], "σ": f"{s:.2f}"}, [c], acr=True)
                    for mod in models for s in sigmas if (c := rs(mod, s))]
            tables.append(TableSpec(tid, title, kind, key_arch + ["Method", "σ"], radii, rows, show_acr=True))
        elif kind == "local_only":  # Table 3
            mod = next(mm for mm in models if mm["id"] == spec["model"])
            s = float(spec["sigma"])
            name = clf[mod["id"]][float(spec.get("classifier_sigma", s))]
            rows = [TableRow({"σ'": "-"}, [add(method="rs", classifier=name, sigma=s)], acr=True)]
            for sl in spec["sigma_local"]:
                c = add(method="local", classifier=name, sigma=s, sigma_local=float(sl), m=m)
                rows.append(TableRow({"σ'": f"{float(sl):.2f}"}, [c], acr=True))
            tables.append(TableSpec(tid, title, kind, ["σ'"], radii, rows, show_acr=True))
        elif kind == "equal_budget":  # Tables 6/7
            rows = []
            budget = spec["budget"]
            for a in dict.fromkeys(arch.values()):
                mods = [mod for mod in models if arch[mod["id"]] == a]
                std = next((mod["standard"] for mod in mods if mod.get("standard")), None)
                pre = {"Architecture": a} if multi_arch else {}
                if std:
                    rows.append(TableRow({**pre, "Method": "DDS(Standard)", "Setting": f"N = {budget:,}"},
                                         [add(method="dds", classifier=std, sigma=s, N=budget) for s in sigmas],
                                         envelope=True))
                rows.append(TableRow({**pre, "Method": "DDS(Smoothed)", "Setting": f"N = {budget:,}"},
                                     [add(method="dds", classifier=clf[mod["id"]][sl], sigma=s, N=budget)
                                      for mod in mods for s in sigmas for sl in grid_of[mod["id"]].get(s, [])],
                                     envelope=True))
                for mod in mods:
                    for setting in spec["settings"]:
                        cs = [diffsmooth(mod, s, sl, m_=setting["m"], N=setting["N"])
                              for s in sigmas for sl in grid_of[mod["id"]].get(s, [])]
                        rows.append(TableRow({**pre, "Method": f"DiffSmooth({label[mod['id']]})",
                                              "Setting": f"N = {setting['N']:,}, m = {setting['m']}"},
                                             cs, envelope=True))
            tables.append(TableSpec(tid, title, kind, key_arch + ["Method", "Setting"], radii, rows))
        elif kind == "m_ladder":  # Figure 3
            rows = []
            for mod in models:
                if mod["id"] not in spec.get("models", [mod["id"]]):
                    continue
                for s in sigmas:
                    for sl in grid_of[mod["id"]].get(s, []):
                        if spec.get("pairs") and [s, sl] not in [[float(a), float(b)] for a, b in spec["pairs"]]:
                            continue
                        for mm in spec["m"]:
                            rows.append(TableRow({"Model": label[mod["id"]], "σ": f"{s:.2f}", "σ'": f"{sl:.2f}",
                                                  "m": str(mm)}, [diffsmooth(mod, s, sl, m_=mm)], acr=True))
            tables.append(TableSpec(tid, title, kind, ["Model", "σ", "σ'", "m"], radii, rows, show_acr=True))
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
