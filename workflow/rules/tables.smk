# Stage 4: aggregation into the paper's tables (Markdown, LaTeX, HTML, cell index), Figure 3 and the
# paper-vs-reproduced comparison; `snakemake --report report.html` shows them with the captions of
# workflow/report/.
from pathlib import Path

from snakemake.exceptions import WorkflowError

from diffsmooth.compare import compared_tables, paper_number

TABLES_DIR = f"{RESULTS}/tables/{EXP}"
REPORT_DIR = "../report"


report: "../report/workflow.rst"


def _report(path, caption, category, **labels):
    return report(path, caption=f"{REPORT_DIR}/{caption}", category=category, subcategory=EXP, labels=labels)


def table_outputs(flag_report=False):
    """Every file `diffsmooth tables` writes; with flag_report, the ones shown in the report are marked."""
    out = []
    compared = compared_tables(GRID)
    for spec in GRID.tables:
        base = f"{TABLES_DIR}/{spec.id}"
        paper = config["tables"][spec.id].get("paper", "")
        out += [f"{base}.{ext}" for ext in ("md", "tex", "cells.csv")]
        html = f"{base}.html"
        out.append(_report(html, f"{spec.kind}.rst", "Tables", table=spec.id, paper=paper) if flag_report else html)
        if spec.kind == "m_ladder":
            png = f"{base}.png"
            out.append(_report(png, "m_ladder.rst", "Figures", figure=spec.id, paper=paper) if flag_report else png)
            out.append(f"{base}.pdf")
        if spec.id in compared:
            csv = f"{base}.compare.csv"
            out.append(_report(csv, "compare_csv.rst", "Paper vs. reproduced", file=f"{spec.id}.compare.csv")
                       if flag_report else csv)
    summary = f"{TABLES_DIR}/comparison.html"
    out.append(_report(summary, "comparison.rst", "Paper vs. reproduced", file="comparison.html")
               if flag_report else summary)
    out.append(f"{TABLES_DIR}/comparison.md")
    return out


def _dataset_missing():
    """The user-supplied dataset files the CLI would fail on, with how to get them ([] when present)."""
    name, root = config["dataset"]["name"], Path(config["dataset"]["root"])
    if name == "cifar10":
        if not ((root / "cifar-10-batches-py" / "test_batch").exists() or (root / "test_batch").exists()):
            return [f"{root}/cifar-10-batches-py/test_batch (CIFAR-10 python version, test split)"]
    elif name == "imagenet":
        base = root / "val" if (root / "val").is_dir() else root
        if not (base.is_dir() and any(p.is_dir() for p in base.iterdir())):
            return [f"{root}/val/<wnid>/*.JPEG (ImageNet validation set, one folder per class: valprep.sh)"]
    return []  # digits: made by rule prepare_data


def check_user_inputs(wildcards):
    """Fail a real run before any job starts when certification still has to run and a user-supplied
    file is missing, naming every missing file (a dry run only lists the plan). Returns no inputs."""
    if workflow.dryrun or not workflow.is_main_process:
        return []
    if all(os.path.exists(p) for p in certified_rows()):
        return []  # nothing left to certify: the tables need only the rows
    missing = _dataset_missing()
    missing += [p for p in checkpoints_for(GRID.cells) if p not in PIPELINE_CHECKPOINTS and not os.path.exists(p)]
    if missing:
        sources = {spec["checkpoint"]: spec.get("source") for spec in [*config["classifiers"].values(), config["diffusion"]]}
        lines = [f"  {p}" + (f"\n      source: {sources[p]}" if sources.get(p) else "") for p in missing]
        raise WorkflowError(
            f"experiment {EXP}: {len(missing)} user-supplied input file(s) missing, nothing was started:\n"
            + "\n".join(lines)
            + f"\nPlace them there (paths from {CONFIGFILE}); `snakemake -n` lists the job plan without them."
        )
    return []


rule render_tables:
    """All tables and figures of the experiment from the per-image rows, and the comparison with the paper."""
    input:
        check_user_inputs,
        certified_rows(),
        code("tables", "metrics", "grid", "paper", "compare"),
        sorted({f"data/paper/table{paper_number(GRID, s):02d}.csv" for s in GRID.tables if s.id in compared_tables(GRID)}),
    output:
        table_outputs(flag_report=True),
    params:
        # output paths do not change with radii, layouts or rounding: these params make Snakemake rerun it
        tables=[[t.id, t.kind, t.title, t.radii, [[r.labels, [cell_id(c) for c in r.cells]] for r in t.rows]]
                for t in GRID.tables],
        rounding=config["certify"]["rounding"],
    log:
        f"{RESULTS}/{EXP}/logs/render_tables.log",
    shell:
        "diffsmooth tables --configfile {CONFIGFILE} --out {TABLES_DIR} 2> {log}"
