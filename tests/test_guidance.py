"""Quality guidance: -QW weights, QAR gradients, g frozen in eval mode, the leak guard, every
method x guidance combination end to end, and exact resume of runs with teachers / two networks."""
from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from qgseg.config import ConfigError, GuidanceConfig, load_config
from qgseg.data.io import DataError
from qgseg.data.run_data import prepare_run_data
from qgseg.engine import Interrupted, load_checkpoint
from qgseg.engine.segmentation import SegmentationTrainer
from qgseg.guidance import QualityCritic, QualityGuidance, build_run_method, probe_metrics, quality_weights
from qgseg.models import build_model
from qgseg.ssl import METHODS, Batch, UnlabeledBatch, build_method
from qgseg.ssl.base import UnlabeledTerm

from helpers import tiny_config, tiny_dataset

META = {"classes": ["background", "a", "b"], "image_size": [16, 16], "normalize": "none", "spatial_dims": 2,
        "image_channels": 1}


class StubPredictor(nn.Module):
    """g(image, masks): a fixed score per sample (``values``) plus a differentiable term of the masks, and a
    BatchNorm whose running statistics must never move."""

    def __init__(self, values=None, slope: float = 0.0):
        super().__init__()
        self.values = values
        self.slope = nn.Parameter(torch.tensor(float(slope)))
        self.bn = nn.BatchNorm2d(1)

    def forward(self, image, masks, detach_truth=False):
        self.bn(image[:, :1])  # updates running stats if (wrongly) in train mode
        b, k = masks.shape[:2]
        base = torch.full((b, k), 0.8) if self.values is None else self.values[:b].view(b, -1).expand(b, k)
        return (base + self.slope * masks.flatten(2).mean(-1)).clamp(0, 1)


def _critic(values=None, slope=0.0):
    return QualityCritic(StubPredictor(values, slope), META)


def _term(b=4, k=2):
    torch.manual_seed(0)
    loss = torch.rand(b, k, requires_grad=True)
    batch = Batch(torch.randn(b, 1, 16, 16))
    return UnlabeledTerm("pseudo", loss, 1.0, torch.randint(0, 3, (b, 16, 16)), batch.image, batch)


def _guided(method_name, critic):
    cfg = load_config(None, [f"ssl.method={method_name}"])
    method = QualityGuidance(build_method(cfg, 3), critic, GuidanceConfig(qw=True, qar=True, qar_start=0.0,
                                                                          qar_rampup=0.0))
    method.configure(10, torch.Generator().manual_seed(0))
    return method


def test_quality_weights_formula():
    q = torch.tensor([0.9, 0.6, 0.4, 1.0])
    torch.testing.assert_close(quality_weights(q, 2.0, 0.5), torch.tensor([0.81, 0.36, 0.0, 1.0]))


def test_qw_keep_keeps_the_batch_best_rated_share_per_class():
    q = torch.tensor([0.9, 0.6, 0.4, 1.0])
    torch.testing.assert_close(quality_weights(q, 2.0, 0.5, keep=0.5), torch.tensor([0.81, 0.0, 0.0, 1.0]))
    # with tau 0 only the ranking decides: ceil(0.25 * 4) = 1 sample kept, ceil(0.3 * 4) = 2; ties all kept
    torch.testing.assert_close(quality_weights(q, 1.0, 0.0, keep=0.25), torch.tensor([0.0, 0.0, 0.0, 1.0]))
    torch.testing.assert_close(quality_weights(q, 1.0, 0.0, keep=0.3), torch.tensor([0.9, 0.0, 0.0, 1.0]))
    tied = torch.tensor([0.7, 0.7, 0.6, 0.5])
    assert (quality_weights(tied, 1.0, 0.0, keep=0.25) > 0).tolist() == [True, True, False, False]
    per_class = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.3, 0.7], [0.8, 0.2]])  # each class ranks on its own
    assert (quality_weights(per_class, 1.0, 0.0, keep=0.5) > 0).tolist() == [[True, False], [False, True],
                                                                            [False, True], [True, False]]
    assert torch.equal(quality_weights(q[:1], 1.0, 0.0, keep=0.1), q[:1])  # one sample: kept
    # in the wrapper: kept is at most the share, whatever g's level (here every score is above tau)
    critic = _critic(values=torch.tensor([0.9, 0.8, 0.7, 0.6]))
    method = QualityGuidance(build_method(load_config(None, ["ssl.method=mt"]), 3), critic,
                             GuidanceConfig(qw=True, qw_keep=0.5))
    method.configure(10, torch.Generator().manual_seed(0))
    student = build_model("unet", 2, 1, 3, [4, 8, 16], 0.0)
    method.setup(student)
    out = method.step({"student": student}, Batch(torch.randn(2, 1, 16, 16), torch.randint(0, 3, (2, 16, 16))),
                      UnlabeledBatch(torch.randn(4, 1, 16, 16)), 5)
    assert float(out.logs["kept"]) == pytest.approx(0.5)
    assert (out.unlabeled[0].sample_weight > 0).all(1).tolist() == [True, True, False, False]
    with pytest.raises(ConfigError, match="qw_keep"):
        load_config(None, ["guidance.qw=true", "ssl.method=mt", "guidance.qw_keep=0"])


def test_constant_predictor_gives_uniform_weights_equal_to_the_plain_mean():
    term = _term()
    plain = term.reduced()
    q = _critic().score_labels(term.image, term.batch, term.pseudolabel)
    term.sample_weight = quality_weights(q, 2.0, 0.5)
    assert torch.allclose(term.sample_weight, term.sample_weight[0, 0].expand_as(term.sample_weight))
    torch.testing.assert_close(term.reduced(), plain)


def test_a_sample_scored_zero_contributes_nothing():
    term = _term()
    critic = _critic(values=torch.tensor([0.9, 0.0, 0.7, 0.8]))
    term.sample_weight = quality_weights(critic.score_labels(term.image, term.batch, term.pseudolabel), 2.0, 0.5)
    loss = term.reduced()
    loss.backward()
    assert torch.all(term.loss.grad[1] == 0) and torch.all(term.loss.grad[[0, 2, 3]] > 0)
    # the same value as the weighted mean over the other samples only
    w = torch.tensor([0.81, 0.49, 0.64])[:, None]
    expected = ((term.loss[[0, 2, 3]] * w).sum(0) / w.sum(0)).sum()
    torch.testing.assert_close(loss, expected)
    # every weight 0: the term contributes 0, not nan
    term.sample_weight = torch.zeros(4, 2)
    assert float(term.reduced().detach()) == 0.0


def test_qar_gradient_reaches_the_student_not_g_and_g_stays_in_eval_mode():
    critic = _critic(values=torch.full((4,), 0.3), slope=1.0)
    g = critic.model
    g.train()  # even if someone puts it in train mode, the critic uses it in eval mode
    method = _guided("mt", critic)
    student = build_model("unet", 2, 1, 3, [4, 8, 16], 0.0)
    method.setup(student)
    method.train()  # the trainer does this every step: g is not a sub-module, so it is unaffected
    labeled = Batch(torch.randn(2, 1, 16, 16), torch.randint(0, 3, (2, 16, 16)))
    unlabeled = UnlabeledBatch(torch.randn(4, 1, 16, 16))
    stats = g.bn.running_mean.clone()
    out = method.step({"student": student}, labeled, unlabeled, 5)
    assert "qar" in out.extra and out.extra["qar"].requires_grad
    out.extra["qar"].backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in student.parameters())
    assert g.slope.grad is None and not g.slope.requires_grad
    assert not g.training and torch.equal(g.bn.running_mean, stats)
    assert not any(k.startswith("critic") for k in method.state_dict())  # never saved with the run
    assert 0 < float(out.logs["q_student"]) <= 1
    assert out.unlabeled[0].sample_weight is not None  # -QW applied to MT's pseudolabel


def test_critic_prepares_its_own_normalisation_and_size():
    meta = {**META, "normalize": "zscore", "image_size": [8, 8]}
    critic = QualityCritic(StubPredictor(), meta)
    raw = torch.rand(2, 1, 16, 16) * 200 + 10
    batch = Batch(raw / 255.0, raw_scale=torch.full((2, 1), 255.0), raw_shift=torch.zeros(2, 1), eight_bit=True)
    x = critic.prepare_image(batch.image, batch)
    assert x.shape == (2, 1, 8, 8)
    z = (raw - raw.mean((2, 3), keepdim=True)) / raw.std((2, 3), keepdim=True, unbiased=False)
    torch.testing.assert_close(x, torch.nn.functional.interpolate(z, size=(8, 8), mode="bilinear"))
    unit = QualityCritic(StubPredictor(), {**meta, "normalize": "auto"}).prepare_image(batch.image, batch)
    assert float(unit.max()) <= 1.0 and float(unit.min()) >= 0.0  # auto + 8-bit -> x / 255


def test_incompatible_predictor_is_refused():
    critic = _critic()
    with pytest.raises(ConfigError, match="classes"):
        critic.check_compatible(["background", "lesion"], 1, 2)
    with pytest.raises(ConfigError, match="3D"):
        critic.check_compatible(["background", "a", "b"], 1, 3)


# ------------------------------------------------------------------------- end to end on tiny data
@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from qgseg.quality.training import train_quality_predictor

    root = tmp_path_factory.mktemp("guided")
    data_dir = tiny_dataset(root / "data", n_labeled=6, n_unlabeled=6)
    cfg = _cfg(data_dir, root)
    q = train_quality_predictor(cfg, root / "quality", data=prepare_run_data(cfg.data, cfg.output_dir),
                                evaluate=False)
    return {"root": root, "data": data_dir, "predictor": q["checkpoint"]}


def _cfg(data_dir, root, *extra, **overrides):
    q = {"quality__depth": 10, "quality__width": "[4,4,8,8]", "quality__image_size": "[32,32]",
         "quality__masks_per_image": 1, "quality__epochs": 1, "quality__batch_size": 4,
         "quality__weak_probability": 0.0, "quality__eval_real_networks": "false"}
    cfg = tiny_config(data_dir, root, **{**q, **overrides})
    if extra:
        from qgseg.config import load_config as lc, to_dict

        cfg = lc(to_dict(cfg), list(extra))
    return cfg


COMBINATIONS = [(m, qw, qar) for m, qw, qar in itertools.product(METHODS, (False, True), (False, True))
                if not (qw and not METHODS[m].makes_pseudolabels)]


@pytest.mark.parametrize("method,qw,qar", COMBINATIONS)
def test_two_iterations_of_every_method_and_guidance(tiny, tmp_path, method, qw, qar):
    cfg = _cfg(tiny["data"], tmp_path, f"ssl.method={method}", f"guidance.qw={str(qw).lower()}",
               f"guidance.qar={str(qar).lower()}", f"guidance.predictor={tiny['predictor']}", "guidance.qar_start=0",
               "train.iterations=2", "train.val_every=2", "ssl.unlabeled_batch_size=4")
    trainer = SegmentationTrainer(cfg, tmp_path / "run")
    result = trainer.fit()
    assert result.iterations_done == 2 and result.best_metric is not None
    last = trainer.history[-1]
    if qw:
        assert 0 <= last["guidance/q_pseudo"] <= 1 and 0 <= last["guidance/kept"] <= 1
    if qar:
        assert last["guidance/lambda_qar"] > 0 and "guidance/q_student" in last
    if qw or qar:  # g's error on the student's validation predictions, logged at every validation
        assert 0 <= last["guidance/g_mae_val"] <= 1
        # ... and on the pseudolabels of labeled cases scored as if unlabeled (the probe)
        assert 0 <= last["guidance/probe_g_mae"] <= 1 and 0 <= last["guidance/probe_dice"] <= 1
        assert ("guidance/probe_kept" in last) == qw
    assert not any(p.requires_grad for p in getattr(trainer.method, "critic", None).model.parameters()) if (qw or qar) \
        else not hasattr(trainer.method, "critic")


def test_leak_guard_refuses_a_predictor_trained_on_this_runs_unlabeled_cases(tiny, tmp_path):
    # the tiny predictor was trained on all 6 labeled cases; a run labelling only half treats 3 as unlabeled
    cfg = _cfg(tiny["data"], tmp_path, "ssl.method=mt", "guidance.qw=true", "data.labeled=0.5",
               f"guidance.predictor={tiny['predictor']}")
    run = prepare_run_data(cfg.data, cfg.output_dir)
    with pytest.raises(DataError, match="unlabeled"):
        build_run_method(cfg, 2, run)
    with pytest.raises(DataError, match="unlabeled"):
        SegmentationTrainer(cfg, tmp_path / "leak").fit()


def test_guidance_without_a_predictor_is_a_clear_error(tiny, tmp_path):
    cfg = _cfg(tiny["data"], tmp_path, "ssl.method=mt", "guidance.qar=true")
    with pytest.raises(ConfigError, match="guidance.predictor"):
        build_run_method(cfg, 2, prepare_run_data(cfg.data, cfg.output_dir))


@pytest.mark.parametrize("method", ["mt", "cps", "bcp"])
def test_kill_and_resume_gives_identical_weights(tiny, tmp_path, method):
    extra = [f"ssl.method={method}", "train.deterministic=true", "train.iterations=8", "train.val_every=4",
             "ssl.unlabeled_batch_size=4", f"guidance.predictor={tiny['predictor']}", "guidance.qar_start=0"]
    if method != "bcp":
        extra += ["guidance.qw=true", "guidance.qar=true"]
    cfg = _cfg(tiny["data"], tmp_path, *extra)
    SegmentationTrainer(cfg, tmp_path / "full").fit()
    killed = SegmentationTrainer(cfg, tmp_path / "killed")
    with pytest.raises(Interrupted):
        killed.fit(stop_after=6)  # the last checkpoint was written at iteration 4
    SegmentationTrainer(cfg, tmp_path / "killed").fit(resume=True)
    a = load_checkpoint(tmp_path / "full" / "checkpoints" / "last.ckpt")
    b = load_checkpoint(tmp_path / "killed" / "checkpoints" / "last.ckpt")
    for part in ("model",):
        assert all(torch.equal(a[part][k], b[part][k]) for k in a[part]), part
    for name in a["extra_networks"]:  # CPS's second network
        assert all(torch.equal(a["extra_networks"][name][k], b["extra_networks"][name][k]) for k in a["extra_networks"][name])
    ma, mb = a["extra"].get("method", {}), b["extra"].get("method", {})
    assert ma.keys() == mb.keys()
    if method in ("mt", "bcp"):
        assert any("teacher" in k for k in ma)
    assert all(torch.equal(ma[k], mb[k]) for k in ma)  # EMA teacher
    if method == "cps":
        assert list(a["extra_networks"]) == ["student_b"]


@pytest.mark.parametrize("variant", ["cps", "mt-qw+qar"])
def test_two_networks_and_guidance_under_two_process_ddp(tiny, tmp_path, variant):
    """Fabric launches 2 gloo processes: CPS's second network and the guided student are set up for DDP,
    g stays a plain frozen module on each rank, validation is reduced across ranks, rank 0 writes."""
    import subprocess
    import sys

    from qgseg.pipeline import variant_overrides

    sets = [f"data.dataset={tiny['data']}", "data.image_size=[32,32]", "model.features=[8,16,32]",
            "train.iterations=4", "train.val_every=2", "runtime.devices=2", "runtime.strategy=ddp",
            "runtime.accelerator=cpu", "runtime.progress=false", "ssl.unlabeled_batch_size=4",
            f"guidance.predictor={tiny['predictor']}", "guidance.qar_start=0", *variant_overrides(variant)]
    cmd = [sys.executable, "-m", "qgseg.cli.main", "train", "demo", "--output-dir", str(tmp_path), "--name", "ddp"]
    for s in sets:
        cmd += ["--set", s]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.count("[4/4] val/dice") == 1, "only rank 0 prints"
    state = load_checkpoint(tmp_path / "ddp" / "checkpoints" / "last.ckpt")
    if variant == "cps":
        assert list(state["extra_networks"]) == ["student_b"]
    else:
        assert "guidance/g_mae_val" in state["history"][-1] and "guidance/q_pseudo" in state["history"][-1]


def test_probe_metrics_measure_g_against_the_true_dice():
    true = np.array([[0.9, 0.2], [0.6, 0.8], [0.3, 0.95], [0.7, 0.1]])
    exact = probe_metrics(true, true, power=1.0, threshold=0.5)
    assert exact["probe_g_mae"] == 0 and exact["probe_g_spearman"] == pytest.approx(1.0)
    assert exact["probe_dice"] == pytest.approx(true.mean())
    # weights q * [q >= 0.5] keep the 5 pairs >= 0.5 and favour the better pseudolabels
    assert exact["probe_kept"] == pytest.approx(5 / 8)
    kept = true[true >= 0.5]
    assert exact["probe_dice_weighted"] == pytest.approx((kept ** 2).sum() / kept.sum())
    assert exact["probe_dice_weighted"] > exact["probe_dice"]
    inverted = probe_metrics(1 - true, true, power=1.0, threshold=0.5)
    assert inverted["probe_g_spearman"] == pytest.approx(-1.0) and inverted["probe_dice_weighted"] < inverted["probe_dice"]
    # per case (qw_per_class false): one weight per row from the mean score, as in training
    per_case = probe_metrics(true, true, power=1.0, threshold=0.5, per_class=False)
    assert per_case["probe_kept"] == pytest.approx(3 / 4)  # row means 0.55, 0.7, 0.625, 0.4
    nothing = probe_metrics(np.zeros((2, 1)), np.ones((2, 1)), power=2.0, threshold=0.5)
    assert np.isnan(nothing["probe_dice_weighted"]) and nothing["probe_kept"] == 0
    assert "probe_g_spearman" not in nothing and "probe_kept" not in probe_metrics(true, true, 1, 0.5, weighted=False)
    # the half g rates best: the truly best half when g ranks right, the worst half when it ranks upside down
    assert exact["probe_dice_top_half"] == pytest.approx(exact["probe_dice_oracle_half"])
    assert inverted["probe_dice_top_half"] == pytest.approx(np.sort(true.mean(1))[:2].mean())
    assert "probe_dice_top_half" not in probe_metrics(true[:1], true[:1], 1, 0.5)


@pytest.mark.parametrize("method,network", [("pl-c", "student"), ("fixmatch", "student"), ("mt", "teacher"),
                                            ("bcp", "teacher"), ("cps", "student_b"), ("supervised", None)])
def test_pseudolabel_network_is_the_one_the_pseudolabels_come_from(method, network):
    cfg = load_config(None, [f"ssl.method={method}"])
    m = build_method(cfg, 2)
    student = build_model("unet", 2, 1, 2, [4, 8, 16], 0.0)
    m.setup(student)
    nets = {"student": student, "student_b": build_model("unet", 2, 1, 2, [4, 8, 16], 0.0)}
    expected = None if network is None else (m.teacher if network == "teacher" else nets[network])
    assert m.pseudolabel_network(nets) is expected
    if network is not None:  # guidance asks the wrapped method
        assert QualityGuidance(m, _critic(), GuidanceConfig(qw=True)).pseudolabel_network(nets) is expected


def test_the_probe_is_logged_only_and_changes_no_weight(tiny, tmp_path):
    extra = ["ssl.method=mt", "guidance.qw=true", "train.deterministic=true", "train.iterations=4",
             "train.val_every=2", "ssl.unlabeled_batch_size=4", f"guidance.predictor={tiny['predictor']}"]
    runs = {}
    for n in (0, 3):
        trainer = SegmentationTrainer(_cfg(tiny["data"], tmp_path, *extra, f"guidance.probe_cases={n}"),
                                      tmp_path / f"probe{n}")
        trainer.fit()
        runs[n] = (load_checkpoint(tmp_path / f"probe{n}" / "checkpoints" / "last.ckpt"), trainer)
    a, b = runs[0][0], runs[3][0]
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert len(runs[3][1].probe_cases) == 3 and not runs[0][1].probe_cases
    assert "guidance/probe_g_mae" in runs[3][1].history[-1] and "guidance/probe_g_mae" not in runs[0][1].history[-1]


def _benchmark(name: str):
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, Path(__file__).parents[1] / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_probe_takes_other_cases_and_weighting(tiny, tmp_path):
    extra = ["ssl.method=mt", "guidance.qw=true", "train.iterations=2", "train.val_every=2",
             "ssl.unlabeled_batch_size=2", "guidance.probe_cases=3", f"guidance.predictor={tiny['predictor']}"]
    trainer = SegmentationTrainer(_cfg(tiny["data"], tmp_path, *extra), tmp_path / "run")
    trainer.fit()
    scorer = trainer._val_scorer()
    default = trainer.probe_pseudolabels(scorer)
    assert trainer.probe_pseudolabels(scorer, trainer.probe_cases) == pytest.approx(default, nan_ok=True)
    other = trainer.probe_pseudolabels(scorer, trainer.val_cases, weighted=False)
    assert "probe_kept" not in other and 0 <= other["probe_dice"] <= 1


def test_hidden_label_probe_reads_the_labels_of_unlabeled_training_cases(tiny, tmp_path):
    """benchmarks/study_probe_hidden.py after training: the remainder of a labeled subset keeps its labels
    on disk and is probed; the unlabeled split has none, and is counted as left out, not dropped silently."""
    from qgseg.engine.fabric import make_fabric

    probe = _benchmark("study_probe_hidden")
    assert probe.spread(list("abcdefgh"), 3) == ["a", "e", "h"] and probe.spread(["a"], 3) == ["a"]
    base = ["ssl.method=mt", "train.iterations=2", "train.val_every=2", "ssl.unlabeled_batch_size=2"]
    fabric = make_fabric(load_config(None, ["runtime.accelerator=cpu"]).runtime)
    runs = {}
    for labeled in (3, 6):  # of the 6 labeled training cases; 6 unlabeled cases without labels beside them
        run = tmp_path / f"mt_l{labeled}"
        SegmentationTrainer(_cfg(tiny["data"], tmp_path, *base, f"data.labeled={labeled}"), run / "segmenter").fit()
        runs[labeled] = run
    out = probe.probe_run(runs[3], Path(tiny["predictor"]), 50, None, fabric)
    assert out["splits_checked"] and out["judge"] == "grid predictor" and out["iteration"] == 2
    assert (out["n_hidden"], out["n_without_label"], out["n_labeled"]) == (3, 6, 3)
    for part in ("labeled", "hidden"):
        assert 0 <= out[part]["probe_dice"] <= 1 and 0 <= out[part]["probe_g_mae"] <= 1 and "probe_kept" in out[part]
    with pytest.raises(SystemExit, match="has a label on disk"):
        probe.probe_run(runs[6], Path(tiny["predictor"]), 50, None, fabric)
