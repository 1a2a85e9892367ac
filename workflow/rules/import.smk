# Imported cells (`imports:` of the config, docs/import.md): a user's certification log -- Cohen et al.'s
# certify.py format or a rows.tsv of this pipeline -- becomes a cell's rows.tsv + meta.json. The log is an
# input, never an output: no rule certifies an imported cell (Grid.groups() leaves them out, and
# `ruleorder` puts import_cell before merge_cell for their rows).


if IMPORTED:

    rule import_cell:
        """Check a user's log line by line and keep the configured images: the cell's rows.tsv and meta.json."""
        input:
            log=get_import_log,
            code=code("import"),
        output:
            rows=str(LAYOUT.rows("{cell}")),
            meta=str(LAYOUT.meta("{cell}")),
        log:
            str(LAYOUT.log("import_cell", "{cell}")),
        wildcard_constraints:
            cell="|".join(re.escape(cid) for cid in IMPORTED),
        params:
            config=CONFIGFILE,
            # a changed declaration or image selection re-imports (the output paths may not change)
            declared=lambda wc: IMPORTED[wc.cell].cell.to_dict(),
            images=config["dataset"]["images"],
        shell:
            "diffsmooth import --configfile {params.config:q} --cell {wildcards.cell:q} 2> {log:q}"

    ruleorder: import_cell > merge_cell

    localrules:
        import_cell,
