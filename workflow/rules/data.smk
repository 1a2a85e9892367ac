# Stage 1: data. The digits split is made here; CIFAR-10/ImageNet are user-supplied under data/.


rule prepare_data:
    """sklearn's digits, pixels/16, fixed stratified train/test split."""
    input:
        code("data", "cli"),
    output:
        train=f"{config['dataset']['root']}/train.npz",
        test=f"{config['dataset']['root']}/test.npz",
    params:
        test_size=config["dataset"].get("test_size", 300),
        seed=config["seed"],
    log:
        f"{RESULTS}/{EXP}/logs/prepare_data.log",
    shell:
        "diffsmooth prepare-data --configfile {CONFIGFILE} > {log} 2>&1"
