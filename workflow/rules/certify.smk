# Stage 3: certification, fanned out per sigma group x shard (fused, default) or per cell x shard.
# Rows are written durably per image: a killed job resumes where it stopped when rerun.


def group_cells(wc):
    return GROUPS[wc.group]


def group_summary(group, shard=None):
    return group_summary_path(GRID, group, None if shard is None else int(shard), RESULTS)


rule certify_group:
    """Fused: every cell of one (dataset, sigma) group on one shard of images, one purifier pass per sample."""
    input:
        data_inputs(),
        lambda wc: checkpoints_for(group_cells(wc)),
        CERTIFY_CODE,
    output:
        # {key} digests the group's cell ids and images: a changed grid is a new file to make
        f"{RESULTS}/{EXP}/groups/{{group}}/shards/{{shard}}-{{key}}.json",
    params:
        speed=[config["certify"].get("autocast", "none"), config["certify"].get("channels_last", False)],
    threads: config["threads"]
    resources:
        gpu=1,
        runtime=lambda wc: certify_resources(group_cells(wc), GRID.shards()[int(wc.shard)])["runtime"],
        mem_mb=lambda wc: certify_resources(group_cells(wc), GRID.shards()[int(wc.shard)])["mem_mb"],
    log:
        f"{RESULTS}/{EXP}/logs/certify_group/{{group}}/{{shard}}-{{key}}.log",
    shell:
        "DIFFSMOOTH_RULE=certify_group diffsmooth certify --configfile {CONFIGFILE} --group {wildcards.group} "
        "--shard $((10#{wildcards.shard})) --threads {threads} --summary {output} 2> {log}"


rule merge_group:
    """Merge every cell of a sigma group from its shards into rows.tsv + meta.json per cell."""
    input:
        lambda wc: [group_summary(wc.group, k) for k in SHARDS],
        code("certify", "rows"),
    output:
        f"{RESULTS}/{EXP}/groups/{{group}}/merged-{{key}}.json",
    log:
        f"{RESULTS}/{EXP}/logs/merge_group/{{group}}-{{key}}.log",
    shell:
        "diffsmooth merge --configfile {CONFIGFILE} --group {wildcards.group} --summary {output} 2> {log}"


def cell_of(wc):
    return GRID.cell_by_id(wc.cell)


rule certify_cell:
    """One job per cell (and shard): what a user wants when adding a single new cell."""
    input:
        data_inputs(),
        lambda wc: checkpoints_for([cell_of(wc)]),
        CERTIFY_CODE,
    output:
        rows=f"{RESULTS}/{EXP}/cells/{{cell}}/shards/{{shard}}.tsv",
        meta=f"{RESULTS}/{EXP}/cells/{{cell}}/shards/{{shard}}.json",
    params:
        images=lambda wc: GRID.shards()[int(wc.shard)],
        speed=[config["certify"].get("autocast", "none"), config["certify"].get("channels_last", False)],
    wildcard_constraints:
        cell=r"[^/]+/sigma[0-9.]+/[a-z]+/[^/]+/[^/]+",
    threads: config["threads"]
    resources:
        gpu=1,
        runtime=lambda wc: certify_resources([cell_of(wc)], GRID.shards()[int(wc.shard)])["runtime"],
        mem_mb=lambda wc: certify_resources([cell_of(wc)], GRID.shards()[int(wc.shard)])["mem_mb"],
    log:
        f"{RESULTS}/{EXP}/logs/certify_cell/{{cell}}/{{shard}}.log",
    shell:
        "DIFFSMOOTH_RULE=certify_cell diffsmooth certify --configfile {CONFIGFILE} --cell {wildcards.cell} "
        "--shard $((10#{wildcards.shard})) --threads {threads} 2> {log}"


rule merge_cell:
    input:
        lambda wc: [f"{RESULTS}/{EXP}/cells/{wc.cell}/shards/{k:04d}.tsv" for k in SHARDS],
        code("certify", "rows"),
    output:
        rows=f"{RESULTS}/{EXP}/cells/{{cell}}/rows.tsv",
        meta=f"{RESULTS}/{EXP}/cells/{{cell}}/meta.json",
    wildcard_constraints:
        cell=r"[^/]+/sigma[0-9.]+/[a-z]+/[^/]+/[^/]+",
    log:
        f"{RESULTS}/{EXP}/logs/merge_cell/{{cell}}.log",
    shell:
        "diffsmooth merge --configfile {CONFIGFILE} --cell {wildcards.cell} 2> {log}"


def certified_rows():
    """What the tables read: merged cells (per-cell mode) or the merged groups (fused mode)."""
    if FUSED:
        return [group_summary(g) for g in GROUPS]
    return [f"{RESULTS}/{EXP}/cells/{cell_id(c)}/rows.tsv" for c in GRID.cells]


rule measure_throughput:
    """samples/s of the purifier and each classifier architecture on a GPU node (random weights, the config's
    batch size and speed settings). Not part of all_tables: run it once per cluster/GPU type before planning;
    `diffsmooth plan` and the certification jobs' runtimes then use it."""
    output:
        f"{RESULTS}/{EXP}/throughput.json",
    params:
        # a change of batch size, autocast, ... makes the record stale: Snakemake measures again
        settings=throughput_settings(config),
    threads: config["threads"]
    resources:
        gpu=1,
        runtime=30,
    log:
        f"{RESULTS}/{EXP}/logs/measure_throughput.log",
    shell:
        "diffsmooth throughput --configfile {CONFIGFILE} --threads {threads} --out {output} 2> {log}"
