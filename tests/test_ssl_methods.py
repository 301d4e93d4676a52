"""Each semi-supervised method on a tiny batch: finite losses, gradients where they belong
(students), none into teachers; the per-class/per-sample loss split is exact; mixing helpers."""
from __future__ import annotations

import pytest
import torch

from qgseg.config import ConfigError, load_config
from qgseg.models import build_model
from qgseg.ssl import METHODS, Batch, UnlabeledBatch, build_method
from qgseg.ssl.losses import attribute_pixels, attribute_samples, consistency_loss, pseudo_label_loss
from qgseg.ssl.mix import cutmix_boxes, paste


def _net(seed: int, classes: int = 3) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model("unet", 2, 1, classes, [4, 8, 16], 0.0)


def _batches(classes: int = 3, b: int = 2, bu: int = 4, size: int = 16):
    g = torch.Generator().manual_seed(0)
    labeled = Batch(torch.randn(b, 1, size, size, generator=g), torch.randint(0, classes, (b, size, size), generator=g))
    weak = torch.randn(bu, 1, size, size, generator=g)
    unlabeled = UnlabeledBatch(weak, None, torch.ones(bu, 1), torch.zeros(bu, 1), False,
                               strong=weak + 0.1 * torch.randn(weak.shape, generator=g))
    return labeled, unlabeled


def _method(name: str, classes: int = 3, total: int = 10):
    cfg = load_config(None, [f"ssl.method={name}"])
    method = build_method(cfg, classes)
    method.configure(total, torch.Generator().manual_seed(1))
    return method


@pytest.mark.parametrize("name", list(METHODS))
def test_method_loss_finite_with_gradients_into_students_only(name):
    classes = 3
    method = _method(name, classes)
    nets = {"student": _net(0, classes)}
    for k, extra in enumerate(method.extra_students, start=1):
        nets[extra] = _net(k, classes)
    method.setup(nets["student"])
    labeled, unlabeled = _batches(classes)
    it = 9  # late in the run: ramps up, BCP past its labeled-only pre-training
    out = method.step(nets, labeled, unlabeled, it)
    loss = out.total()
    assert torch.isfinite(loss), name
    loss.backward()
    for key, net in nets.items():
        grads = [p.grad for p in net.parameters() if p.requires_grad]
        assert any(g is not None and g.abs().sum() > 0 for g in grads), f"{name}: no gradient into {key}"
    for p in method.parameters():  # teachers: frozen
        assert p.grad is None and not p.requires_grad, name
    if method.uses_unlabeled:
        assert out.unlabeled, name
        for term in out.unlabeled:
            assert term.loss.shape == (term.loss.shape[0], classes - 1) and torch.isfinite(term.loss).all()
            assert term.pseudolabel is not None and term.pseudolabel.dtype == torch.long
            assert not term.pseudolabel.requires_grad
            assert term.image.shape[0] == term.loss.shape[0] == term.pseudolabel.shape[0]
            assert term.image.shape[2:] == term.pseudolabel.shape[1:]
    # the ramp weight is positive late in the run, and the unlabeled term changes the loss
    assert all(t.weight > 0 for t in out.unlabeled)
    logs = out.loss_dict()
    assert set(logs) >= {"loss", "sup"}


@pytest.mark.parametrize("name", [n for n, m in METHODS.items() if m.uses_unlabeled])
def test_student_probs_with_graph_only_on_request(name):
    method = _method(name)
    nets = {"student": _net(0)}
    for k, extra in enumerate(method.extra_students, start=1):
        nets[extra] = _net(k)
    method.setup(nets["student"])
    labeled, unlabeled = _batches()
    method.want_student_probs = True
    out = method.step(nets, labeled, unlabeled, 9)
    assert out.student_probs is not None and out.student_probs.requires_grad, name
    assert out.student_probs.shape[0] == unlabeled.image.shape[0]
    torch.testing.assert_close(out.student_probs.sum(1), torch.ones_like(out.student_probs[:, 0]))


def test_teacher_follows_student_by_ema_and_stays_in_eval_mode():
    method = _method("mt")
    student = _net(0)
    method.setup(student)
    method.train()
    assert not method.teacher.training
    before = [p.clone() for p in method.teacher.parameters()]
    with torch.no_grad():
        for p in student.parameters():
            p.add_(1.0)
    method.after_optimizer_step({"student": student}, 1)  # decay min(1 - 1/2, 0.99) = 0.5
    for b, t, s in zip(before, method.teacher.parameters(), student.parameters()):
        torch.testing.assert_close(t, 0.5 * b + 0.5 * s)
    assert method.ema_decay(10 ** 6) == pytest.approx(0.99)


def test_attribution_is_an_exact_split():
    g = torch.Generator().manual_seed(0)
    pixel = torch.rand(3, 8, 8, generator=g)
    pseudo = torch.randint(0, 4, (3, 8, 8), generator=g)
    split = attribute_pixels(pixel, pseudo, 4)
    assert split.shape == (3, 3)
    torch.testing.assert_close(split.sum(1), pixel.flatten(1).mean(1))  # per sample: the plain mean
    # a pixel of class 2 counts for class 2 only; a background pixel a third to each class
    one = torch.zeros(1, 2, 2)
    one[0, 0, 0] = 4.0
    lab = torch.zeros(1, 2, 2, dtype=torch.long)
    lab[0, 0, 0] = 2
    torch.testing.assert_close(attribute_pixels(one, lab, 4), torch.tensor([[0.0, 1.0, 0.0]]))
    lab[0, 0, 0] = 0
    torch.testing.assert_close(attribute_pixels(one, lab, 4), torch.full((1, 3), 1 / 3))
    # mixed sources: the pasted pixel's loss goes to the sample it came from
    source = torch.zeros(2, 2, 2, dtype=torch.long)
    source[0, 1, 1] = 1
    px = torch.zeros(2, 2, 2)
    px[0, 1, 1] = 4.0
    out = attribute_pixels(px, torch.ones(2, 2, 2, dtype=torch.long), 2, source)
    torch.testing.assert_close(out, torch.tensor([[0.0], [1.0]]))
    frac = attribute_samples(torch.tensor([[1.0], [0.0]]), source)
    torch.testing.assert_close(frac, torch.tensor([[0.75], [0.25]]))


def test_pseudo_label_loss_low_when_prediction_matches():
    pseudo = torch.randint(0, 3, (2, 8, 8))
    good = torch.nn.functional.one_hot(pseudo, 3).movedim(-1, 1).float() * 20
    bad = torch.roll(good, 1, dims=1)
    assert pseudo_label_loss(good, pseudo).sum() < 0.05 < pseudo_label_loss(bad, pseudo).sum()
    valid = torch.zeros(2, 8, 8)
    assert float(pseudo_label_loss(bad, pseudo, valid, dice=False).abs().sum()) == 0.0
    p = torch.softmax(torch.randn(2, 3, 8, 8), 1)
    assert float(consistency_loss(p, p).abs().sum()) == 0.0


def test_cutmix_paste_and_boxes():
    g = torch.Generator().manual_seed(0)
    boxes = cutmix_boxes(8, (16, 16), g, p=1.0)
    assert boxes.shape == (8, 16, 16) and (boxes.flatten(1).sum(1) > 0).all()
    a, b = torch.zeros(8, 1, 16, 16), torch.ones(8, 1, 16, 16)
    torch.testing.assert_close(paste(a, b, boxes)[:, 0], boxes)


def test_unknown_method_and_knobs_are_rejected_with_names():
    with pytest.raises(ConfigError, match="did you mean 'mt'"):
        load_config(None, ["ssl.method=mtt"])
    with pytest.raises(ConfigError, match="ssl.params.ema_decy.*did you mean 'ema_decay'"):
        load_config(None, ["ssl.method=mt", "ssl.params={ema_decy: 0.9}"])
    with pytest.raises(ConfigError, match="produces no pseudolabels"):
        load_config(None, ["ssl.method=supervised", "guidance.qw=true"])
    cfg = load_config(None, ["ssl.method=fixmatch", "ssl.params={confidence: 0.8}"])
    assert build_method(cfg, 2).params.confidence == 0.8
