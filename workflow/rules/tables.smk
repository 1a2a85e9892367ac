# Stage 4: aggregation into the paper's tables (Markdown, LaTeX, HTML, cell index), Figure 3 and the
# paper-vs-reproduced comparison; `snakemake --report report.html` shows them with the captions of
# workflow/report/.


report: "../report/workflow.rst"


rule render_tables:
    """All tables and figures of the experiment from the per-image rows, and the comparison with the paper."""
    input:
        check_user_inputs,
        certified_rows(),
        check_merged_rows,
        code("tables"),
        get_paper_tables(),
    output:
        table_outputs(flag_report=True),
    log:
        str(LAYOUT.log("render_tables", EXP)),
    params:
        config=CONFIGFILE,
        out=lambda wildcards, output: str(Path(output[0]).parent),
        # output paths do not change with radii, layouts or rounding: these params make Snakemake rerun it
        tables=[
            [t.id, t.kind, t.title, t.radii, [[r.labels, [cell_id(c) for c in r.cells]] for r in t.rows]]
            for t in GRID.tables
        ],
        rounding=config["certify"]["rounding"],
    shell:
        "diffsmooth tables --configfile {params.config:q} --out {params.out:q} 2> {log:q}"
