# Stage 4: aggregation into the paper's tables (Markdown, LaTeX, cell index), Figure 3, comparisons.

TABLES_DIR = f"{RESULTS}/tables/{EXP}"


def table_outputs():
    out = []
    for spec in GRID.tables:
        out += [f"{TABLES_DIR}/{spec.id}.{ext}" for ext in ("md", "tex", "cells.csv")]
        if spec.kind == "m_ladder":
            out += [f"{TABLES_DIR}/{spec.id}.{ext}" for ext in ("png", "pdf")]
    return out


rule render_tables:
    """All tables and figures of the experiment from the per-image rows."""
    input:
        certified_rows(),
        code("tables", "metrics", "grid", "paper"),
    output:
        table_outputs(),
    log:
        f"{RESULTS}/{EXP}/logs/render_tables.log",
    shell:
        "diffsmooth tables --configfile {CONFIGFILE} --out {TABLES_DIR} 2> {log}"
