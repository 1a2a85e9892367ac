"""Rewrite the diffsmooth/*.py deps of dvc.yaml's stages from the import graph (diffsmooth.codedeps), so DVC
and Snakemake depend on the same files. Run after adding or moving a module; tests/test_codedeps.py checks.

    python workflow/scripts/update_dvc_deps.py
"""
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from diffsmooth.codedeps import product_sources  # noqa: E402

STAGE_PRODUCT = {"data": "data", "train": "train", "certify": "merge", "tables": "tables", "experiment": "experiment"}


def rewrite(text: str) -> str:
    out, stage, item = [], None, None  # item: the indentation of the deps list being rewritten
    for line in text.split("\n"):
        header = re.match(r"^  (\w+):$", line)
        if header:
            stage = header.group(1)
        if item and not line.startswith(item):
            out += [f"{item}{f}" for f in product_sources(STAGE_PRODUCT[stage])]
            item = None
        if item and re.match(rf"^{item}diffsmooth/\S+\.py$", line):
            continue  # replaced by the closure at the end of the list
        out.append(line)
        deps = re.match(r"^( *)deps:$", line)
        if deps:
            item = deps.group(1) + "  - "
    return "\n".join(out)


if __name__ == "__main__":
    path = ROOT / "dvc.yaml"
    path.write_text(rewrite(path.read_text()))
