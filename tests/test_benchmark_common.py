"""benchmarks/common.py: a grid's comparison rebuilt from runs that several `qgseg compare` calls trained."""
import importlib.util
import json
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def load_bench(name: str):
    """A module of benchmarks/ (not a package), with benchmarks/ on the path for its own imports."""
    sys.path.insert(0, str(BENCH))
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _common():
    return load_bench("common")


def _run(grid: Path, name: str, dice: float, wall_s: float = 10.0) -> None:
    run = grid / "runs" / name
    run.mkdir(parents=True)
    (run / "result.json").write_text(json.dumps({
        "best_val_dice": dice, "wall_s": wall_s,
        "test": {"unit": "pixels", "n": 3,
                 "mean_foreground": {"dice": {"mean": dice, "std": 0.1}, "hd95": {"mean": 5.0, "std": 1.0}},
                 "classes": {"lesion": {"dice": {"mean": dice, "std": 0.1}}}}}))


def test_refresh_counts_seeds_of_earlier_calls_and_keeps_the_grid_info(tmp_path):
    common = _common()
    grid = tmp_path / "grid"
    _run(grid, "qar_s0", 0.90)
    _run(grid, "mt-qw_s0", 0.80)
    _run(grid, "qar_s1", 0.92)  # a later call: `--methods qar --seeds 1,2`, seed 2 unfinished
    # the later call's own table knows only its seeds; the grid's predictor must survive the rewrite
    (grid / "comparison.json").write_text(json.dumps({"methods": {"qar": {"per_seed": {"1": 0.92}}},
                                                      "predictor": "q/best.ckpt"}))
    not_done = common.refresh_comparison(grid, ["mt-qw", "qar"], [0, 1, 2])
    table = json.loads((grid / "comparison.json").read_text())
    assert not_done == ["mt-qw_s1", "mt-qw_s2", "qar_s2"]
    assert {k: round(v, 4) for k, v in table["methods"]["qar"]["per_seed"].items()} == {"0": 0.9, "1": 0.92}
    assert table["methods"]["mt-qw"]["per_seed"] == {"0": 0.8}
    assert table["predictor"] == "q/best.ckpt" and table["not_done"] == not_done
    rows = common.grid_rows(grid, ["qar"], ["0", "1", "2"])
    assert rows["qar"]["seeds"] == [0, 1] and abs(rows["qar"]["dice"] - 0.91) < 1e-9


def test_refresh_without_seeds_takes_every_seed_run_so_far(tmp_path):
    common = _common()
    grid = tmp_path / "grid"
    for name, dice in (("qar_s0", 0.90), ("qar_s2", 0.94), ("sup_s1", 0.5)):
        _run(grid, name, dice)
    (grid / "runs" / "qar_s3").mkdir()  # started, unfinished
    assert common.refresh_comparison(grid, ["qar"]) == ["qar_s3"]
    table = json.loads((grid / "comparison.json").read_text())
    assert sorted(table["methods"]["qar"]["per_seed"]) == ["0", "2"] and "sup" not in table["methods"]


def test_ssl_grid_full_size_sets_the_presets_gpu_sizes_under_its_own_result_name(capsys):
    from qgseg.config import load_config, preset_gpu_overrides

    ssl_grid = load_bench("ssl_grid")
    argv = sys.argv
    try:
        sys.argv = ["ssl_grid.py", "acdc7", "--study", "--full-size", "--jobs", "16", "--dry-run", "--data-root", "d"]
        ssl_grid.main()
    finally:
        sys.argv = argv
    cmd = capsys.readouterr().out.strip()
    assert cmd.startswith("qgseg compare ssl_acdc ") and "--name study_acdc7_fullsize_grid" in cmd
    sets = cmd.split(" --set ")[1:]
    assert sets == preset_gpu_overrides("ssl_acdc") + ["data.labeled=7"]  # the setting's own override wins
    cfg = load_config("ssl_acdc", sets)
    assert cfg.data.image_size == [256, 256] and cfg.train.iterations == 30000 and cfg.data.labeled == 7


def test_committed_seeds_without_run_folders_are_carried_and_a_seed_run_here_wins():
    common = _common()
    fresh = {"mt": common.seed_row({"2": 0.93}, 50.0)}
    committed = {"mt": {"per_seed": {"0": 0.90, "1": 0.91, "2": 0.80}, "wall_s": 40.0},
                 "sup": {"per_seed": {"0": 0.85, "1": 0.86}, "wall_s": 10.0}}
    rows, carried = common.carry_committed(fresh, committed, ["0", "2"])
    assert rows["mt"]["per_seed"] == {"0": 0.90, "2": 0.93} and rows["mt"]["seeds"] == [0, 2]
    assert abs(rows["mt"]["dice"] - 0.915) < 1e-9 and rows["mt"]["wall_s"] == 45.0  # one seed each side
    assert rows["sup"]["per_seed"] == {"0": 0.85} and rows["sup"]["dice_std"] is None and rows["sup"]["wall_s"] == 10.0
    assert carried == {"mt": [0], "sup": [0]}
    assert common.carry_committed(fresh, None) == (fresh, {})


def test_a_result_that_would_drop_committed_seeds_is_refused_with_one_message(tmp_path, monkeypatch):
    common = _common()
    monkeypatch.setattr(common, "RESULTS", tmp_path)
    monkeypatch.delenv("QGSEG_BENCH_REPLACE", raising=False)
    full = {"settings": {"ph2": {"unet": {"mt": {"per_seed": {"0": 0.9, "1": 0.91}}}}}}
    common.write_result("study_x", full, [("a", "b")], "t")
    grown = {"settings": {"ph2": {"unet": {"mt": {"per_seed": {"0": 0.9, "1": 0.91, "2": 0.92}}}}}}
    common.write_result("study_x", grown, [("a", "b")], "t")  # more seeds: fine
    shrunk = {"settings": {"ph2": {"unet": {"mt": {"per_seed": {"0": 0.9}}}}}}
    try:
        common.write_result("study_x", shrunk, [("a", "b")], "t")
        raise AssertionError("a result with fewer seeds replaced the committed one")
    except SystemExit as e:
        msg = str(e)
    assert "study_x.json" in msg and "lacks 2 per-seed result(s)" in msg and "settings/ph2/unet/mt seed 1" in msg
    assert json.loads((tmp_path / "study_x.json").read_text())["settings"] == grown["settings"]  # untouched
    monkeypatch.setenv("QGSEG_BENCH_REPLACE", "1")
    common.write_result("study_x", shrunk, [("a", "b")], "t")
    assert json.loads((tmp_path / "study_x.json").read_text())["settings"] == shrunk["settings"]


def test_seed_results_name_list_items_by_their_value_so_an_inserted_row_is_no_loss():
    common = _common()
    old = {"rows": [{"value": 0.5, "methods": {"qar": {"per_seed": {"0": 0.9}}}}]}
    new = {"rows": [{"value": 0.1, "methods": {"qar": {"per_seed": {"0": 0.8}}}}, *old["rows"]]}
    assert common.seed_results(old) == {("rows", "0.5", "methods", "qar", "0")}
    assert common.seed_results(old) <= common.seed_results(new)


def test_a_results_markdown_shows_a_long_note_once(tmp_path, monkeypatch):
    import shlex

    common = _common()
    monkeypatch.setattr(common, "RESULTS", tmp_path)
    note = "Seed 2 resumed at iteration 300, so its wall time covers the resumed part only."
    monkeypatch.setattr(sys, "argv", ["benchmarks/study_x.py", "--note", note, "--seeds", "0,1"])
    common.write_result("study_x", {"note": note}, [("a", "b")], "t")
    md = (tmp_path / "study_x.md").read_text()
    assert md.count(note) == 1 and f"Note: {note}" in md
    assert "Command: `python benchmarks/study_x.py --note '<the note>' --seeds 0,1`" in md
    command = json.loads((tmp_path / "study_x.json").read_text())["command"]  # the JSON keeps it whole
    assert command.endswith(f"--note {shlex.quote(note)} --seeds 0,1")
    # a script that lists the note in its table already: not a third time
    common.write_result("study_x", {"note": note}, [("note", note)], "t")
    assert (tmp_path / "study_x.md").read_text().count(note) == 1


def test_regenerating_a_report_keeps_the_carried_seeds_wall_time():
    """A committed mean wall that already counts the runs here must not be pulled towards them on every
    regeneration: the runs here are taken out of it (the same runs: same Dice), per-seed walls are kept."""
    common = _common()
    committed = {"cps": {"per_seed": {"0": 0.60, "1": 0.62, "2": 0.64}, "wall_s": 1300.0}}  # s0, s1 lost: 1500 each
    fresh = {"cps": common.seed_row({"2": 0.64}, 900.0)}
    rows, _ = common.carry_committed(fresh, committed)
    assert abs(rows["cps"]["wall_s"] - 1300.0) < 1e-9
    assert rows["cps"]["wall_per_seed"] == {"0": 1500.0, "1": 1500.0, "2": 900.0}
    again, _ = common.carry_committed(fresh, rows)  # and the next regeneration, from the per-seed walls
    assert again["cps"]["wall_per_seed"] == rows["cps"]["wall_per_seed"]
    # a new seed here joins with its own wall
    grown, _ = common.carry_committed({"cps": common.seed_row({"2": 0.64, "3": 0.66}, 1000.0)}, rows)
    assert grown["cps"]["wall_per_seed"] == {"0": 1500.0, "1": 1500.0, "2": 1000.0, "3": 1000.0}


def test_mean_std_text_gives_the_sample_spread_and_none_for_one_seed():
    common = _common()
    assert common.mean_std_text([0.9, 0.92, 0.94]) == "0.9200 ± 0.0200"
    assert common.mean_std_text([0.9123]) == "0.9123"
    assert common.mean_std_text([]) == "n/a"
    assert common.mean_std_text([1.0, 3.0], fmt=".1f") == "2.0 ± 1.4"


def test_grid_rows_keep_each_runs_wall_and_average_only_the_seeds_asked_for(tmp_path):
    common = _common()
    grid = tmp_path / "grid"
    for name, dice, wall in (("qar_s0", 0.90, 100.0), ("qar_s1", 0.92, 300.0), ("qar_s2", 0.94, 800.0)):
        _run(grid, name, dice, wall)
    common.refresh_comparison(grid, ["qar"])
    rows = common.grid_rows(grid, ["qar"], ["1", "2"])
    assert rows["qar"]["wall_per_seed"] == {"1": 300.0, "2": 800.0} and rows["qar"]["wall_s"] == 550.0
    # a comparison.json written before it kept per-seed walls: every seed gets the grid's mean
    table = json.loads((grid / "comparison.json").read_text())
    del table["methods"]["qar"]["wall_per_seed"]
    (grid / "comparison.json").write_text(json.dumps(table))
    assert common.grid_rows(grid, ["qar"], ["1"])["qar"]["wall_s"] == 400.0
