"""Loading and validating an experiment config: the one place a config file is read and checked.

`load_config(path)` reads YAML with a loader that refuses repeated keys, validates it against the schema
(diffsmooth/schemas/config.schema.yaml, also at workflow/schemas/ for the Snakemake catalogue), fills the
schema's defaults in, and runs the checks JSON schema cannot express. Everything is checked before any
work: a config that passes never fails later for a reason it could have shown here. Every message names
the key and the fix.
"""
from __future__ import annotations

import copy
import math
import os
from dataclasses import dataclass
from pathlib import Path

import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
SCHEMA = Path(__file__).resolve().parent / "schemas" / "config.schema.yaml"
# What a user opens: the catalogue's path in a checkout, the package's file in an installed wheel.
_CATALOGUE_SCHEMA = REPO_ROOT / "workflow" / "schemas" / "config.schema.yaml"
SCHEMA_SHOWN = ("workflow/schemas/config.schema.yaml" if _CATALOGUE_SCHEMA.exists() else str(SCHEMA))

# The embedded default's config under its two names: Snakemake's default (and the workflow catalogue's) is a
# link to DVC's default parameters file, which holds the bytes (DVC reads past revisions from git, where it
# cannot follow a link), so that DVC and Snakemake read one file and a bare `dvc exp run -S key=value` edits it.
DEFAULT_CONFIG = Path("config/config.yaml")
DVC_PARAMS = Path("params.yaml")

# Names that become path components or reach a shell: experiment, classifier keys, model and table ids.
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$"
MAX_RADIUS_COLUMNS = 200  # a table wider than this is a typo in `step` (1e-7 would plan gigabytes)


class ConfigError(ValueError):
    """A config that does not describe a valid experiment; the message names the key and the fix."""


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, except that a key repeated in one mapping is an error (YAML says the last one
    silently wins, which hides a typo such as two `N:` lines)."""

    def construct_mapping(self, node, deep=False):
        seen = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} appears twice in one mapping (first at line "
                    f"{seen[key].start_mark.line + 1}); keep one of them", key_node.start_mark)
            seen[key] = key_node
        return super().construct_mapping(node, deep)


def read_yaml(path) -> object:
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"config file {path} does not exist (configs live in config/, e.g. config/config.yaml)")
    try:
        with open(path, encoding="utf-8") as f:  # a stream, so YAML's error marks name the file
            return yaml.load(f, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as e:
        raise ConfigError(f"{path} is not valid YAML: {e}\nFix the syntax at the line and column shown "
                          "(indentation, an unclosed bracket or quote, a missing space after `:`, a repeated key)"
                          ) from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path} is not UTF-8 text ({e}): save it as UTF-8") from None


@dataclass(frozen=True)
class Settings:
    """How an experiment's jobs run, read once from a validated config (the schema's defaults filled in).
    A cell (diffsmooth/cell.py) holds what defines its rows; these are the rest. The ones that can change a
    number (precision, compile, channels-last, rounding, ...) are recorded in every meta.json."""

    device: str
    threads: int
    batch_size: int
    precision: str
    compile: bool
    channels_last: bool
    shard_size: int
    mode: str
    rounding: str

    @property
    def speed(self) -> dict:
        """The keyword arguments of certify.speed_settings."""
        return {"precision": self.precision, "compile": self.compile, "channels_last": self.channels_last}

    @classmethod
    def of(cls, config: dict) -> "Settings":
        c = config["certify"]
        return cls(device=config["device"], threads=config["threads"], batch_size=c["batch_size"],
                   precision=c["precision"], compile=c["compile"], channels_last=c["channels_last"],
                   shard_size=c["shard_size"], mode=c["mode"], rounding=c["rounding"])


def check_layers(paths: list) -> None:
    """A base config and what is layered on it (Snakemake's later --configfile files and --config key=value,
    merged key by key: mappings merge, other values replace). Every file is read with the repeated-key check;
    two files that each name an `experiment` are two complete configs, whose merge would silently mix two
    grids, and are refused."""
    layers = [(str(p), read_yaml(p)) for p in paths]
    named = [p for p, layer in layers if isinstance(layer, dict) and "experiment" in layer]
    if len(named) > 1:
        raise ConfigError(f"{', '.join(named)} are each a complete config (each names an `experiment`): layering "
                          "one on the other would mix two grids. Pass one complete config, then override files "
                          "that set only the keys they change (and no `experiment:`), or --config key=value")


def check_default_config(root=".") -> None:
    """Refuse a checkout where config/config.yaml and params.yaml became two files (a `mv` or an editor that
    replaces the link): Snakemake would run one config and DVC track the other."""
    config, params = Path(root) / DEFAULT_CONFIG, Path(root) / DVC_PARAMS
    if config.exists() and params.exists() and not os.path.samefile(config, params):
        raise ConfigError(f"{DEFAULT_CONFIG} (what Snakemake reads) and {DVC_PARAMS} (what DVC reads) are two "
                          f"files: {DEFAULT_CONFIG} must be a link to ../{DVC_PARAMS}. Keep the one you edited as "
                          f"{DVC_PARAMS}, then `ln -sf ../{DVC_PARAMS} {DEFAULT_CONFIG}`")


def write_effective(config: dict, path) -> Path:
    """The merged config the jobs read (`--configfile` of every job), rewritten only when it changed."""
    from .rows import atomic_write_text

    path = Path(path)
    text = ("# written by the workflow: the base config with its overrides merged in (do not edit: rerun with the\n"
            "# same --configfile / --config arguments)\n" + yaml.safe_dump(config, sort_keys=False, allow_unicode=True))
    if not path.exists() or path.read_text(encoding="utf-8") != text:
        atomic_write_text(path, text)
    return path


def load_config(path) -> dict:
    config = read_yaml(path)
    validate_config(config, source=str(path))
    return config


def _validator_class():
    """Draft 2020-12 with two changes: `integer` means an int (YAML's `500.0` is a float and is refused:
    it would reach range() and torch as a float), and `default`s are filled into the config."""
    import jsonschema

    base = jsonschema.Draft202012Validator
    checker = base.TYPE_CHECKER.redefine("integer", lambda _, x: isinstance(x, int) and not isinstance(x, bool))
    properties = base.VALIDATORS["properties"]

    def fill_defaults(validator, props, instance, schema):
        if isinstance(instance, dict):
            for name, sub in props.items():
                if isinstance(sub, dict) and "default" in sub and name not in instance:
                    instance[name] = copy.deepcopy(sub["default"])
        yield from properties(validator, props, instance, schema)

    return jsonschema.validators.extend(base, {"properties": fill_defaults}, type_checker=checker)


def _non_finite(value, path=()) -> list[str]:
    """Paths of NaN/inf numbers anywhere in the config (`.nan`, `.inf` in YAML)."""
    if isinstance(value, float) and not math.isfinite(value):
        return ["/".join(map(str, path)) or "<top>"]
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in _non_finite(v, (*path, k))]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in _non_finite(v, (*path, i))]
    return []


def schema() -> dict:
    """The config schema (diffsmooth/schemas/config.schema.yaml)."""
    return yaml.safe_load(SCHEMA.read_text())


def validate_config(config, source: str = "config") -> None:
    """JSON-schema validation (the schema Snakemake's `validate` uses) with defaults filled, then cross-key checks."""
    if not isinstance(config, dict):
        raise ConfigError(f"{source} holds {type(config).__name__}, not a mapping of settings: start from "
                          "config/config.yaml")
    bad = _non_finite(config)
    if bad:
        raise ConfigError(f"{source}: {', '.join(bad)}: NaN or infinity is not a setting; give a finite number")
    validator = _validator_class()(schema())
    errors = sorted(validator.iter_errors(config), key=lambda e: [str(p) for p in e.path])
    if errors:
        lines = [f"  - {'/'.join(str(p) for p in e.path) or '<top>'}: {e.message}{_schema_fix(e)}" for e in errors[:10]]
        raise ConfigError(f"{source} does not match {SCHEMA_SHOWN}:\n" + "\n".join(lines)
                          + f"\nEdit these keys in {source} (the schema describes every key).")
    problems = _cross_key_problems(config)
    if problems:
        raise ConfigError(f"{source}: " + "; ".join(problems))


def sigma_key(value) -> float:
    """A sigma-keyed map's key ("0.5", "0.50", 0.5) as the number it means."""
    return float(value)


def _sigma_map_problems(where: str, mapping: dict) -> list[str]:
    seen: dict = {}
    out = []
    for key in mapping:
        k = sigma_key(key)
        if k in seen:
            out.append(f"{where}: keys {seen[k]!r} and {key!r} are the same sigma; keep one")
        seen[k] = key
    return out


def _radii_problems(where: str, radii: dict) -> list[str]:
    start, stop, step = radii["start"], radii["stop"], radii["step"]
    if start > stop:
        return [f"{where}: start={start} > stop={stop} gives no radius column; swap them"]
    columns = int(round((stop - start) / step)) + 1
    if columns > MAX_RADIUS_COLUMNS:
        return [f"{where}: step={step} gives {columns} radius columns (at most {MAX_RADIUS_COLUMNS}); use a larger "
                "step (the paper uses 0.25 on CIFAR-10, 0.5 on ImageNet)"]
    return []


def _cross_key_problems(config: dict) -> list[str]:
    from .cell import sigma_str

    problems = []
    sel = config["dataset"]["images"]
    if sel["start"] >= sel["stop"]:
        problems.append(f"dataset/images: start={sel['start']} >= stop={sel['stop']} selects no image; "
                        "set stop above start")
    problems += _radii_problems("radii", config["radii"])
    sigmas = [float(x) for x in config["sigmas"]]
    shown: dict = {}
    for s in sigmas:
        if sigma_str(s) in shown:
            problems.append(f"sigmas: {shown[sigma_str(s)]} and {s} are both written sigma{sigma_str(s)} in cell ids "
                            "and results paths; sigmas must differ in their first two decimals")
        shown[sigma_str(s)] = s
    names = set(config["classifiers"])
    ids = [m["id"] for m in config["models"]]
    for mid in {i for i in ids if ids.count(i) > 1}:
        problems.append(f"models: id {mid!r} is used by {ids.count(mid)} models; give each model its own id")
    for model in config["models"]:
        where = f"models/{model['id']}"
        if model.get("standard") and model["standard"] not in names:
            problems.append(f"{where}/standard: unknown classifier {model['standard']!r}")
        for key in ("classifiers", "grid", "sigma_classifiers"):
            problems += _sigma_map_problems(f"{where}/{key}", model.get(key, {}))
        if isinstance(model.get("shift"), dict):
            problems += _sigma_map_problems(f"{where}/shift", model["shift"])
        trained_at = {sigma_key(k) for k in model["classifiers"]}
        for s, name in model["classifiers"].items():
            if name not in names:
                problems.append(f"{where}/classifiers/{s}: unknown classifier {name!r} (define it under `classifiers:`)")
        for s, locals_ in model.get("grid", {}).items():
            if sigma_key(s) not in sigmas:
                problems.append(f"{where}/grid: sigma {s} is not in `sigmas`")
            for sl in locals_:
                if sl > sigma_key(s):
                    problems.append(f"{where}/grid/{s}: sigma'={sl} > sigma={s}; DiffSmooth needs sigma' <= sigma "
                                    "(Appendix B.2): lower sigma' or drop it from this grid entry")
                if float(sl) not in trained_at:
                    problems.append(f"{where}/grid/{s}: no classifier trained at sigma'={sl} in this model's "
                                    "`classifiers`")
        if isinstance(model.get("shift"), dict):
            problems += [f"{where}/shift: sigma {s} is not in `sigmas`" for s in model["shift"]
                         if sigma_key(s) not in sigmas]
        for s, by_local in model.get("sigma_classifiers", {}).items():
            if sigma_key(s) not in sigmas:
                problems.append(f"{where}/sigma_classifiers: sigma {s} is not in `sigmas`")
            problems += _sigma_map_problems(f"{where}/sigma_classifiers/{s}", by_local)
            problems += [f"{where}/sigma_classifiers/{s}/{sl}: unknown classifier {name!r}"
                         for sl, name in by_local.items() if name not in names]
    for tid, spec in config["tables"].items():
        where = f"tables/{tid}"
        problems += [f"{where}/models: unknown model {mid!r} (use one of {ids})"
                     for mid in spec.get("models") or [] if mid not in ids]
        problems += [f"{where}/model_sigmas: unknown model {mid!r} (use one of {ids})"
                     for mid in spec.get("model_sigmas") or {} if mid not in ids]
        if spec.get("radii"):
            problems += _radii_problems(f"{where}/radii", spec["radii"])
        if spec["kind"] == "equal_budget":
            for setting in spec.get("settings", []):
                if setting["N"] * setting["m"] != spec.get("budget"):
                    problems.append(f"{where}/settings: N={setting['N']} x m={setting['m']} = "
                                    f"{setting['N'] * setting['m']:,} predictions per image, not the table's "
                                    f"budget {spec.get('budget')}; choose N and m with N x m = budget")
        if spec["kind"] == "local_only":
            if spec.get("model") not in ids:
                problems.append(f"{where}/model: unknown model {spec.get('model')!r} (use one of {ids})")
            elif float(spec.get("classifier_sigma", spec.get("sigma", 0))) not in {
                    sigma_key(k) for m in config["models"] if m["id"] == spec["model"] for k in m["classifiers"]}:
                problems.append(f"{where}/classifier_sigma: model {spec['model']!r} has no classifier at sigma "
                                f"{spec.get('classifier_sigma', spec.get('sigma'))}")
    return problems


def _schema_fix(error) -> str:
    """The fix for one JSON-schema violation, appended to jsonschema's description of the problem."""
    kind, value = error.validator, error.validator_value
    if kind == "additionalProperties" and isinstance(error.schema.get("properties"), dict):
        return f": remove or rename it (allowed keys here: {', '.join(error.schema['properties'])})"
    if kind == "pattern" and value == NAME_PATTERN:
        return (": names become file paths and job arguments: use letters, digits and . _ + - only, starting "
                "with a letter or digit (no '/', no spaces)")
    fixes = {
        "required": "add the missing key",
        "enum": "use one of the values listed",
        "minimum": f"use a value >= {value}",
        "exclusiveMinimum": f"use a value > {value}",
        "maximum": f"use a value <= {value}",
        "exclusiveMaximum": f"use a value < {value}",
        "type": f"give a value of type {value}" + (" (a whole number without a decimal point)"
                                                    if value == "integer" else ""),
        "pattern": f"write it to match {value}",
        "minItems": f"give at least {value} item(s)",
        "minProperties": f"give at least {value} entry(ies)",
        "uniqueItems": "remove the duplicates",
    }
    return f": {fixes[kind]}" if kind in fixes else ""
