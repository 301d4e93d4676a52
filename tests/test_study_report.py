"""docs/benchmarks.md's generated block from study result files (benchmarks/study_report.py)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from qgseg.data.io import DataError
from test_benchmark_common import load_bench

study_report = load_bench("study_report")


def _row(per_seed: dict[str, float]) -> dict:
    vals = list(per_seed.values())
    return {"dice": sum(vals) / len(vals), "dice_std": 0.01, "hd95": 5.0, "wall_s": 100.0,
            "seeds": [int(s) for s in per_seed], "per_seed": per_seed}


def _result(sup: dict, mt: dict, mtqw: dict) -> dict:
    diffs = {s: mtqw[s] - mt[s] for s in mt}
    return {"methods": {"sup": _row(sup), "mt": _row(mt), "mt-qw": _row(mtqw)},
            "guided_vs_base": {"mt-qw": {"base": "mt", "diff": sum(diffs.values()) / 3, "diff_std": 0.01,
                                         "wins": sum(d > 0 for d in diffs.values()), "n": 3, "per_seed": diffs}},
            "command": "python benchmarks/ssl_grid.py x --study", "compare_command": "qgseg compare x",
            "git_commit": "abc1234def"}


def test_report_from_fabricated_results(tmp_path: Path) -> None:
    seeds = ("0", "1", "2")
    (tmp_path / "study_ph2.json").write_text(json.dumps(_result(
        dict(zip(seeds, (0.80, 0.81, 0.82))), dict(zip(seeds, (0.85, 0.86, 0.84))),
        dict(zip(seeds, (0.87, 0.88, 0.83))))))
    (tmp_path / "ssl_acdc3.json").write_text(json.dumps(_result(  # no study file: read with a note
        dict(zip(seeds, (0.50, 0.52, 0.51))), dict(zip(seeds, (0.55, 0.54, 0.56))),
        dict(zip(seeds, (0.58, 0.57, 0.59))))))
    out = tmp_path / "benchmarks.md"
    out.write_text(f"# Hand-written\n\nkept\n\n{study_report.BEGIN}\nold\n{study_report.END}\ntail kept\n")
    study_report.write_report(tmp_path, out)
    text = out.read_text()
    assert text.startswith("# Hand-written\n\nkept\n") and text.endswith("tail kept\n") and "\nold\n" not in text
    assert "| mt-qw | 0.8600 ± 0.0100 (100 s) | 0.5800 ± 0.0100, HD95 5.0 (100 s) |" in text
    assert "read from the earlier grids" in text and "Not run yet (no result file): CVC-ColonDB, ACDC-7." in text
    assert "| mt-qw | mt | +0.0100 ± 0.0100 (2/3) | +0.0300 ± 0.0100 (3/3) |" in text
    qw = next(ln for ln in text.splitlines() if ln.startswith("| QW |"))
    assert "| 6 |" in qw and "5/6" in qw and "p = " in qw  # 6 (setting, seed) pairs, Wilcoxon ran
    assert "| PH2 | mt 0.8500 (3) | mt-qw 0.8600 (3) | +0.0100 | yes |  |" in text
    assert "not run: pl-c, pl-qw, cps" in text and "`python benchmarks/ssl_grid.py colondb --study`" in text


def _write(path: Path, obj: dict) -> None:
    path.write_text(json.dumps(obj))


def _report(results: Path) -> str:
    return "\n".join(study_report.report_lines(study_report.load_settings(results), results))


def test_judge_table_shows_the_guided_runs_diagnostics(tmp_path: Path) -> None:
    seeds = ("0", "1", "2")
    res = _result(*(dict(zip(seeds, v)) for v in ((0.8, 0.8, 0.8), (0.85, 0.86, 0.84), (0.87, 0.88, 0.83))))
    res["methods"]["mt"]["diagnostics"] = {"qc_test_mae": 0.05, "qc_test_spearman": 0.6}  # unguided: no row
    res["methods"]["mt-qw"]["diagnostics"] = {
        "g_mae_val": 0.0344, "g_spearman_val": 0.47, "probe_g_mae": 0.05, "probe_g_spearman": 0.61,
        "probe_dice": 0.8, "probe_dice_weighted": 0.8123, "kept": 0.9585, "qc_test_mae": 0.037}
    _write(tmp_path / "study_ph2.json", res)
    text = _report(tmp_path)
    assert "### Does the predictor judge the students?" in text and "5dc5827" in text
    assert "| PH2 | mt-qw | 0.034 / 0.470 | 0.050 / 0.610 | 0.800 -> 0.812 | 0.959 | 0.037 / n/a |" in text
    assert "| PH2 | mt |" not in text
    del res["methods"]["mt-qw"]["diagnostics"]["probe_g_mae"], res["methods"]["mt-qw"]["diagnostics"]["kept"]
    _write(tmp_path / "study_ph2.json", res)
    assert "| PH2 | mt-qw | 0.034 / 0.470 | n/a / 0.610 | 0.800 -> 0.812 |  | 0.037 / n/a |" in _report(tmp_path)


def test_backbone_ablation_architecture_tables_and_what_is_not_run(tmp_path: Path) -> None:
    seeds = ("0", "1", "2")
    _write(tmp_path / "study_ph2.json", _result(*(dict(zip(seeds, v)) for v in ((0.8,) * 3, (0.85,) * 3, (0.86,) * 3))))
    text = _report(tmp_path)
    for line in ("architectures (U-Net", "predictor backbones (ResNet", "ablations on PH2: lambda_qar",
                 "(`benchmarks/study_overlays.py`): PH2, CVC-ColonDB, ACDC-3, ACDC-7."):
        assert line in text
    assert "### Predictor backbones" not in text and "### Ablations" not in text and "against the true Dice of the pseudolabels" not in text

    bb = {"fixed_mae": 0.044, "fixed_spearman": 0.85, "fixed_auroc_0.7": 0.996, "synthetic_mae": 0.041,
          "synthetic_spearman": 0.907, "mt-qw": {"dice": 0.9256, "per_seed": {"0": 0.9256}},
          "qar": {"dice": 0.9132, "per_seed": {"0": 0.9132}}}
    _write(tmp_path / "study_backbones_ph2.json", {"backbones": {"densenet121": bb, "resnet10": bb, "resnet34": {
        **bb, "carried_predictor": {"fixed_mae": 0.0471, "fixed_spearman": 0.861, "seeds": [0]}}},
                                                   "seeds": "0", "command": "python benchmarks/study_backbones.py"})
    row = {"methods": {"qar": {"dice": 0.91, "dice_std": None, "seeds": [0], "per_seed": {"0": 0.91}}}}
    _write(tmp_path / "study_ablations_ph2.json", {"axes": {
        "lambda_qar": {"title": "lambda_qar", "variant": "qar", "key": "guidance.qar_weight", "default": 0.01,
                       "rows": [{**row, "value": 0.01}, {**row, "value": 0.0}]},
        "masks_per_image": {"title": "masks_per_image", "variant": "qar", "key": "quality.masks_per_image",
                            "default": 10, "rows": [{**row, "value": 20, "predictor": {"fixed_mae": 0.05,
                                                                                       "fixed_spearman": 0.8}}]},
        "qw_power": {"title": "qw_power", "variant": "mt-qw", "key": "guidance.qw_power", "default": 2, "rows": []}},
        "command": "python benchmarks/study_ablations.py", "git_commit": "0123456789"})
    _write(tmp_path / "study_architectures.json", {"settings": {"ph2": {"unet++": {
        "mt": {"dice": 0.90, "dice_std": 0.01, "seeds": [0, 1, 2]},
        "mt-qw": {"dice": 0.91, "dice_std": 0.01, "seeds": [0, 1, 2]}}}}, "command": "x", "git_commit": "y"})
    (tmp_path / "study_ph2_figures").mkdir()
    text = _report(tmp_path)
    lines = text.splitlines()
    assert [ln.split(" |")[0] for ln in lines if ln.startswith(("| resnet", "| densenet"))] == [
        "| resnet10", "| resnet34", "| densenet121"]
    assert "| resnet10 | 0.044 / 0.850 / 0.996 | 0.041 / 0.907 | 0.9256 | 0.9132 | 0 |" in lines
    # over several seeds: mean ± std (ddof 1), and the wall per run where the result has one
    three = {**bb, "mt-qw": {"per_seed": {"0": 0.92, "1": 0.93, "2": 0.91}, "wall_s": 250.0}}
    assert "| 0.9200 ± 0.0100 (250 s) | 0.9132 | 0, 1, 2 |" in "\n".join(study_report.backbone_lines(
        {"backbones": {"resnet18": three}}, tmp_path))
    assert ("- resnet34: seed(s) 0 were guided by the earlier predictor of this backbone (fixed test masks MAE 0.0471 / "
            "Spearman 0.861); the row shows the retrained one that guided the others.") in lines
    assert "| 0 | 0.9100 [1 seed] |" in lines and "| 0.01 (default) | 0.9100 [1 seed] |" in lines
    assert lines.index("| 0 | 0.9100 [1 seed] |") < lines.index("| 0.01 (default) | 0.9100 [1 seed] |")
    assert "| value | qar | predictor MAE / Spearman |" in lines and "| 20 | 0.9100 [1 seed] | 0.050 / 0.800 |" in lines
    assert "#### qw_power" in lines and "not run yet" in lines
    assert "| unet++ | 0.9000 ± 0.0100 | 0.9100 ± 0.0100 | mt-qw +0.0100 |" in lines
    assert ("- ablations on PH2, values not run: lambda_qar 0.05, 0.1, 0.2; masks_per_image 10, 50; qw_power 1, 2, 4; "
            "qw_threshold 0, 0.5, 0.7; unlabeled_pool 250, 500, 1500; weak_probability 0, 0.15, 0.5.") in lines
    assert "- predictor backbones: more seeds (seeds 0 so far)." in lines and "architectures (U-Net" not in text
    assert ("- architectures: PH2: unet++ 2/3 methods, attention-unet not run, swin-unetr not run; "
            "ACDC-3: unet++ not run, attention-unet not run, swin-unetr not run.") in lines
    assert "(`benchmarks/study_overlays.py`): CVC-ColonDB, ACDC-3, ACDC-7." in text
    assert "- plots of the predictor backbones, ablations and architectures tables." in lines and "](../benchmarks/results/" not in text
    assert "- Ablations (`study_ablations_ph2.json`, commit `0123456`):" in lines

    (tmp_path / "study_backbones_ph2.png").write_bytes(b"")
    (tmp_path / "study_architectures.png").write_bytes(b"")
    bb_all = {"backbones": {"resnet18": bb}, "seeds": "0,1,2"}
    _write(tmp_path / "study_backbones_ph2.json", bb_all)
    text = _report(tmp_path)
    assert "![predictor backbones](../benchmarks/results/study_backbones_ph2.png)" in text
    assert "predictor backbones:" not in text and "- plot of the ablations table." in text
    assert "![architectures](../benchmarks/results/study_architectures.png)" in text
    full = {m: {"dice": 0.9, "dice_std": 0.01, "seeds": [0, 1, 2]} for m in ("sup", "mt", "mt-qw")}
    archs = ("unet++", "attention-unet", "swin-unetr")
    _write(tmp_path / "study_architectures.json", {"settings": {s: {a: full for a in archs} for s in ("ph2", "acdc3")}})
    assert "architectures:" not in _report(tmp_path)


def test_a_half_written_result_file_names_itself(tmp_path: Path) -> None:
    (tmp_path / "study_ablations_ph2.json").write_text('{"axes": {')
    with pytest.raises(DataError, match="study_ablations_ph2.json"):
        _report(tmp_path)


def test_best_vs_best_on_unequal_seeds_is_also_compared_on_the_common_seeds(tmp_path: Path) -> None:
    res = _result({"0": 0.50, "1": 0.52, "2": 0.51}, {"0": 0.60}, {"0": 0.58, "1": 0.62, "2": 0.60})
    (tmp_path / "study_acdc3.json").write_text(json.dumps(res))
    out = tmp_path / "benchmarks.md"
    study_report.write_report(tmp_path, out)
    row = next(ln for ln in out.read_text().splitlines() if ln.startswith("| ACDC-3 | mt 0.6000 (1)"))
    assert "| mt-qw 0.6000 (3) | +0.0000 | no (provisional: 1 seed) | -0.0200 on seed 0 |" in row


def test_predictor_table_per_setting(tmp_path: Path) -> None:
    res = _result({"0": 0.5, "1": 0.5, "2": 0.5}, {"0": 0.6, "1": 0.6, "2": 0.6}, {"0": 0.7, "1": 0.7, "2": 0.7})
    res["predictor"] = "runs/q/best.ckpt"
    res["predictor_eval"] = {"synthetic": {"mae": 0.1, "spearman": 0.8}}
    res["methods"]["mt"]["diagnostics"] = {"qc_test_mae": 0.2, "qc_test_spearman": 0.5}
    res["methods"]["mt-qw"]["diagnostics"] = {"qc_test_mae": 0.1, "qc_test_spearman": 0.7}
    (tmp_path / "study_colondb.json").write_text(json.dumps(res))
    (tmp_path / "study_colondb_figures").mkdir()
    (tmp_path / "study_colondb_figures" / "qc_predicted_vs_true.png").write_bytes(b"png")
    out = tmp_path / "benchmarks.md"
    study_report.write_report(tmp_path, out)
    text = out.read_text()
    assert ("| CVC-ColonDB | `runs/q/best.ckpt` | 0.100 / 0.800 | 0.150 (range 0.100-0.200) | 0.600 (range 0.500-0.700) "
            "| 2 |") in text
    assert "study_colondb_figures/qc_predicted_vs_true.png)" in text


def test_ablation_default_point_shows_its_seed_0_for_the_paired_comparison() -> None:
    row = {"dice": 0.9, "dice_std": 0.01, "seeds": [0, 1, 2], "per_seed": {"0": 0.91, "1": 0.9, "2": 0.89}}
    assert study_report._seed0(row) == "; seed 0: 0.9100"
    assert study_report._seed0({"dice": 0.9, "seeds": [0], "per_seed": {"0": 0.9}}) == ""  # the point itself


def test_qar_on_the_settings_own_best_qw_fills_the_13th_slot(tmp_path: Path) -> None:
    res = _result({"0": 0.5, "1": 0.5, "2": 0.5}, {"0": 0.6, "1": 0.6, "2": 0.6}, {"0": 0.7, "1": 0.7, "2": 0.7})
    res["methods"]["pl-qw+qar"] = {"dice": 0.7, "dice_std": None, "seeds": [0], "per_seed": {"0": 0.7}}
    (tmp_path / "study_acdc3.json").write_text(json.dumps(res))
    out = tmp_path / "benchmarks.md"
    study_report.write_report(tmp_path, out)
    line = next(ln for ln in out.read_text().splitlines() if ln.startswith("- ACDC-3:"))
    assert "mt-qw+qar" not in line and "pl-qw+qar (1/3 seeds)" in line


def test_hidden_label_probe_table_averages_the_seeds_of_each_variant(tmp_path: Path) -> None:
    seeds = ("0", "1", "2")
    _write(tmp_path / "study_ph2.json", _result(*(dict(zip(seeds, v)) for v in ((0.8,) * 3, (0.85,) * 3, (0.86,) * 3))))
    assert "### The probe on unlabeled cases" not in _report(tmp_path)

    def probe(mae: float, dice: float, weighted: float) -> dict:
        return {"probe_g_mae": mae, "probe_g_spearman": 0.5, "probe_dice": dice, "probe_dice_weighted": weighted,
                "probe_kept": 0.8, "probe_dice_top_half": weighted, "probe_dice_oracle_half": 0.9}

    runs = {f"cps-qw_s{s}": {"variant": "cps-qw", "seed": s, "n_hidden": 150, "labeled": probe(0.2, 0.7, 0.75),
                             "hidden": probe(0.2 + s / 10, 0.4, 0.5 + s / 10)} for s in (0, 1)}
    runs["mt_s0"] = {"variant": "mt", "seed": 0, "n_hidden": 150, "labeled": probe(0.25, 0.69, 0.7),
                     "hidden": {"probe_g_mae": 0.3, "probe_dice": 0.44}}  # no Spearman, no weights: shown empty
    _write(tmp_path / "study_probe_hidden.json", {"grids": {"ssl_acdc3_grid": {"runs": runs}},
                                                  "command": "python benchmarks/study_probe_hidden.py g"})
    text = _report(tmp_path)
    assert "### The probe on unlabeled cases (hidden labels)" in text and "up to 150 unlabeled cases" in text
    rows = [ln for ln in text.splitlines() if ln.startswith("| ssl_acdc3_grid |")]
    assert rows[0] == "| ssl_acdc3_grid | mt | 1 | 0.250 / 0.500 | 0.690 | 0.300 / n/a | 0.440 -> n/a | - |  |"
    assert rows[1] == ("| ssl_acdc3_grid | cps-qw | 2 | 0.200 / 0.500 | 0.700 | 0.250 / 0.500 | 0.400 -> 0.550 | 80% | "
                       "0.550 / 0.900 |")
    assert "Pseudolabel probe on hidden labels (`study_probe_hidden.json`" in text


def test_qw_gain_is_correlated_with_the_selection_gain_of_the_hidden_probe(tmp_path: Path) -> None:
    seeds = ("0", "1", "2")
    gains = (0.01, 0.03, 0.02)
    res = _result(*(dict(zip(seeds, v)) for v in ((0.8,) * 3, (0.85,) * 3, tuple(0.85 + g for g in gains))))
    res["grid"] = "runs/bench/ssl_ph2_grid"
    _write(tmp_path / "study_ph2.json", res)
    runs = {f"mt-qw_s{s}": {"variant": "mt-qw", "seed": int(s), "n_hidden": 10,
                            "labeled": {"probe_g_mae": 0.1, "probe_dice": 0.9},
                            "hidden": {"probe_g_mae": 0.3, "probe_dice": 0.5, "probe_dice_top_half": 0.5 + g}}
            for s, g in zip(seeds, gains)}
    runs["mt_s0"] = {"variant": "mt", "seed": 0, "n_hidden": 10, "labeled": {"probe_dice": 0.9},  # no -QW: not paired
                     "hidden": {"probe_dice": 0.5, "probe_dice_top_half": 0.9}}
    _write(tmp_path / "study_probe_hidden.json", {"grids": {"ssl_ph2_grid": {"runs": runs}}})
    data = study_report.load_settings(tmp_path)
    pairs = study_report.probe_gain_pairs(data, json.loads((tmp_path / "study_probe_hidden.json").read_text()))
    assert [r[0] for r in pairs] == ["ph2"] * 3
    assert [r[1] for r in pairs] == pytest.approx(gains) and [r[2] for r in pairs] == pytest.approx(gains)
    assert "have Spearman" not in _report(tmp_path)  # 3 runs: too few to correlate
    runs["mt-qw_s3"] = {**runs["mt-qw_s0"], "seed": 3}
    res["guided_vs_base"]["mt-qw"]["per_seed"]["3"] = 0.04
    runs["mt-qw_s3"]["hidden"] = {"probe_dice": 0.5, "probe_dice_top_half": 0.54}
    _write(tmp_path / "study_ph2.json", res)
    _write(tmp_path / "study_probe_hidden.json", {"grids": {"ssl_ph2_grid": {"runs": runs}}})
    text = _report(tmp_path)
    assert "have Spearman rho = 1.00 (p < 0.001, 4 runs); within a setting: PH2 rho = 1.00" in text


def test_ph2_extras_are_listed_until_run_and_get_rows_once_run(tmp_path: Path) -> None:
    seeds = ("0", "1", "2")
    res = _result(*(dict(zip(seeds, v)) for v in ((0.8,) * 3, (0.85,) * 3, (0.86,) * 3)))
    _write(tmp_path / "study_ph2.json", res)
    not_run = next(ln for ln in _report(tmp_path).splitlines() if ln.startswith("- PH2: "))
    assert "pl-t, ua-mt, ua-mt-qw, ict, ict-qw, cl, cl-qw" in not_run
    res["methods"]["ua-mt"] = _row({"0": 0.9})
    _write(tmp_path / "study_ph2.json", res)
    text = _report(tmp_path)
    assert "| ua-mt | 0.9000 ± 0.0100 (100 s) [1 seed] |" in text
    not_run = next(ln for ln in text.splitlines() if ln.startswith("- PH2: "))
    assert "ua-mt (1/3 seeds)" in not_run and "ua-mt," not in not_run


def test_full_size_grids_get_their_own_best_vs_best_table_and_are_listed_until_run(tmp_path: Path) -> None:
    seeds = ("0", "1", "2")
    cpu = _result(dict(zip(seeds, (0.50, 0.52, 0.51))), dict(zip(seeds, (0.55, 0.54, 0.56))),
                  dict(zip(seeds, (0.58, 0.57, 0.59))))
    _write(tmp_path / "study_acdc3.json", cpu)
    text = _report(tmp_path)
    assert "### Full size on a GPU" not in text
    assert ("the same grid at full size on a GPU: PH2, CVC-ColonDB, ACDC-3, ACDC-7 (prepared: "
            "`python benchmarks/ssl_grid.py <setting> --study --full-size --jobs 16`)") in text
    gpu = _result(dict(zip(seeds, (0.80, 0.82, 0.81))), dict(zip(seeds, (0.85, 0.84, 0.86))),
                  dict(zip(seeds, (0.88, 0.87, 0.89))))
    _write(tmp_path / "study_acdc3_fullsize.json", gpu)
    assert set(study_report.load_settings(tmp_path)) == {"acdc3"}  # the CPU columns stay the CPU grid's
    text = _report(tmp_path)
    block = text.split("### Full size on a GPU", 1)[1].split("###", 1)[0]
    assert "`study_acdc3_fullsize.md`" in block
    assert "| ACDC-3 | mt 0.8500 (3) | mt-qw 0.8800 (3) | +0.0300 | yes |  |" in block
    assert "full size on a GPU: PH2, CVC-ColonDB, ACDC-7 (prepared" in text
    assert "| ACDC-3 | mt 0.5500 (3) | mt-qw 0.5800 (3) | +0.0300 | yes |  |" in text.split("### Full size", 1)[0]


def test_a_long_note_is_written_once_not_again_inside_its_command() -> None:
    import shlex

    note = "Seed 1 resumed at iteration 300; the grid's wall time covers the resumed part only."
    command = f"python benchmarks/ssl_grid.py ph2 --study --note {shlex.quote(note)} --seeds 0,1,2"
    lines = study_report.command_lines({"command": command, "note": note})
    assert lines == ["  `python benchmarks/ssl_grid.py ph2 --study --note '<the note>' --seeds 0,1,2`",
                     f"  note: {note}"]
    # a note the command does not carry (given another way) is still shown, and the command kept whole
    assert study_report.command_lines({"command": "python x.py", "note": "n"}) == ["  `python x.py`", "  note: n"]
    assert study_report.command_lines({"command": "python x.py"}) == ["  `python x.py`"]


def test_protocol_variants_get_a_table_paired_with_the_default_protocol(tmp_path: Path) -> None:
    """``ssl_<setting>_<tag>.json`` (a grid with one override) is tabulated with its overrides, its own
    guided-vs-base and each variant's paired difference to the same variant of the setting's study."""
    seeds = ("0", "1", "2")
    _write(tmp_path / "study_ph2.json", _result(dict(zip(seeds, (0.90, 0.91, 0.92))),
                                                dict(zip(seeds, (0.92, 0.92, 0.92))), dict(zip(seeds, (0.92, 0.93, 0.91)))))
    scarce = _result(dict(zip(seeds, (0.80, 0.82, 0.84))), dict(zip(seeds, (0.83, 0.84, 0.85))),
                     dict(zip(seeds, (0.85, 0.86, 0.84))))
    _write(tmp_path / "ssl_ph2_labeled20.json", {**scarce, "setting": "ph2", "overrides": ["data.labeled=20"],
                                                  "note": "why it was run", "command": "python x.py --note 'why it was run'",
                                                  "predictor_eval": {"synthetic": {"mae": 0.081, "spearman": 0.77}}})
    # a result written before the overrides key: read from its protocol string
    _write(tmp_path / "ssl_ph2_tau085.json", {"methods": {"mt-qw": _row({"0": 0.91})},
                                              "protocol": "preset x; overrides ['guidance.qw_threshold=0.85']"})

    text = _report(tmp_path)

    assert "#### `ssl_ph2_labeled20.json` (overrides `data.labeled=20`; seeds 0, 1, 2)" in text
    assert "| sup | 0.8200 ± 0.0100 (100 s) [3 seeds] |  | -0.0900 (seeds 0, 1, 2) |" in text
    assert "| mt-qw | 0.8500 ± 0.0100 (100 s) [3 seeds] | +0.0100 vs mt (2/3) | -0.0700 (seeds 0, 1, 2) |" in text
    assert "synthetic-mask MAE 0.081 / Spearman 0.77" in text and text.count("why it was run") == 1
    assert "#### `ssl_ph2_tau085.json` (overrides `guidance.qw_threshold=0.85`; seeds 0)" in text
    assert "| mt-qw | 0.9100 ± 0.0100 (100 s) [1 seed] |  | -0.0100 (seeds 0) |" in text
    assert "- Protocol variant (`ssl_ph2_labeled20.json`, commit `abc1234`):" in text
