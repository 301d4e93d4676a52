"""``qgseg quality score`` / ``eval`` through the real CLI entry point."""
from __future__ import annotations

import csv

import pytest
import torch

from qgseg.cli.main import main
from qgseg.data.demo import make_demo_dataset
from qgseg.engine.checkpoint import save_checkpoint
from qgseg.quality.predictor import QualityPredictor


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("qcli")
    data = make_demo_dataset(root / "data", seed=5, n_labeled=4, n_unlabeled=0, n_val=2, n_test=3, size=(32, 32))
    torch.manual_seed(0)
    model = QualityPredictor(2, 1, 1, depth=10, width=[4, 4, 8, 8], no_max_pool=True)
    # an untrained predictor is enough to test the plumbing; perturb the head so outputs differ per case
    with torch.no_grad():
        model.head[1].bias.fill_(0.5)
    meta = {"task": "quality", "predictor": model.config(), "classes": ["background", "lesion"],
            "image_channels": 1, "image_size": [32, 32], "normalize": "auto", "spatial_dims": 2, "resize": True}
    ckpt = save_checkpoint({"model": model.state_dict(), "meta": meta}, root / "q.ckpt")
    return {"root": root, "data": data, "ckpt": ckpt}


def _truth_map_checkpoint(path, **meta):
    """An untrained truth-map (decoder) predictor saved as a quality checkpoint; ``meta`` adds keys."""
    torch.manual_seed(0)
    model = QualityPredictor(2, 1, 1, depth=10, width=[4, 4, 8, 8], no_max_pool=True, truth_decoder=True,
                             decoder_channels=8, readout="agreement")
    full = {"task": "quality", "predictor": model.config(), "classes": ["background", "lesion"],
            "image_channels": 1, "image_size": [32, 32], "normalize": "auto", "spatial_dims": 2, "resize": True,
            **meta}
    return save_checkpoint({"model": model.state_dict(), "meta": full}, path)


def test_score_writes_csv_and_flags_worst_first(setup, capsys):
    out = setup["root"] / "scores.csv"
    code = main(["quality", "score", "--predictor", str(setup["ckpt"]), "--images", str(setup["data"] / "images"),
                 "--masks", str(setup["data"] / "masks"), "--output", str(out), "--flag-below", "1.01"])
    assert code == 0
    with open(out) as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 9  # one row per case (4 + 2 + 3 labeled demo cases)
    assert set(rows[0]) == {"case_id", "lesion", "min_dice", "lesion_uncertainty"}  # no reference: no verdict
    assert all(0.0 <= float(r["lesion_uncertainty"]) <= 0.5 for r in rows)  # a spread of Dice values
    printed = capsys.readouterr().out
    flagged = [line.split()[0] for line in printed.splitlines() if line.startswith("  demo_")]
    assert len(flagged) == 9
    by_score = [r["case_id"] for r in sorted(rows, key=lambda r: float(r["lesion"]))]
    assert flagged == by_score  # worst first
    # the markdown QC report beside the CSV: summary, histogram, the same cases worst first
    report = (setup["root"] / "scores_report.md").read_text()
    assert (setup["root"] / "scores_report_histogram.png").stat().st_size > 0
    assert "9 mask(s) scored" in report and "| lesion |" in report
    assert "## To review: 9 case(s) with a predicted Dice below 1.01" in report
    listed = [line.split("|")[1].strip() for line in report.splitlines() if line.startswith("| demo_")]
    assert listed == by_score

    # a threshold below every score flags nothing
    main(["quality", "score", "--predictor", str(setup["ckpt"]), "--images", str(setup["data"] / "images"),
          "--masks", str(setup["data"] / "masks"), "--output", str(out), "--flag-below", "0"])
    assert "0 case(s) with predicted Dice below 0" in capsys.readouterr().out


def test_score_missing_folder_is_an_error(setup, capsys):
    code = main(["quality", "score", "--predictor", str(setup["ckpt"]), "--images", str(setup["root"] / "nope"),
                 "--masks", str(setup["data"] / "masks")])
    assert code == 2


def test_eval_command(setup, capsys):
    out = setup["root"] / "eval"
    code = main(["quality", "eval", "--predictor", str(setup["ckpt"]), str(setup["data"]), "--split", "test",
                 "--output", str(out), "--masks-per-image", "2"])
    assert code == 0
    assert (out / "quality_eval.json").is_file() and (out / "quality_eval.md").is_file()
    printed = capsys.readouterr().out
    assert "shortcut tests" in printed
    assert "largest synthetic error by category" in printed
    assert "estimate of the truth" not in printed, "a predictor without a decoder has no truth map"


def test_eval_reports_how_well_a_truth_map_predictor_recognises_the_structure(setup, capsys):
    import json

    ckpt = _truth_map_checkpoint(setup["root"] / "qtm_eval.ckpt")
    out = setup["root"] / "eval_tm"
    assert main(["quality", "eval", "--predictor", str(ckpt), str(setup["data"]), "--split", "test",
                 "--output", str(out), "--masks-per-image", "2"]) == 0
    printed = capsys.readouterr().out
    assert "predictor's estimate of the truth (true mask given): Dice" in printed
    assert "synthetic score uncertainty: MAE of the 80% most certain" in printed
    saved = json.loads((out / "quality_eval.json").read_text())
    unc = saved["synthetic"]["uncertainty"]
    assert unc["n"] == 6 and set(unc["mae_at_coverage"]) == {"0.5", "0.8", "0.9", "1"}
    assert unc["mae_at_coverage"]["1"] == pytest.approx(saved["synthetic"]["all"]["mae"], abs=1e-6)
    assert "Does the score's uncertainty point at its errors?" in (out / "quality_eval.md").read_text()
    tm = saved["truth_map"]
    assert tm["n"] == 3 and 0.0 <= tm["dice"] <= 1.0 and set(tm["per_class"]) == {"lesion"}
    assert "Does the predictor recognise the structure?" in (out / "quality_eval.md").read_text()


def test_quality_without_subcommand(capsys):
    assert main(["quality"]) == 2


def test_score_overlays_show_the_estimated_truth(setup, capsys):
    """A truth-map predictor writes one overlay per flagged case; its truth estimate has the case's shape."""
    from qgseg.data.io import read_image, read_mask
    from qgseg.data.case import Case
    from qgseg.quality.scoring import load_quality_predictor

    ckpt = _truth_map_checkpoint(setup["root"] / "qtm.ckpt")
    over = setup["root"] / "overlays"
    code = main(["quality", "score", "--predictor", str(ckpt), "--images", str(setup["data"] / "images"),
                 "--masks", str(setup["data"] / "masks"), "--output", str(setup["root"] / "s2.csv"),
                 "--flag-below", "1.01", "--overlays", str(over)])
    assert code == 0
    assert len(list(over.glob("*.png"))) == 9
    assert "9 overlay(s)" in capsys.readouterr().out
    # the report links each flagged case's overlay, relative to the report
    report = setup["root"] / "s2_report.md"
    links = [line.rsplit("[png](", 1)[1].split(")")[0] for line in report.read_text().splitlines()
             if "[png](" in line]
    assert len(links) == 9 and all(not link.startswith("/") and (report.parent / link).is_file() for link in links)

    scorer = load_quality_predictor(ckpt)
    img_path = sorted((setup["data"] / "images").iterdir())[0]
    image, _ = read_image(img_path)
    case = Case("c", image)
    mask = read_mask(setup["data"] / "masks" / img_path.name.replace(img_path.suffix, ".png"), num_classes=2)
    est = scorer.estimated_truth(case, mask)
    assert est.shape == case.spatial_shape and set(est.ravel().tolist()) <= {0, 1}
    # the plain predictor has no truth map: a clear error, and the CLI warns instead of failing
    plain = load_quality_predictor(setup["ckpt"])
    with pytest.raises(ValueError, match="truth-map"):
        plain.estimated_truth(case, mask)


@pytest.mark.parametrize("reference, n_unsure", [(0.0, 9), (1.0, 0), (None, None)])
def test_score_reports_the_uncertainty_of_each_score(setup, capsys, reference, n_unsure):
    """Each score comes with its uncertainty (spread over flipped views); against the checkpoint's
    validation reference a score is "unsure" (CSV flag, CLI line, report section)."""
    from qgseg.engine.checkpoint import load_checkpoint

    state = load_checkpoint(setup["ckpt"])  # the plain regressor: its views differ a little on every case
    state["meta"]["score_spread_p90"] = reference
    ckpt = save_checkpoint(state, setup["root"] / f"qu_{reference}.ckpt")
    out = setup["root"] / f"unc_{reference}.csv"
    assert main(["quality", "score", "--predictor", str(ckpt), "--images", str(setup["data"] / "images"),
                 "--masks", str(setup["data"] / "masks"), "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    with open(out) as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 9 and all(0.0 <= float(r["lesion_uncertainty"]) <= 1.0 for r in rows)
    report = (setup["root"] / f"unc_{reference}_report.md").read_text()
    if reference is None:  # an older checkpoint without the reference: values, no verdict
        assert "unsure" not in rows[0] and "unsure of" not in printed and "unsure of" not in report
        return
    assert sum(int(r["unsure"]) for r in rows) == n_unsure
    assert f"## The predictor is unsure of {n_unsure} score(s)" in report
    assert (f"{n_unsure} score(s) the predictor is unsure of" in printed) == (n_unsure > 0)
