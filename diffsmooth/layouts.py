"""Table layouts: which cells make up each row of each kind of table, one function per kind.

    envelope            Tables 1/2     per-radius maxima over the sigma/sigma' grid, per method
    diffsmooth          Tables 4/5     DiffSmooth per (sigma, sigma'), with the model's shift
    diffsmooth_noshift  Table 8        the same without the shift
    rs                  Tables 11/12   randomized smoothing without purification
    local_only          Table 3        local smoothing without diffusion
    equal_budget        Tables 6/7     DDS at N = budget against DiffSmooth at N x m = budget
    m_ladder            Figure 3       DiffSmooth with m local draws

`Cells` turns the config's models into cells (deduplicated, in first-use order) and holds the labels and
paper keys the rows carry; each layout function asks it for cells and returns a TableSpec.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .cell import Cell
from .config import ConfigError, sigma_key

PAPER_DATASET_NAMES = {"cifar10": "CIFAR-10", "imagenet": "ImageNet"}


@dataclass
class TableRow:
    labels: dict  # column name -> text, e.g. {"Method": "DiffSmooth (Gaussian)", "σ": "0.25"}
    cells: list  # one cell, or several whose per-radius maximum is shown (envelope)
    envelope: bool = False
    acr: bool = False
    # Matching keys of the paper's row this one reproduces (diffsmooth/paper_tables/ columns: dataset, architecture,
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


def radius_list(spec: dict) -> list:
    from .metrics import radius_grid

    return radius_grid(spec["start"], spec["stop"], spec["step"])


class Cells:
    """The config's models as cells, and the labels and paper keys of their rows."""

    def __init__(self, config: dict):
        cert = config["certify"]
        self.dataset = config["dataset"]["name"]
        self.base = dict(dataset=self.dataset, N=cert["N"], n0=cert["n0"], alpha=cert["alpha"],
                         seed=config["seed"], local_noise=cert["local_noise"])
        self.sigmas = [float(s) for s in config["sigmas"]]
        self.m = config["m"]
        self.models = config["models"]
        self.radii = radius_list(config["radii"])
        mods = self.models
        self.classifier = {mod["id"]: {sigma_key(k): v for k, v in mod["classifiers"].items()} for mod in mods}
        self.grid = {mod["id"]: {sigma_key(k): [float(x) for x in v] for k, v in mod.get("grid", {}).items()}
                     for mod in mods}
        # Optional: the classifier a purified (DDS / DiffSmooth) cell uses at smoothing level sigma with sigma',
        # when it is not `classifiers[sigma']` (Appendix B.1: ImageNet SmoothAdv at sigma = 0.25).
        self.purified_classifier = {mod["id"]: {(sigma_key(s), sigma_key(sl)): name
                                                for s, by in mod.get("sigma_classifiers", {}).items()
                                                for sl, name in by.items()} for mod in mods}
        self.arch = {mod["id"]: mod.get("architecture", "") for mod in mods}
        self.multi_arch = len(set(self.arch.values())) > 1
        self.key_arch = ["Architecture"] if self.multi_arch else []
        self.paper_dataset = PAPER_DATASET_NAMES.get(self.dataset, self.dataset)
        self.cells: dict = {}

    # cells
    def add(self, **kw) -> Cell:
        c = Cell(**{**self.base, **kw})
        self.cells.setdefault(c, None)
        return c

    def rs(self, mod, s) -> Cell | None:
        name = self.classifier[mod["id"]].get(s)
        return self.add(method="rs", classifier=name, sigma=s) if name else None

    def _purified_classifier(self, mod, s, sl) -> str:
        return self.purified_classifier[mod["id"]].get((s, sl), self.classifier[mod["id"]][sl])

    def diffsmooth(self, mod, s, sl, shift=None, m=None, N=None) -> Cell:
        return self.add(method="diffsmooth", classifier=self._purified_classifier(mod, s, sl), sigma=s,
                        sigma_local=sl, shift=shift_of(mod, s) if shift is None else shift, m=m or self.m,
                        N=N or self.base["N"])

    def dds(self, mod, s, sl, N=None) -> Cell:
        return self.add(method="dds", classifier=self._purified_classifier(mod, s, sl), sigma=s,
                        **({"N": N} if N else {}))

    def pairs(self, mod, sigmas=None) -> list:
        """(sigma, sigma') of a model's DiffSmooth grid, in config order."""
        return [(s, sl) for s in (self.sigmas if sigmas is None else sigmas) for sl in self.grid[mod["id"]].get(s, [])]

    # rows
    def architectures(self) -> dict:
        """architecture -> its models, in config order (one block of rows each)."""
        out: dict = {}
        for mod in self.models:
            out.setdefault(self.arch[mod["id"]], []).append(mod)
        return out

    def family(self, mod) -> dict:
        """Paper keys of a model's family: its `paper_family` (default: label) and `extra_data`."""
        return {"family": mod.get("paper_family", mod["label"]), "extra_data": bool(mod.get("extra_data", False))}

    def paper_key(self, a, **kw) -> dict:
        return {"dataset": self.paper_dataset, **({"architecture": a} if a else {}), **kw}

    def prefix(self, a) -> dict:
        return {"Architecture": a} if self.multi_arch else {}

    def sigmas_of(self, spec, mod) -> list:
        only = (spec.get("model_sigmas") or {}).get(mod["id"])
        return [s for s in self.sigmas if only is None or s in {float(x) for x in only}]

    def reported(self, spec, a, dds_standard: bool) -> list:
        """Reported-only rows of architecture `a` (all rows when the table has no architecture column)."""
        out = []
        for row in reported_rows(spec, self.dataset):
            if self.multi_arch and row["architecture"] != a:
                continue
            if (row["method"] == "DDS(Standard)") != dds_standard:
                continue
            out.append(TableRow({**self.prefix(a), "Method": f"{row['label']} (reported)"}, [],
                                paper_key={"row_id": row["row_id"]}, source="reported", paper_row=row["row_id"]))
        return out


def shift_of(model: dict, sigma: float) -> float:
    shift = model.get("shift", 0.0)
    if isinstance(shift, dict):
        return float({sigma_key(k): v for k, v in shift.items()}.get(sigma, 0.0))
    return float(shift)


def reported_rows(spec: dict, dataset: str) -> list:
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
                              f"(diffsmooth/paper_tables/): use one of {list(df['row_id'])}")
        row = hit.iloc[0]
        if PAPER_DATASET_NAMES.get(dataset) != row["dataset"]:
            raise ConfigError(f"reported row {rid!r} is a {row['dataset']} row; this experiment's dataset is {dataset}")
        out.append(row)
    return out


def _spec(c: Cells, tid, spec, key_columns, rows, **kw) -> TableSpec:
    radii = radius_list(spec["radii"]) if spec.get("radii") else c.radii
    return TableSpec(tid, spec.get("title", ""), spec["kind"], key_columns, radii, rows, **kw)


def envelope(c: Cells, tid: str, spec: dict) -> TableSpec:
    """Tables 1/2: per-radius maxima over the sigma / sigma' grid, one block per architecture."""
    rows = []
    for a, mods in c.architectures().items():
        for mod in mods:
            cs = [cell for s in c.sigmas if (cell := c.rs(mod, s))]
            f = c.family(mod)
            if cs:
                rows.append(TableRow({**c.prefix(a), "Method": f"{mod['label']} (RS)"}, cs, envelope=True,
                                     paper_key=c.paper_key(a, method=f["family"], **f)))
        rows += c.reported(spec, a, False)
        std = next((mod["standard"] for mod in mods if mod.get("standard")), None)
        if std:
            rows.append(TableRow({**c.prefix(a), "Method": "DDS(Standard)"},
                                 [c.add(method="dds", classifier=std, sigma=s) for s in c.sigmas], envelope=True,
                                 paper_key=c.paper_key(a, method="DDS(Standard)")))
        rows += c.reported(spec, a, True)
        cs = [c.dds(mod, s, sl) for mod in mods for s, sl in c.pairs(mod)]
        if cs:
            rows.append(TableRow({**c.prefix(a), "Method": "DDS(Smoothed)"}, cs, envelope=True,
                                 paper_key=c.paper_key(a, method="DDS(Smoothed)")))
        for mod in mods:
            cs = [c.diffsmooth(mod, s, sl) for s, sl in c.pairs(mod)]
            if cs:
                rows.append(TableRow({**c.prefix(a), "Method": f"DiffSmooth({mod['label']})"}, cs, envelope=True,
                                     paper_key=c.paper_key(a, method="DiffSmooth", **c.family(mod))))
    return _spec(c, tid, spec, c.key_arch + ["Method"], rows, reported=spec.get("reported", []))


def diffsmooth(c: Cells, tid: str, spec: dict) -> TableSpec:
    """Tables 4/5 (with the model's shift) and 8 (kind diffsmooth_noshift: without it)."""
    rows = []
    for mod in c.models:
        if spec.get("models") and mod["id"] not in spec["models"]:
            continue
        a = c.arch[mod["id"]]
        for s, sl in c.pairs(mod, c.sigmas_of(spec, mod)):
            cell = c.diffsmooth(mod, s, sl, shift=0.0 if spec["kind"] == "diffsmooth_noshift" else None)
            rows.append(TableRow({**c.prefix(a), "Method": f"DiffSmooth ({mod['label']})",
                                  "σ": f"{s:.2f}", "σ'": f"{sl:.2f}"}, [cell], acr=True,
                                 paper_key=c.paper_key(a, method="DiffSmooth", **c.family(mod), sigma=s,
                                                       sigma_local=sl)))
    return _spec(c, tid, spec, c.key_arch + ["Method", "σ", "σ'"], rows, show_acr=True)


def rs(c: Cells, tid: str, spec: dict) -> TableSpec:
    """Tables 11/12: randomized smoothing of each model at each sigma."""
    rows = [TableRow({**c.prefix(c.arch[mod["id"]]), "Method": mod["label"], "σ": f"{s:.2f}"}, [cell], acr=True,
                     paper_key=c.paper_key(c.arch[mod["id"]], method=c.family(mod)["family"], **c.family(mod),
                                           sigma=s))
            for mod in c.models if not spec.get("models") or mod["id"] in spec["models"]
            for s in c.sigmas_of(spec, mod) if (cell := c.rs(mod, s))]
    return _spec(c, tid, spec, c.key_arch + ["Method", "σ"], rows, show_acr=True)


def local_only(c: Cells, tid: str, spec: dict) -> TableSpec:
    """Table 3: one model at one sigma, plain RS against local smoothing at each sigma' (no diffusion)."""
    mod = next(mm for mm in c.models if mm["id"] == spec["model"])
    s = float(spec["sigma"])
    name = c.classifier[mod["id"]][float(spec.get("classifier_sigma", s))]
    a = c.arch[mod["id"]]
    rows = [TableRow({"σ'": "-"}, [c.add(method="rs", classifier=name, sigma=s)], acr=True,
                     paper_key=c.paper_key(a, sigma=s, sigma_local=None))]
    for sl in spec["sigma_local"]:
        cell = c.add(method="local", classifier=name, sigma=s, sigma_local=float(sl), m=c.m)
        rows.append(TableRow({"σ'": f"{float(sl):.2f}"}, [cell], acr=True,
                             paper_key=c.paper_key(a, sigma=s, sigma_local=float(sl))))
    return _spec(c, tid, spec, ["σ'"], rows, show_acr=True)


def equal_budget(c: Cells, tid: str, spec: dict) -> TableSpec:
    """Tables 6/7: DDS at N = budget against DiffSmooth settings with N x m = budget, per architecture."""
    rows = []
    budget = spec["budget"]
    for a, mods in c.architectures().items():
        std = next((mod["standard"] for mod in mods if mod.get("standard")), None)
        if std:
            rows.append(TableRow({**c.prefix(a), "Method": "DDS(Standard)", "Setting": f"N = {budget:,}"},
                                 [c.add(method="dds", classifier=std, sigma=s, N=budget) for s in c.sigmas],
                                 envelope=True, paper_key=c.paper_key(a, method="DDS(Standard)", N=budget)))
        for r in c.reported(spec, a, True):
            r.labels["Setting"] = f"N = {budget:,}"
            rows.append(r)
        rows.append(TableRow({**c.prefix(a), "Method": "DDS(Smoothed)", "Setting": f"N = {budget:,}"},
                             [c.dds(mod, s, sl, N=budget) for mod in mods for s, sl in c.pairs(mod)],
                             envelope=True, paper_key=c.paper_key(a, method="DDS(Smoothed)", N=budget)))
        for mod in mods:
            for setting in spec["settings"]:
                cs = [c.diffsmooth(mod, s, sl, m=setting["m"], N=setting["N"]) for s, sl in c.pairs(mod)]
                rows.append(TableRow({**c.prefix(a), "Method": f"DiffSmooth({mod['label']})",
                                      "Setting": f"N = {setting['N']:,}, m = {setting['m']}"}, cs, envelope=True,
                                     paper_key=c.paper_key(a, method="DiffSmooth", **c.family(mod),
                                                           N=setting["N"], m=setting["m"])))
    return _spec(c, tid, spec, c.key_arch + ["Method", "Setting"], rows, reported=spec.get("reported", []))


def m_ladder(c: Cells, tid: str, spec: dict) -> TableSpec:
    """Figure 3: DiffSmooth at each m of the ladder, per (model, sigma, sigma') pair."""
    rows = []
    pairs = [[float(a), float(b)] for a, b in spec.get("pairs") or []]
    for mod in c.models:
        if mod["id"] not in spec.get("models", [mod["id"]]):
            continue
        for s, sl in c.pairs(mod, c.sigmas_of(spec, mod)):
            if pairs and [s, sl] not in pairs:
                continue
            for m in spec["m"]:
                rows.append(TableRow({**c.prefix(c.arch[mod["id"]]), "Model": mod["label"], "σ": f"{s:.2f}",
                                      "σ'": f"{sl:.2f}", "m": str(m)}, [c.diffsmooth(mod, s, sl, m=m)], acr=True))
    return _spec(c, tid, spec, c.key_arch + ["Model", "σ", "σ'", "m"], rows, show_acr=True)


LAYOUTS = {"envelope": envelope, "diffsmooth": diffsmooth, "diffsmooth_noshift": diffsmooth, "rs": rs,
           "local_only": local_only, "equal_budget": equal_budget, "m_ladder": m_ladder}
