# Stage 1: data. The digits split is made here; CIFAR-10/ImageNet are user-supplied under data/ (inputs that
# must exist, never outputs of a rule).


if config["dataset"]["name"] == "digits":

    rule prepare_data:
        """sklearn's digits, pixels/16, fixed stratified train/test split."""
        input:
            code("data"),
        output:
            train=f"{config['dataset']['root']}/train.npz",
            test=f"{config['dataset']['root']}/test.npz",
        log:
            str(LAYOUT.log("prepare_data", "digits")),
        params:
            config=CONFIGFILE,
            test_size=config["dataset"].get("test_size", 300),
            seed=config["seed"],
        shell:
            "diffsmooth prepare-data --configfile {params.config:q} > {log:q} 2>&1"

    localrules:
        prepare_data,
