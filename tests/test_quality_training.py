"""Phase 1 workflows: weak snapshots, QualityTrainer, checkpoint round trip, evaluation report."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

from qgseg.config import load_config
from qgseg.data.demo import make_demo_dataset
from qgseg.data.run_data import prepare_run_data
from qgseg.engine.checkpoint import load_checkpoint
from qgseg.quality.evaluation import evaluate_ph2_fixed, evaluate_quality
from qgseg.quality.predictor import QualityPredictor
from qgseg.quality.scoring import QualityScorer, load_quality_predictor
from qgseg.quality.training import QualityTrainer, build_sampler, train_quality_predictor
from qgseg.quality.weak import load_or_predict_weak, predict_weak, snapshot_epochs, train_weak_snapshots

from conftest import require


def tiny_cfg(data_dir: Path, out: Path, **quality):
    q = {"depth": 10, "width": [8, 8, 16, 16], "image_size": [32, 32], "masks_per_image": 2, "epochs": 2,
         "batch_size": 8, "val_every_epochs": 1, "weak_epochs": [1, 2], "weak_iterations_per_epoch": 2,
         "weak_probability": 0.3, "eval_masks_per_image": 2, **quality}
    return load_config({
        "name": "tinyq", "output_dir": str(out),
        "data": {"dataset": str(data_dir), "image_size": [32, 32]},
        "model": {"name": "unet", "features": [4, 8, 16, 32]},
        "train": {"batch_size": 4, "lr": 0.003, "schedule": "constant"},
        "runtime": {"accelerator": "cpu", "progress": False},
        "quality": q,
    })


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("qtrain")
    data_dir = make_demo_dataset(root / "data", seed=3, n_labeled=8, n_unlabeled=0, n_val=4, n_test=4, size=(32, 32))
    cfg = tiny_cfg(data_dir, root / "runs")
    data = prepare_run_data(cfg.data, cfg.output_dir)
    snaps = train_weak_snapshots(cfg, data, root / "weak")
    return {"root": root, "cfg": cfg, "data": data, "snaps": snaps}


def test_weak_snapshots_at_requested_epochs(tiny):
    snaps = tiny["snaps"]
    assert [p.name for p in snaps] == ["epoch_001.ckpt", "epoch_002.ckpt"]
    assert snapshot_epochs(snaps) == [1, 2]
    assert [load_checkpoint(p)["iteration"] for p in snaps] == [2, 4]  # 2 iterations per epoch
    # different weights at different epochs
    a, b = (load_checkpoint(p)["model"] for p in snaps)
    assert any(not torch.equal(a[k], b[k]) for k in a)
    # reruns reuse the files instead of retraining
    again = train_weak_snapshots(tiny["cfg"], tiny["data"], tiny["root"] / "weak")
    assert [p.stat().st_mtime for p in again] == [p.stat().st_mtime for p in snaps]
    # other epochs on request (quality.eval_weak_epochs: later, better unseen networks)
    later = train_weak_snapshots(tiny["cfg"], tiny["data"], tiny["root"] / "weak_later", seed=9, epochs=[3])
    assert [p.name for p in later] == ["epoch_003.ckpt"] and load_checkpoint(later[0])["iteration"] == 6

    ds = tiny["data"].dataset
    cases = [ds.load(i) for i in tiny["data"].labeled]
    preds = predict_weak(snaps, cases, [32, 32], 2)
    assert preds.shape == (8, 2, 1, 32, 32) and preds.dtype == torch.uint8
    cached = load_or_predict_weak(tiny["root"] / "cache.pt", snaps, cases, [32, 32], 2)
    assert torch.equal(cached, preds)
    assert torch.equal(load_or_predict_weak(tiny["root"] / "cache.pt", snaps, cases, [32, 32], 2), preds)


def test_sampler_weak_probability(tiny):
    q = tiny["cfg"].quality
    s = build_sampler(q, 2, 1, weak_available=True)
    assert s.config.weak == pytest.approx(0.3)
    assert build_sampler(q, 2, 1, weak_available=False).config.weak == 0.0


def test_quality_trainer_checkpoint_roundtrip(tiny):
    cfg, data, root = tiny["cfg"], tiny["data"], tiny["root"]
    ds = data.dataset
    weak_train = load_or_predict_weak(root / "wt.pt", tiny["snaps"], [ds.load(i) for i in data.labeled], [32, 32], 2)
    weak_val = load_or_predict_weak(root / "wv.pt", tiny["snaps"], [ds.load(i) for i in data.val], [32, 32], 2)
    run_dir = root / "qrun"
    trainer = QualityTrainer(cfg, run_dir, data=data, weak_train=weak_train, weak_val=weak_val)
    fit = trainer.fit()
    # epoch = ceil(8 images * 2 masks / 8) = 2 iterations; 2 epochs
    assert trainer.iterations == 4 and fit.iterations_done == 4
    assert trainer.cfg.train.optimizer == "adamw" and trainer.cfg.train.schedule == "cosine"
    assert fit.best_path.is_file() and fit.best_metric is not None
    assert {"val/mae", "val/spearman"} <= set(fit.history[-1])
    # weak predictions are part of the fixed validation set: 4 val x 2 fixed + 4 val x 2 snapshots
    assert len(trainer.val_masks) == 16
    assert trainer.val_is_weak.tolist() == [False] * 8 + [True] * 8
    last = fit.history[-1]  # the overall MAE is the row-weighted mean of its two parts
    assert last["val/mae"] == pytest.approx((last["val/mae_synthetic"] + last["val/mae_weak"]) / 2, abs=1e-5)
    with open(run_dir / "logs" / "csv" / "metrics.csv") as fh:
        header = next(csv.reader(fh))
    assert "train/generation_fraction" in header

    scorer = load_quality_predictor(run_dir / "checkpoints" / "last.ckpt")
    assert scorer.meta["task"] == "quality" and scorer.image_size == [32, 32] and scorer.classes == ds.classes
    model = trainer._raw_model().eval()
    with torch.no_grad():
        expected = trainer.predict_val(model)[model.readout]
    got = torch.cat([scorer.predict(trainer.val_images[trainer.val_index[i:i + 5]], trainer.val_masks[i:i + 5])
                     for i in range(0, len(trainer.val_index), 5)])
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    # a folder resolves to checkpoints/best.ckpt
    assert isinstance(load_quality_predictor(run_dir), QualityScorer)
    # scoring a whole case gives one value per foreground class
    case = ds.load(data.test[0])
    out = scorer.score(case, case.label)
    assert out.shape == (1,) and 0.0 <= out[0] <= 1.0

    # evaluation report on the test split (synthetic, real unseen nets, shortcuts, mask-only)
    test_cases = [ds.load(i) for i in data.test]
    train_cases = [ds.load(i) for i in data.labeled]
    rep = evaluate_quality(scorer, test_cases, root / "eval", seed=7, k=2, real_snapshots=tiny["snaps"],
                           train_cases=train_cases)
    for key in ("synthetic", "real", "shortcuts", "mask_only"):
        assert key in rep
    for key in ("mae", "rmse", "pearson", "spearman", "bins", "auroc_0.7", "auprc_0.5"):
        assert key in rep["synthetic"]["all"]
    assert rep["synthetic"]["all"]["n"] == 8 and rep["real"]["all"]["n"] == 8
    assert {"black_image", "shuffled_images"} <= set(rep["shortcuts"])
    assert (root / "eval" / "quality_eval.json").is_file() and (root / "eval" / "quality_eval.md").is_file()
    assert (root / "eval" / "plots" / "synthetic_scatter.png").is_file()
    # fixed seed -> identical synthetic metrics on a rerun
    rep2 = evaluate_quality(scorer, test_cases, root / "eval2", seed=7, k=2)
    assert rep2["synthetic"]["all"]["mae"] == pytest.approx(rep["synthetic"]["all"]["mae"])
    assert "by_group" not in rep2["synthetic"]  # the demo cases have no groups
    # cases with groups (video sequences, patients): the synthetic masks are also reported per group
    for n, case in enumerate(test_cases):
        case.group = "seq_a" if n < 3 else "seq_b"
    rep3 = evaluate_quality(scorer, test_cases, root / "eval3", seed=7, k=2)
    by_group = rep3["synthetic"]["by_group"]
    assert set(by_group) == {"seq_a", "seq_b"}
    assert (by_group["seq_a"]["n"], by_group["seq_b"]["n"]) == (6, 2)  # 3 and 1 cases x k=2 masks
    assert "MAE by group" in (root / "eval3" / "quality_eval.md").read_text()
    # and per true structure size: every (mask, class) entry lands in exactly one size bin
    by_size = rep3["synthetic"]["by_structure_size"]
    assert sum(m["n"] for m in by_size.values()) == rep3["synthetic"]["all"]["n"]
    assert set(by_size) <= {"absent", "<0.5%", "0.5-2%", "2-10%", ">=10%"}
    assert "by true structure size" in (root / "eval3" / "quality_eval.md").read_text()


def test_train_quality_predictor_end_to_end(tiny, capsys):
    cfg = tiny_cfg(tiny["cfg"].data.dataset, tiny["root"] / "runs_e2e", epochs=1, weak_epochs=[1])
    result = train_quality_predictor(cfg, tiny["root"] / "e2e", data=tiny["data"])
    assert Path(result["checkpoint"]).is_file()
    assert len(result["weak_snapshots"]) == 1
    assert "synthetic" in result["eval"] and "real" in result["eval"]
    printed = capsys.readouterr().out
    assert "qgseg quality summary" in printed
    # the final checkpoint gets its uncertainty reference; recognition (decoder) and score certainty
    # are summarised
    assert "score uncertainty reference (90th percentile on validation)" in printed
    assert "recognition" in printed and "unsure " in printed.split("score certainty", 1)[1].splitlines()[0]
    assert load_quality_predictor(result["checkpoint"]).uncertainty_reference is not None


def test_ph2_fixed_set(shared_data, tmp_path):
    npz = require(shared_data / "PH2" / "quality-test-masks.npz")
    model = QualityPredictor(2, 3, 1, depth=10, width=[4, 4, 8, 8])
    meta = {"classes": ["background", "lesion"], "image_size": [32, 32], "spatial_dims": 2, "normalize": "auto"}
    pred, true, corruption = evaluate_ph2_fixed(QualityScorer(model, meta), npz)
    assert pred.shape == true.shape == (200,) and len(corruption) == 200
    assert np.all((pred >= 0) & (pred <= 1)) and np.all((true >= 0) & (true <= 1))


def test_cross_fitted_weak_predictions_come_from_unseen_snapshots(tiny):
    from qgseg.quality.training import prepare_tensors
    from qgseg.quality.weak import cross_fitted_weak

    cfg = tiny_cfg(tiny["cfg"].data.dataset, tiny["root"] / "runs_cf", weak_epochs=[1], weak_folds=2)
    data = tiny["data"]
    cases = [data.dataset.load(i) for i in data.labeled]
    preds, snaps = cross_fitted_weak(cfg, data, cases, tiny["root"] / "cf", [32, 32], 2, folds=2)
    images, _, _ = prepare_tensors(cases, [32, 32], "auto", 2, 2)
    assert preds.shape == (images.shape[0], 1, 1, 32, 32) and preds.dtype == torch.uint8
    assert len(snaps) == 1
    fold_dirs = sorted(p.name for p in (tiny["root"] / "cf").iterdir() if p.name.startswith("fold"))
    assert fold_dirs == ["fold0", "fold1"]
    for fold in fold_dirs:  # every fold's snapshot trained on the other fold's images only
        run_cfg = (tiny["root"] / "cf" / fold / "snapshots" / "run" / "config.yaml").read_text()
        assert "weak" in run_cfg


def test_truth_map_decoder_training_and_tta_scoring(tiny):
    """quality.truth_map_weight > 0 trains the decoder (dense loss logged) and the checkpoint
    rebuilds it; flip TTA averages the identity and the flipped views."""
    cfg = tiny_cfg(tiny["cfg"].data.dataset, tiny["root"] / "runs_tm", epochs=1, truth_map_weight=1.0)
    trainer = QualityTrainer(cfg, tiny["root"] / "tm", data=tiny["data"])
    fit = trainer.fit()
    assert fit.best_path.is_file()
    with open(tiny["root"] / "tm" / "logs" / "csv" / "metrics.csv") as fh:
        assert "train/truth_map_loss" in next(csv.reader(fh))
    scorer = load_quality_predictor(fit.best_path)
    assert scorer.model.truth_decoder
    # the reference a user's score uncertainties meet: the 90th percentile of the flip spread on the
    # validation masks, added once to the final checkpoint
    from qgseg.engine.checkpoint import load_checkpoint
    from qgseg.quality.scoring import UNCERTAINTY_REFERENCE_KEY, predict_views

    assert scorer.uncertainty_reference is None, "fit() alone does not add it"
    ref = trainer.add_uncertainty_reference(fit.best_path)
    model = load_quality_predictor(fit.best_path).model
    with torch.no_grad():
        spread = predict_views(model, trainer.val_images[trainer.val_index], trainer.val_masks).std(0, unbiased=False)
    assert ref == pytest.approx(float(torch.quantile(spread.flatten(), 0.9)), abs=1e-5)
    assert load_checkpoint(fit.best_path)["meta"][UNCERTAINTY_REFERENCE_KEY] == ref
    assert trainer.add_uncertainty_reference(fit.best_path) is None, "added once"
    assert load_quality_predictor(fit.best_path).uncertainty_reference == ref
    # readout "auto": the checkpoint keeps the readout with the lower validation MAE at that iteration
    best = next(h for h in fit.history if h["iteration"] == fit.best_iteration)
    assert scorer.model.readout == min(("fused", "agreement"), key=lambda k: best[f"val/mae_{k}"])
    assert best["val/mae"] == pytest.approx(best[f"val/mae_{scorer.model.readout}"])
    images, masks = trainer.val_images[trainer.val_index[:4]], trainer.val_masks[:4]
    plain = scorer.predict(images, masks)
    flipped = [scorer.predict(images.flip(d), masks.flip(d)) for d in (2, 3)]
    tta = load_quality_predictor(fit.best_path, tta=True).predict(images, masks)
    torch.testing.assert_close(tta, (plain + flipped[0] + flipped[1]) / 3, rtol=1e-5, atol=1e-6)
    # the score uncertainty is the spread of those same views; the score itself stays the plain one
    dice, unc = scorer.predict(images, masks, return_uncertainty=True)
    torch.testing.assert_close(dice, plain, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(unc, torch.stack([plain, *flipped]).std(0, unbiased=False), rtol=1e-4, atol=1e-6)



def test_mask_centred_crop_training_and_scoring(tiny):
    """quality.roi_size: the predictor trains on mask-centred crops (dense loss in the crop frame),
    the checkpoint keeps the crop settings, and the estimated truth comes back at the case's shape."""
    cfg = tiny_cfg(tiny["cfg"].data.dataset, tiny["root"] / "runs_roi", epochs=1, truth_map_weight=1.0,
                   roi_size=[16, 16], roi_margin=0.25)
    trainer = QualityTrainer(cfg, tiny["root"] / "roi", data=tiny["data"])
    fit = trainer.fit()
    scorer = load_quality_predictor(fit.best_path)
    assert scorer.model.roi_size == [16, 16] and scorer.model.roi_margin == 0.25
    case = tiny["data"].dataset.load(tiny["data"].test[0])
    pred = scorer.score(case, case.label)
    assert pred.shape == (1,) and 0 <= pred[0] <= 1
    assert scorer.estimated_truth(case, case.label).shape == case.label.shape
    with pytest.raises(Exception, match="roi_size"):
        tiny_cfg(tiny["cfg"].data.dataset, tiny["root"] / "runs_bad", roi_size=[16])


def test_quality_augment_settings_reach_the_training_batches(tiny, monkeypatch):
    """quality.augment is what the predictor's training batches are augmented with."""
    import qgseg.quality.training as qt

    cfg = tiny_cfg(tiny["cfg"].data.dataset, tiny["root"] / "runs_aug", epochs=1,
                   augment={"blur_p": 1.0, "color_p": 0.5, "rotate_deg": 5.0})
    seen = []
    real_intensity, real_spatial = qt.intensity_augment, qt.spatial_augment_many
    monkeypatch.setattr(qt, "intensity_augment", lambda x, g, c=None: seen.append(c) or real_intensity(x, g, c))
    monkeypatch.setattr(qt, "spatial_augment_many", lambda t, k, g, c=None: seen.append(c) or real_spatial(t, k, g, c))
    QualityTrainer(cfg, tiny["root"] / "aug", data=tiny["data"]).fit()
    assert seen and all(c == cfg.quality.augment for c in seen)
    assert cfg.quality.augment.blur_p == 1.0 and cfg.quality.augment.rotate_deg == 5.0


def test_weak_snapshots_of_a_guided_config_are_plain_supervised():
    """`qgseg run --variant mt-qw` trains its predictor first: the weak networks of that phase are
    supervised and unguided (no predictor exists yet), whatever the run's method and guidance."""
    from qgseg.quality.weak import weak_run_config

    cfg = load_config("demo", ["ssl.method=mt", "guidance.qw=true", "guidance.qar=true"])
    wcfg, _ = weak_run_config(cfg, n_labeled=8)
    assert wcfg.ssl.method == "supervised" and not wcfg.guidance.qw and not wcfg.guidance.qar
    assert cfg.ssl.method == "mt" and cfg.guidance.qw  # the run's own config is untouched
