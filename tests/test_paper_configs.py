"""The paper's grids as configs (config/cifar10.yaml, config/imagenet.yaml): they validate, enumerate exactly the
paper's rows, match every row of the paper's tables once, plan without data, and fail early without it."""
from __future__ import annotations

import json

import pytest

from diffsmooth import paper
from diffsmooth.compare import _match, compared_tables
from diffsmooth.grid import PAPER_DATASET_NAMES, build_grid, cell_id, load_config
from diffsmooth.plan import make_plan

from conftest import REPO, copy_repo, run

CONFIGS = {"cifar10": REPO / "config" / "cifar10.yaml", "imagenet": REPO / "config" / "imagenet.yaml"}
GOLDEN = REPO / "tests" / "data" / "golden"

# table id -> (rows, distinct cells) the paper's layout asks for.
EXPECTED = {
    "cifar10": {"table1": (12, None), "table3": (4, 4), "table4": (27, 27), "table6": (11, None),
                "table12": (9, 9), "figure3": (15, 15)},
    "imagenet": {"table2": (14, None), "table3": (3, 3), "table5": (21, 21), "table7": (13, None),
                 "table8": (12, 12), "table11": (8, 8), "figure3": (30, 30)},
}
REPORTED = {
    "cifar10": {"table1": {"macer", "consistency", "smoothmix", "boosting"}},
    "imagenet": {"table2": {"resnet50/macer", "resnet50/consistency", "resnet50/smoothmix", "resnet50/boosting",
                            "beit/dds-standard"},
                 "table7": {"beit/dds-standard"}},
}


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def grid(request):
    return build_grid(load_config(CONFIGS[request.param]))


def test_configs_validate_and_select_500_images(grid):
    cfg = grid.config
    assert len(grid.images()) == 500
    assert cfg["certify"]["n0"] == 100 and cfg["certify"]["alpha"] == 0.001
    assert cfg["certify"]["N"] == {"cifar10": 100_000, "imagenet": 10_000}[grid.experiment]
    assert grid.images()[:3] == ([0, 20, 40] if grid.experiment == "cifar10" else [0, 100, 200])
    assert cfg["m"] == 21 and [float(s) for s in cfg["sigmas"]] == [0.25, 0.5, 1.0]
    assert cfg["certify"]["mode"] == "fused" and cfg["device"] == "auto"


def test_rows_and_cells_per_table_match_the_paper(grid):
    for spec in grid.tables:
        rows, ncells = EXPECTED[grid.experiment][spec.id]
        assert len(spec.rows) == rows, spec.id
        computed = [r for r in spec.rows if r.source == "computed"]
        assert all(r.cells for r in computed), spec.id
        if ncells is not None:
            assert len({cell_id(c) for r in computed for c in r.cells}) == ncells, spec.id
        number = paper.table_number(grid.config["tables"][spec.id]["paper"]) if spec.kind != "m_ladder" else None
        if number:
            df = paper.load_paper_table(number)
            df = df[df["dataset"] == PAPER_DATASET_NAMES[grid.experiment]]
            assert len(spec.rows) == len(df), spec.id


def test_every_row_matches_exactly_one_paper_row(grid):
    """Each computed or reported row has exactly one paper row, and each of the paper's rows is used once."""
    assert compared_tables(grid) == [s.id for s in grid.tables if s.kind != "m_ladder"]
    for spec in grid.tables:
        if spec.kind == "m_ladder":
            continue
        df = paper.load_paper_table(grid.config["tables"][spec.id]["paper"])
        df = df[df["dataset"] == PAPER_DATASET_NAMES[grid.experiment]]
        used = []
        for row in spec.rows:
            hits = _match(df, row.paper_key)
            assert len(hits) == 1, (spec.id, row.labels, row.paper_key, list(hits["row_id"]))
            used.append(hits.iloc[0]["row_id"])
        assert sorted(used) == sorted(df["row_id"]), spec.id


def test_reported_rows_are_marked_and_never_computed(grid):
    for spec in grid.tables:
        reported = [r for r in spec.rows if r.source == "reported"]
        assert {r.paper_row for r in reported} == REPORTED[grid.experiment].get(spec.id, set()), spec.id
        for r in reported:
            assert r.cells == [] and r.labels["Method"].endswith("(reported)")
    # the reported-only baselines are exactly the paper's reported_only rows (+ the DDS paper's BEiT row)
    number = 1 if grid.experiment == "cifar10" else 2
    df = paper.load_paper_table(number)
    want = set(df[df["reported_only"]]["row_id"]) | ({"beit/dds-standard"} if number == 2 else set())
    assert REPORTED[grid.experiment][f"table{number}"] == want


def test_sigma_local_grid_and_shift(grid):
    """Appendix B.2 sigma' sets as Tables 4/5 list them; Section 5.1 shifts; Table 8 unshifted."""
    ds = [c for c in grid.cells if c.method == "diffsmooth"]
    shifts = {(c.sigma, c.shift) for c in ds if c.shift}
    if grid.experiment == "cifar10":
        assert shifts == {(0.25, 0.03), (0.5, 0.03), (1.0, 0.03)}
    else:
        assert shifts == {(0.25, 0.01), (0.5, 0.02), (1.0, 0.02)}
    table8 = [s for s in grid.tables if s.kind == "diffsmooth_noshift"]
    for spec in table8:
        assert all(c.shift == 0.0 for r in spec.rows for c in r.cells)
    main = next(s for s in grid.tables if s.kind == "diffsmooth")
    pairs = {(r.labels.get("Architecture", ""), r.labels["Method"], r.cells[0].sigma, r.cells[0].sigma_local)
             for r in main.rows}
    assert all(sl <= s for _, _, s, sl in pairs)
    assert all(c.m == 21 for r in main.rows for c in r.cells)


def test_figure3_ladder(grid):
    fig = next(s for s in grid.tables if s.kind == "m_ladder")
    assert sorted({c.m for r in fig.rows for c in r.cells}) == [1, 3, 5, 11, 21]
    assert all(c.sigma == c.sigma_local for r in fig.rows for c in r.cells)


def test_equal_budget_settings(grid):
    spec = next(s for s in grid.tables if s.kind == "equal_budget")
    budget = grid.config["tables"][spec.id]["budget"]
    assert budget == grid.config["certify"]["N"]
    for r in spec.rows:
        for c in r.cells:
            assert c.N * max(c.m, 1) == budget, (r.labels, c)


def test_checkpoints_layout_and_normalization(grid):
    cfg = grid.config
    assert cfg["diffusion"]["checkpoint"] == {"cifar10": "data/checkpoints/cifar10_uncond_50M_500K.pt",
                                              "imagenet": "data/checkpoints/256x256_diffusion_uncond.pt"}[grid.experiment]
    manifest = {"cifar10": "improved_diffusion_cifar10_uncond_50M_500K.json",
                "imagenet": "guided_diffusion_256x256_uncond.json"}[grid.experiment]
    flags = json.loads((REPO / "tests" / "data" / "models" / manifest).read_text())["flags"]
    assert "rescale_timesteps" in cfg["diffusion"]["flags"]
    assert {k: v for k, v in cfg["diffusion"]["flags"].items() if k != "use_fp16"} == \
        {k: v for k, v in flags.items() if k != "use_fp16"}
    used = {c.classifier for c in grid.cells}
    assert used == set(cfg["classifiers"]), "every classifier of the config is used by some cell"
    for name, spec in cfg["classifiers"].items():
        path = spec["checkpoint"]
        assert path.startswith("data/checkpoints/") and path.endswith("checkpoint.pth.tar"), name
        if "/smoothadv/" in path:  # SmoothAdv README: NormalizeLayer only for imagenet32/, finetune_*, self_training/
            expect = "normalize" if "/self_training/" in path else "input_center"
        elif "beit" in path:
            expect = "vit"
            assert "/beit_large_patch16_224/noise_sd" in path
        else:
            expect = "normalize"
            assert path.startswith("data/checkpoints/cohen/models/")
        assert spec["normalization"] == expect, name


def test_cifar10_smoothadv_models_follow_tables_9_and_10():
    cfg = load_config(CONFIGS["cifar10"])
    clf = {k: v["checkpoint"] for k, v in cfg["classifiers"].items()}
    assert "PGD_10steps_multiNoiseSamples/4-multitrain/eps_64/cifar10/resnet110/noise_0.12/" in clf["smoothadv_0.12"]
    assert "PGD_10steps_multiNoiseSamples/8-multitrain/eps_255/cifar10/resnet110/noise_0.25/" in clf["smoothadv_0.25"]
    assert "PGD_10steps_multiNoiseSamples/2-multitrain/eps_512/cifar10/resnet110/noise_1.00/" in clf["smoothadv_1.00"]
    assert "self_training/PGD_8steps/weight_1.0/eps_64/cifar10/resnet110/noise_0.12/" in clf["smoothadv_extra_0.12"]
    assert "self_training/PGD_2steps/weight_0.5/eps_255/cifar10/resnet110/noise_0.50/" in clf["smoothadv_extra_0.50"]


def test_imagenet_smoothadv_sigma025_uses_the_smaller_eps_model_with_purification():
    """Appendix B.1: DiffSmooth/DDS at sigma = 0.25 use a smaller-epsilon SmoothAdv model; RS keeps Table 9's."""
    grid = build_grid(load_config(CONFIGS["imagenet"]))
    small = "smoothadv_rn50_0.25_small_eps"
    at = {(c.method, c.sigma, c.sigma_local, c.classifier) for c in grid.cells if "smoothadv" in c.classifier}
    assert ("rs", 0.25, 0.0, "smoothadv_rn50_0.25") in at
    assert ("diffsmooth", 0.25, 0.25, small) in at and ("dds", 0.25, 0.0, small) in at
    assert not any(m == "diffsmooth" and s == 0.25 and name == "smoothadv_rn50_0.25" for m, s, _, name in at)
    assert "DDN_2steps" in grid.config["classifiers"]["smoothadv_rn50_0.25"]["checkpoint"]


def test_digits_cells_unchanged():
    """The optional keys added for the paper's grids change nothing in the digits configs."""
    for name in ("config", "fast"):
        grid = build_grid(load_config(REPO / "config" / f"{name}.yaml"))
        expected = (GOLDEN / f"cells_{name}.txt").read_text().split()
        assert [cell_id(c) for c in grid.cells] == expected, name


def test_plan_prints_jobs_forwards_and_gpu_hours():
    proc = run(["diffsmooth", "plan", "--configfile", "config/cifar10.yaml"], REPO)
    out = proc.stdout
    for head in ("jobs (fused)", "jobs (per cell)", "forwards (fused)", "GPU-h (fused)", "GPU-h (per cell)"):
        assert head in out
    for tid in ("table1", "table3", "table4", "table6", "table12", "figure3", "TOTAL"):
        assert any(line.startswith(tid) for line in out.splitlines()), tid
    for name in CONFIGS:
        plan = make_plan(build_grid(load_config(CONFIGS[name])))
        total = plan["total"]
        assert total["jobs_fused"] == 3 * plan["shards"] < total["jobs_per_cell"]
        assert 0 < total["gpu_hours_fused"] < total["gpu_hours_per_cell"]


@pytest.mark.slow
@pytest.mark.parametrize("name,certify_jobs", [("cifar10", 150), ("imagenet", 750)])
def test_dry_run_lists_the_plan_without_data(tmp_path, name, certify_jobs):
    root = copy_repo(tmp_path / "repo")
    assert not list((root / "data").rglob("*.pth.tar")) and not list((root / "data").rglob("*.pt"))
    proc = run(["snakemake", "-n", "all_tables", "--configfile", f"config/{name}.yaml"], root, timeout=900)
    out = proc.stdout + proc.stderr
    assert f"certify_group      {certify_jobs}" in out, out[-3000:]
    assert "render_tables        1" in out


@pytest.mark.slow
def test_real_run_without_data_fails_early_naming_every_file(tmp_path):
    root = copy_repo(tmp_path / "repo")
    proc = run(["snakemake", "-c1", "all_tables", "--configfile", "config/cifar10.yaml"], root, check=False,
               timeout=900)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    cfg = load_config(root / "config" / "cifar10.yaml")
    for path in [cfg["diffusion"]["checkpoint"]] + [c["checkpoint"] for c in cfg["classifiers"].values()]:
        assert path in out, path
    assert "data/cifar10/cifar-10-batches-py/test_batch" in out
    assert "nothing was started" in out
    assert not (root / "results").exists() or not any((root / "results").rglob("*.json"))
