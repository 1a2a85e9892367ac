"""config/README.md (generated from the config schema by workflow/scripts/config_readme.py) and
.snakemake-workflow-catalog.yml: the two files the Snakemake workflow catalogue's "standardized usage" reads.
Both must say what the schema and the workflow actually do."""
from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest
import yaml

from diffsmooth.config import NAME_PATTERN, SCHEMA

ROOT = Path(__file__).resolve().parent.parent
CATALOG = ROOT / ".snakemake-workflow-catalog.yml"
RULE_FILES = [ROOT / "Snakefile", *sorted((ROOT / "workflow" / "rules").glob("*.smk"))]


def _load_generator():
    spec = importlib.util.spec_from_file_location("config_readme", ROOT / "workflow" / "scripts" / "config_readme.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gen = _load_generator()


@pytest.fixture(scope="module")
def schema() -> dict:
    return yaml.safe_load(SCHEMA.read_text(encoding="utf-8"))


def test_readme_is_generated_from_the_current_schema(schema):
    assert gen.SCHEMA == SCHEMA  # the generator reads the schema the library validates with
    expected = gen.render(schema)
    current = (ROOT / "config" / "README.md").read_text(encoding="utf-8")
    assert current == expected, ("config/README.md is stale: run `.venv/bin/python workflow/scripts/config_readme.py` "
                                 "after changing diffsmooth/schemas/config.schema.yaml or its INTRO")


def test_check_mode_reports_a_stale_readme(tmp_path, monkeypatch, schema, capsys):
    readme = tmp_path / "README.md"
    readme.write_text(gen.render(schema), encoding="utf-8")
    monkeypatch.setattr(gen, "README", readme)
    monkeypatch.setattr(gen, "ROOT", tmp_path)
    assert gen.main(["--check"]) == 0
    readme.write_text(gen.render(schema).replace("| `certify.N` |", "| `certify.NN` |"), encoding="utf-8")
    assert gen.main(["--check"]) == 1
    assert "stale" in capsys.readouterr().err


def _properties(node, path="") -> list[str]:
    """Every key of every `properties` mapping in the schema (outside `definitions`), independently of the
    generator's walk: the rows the README must have."""
    out = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "definitions" and path == "":
                continue
            if key == "properties" and isinstance(value, dict):
                out += [f"{path}/{name}" for name in value]
            out += _properties(value, f"{path}/{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            out += _properties(value, f"{path}/{i}")
    return out


def test_every_schema_property_has_a_row_and_a_description(schema):
    rows = gen.rows(schema)
    assert len(rows) == len(_properties(schema)) > 80
    assert gen.undescribed(schema) == [], "add a `description` to these keys of diffsmooth/schemas/config.schema.yaml"
    text = gen.render(schema)
    for row in rows:
        assert f"| `{row['key']}` |" in text
    # nested maps and lists are named the way a user writes them
    keys = {r["key"] for r in rows}
    assert {"certify.N", "classifiers.<name>.arch", "models[].grid", "tables.<id>.kind",
            "tables.<id>.settings[].N", "dataset.images.skip"} <= keys


def test_undescribed_finds_a_missing_description_at_any_depth():
    schema = {"type": "object", "properties": {
        "a": {"type": "integer", "description": "described"},
        "m": {"type": "object", "description": "a map", "additionalProperties": {
            "type": "object", "properties": {"x": {"type": "string"}}}},
        "l": {"type": "array", "description": "a list", "items": {
            "type": "object", "properties": {"y": {"$ref": "#/definitions/d"}}}},
    }, "definitions": {"d": {"type": "number", "description": "from the definition"}}}
    assert gen.undescribed(schema) == ["m.<key>.x"]
    assert [r["key"] for r in gen.rows(schema)] == ["a", "m", "m.<key>.x", "l", "l[].y"]
    assert gen.rows(schema)[-1]["description"] == "from the definition"


def test_types_defaults_and_required_are_rendered(schema):
    text = gen.render(schema)
    assert "| `certify.N` | integer ≥ 1 | yes |  |" in text
    assert "| `certify.alpha` | number in (0, 1) | yes |" in text
    assert "| `certify.precision` | one of: `fp32`, `tf32`, `bf16` |  | `fp32` |" in text
    assert "| `dataset.images.skip` | integer ≥ 1 |  | `1` |" in text
    assert "| `models[].shift` | number ≥ 0, or map `<sigma>` → number ≥ 0 |" in text
    # a `|` inside a cell is escaped, or the row would gain columns
    assert r"`^(cpu\|cuda(:[0-9]+)?\|auto)$`" in text
    for line in text.split("\n## Keys\n", 1)[1].splitlines():
        if line.startswith("| `"):
            assert len(re.findall(r"(?<!\\)\|", line)) == len(gen.COLUMNS) + 1, line


def test_intro_names_every_config_and_the_name_rules(schema):
    named = set(re.findall(r"`(config/[\w.-]+\.yaml)`", gen.INTRO))
    present = {f"config/{p.name}" for p in (ROOT / "config").glob("*.yaml")}
    assert named == present, "the intro of workflow/scripts/config_readme.py must describe every config/*.yaml"
    assert f"`{NAME_PATTERN}`" in gen.INTRO
    assert f"`{schema['properties']['experiment']['pattern']}`" in gen.INTRO
    assert "diffsmooth plan --configfile" in gen.INTRO


def test_intro_statements_about_configfile_and_config_match_the_workflow():
    snakefile = (ROOT / "Snakefile").read_text(encoding="utf-8")
    common = (ROOT / "workflow" / "rules" / "common.smk").read_text(encoding="utf-8")
    # "the first --configfile (or config/config.yaml when none is given) is the base": read only without one
    assert "(or `config/config.yaml` when none is given) is the **base**" in gen.INTRO
    assert re.search(r"if not workflow\.overwrite_configfiles:\s+configfile: \"config/config\.yaml\"", snakefile)
    # "layered on it ... two complete configs are refused": common.smk layers and checks them
    assert "layered on it" in gen.INTRO and "would mix two grids" in gen.INTRO
    assert "check_layers(CONFIGFILES)" in common and "write_effective" in common, (
        "workflow/rules/common.smk no longer layers configs: update INTRO in workflow/scripts/config_readme.py "
        "(and .snakemake-workflow-catalog.yml), then regenerate config/README.md")


def _has_directive(name: str) -> bool:
    return any(re.search(rf"^\s+{name}:", f.read_text(encoding="utf-8"), re.MULTILINE) for f in RULE_FILES)


def test_catalog_file_has_the_catalogue_keys_and_tells_the_truth():
    data = yaml.safe_load(CATALOG.read_text(encoding="utf-8"))
    assert set(data) == {"usage"}
    usage = data["usage"]
    assert set(usage) == {"mandatory-flags", "software-stack-deployment", "report"}
    assert set(usage["mandatory-flags"]) == {"desc", "flags"}
    assert isinstance(usage["mandatory-flags"]["desc"], str) and usage["mandatory-flags"]["desc"].strip()
    deploy = usage["software-stack-deployment"]
    assert set(deploy) == {"conda", "apptainer", "apptainer+conda"}
    assert all(isinstance(v, bool) for v in deploy.values()) and isinstance(usage["report"], bool)
    # software deployment as the rules declare it, and a report only if the workflow declares one
    assert deploy["conda"] == _has_directive("conda")
    assert deploy["apptainer"] == _has_directive("container")
    assert deploy["apptainer+conda"] == (deploy["conda"] and deploy["apptainer"])
    assert usage["report"] == any(re.search(r"^report:", f.read_text(encoding="utf-8"), re.MULTILINE) for f in RULE_FILES)
    # the mandatory flags name config files that exist and are paper grids (not the embedded default)
    flags = usage["mandatory-flags"]["flags"]
    flags = flags.split() if isinstance(flags, str) else list(flags)
    files = [flags[i + 1] for i, f in enumerate(flags) if f == "--configfile"]
    assert files and all((ROOT / f).is_file() and f != "config/config.yaml" for f in files)
    assert all(f in usage["mandatory-flags"]["desc"] for f in ("config/cifar10.yaml", "config/imagenet.yaml"))
