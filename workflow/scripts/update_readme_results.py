"""Copy the embedded default's rendered results into README.md (between the results markers) and
docs/results/, so the README always shows what the pipeline last produced. Run after `make tables`:

    python workflow/scripts/update_readme_results.py [results/tables/digits]
"""
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
START, END = "<!-- results:start -->", "<!-- results:end -->"
SHOWN = ("table1", "table4", "table12", "figure3")


def main(tables_dir: Path) -> None:
    missing = [f"{t}.md" for t in SHOWN if not (tables_dir / f"{t}.md").exists()]
    if missing or not (tables_dir / "figure3.png").exists():
        sys.exit(f"{tables_dir} lacks {missing or ['figure3.png']}: run `make tables` first")
    out = ROOT / "docs" / "results"
    out.mkdir(parents=True, exist_ok=True)
    for t in SHOWN:
        shutil.copy2(tables_dir / f"{t}.md", out / f"{t}.md")
    shutil.copy2(tables_dir / "figure3.png", out / "figure3.png")
    body = "\n\n".join((tables_dir / f"{t}.md").read_text().strip() for t in ("table4", "table1"))
    block = f"{START}\n{body}\n\n![Figure 3 on digits](docs/results/figure3.png)\n{END}"
    readme = (ROOT / "README.md").read_text()
    if START not in readme or END not in readme:
        sys.exit("README.md lacks the results markers")
    head, rest = readme.split(START, 1)
    tail = rest.split(END, 1)[1]
    (ROOT / "README.md").write_text(head + block + tail)
    print(f"README.md and docs/results/ updated from {tables_dir}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "results" / "tables" / "digits")
