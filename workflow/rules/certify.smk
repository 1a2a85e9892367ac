# Stage 3: certification, fanned out per sigma group x shard (fused, default) or per cell x shard.
# Rows are written durably per image: a killed job resumes where it stopped when rerun. Certification jobs
# list no library sources: they rerun when CERTIFY_VERSION (diffsmooth/cell.py) changes, which the output
# names (group key) and the params carry, so a comment or a refactor submits no GPU job.


rule certify_group:
    """Fused: every cell of one (dataset, sigma) group on one shard of images, one purifier pass per sample."""
    input:
        data_inputs(),
        get_group_checkpoints,
    output:
        # {key} digests the group's cell ids, images and CERTIFY_VERSION: a changed grid is a new file to make
        str(LAYOUT.group_shard_summary("{group}", "{shard}", "{key}")),
    log:
        str(LAYOUT.log("certify_group", "{group}/{shard}-{key}")),
    threads: config["threads"]
    resources:
        gpu=1,
        runtime=lambda wc: certify_resources(get_group_cells(wc), get_shard_images(wc))["runtime"],
        mem_mb=lambda wc: certify_resources(get_group_cells(wc), get_shard_images(wc))["mem_mb"],
    params:
        config=CONFIGFILE,
        speed=SPEED,
        certify_version=CERTIFY_VERSION,
    shell:
        "DIFFSMOOTH_RULE=certify_group diffsmooth certify --configfile {params.config:q} --group {wildcards.group:q} "
        "--shard $((10#{wildcards.shard})) --threads {threads} --summary {output:q} 2> {log:q}"


rule merge_group:
    """Merge every cell of a sigma group from its shards into rows.tsv + meta.json per cell."""
    input:
        lambda wc: [group_summary(wc.group, k) for k in SHARDS],
        code("merge"),
    output:
        str(LAYOUT.group_merged_summary("{group}", "{key}")),
    log:
        str(LAYOUT.log("merge_group", "{group}-{key}")),
    params:
        config=CONFIGFILE,
    shell:
        "diffsmooth merge --configfile {params.config:q} --group {wildcards.group:q} --summary {output:q} 2> {log:q}"


rule certify_cell:
    """One job per cell (and shard): what a user wants when adding a single new cell."""
    input:
        data_inputs(),
        get_cell_checkpoints,
    output:
        rows=str(LAYOUT.shard_rows("{cell}", "{shard}")),
        meta=str(LAYOUT.shard_meta("{cell}", "{shard}")),
    log:
        str(LAYOUT.log("certify_cell", "{cell}/{shard}")),
    wildcard_constraints:
        cell=r"[^/]+/sigma[0-9.]+/[a-z]+/[^/]+/[^/]+",
    threads: config["threads"]
    resources:
        gpu=1,
        runtime=lambda wc: certify_resources([get_cell(wc)], get_shard_images(wc))["runtime"],
        mem_mb=lambda wc: certify_resources([get_cell(wc)], get_shard_images(wc))["mem_mb"],
    params:
        config=CONFIGFILE,
        images=get_shard_images,
        speed=SPEED,
        certify_version=CERTIFY_VERSION,
    shell:
        "DIFFSMOOTH_RULE=certify_cell diffsmooth certify --configfile {params.config:q} --cell {wildcards.cell:q} "
        "--shard $((10#{wildcards.shard})) --threads {threads} 2> {log:q}"


rule merge_cell:
    input:
        lambda wc: [str(LAYOUT.shard_rows(wc.cell, k)) for k in SHARDS],
        code("merge"),
    output:
        rows=str(LAYOUT.rows("{cell}")),
        meta=str(LAYOUT.meta("{cell}")),
    log:
        str(LAYOUT.log("merge_cell", "{cell}")),
    wildcard_constraints:
        cell=r"[^/]+/sigma[0-9.]+/[a-z]+/[^/]+/[^/]+",
    params:
        config=CONFIGFILE,
    shell:
        "diffsmooth merge --configfile {params.config:q} --cell {wildcards.cell:q} 2> {log:q}"


localrules:
    merge_group,
    merge_cell,


rule measure_throughput:
    """samples/s of the purifier and each classifier architecture on a GPU node (random weights, the config's
    batch size and speed settings). Not part of all_tables: run it once per cluster/GPU type before planning;
    `diffsmooth plan` and the certification jobs' runtimes then use it."""
    output:
        str(LAYOUT.throughput),
    log:
        str(LAYOUT.log("measure_throughput", "throughput")),
    threads: config["threads"]
    resources:
        gpu=1,
        runtime=30,
    params:
        config=CONFIGFILE,
        # a change of batch size, precision, ... makes the record stale: Snakemake measures again
        settings=throughput_settings(config),
    shell:
        "diffsmooth throughput --configfile {params.config:q} --threads {threads} --out {output:q} 2> {log:q}"
