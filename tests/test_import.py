"""Imported certification logs (diffsmooth/importing.py, `imports:`, rule import_cell): synthetic logs in Cohen
et al.'s certify.py format and in this pipeline's rows format become cells that the tables read."""
import datetime
import hashlib
import json
import re
import shutil

import numpy as np
import pytest
import yaml

from conftest import copy_repo, run, small_cifar10_config
from diffsmooth import metrics
from diffsmooth.cli import main
from diffsmooth.grid import ConfigError, build_grid, cell_id
from diffsmooth.importing import LogImportError, import_cells, prepare_import
from diffsmooth.paths import Layout
from diffsmooth.rows import format_row, read_rows
from diffsmooth.statistics import ABSTAIN, decide, max_radius, round_sig

COHEN_HEADER = "idx\tlabel\tpredict\tradius\tcorrect\ttime\n"
ENTRY = dict(method="rs", classifier="cohen_0.25", sigma=0.25, N=100000, n0=100, alpha=0.001)
IMAGES = list(range(0, 200, 20))  # the test config's dataset.images: 0, 20, ..., 180


def cohen_line(i, label, predict, radius, seconds, old_time=False) -> str:
    """A line exactly as locuslab/smoothing's certify.py prints it ({:.3} radius, str(timedelta) time)."""
    time = f"{seconds:.1f}" if old_time else str(datetime.timedelta(seconds=seconds))
    return "{}\t{}\t{}\t{:.3}\t{}\t{}\n".format(i, label, predict, radius, int(predict == label), time)


def cohen_log(path, images=range(0, 400, 10), radius_of=None):
    """Every 10th image up to 390 (more than the config selects): mostly certified, image 40 abstains,
    image 60 is wrong, image 20 sits at true radius 0.4996 (printed 0.5), old float-seconds times on a few."""
    lines = [COHEN_HEADER]
    for i in images:
        label = i % 7
        predict, radius = label, 0.25 + (i % 13) / 30
        if i == 20:
            radius = 0.4996
        if i == 40:
            predict, radius = ABSTAIN, 0.0
        if i == 60:
            predict = (label + 1) % 10
        if radius_of:
            radius = radius_of.get(i, radius)
        lines.append(cohen_line(i, label, predict, radius, 12.5 + i / 1000, old_time=i % 30 == 0))
    path.write_text("".join(lines))
    return path


def rows_log(path, images=range(0, 300, 20), alpha=0.001, n=100000, sigma=0.25, seed=0):
    """This pipeline's rows format, made with the real statistics (decide) from random counts."""
    rng = np.random.default_rng(seed)
    out = ["idx\tlabel\tpredict\tradius\tcorrect\ttime\tnA\tn\tpA_lower\n"]
    for i in images:
        n_a = int(rng.choice([n, n - 3, int(0.7 * n), int(0.45 * n)]))
        label = i % 10
        c_a = label if i % 3 else (label + 1) % 10
        pred, radius, p_low = decide(c_a, n_a, n, alpha, sigma)
        out.append(format_row(i, label, pred, radius, int(pred == label), 1.5, n_a, n, p_low))
    path.write_text("".join(out))
    return path


def config(tmp_path, imports, tables=("table12", "table1"), **changes) -> dict:
    """CIFAR-10 cut to images 0, 20, ..., 180, the Gaussian RS cells of Tables 12 and 1 only: no GPU work."""
    cfg = small_cifar10_config("imported", 200, list(tables), **changes)
    cfg["models"] = [m for m in cfg["models"] if m["id"] == "gaussian"]
    for key in ("grid", "standard"):
        cfg["models"][0].pop(key)
    cfg["imports"] = imports
    return cfg


def write_config(tmp_path, cfg):
    path = tmp_path / "imported.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def test_cohen_log_becomes_a_cell(tmp_path):
    log = cohen_log(tmp_path / "sigma_0.25")
    grid = build_grid(config(tmp_path, [{"log": str(log), **ENTRY}]))
    (cid, entry), = grid.imported.items()
    assert grid.groups() == {} and cid in [cell_id(c) for c in grid.cells]  # a cell of the tables, no job

    [path] = import_cells(grid, tmp_path / "results")
    assert path == Layout(tmp_path / "results", "imported").rows(cid)
    rows = read_rows(path)
    assert rows["idx"].tolist() == IMAGES  # 40 lines in the log, the 10 configured kept in config order
    assert rows[["nA", "n", "pA_lower"]].isna().all().all()  # Cohen's format has no counts
    assert rows.loc[rows.idx == 20, "radius"].item() == 0.5  # printed "0.5"
    assert rows.loc[rows.idx == 40, ["predict", "radius", "correct"]].values.tolist() == [[ABSTAIN, 0.0, 0]]
    assert rows.loc[rows.idx == 0, "time"].item() == pytest.approx(12.5)  # float seconds (old files)
    assert rows.loc[rows.idx == 20, "time"].item() == pytest.approx(12.52)  # str(timedelta)
    # the reference's analysis: radius 0.4996 printed 0.5 passes r = 0.5 (3 significant digits, >=)
    passing = [i for i in IMAGES if i not in (40, 60) and round_sig(0.25 + (i % 13) / 30) >= 0.5] + [20]
    assert metrics.certified_count(rows, 0.5, "reference") == len(passing)

    meta = json.loads(Layout(tmp_path / "results", "imported").meta(cid).read_text())
    info = meta["imported"]
    assert info["sha256"] == hashlib.sha256(log.read_bytes()).hexdigest()
    assert (info["source"], info["format"], info["lines"], info["selected"], info["dropped"]) == (
        str(log), "cohen", 40, 10, 30)
    assert info["time_format"] == "seconds+timedelta" and info["recertifiable"] is False
    assert info["declared"] == {"dataset": "cifar10", **ENTRY, "sigma_local": 0.0, "shift": 0.0, "m": 0}
    assert meta["cell_id"] == cid and meta["images"] == IMAGES


def test_rows_format_is_rechecked_from_its_counts(tmp_path):
    log = rows_log(tmp_path / "rows.tsv")
    grid = build_grid(config(tmp_path, [{"log": str(log), **ENTRY}]))
    [path] = import_cells(grid, tmp_path / "results")
    src = read_rows(log).set_index("idx").loc[IMAGES].reset_index()
    got = read_rows(path)
    assert got.equals(src)  # every column at full precision, the counts kept
    assert any(v == ABSTAIN for v in got["predict"])
    info = json.loads(path.with_name("meta.json").read_text())["imported"]
    assert info["format"] == "diffsmooth" and "pA_lower == Clopper-Pearson(nA, n, alpha)" in info["checks"]

    # a pA_lower that the counts do not give, and an N other than the declared one, name line and column
    lines = log.read_text().splitlines(keepends=True)
    f = lines[3].split("\t")
    lines[3] = "\t".join(f[:8] + [repr(float(f[8]) * 0.99)]) + "\n"
    log.write_text("".join(lines))
    with pytest.raises(LogImportError, match=r"rows.tsv:4, column pA_lower: .*Clopper-Pearson"):
        import_cells(grid, tmp_path / "results")
    bad = build_grid(config(tmp_path, [{"log": str(rows_log(tmp_path / "n.tsv", n=1000)), **ENTRY}]))
    with pytest.raises(LogImportError, match=r"n.tsv:2, column n: 1000 samples, but the entry declares N=100000"):
        import_cells(bad, tmp_path / "results")


def test_radius_limit_allows_three_digit_rounding(tmp_path):
    limit = max_radius(100000, 0.001, 0.25)  # 0.95286..., printed "0.953" by certify.py
    assert round_sig(limit) > limit
    ok = cohen_log(tmp_path / "ok.tsv", radius_of={80: limit})
    assert "\t0.953\t" in ok.read_text()
    grid = build_grid(config(tmp_path, [{"log": str(ok), **ENTRY}]))
    [path] = import_cells(grid, tmp_path / "results")
    assert read_rows(path).loc[lambda d: d.idx == 80, "radius"].item() == 0.953

    over = cohen_log(tmp_path / "over.tsv", radius_of={80: 0.954})  # line 10: idx 80 (every 10th from 0)
    grid = build_grid(config(tmp_path, [{"log": str(over), **ENTRY}]))
    with pytest.raises(LogImportError, match=r"over.tsv:10, column radius: 0.954 is outside \[0, 0.953\].*"
                                             r"N=100000.*it takes alpha >= 0.0011 at N=100000.*"
                                             r"fix the declared N, alpha or sigma"):
        import_cells(grid, tmp_path / "results")


def test_released_cifar10_logs_need_alpha_001(tmp_path):
    """Cohen et al.'s released CIFAR-10 logs top out at 0.978 (sigma 0.25) = N=100000 at alpha=0.01 with nA = N,
    above what alpha=0.001 certifies (0.953): rejected as declared at 0.001, imported in an alpha-0.01 experiment."""
    log = cohen_log(tmp_path / "sigma_0.25", radius_of={80: 0.9776, 100: 0.9553})  # nA = N, N - 1 at alpha 0.01
    grid = build_grid(config(tmp_path, [{"log": str(log), **ENTRY}]))
    with pytest.raises(LogImportError, match=r"column radius: 0.978 .*it takes alpha >= 0.0099 at N=100000"):
        import_cells(grid, tmp_path / "results")
    cfg = config(tmp_path, [{"log": str(log), **ENTRY, "alpha": 0.01}])
    cfg["certify"]["alpha"] = 0.01
    [path] = import_cells(build_grid(cfg), tmp_path / "results")
    assert read_rows(path)["radius"].max() == 0.978


def _damage(log, lineno, column, value):
    lines = log.read_text().splitlines(keepends=True)
    fields = lines[lineno - 1].rstrip("\n").split("\t")
    fields[column] = value
    lines[lineno - 1] = "\t".join(fields) + "\n"
    log.write_text("".join(lines))


@pytest.mark.parametrize("lineno, column, value, message", [
    (3, 4, "0", r":3, column correct: 0, but predict 3 == label 3"),  # idx 10: certified, label 3
    (6, 3, "0.25", r":6, column radius: 0.25 for an abstention"),  # idx 40 abstains
    (4, 0, "10", r":4, column idx: image 10 repeats line 3"),
    (5, 5, "12 s", r":5, column time: '12 s' is not a duration"),
    (5, 2, "x", r":5, column predict: 'x' is not an integer"),
    (5, 2, "-2", r":5, column predict: -2 is below -1"),
    (1, 3, "r", r":1: header is .*expected"),
])
def test_each_check_names_line_and_column(tmp_path, lineno, column, value, message):
    log = cohen_log(tmp_path / "log.tsv")
    _damage(log, lineno, column, value)
    grid = build_grid(config(tmp_path, [{"log": str(log), **ENTRY}]))
    with pytest.raises(LogImportError, match=message):
        prepare_import(grid, next(iter(grid.imported.values())))


def test_missing_images_are_named(tmp_path):
    log = cohen_log(tmp_path / "short.tsv", images=[i for i in range(0, 400, 10) if i not in (60, 140)])
    grid = build_grid(config(tmp_path, [{"log": str(log), **ENTRY}]))
    with pytest.raises(LogImportError, match=r"2 of the 10 configured images are not in the log \(idx 60, 140\)"):
        import_cells(grid, tmp_path / "results")
    assert not (tmp_path / "results").exists()  # nothing written


def test_entries_must_name_cells_of_the_tables(tmp_path):
    with pytest.raises(ConfigError, match=r"imports\[0\].*declares cell .*N10000_.*no table.*nearest cells: "
                                          r"cifar10/sigma0.25/rs/cohen_0.25/.*\(there: N=100000\)"):
        build_grid(config(tmp_path, [{"log": "x.tsv", **ENTRY, "N": 10000}]))
    with pytest.raises(ConfigError, match=r"imports\[1\].*already imported by imports\[0\]"):
        build_grid(config(tmp_path, [{"log": "x.tsv", **ENTRY}, {"log": "y.tsv", **ENTRY}]))
    with pytest.raises(ConfigError, match=r"imports/0: 'alpha' is a required property"):
        from diffsmooth.grid import validate_config

        validate_config(config(tmp_path, [{"log": "x.tsv", **{k: v for k, v in ENTRY.items() if k != "alpha"}}]))


def test_cli_round_trip_and_refusals(tmp_path, capsys):
    log = cohen_log(tmp_path / "sigma_0.25")
    cfg = write_config(tmp_path, config(tmp_path, [{"log": str(log), **ENTRY}]))
    results = tmp_path / "results"
    cid = next(iter(build_grid(yaml.safe_load(cfg.read_text())).imported))
    args = ["--configfile", str(cfg), "--results", str(results)]
    assert main(["tables", *args]) == 2  # not imported yet: says how
    assert "not imported yet" in capsys.readouterr().err
    assert main(["certify", *args, "--cell", cid]) == 2
    assert "is imported from" in capsys.readouterr().err
    assert main(["import", *args]) == 0
    assert main(["tables", *args, "--out", str(tmp_path / "tables")]) == 0
    index = (tmp_path / "tables" / "table12.cells.csv").read_text().splitlines()
    assert index[0].endswith(",source_file")
    values = [line for line in index[1:] if cid in line]
    assert values and all(",imported," in line and line.endswith(f",{log}") for line in values)
    table1 = (tmp_path / "tables" / "table1.cells.csv").read_text()
    assert f",imported,{cid}," in table1  # Table 1's Gaussian (RS) envelope row

    log.write_text(log.read_text().replace("\t0.5\t", "\t0.51\t"))  # the log changed since the import
    assert main(["tables", *args, "--out", str(tmp_path / "tables")]) == 2
    assert "with other contents" in capsys.readouterr().err

    out = tmp_path / "direct"  # the direct form: a log that is not in the config
    assert main(["import", *args, "--log", str(log), "--out", str(out), *sum(
        ([f"--{k}", str(v)] for k, v in ENTRY.items()), [])]) == 0
    assert read_rows(out / "rows.tsv")["idx"].tolist() == IMAGES


@pytest.mark.slow  # three Snakemake runs in a copy of the repository: 45 s on an idle 2-core machine
def test_snakemake_imports_and_never_certifies(tmp_path):
    """Dry run without the log: one import_cell job, no certification; a real run names the missing log;
    with it, the log is imported and Table 12 renders it, marked imported, compared with the paper."""
    root = copy_repo(tmp_path / "repo")
    (root / "data" / "imports").mkdir(parents=True)
    cohen_log(root / "data" / "imports" / "sigma_0.25")
    cfg = config(tmp_path, [{"log": "data/imports/sigma_0.25", **ENTRY}])
    (root / "config" / "imported.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    cmd = ["snakemake", "all_tables", "--configfile", "config/imported.yaml"]
    moved = root / "data" / "elsewhere"
    shutil.move(root / "data" / "imports" / "sigma_0.25", moved)
    dry = run([*cmd, "-n", "--quiet", "rules"], root).stdout
    assert re.search(r"import_cell\s+1", dry) and "certify" not in dry and "merge" not in dry
    real = run([*cmd, "-c1"], root, check=False)
    assert real.returncode != 0 and "data/imports/sigma_0.25 (log of imported cell" in real.stderr
    shutil.move(moved, root / "data" / "imports" / "sigma_0.25")
    run([*cmd, "-c1"], root)
    index = (root / "results" / "tables" / "imported" / "table12.cells.csv").read_text()
    assert ",imported," in index and "data/imports/sigma_0.25" in index
    compare = (root / "results" / "tables" / "imported" / "table12.compare.csv").read_text()
    assert "compared" in compare  # the imported row stands next to the paper's


def test_plan_counts_no_gpu_work_for_imported_cells(tmp_path):
    from diffsmooth.plan import make_plan, print_plan

    grid = build_grid(config(tmp_path, [{"log": "x.tsv", **ENTRY}]))
    plan = make_plan(grid, tmp_path / "results")
    assert plan["imported"] == 1 and plan["total"]["cells"] == 0 and plan["total"]["gpu_hours_fused"] == 0
    assert plan["tables"]["table12"]["jobs_fused"] == 0
    assert "1 imported cells" in print_plan(plan)


def test_rows_reader_takes_the_empty_counts_of_imported_rows(tmp_path):
    from diffsmooth.rows import HEADER, CorruptRowsError

    path = tmp_path / "rows.tsv"
    path.write_text(HEADER + "0\t3\t3\t0.5\t1\t12.000000\t\t\t\n20\t1\t-1\t0.0\t0\t1.000000\t\t\t\n")
    rows = read_rows(path)
    assert rows["radius"].tolist() == [0.5, 0.0] and rows[["nA", "n", "pA_lower"]].isna().all().all()
    path.write_text(HEADER + "0\t3\t3\t0.5\t1\t12.000000\t\t100\t\n")  # n without nA: damaged, not imported
    with pytest.raises(CorruptRowsError, match=r"rows.tsv:2: inconsistent values"):
        read_rows(path)
