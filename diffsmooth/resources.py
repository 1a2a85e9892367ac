"""Files shipped inside the package (config schema, the paper's transcribed tables), read through
`importlib.resources` so they are found in a checkout, an editable install and an installed wheel alike."""
from __future__ import annotations

from importlib.resources import files

PACKAGE = "diffsmooth"


def resource(path: str):
    """The package file (an importlib Traversable) at `path`, e.g. "schemas/config.schema.yaml";
    FileNotFoundError when it is not shipped."""
    node = files(PACKAGE).joinpath(*path.split("/"))
    if not node.is_file():
        raise FileNotFoundError(f"package data {PACKAGE}/{path} is missing: reinstall diffsmooth "
                                "(`pip install .` ships it through pyproject.toml's package-data)")
    return node


def resource_text(path: str) -> str:
    return resource(path).read_text(encoding="utf-8")


def resource_names(folder: str) -> list[str]:
    """Names of the files in a package folder, sorted ([] when the folder is not shipped)."""
    node = files(PACKAGE).joinpath(*folder.split("/"))
    return sorted(p.name for p in node.iterdir() if p.is_file()) if node.is_dir() else []
