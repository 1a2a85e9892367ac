"""Which library source files a product depends on, read from the import graph (one source for Snakemake
and DVC, so the dependency lists cannot drift from the code).

The graph is read with `ast` (no module is imported, so the workflow does not load torch to parse): every
`import diffsmooth.x` / `from .x import y` of a module, at top level or inside a function, is an edge.

    python -m diffsmooth.codedeps tables      # the files the rendered tables depend on (see PRODUCTS)
"""
from __future__ import annotations

import ast
import sys
from functools import lru_cache
from pathlib import Path

PACKAGE = "diffsmooth"
PACKAGE_DIR = Path(__file__).resolve().parent

# The modules that make each product of the pipeline; the rules (workflow/rules/*.smk, `code(product)`) and
# the stages of dvc.yaml depend on the sources these import (tests/test_codedeps.py keeps dvc.yaml in step).
# Certification is absent on purpose: its jobs rerun on CERTIFY_VERSION (diffsmooth/cell.py), not on edits.
PRODUCTS = {
    "data": ("diffsmooth.data",),
    "train": ("diffsmooth.training",),
    "merge": ("diffsmooth.merge",),
    "import": ("diffsmooth.importing",),
    "tables": ("diffsmooth.report",),
    # dvc.yaml's experiment@<name>: one whole Snakemake run (the products above, as its rules make them)
    "experiment": ("diffsmooth.experiments", "diffsmooth.data", "diffsmooth.training", "diffsmooth.merge",
                   "diffsmooth.importing", "diffsmooth.report"),
}


def _module_file(module: str) -> Path | None:
    rel = Path(*module.split(".")[1:])
    for cand in (PACKAGE_DIR / rel.with_suffix(".py"), PACKAGE_DIR / rel / "__init__.py"):
        if cand.is_file():
            return cand
    return None


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    parts = module.split(".")
    base = parts if is_package else parts[:-1]
    base = base[:len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


@lru_cache(maxsize=None)
def imports_of(module: str) -> frozenset:
    """diffsmooth modules that `module` imports (directly)."""
    path = _module_file(module)
    if path is None:
        return frozenset()
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == PACKAGE}
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(module, path.name == "__init__.py", node)
            if target.split(".")[0] != PACKAGE:
                continue
            found.add(target)
            # `from . import statistics` / `from .models import zoo`: the names may be submodules
            found |= {f"{target}.{a.name}" for a in node.names if _module_file(f"{target}.{a.name}")}
    expanded = set()
    for name in found:  # importing a.b.c runs a/__init__.py and a/b/__init__.py too
        parts = name.split(".")
        expanded |= {".".join(parts[:k]) for k in range(2, len(parts) + 1)}
    return frozenset(m for m in expanded if _module_file(m) and m != module)


def closure(*modules: str) -> list[str]:
    """The modules themselves and everything they import, transitively, sorted."""
    seen, todo = set(), list(modules)
    while todo:
        m = todo.pop()
        if m in seen:
            continue
        seen.add(m)
        todo += imports_of(m)
    return sorted(seen)


def sources(*modules: str, root: Path | None = None) -> list[str]:
    """Source files of `closure(*modules)`, relative to the repository root (what rules and DVC list)."""
    root = root or PACKAGE_DIR.parent
    return sorted({str(_module_file(m).relative_to(root)) for m in closure(*modules)})


def product_sources(product: str) -> list[str]:
    """Source files a product of PRODUCTS depends on."""
    if product not in PRODUCTS:
        raise KeyError(f"unknown product {product!r}: use one of {', '.join(PRODUCTS)}")
    return sources(*PRODUCTS[product])


if __name__ == "__main__":
    names = sys.argv[1:] or list(PRODUCTS)
    for name in names:
        files = product_sources(name) if name in PRODUCTS else sources(name)
        print(f"{name}:\n  " + "\n  ".join(files))
