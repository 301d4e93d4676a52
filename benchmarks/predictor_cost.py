"""What the quality predictor's truth-map decoder costs against a plain ResNet regressor.

    python benchmarks/predictor_cost.py [--size 224] [--batch 16] [--repeats 5]

For each head (plain regression, truth-map decoder) and each width (standard, the presets' half
width) it measures, on PH2-sized RGB inputs with one mask channel:

- training step images/s (forward with the truth map, losses, backward, Adam step);
- QAR step images/s: what guidance pays per training step, i.e. ``g(x, softmax)`` forward plus the
  backward pass to the mask input with g frozen (``requires_grad=False`` on g's weights);
- activation memory of one training forward: the bytes autograd saves for backward, summed through
  ``torch.autograd.graph.saved_tensors_hooks`` (the part of training memory that grows with batch
  and image size; exact and device-independent, unlike the process RSS on a CPU);
- parameters.

The accuracy each head costs comes from trained predictors (``quality_ph2_plain`` against the PH2
preset); this script measures the cost side only. Writes ``benchmarks/results/predictor_cost.{json,md}``.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_result

from qgseg.quality.predictor import QualityPredictor

HEADS = {"plain regression": False, "truth-map decoder": True}
WIDTHS = {"standard": None, "half (presets)": [32, 64, 128, 256]}


def saved_activation_bytes(model: torch.nn.Module, fn) -> int:
    """Bytes of the tensors autograd keeps for backward while ``fn()`` runs (each storage once),
    not counting the model's own weights, which convolutions also save."""
    weights = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in weights:
            seen[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(seen.values())


def _timed(step, repeats: int) -> float:
    step()  # warm-up: allocator and kernels
    t0 = time.perf_counter()
    for _ in range(repeats):
        step()
    return (time.perf_counter() - t0) / repeats


def measure(decoder: bool, width, size: int, batch: int, repeats: int) -> dict[str, float]:
    torch.manual_seed(0)
    model = QualityPredictor(2, 3, 1, depth=18, width=width, truth_decoder=decoder)
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    x = torch.randn(batch, 3, size, size)
    masks = (torch.rand(batch, 1, size, size) > 0.5).float()
    target = torch.rand(batch, 1)
    truth = (torch.rand(batch, 1, size, size) > 0.5).float()

    def loss_fn() -> torch.Tensor:
        if decoder:
            score, truth_logits = model(x, masks, return_truth=True)
            return F.l1_loss(score, target) + F.binary_cross_entropy_with_logits(truth_logits, truth)
        return F.l1_loss(model(x, masks), target)

    def train_step() -> None:
        opt.zero_grad(set_to_none=True)
        loss_fn().backward()
        opt.step()

    model.train()
    train_s = _timed(train_step, repeats)
    activations = saved_activation_bytes(model, loss_fn)

    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    logits = torch.randn(batch, 2, size, size, requires_grad=True)

    def qar_step() -> None:  # the gradient reaches the segmenter through the soft mask only
        (1 - model(x, logits.softmax(1)[:, 1:])).mean().backward()

    qar_s = _timed(qar_step, repeats)
    return {"train_img_per_s": batch / train_s, "qar_img_per_s": batch / qar_s,
            "activation_mb": activations / 2**20, "parameters_m": sum(p.numel() for p in model.parameters()) / 1e6}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    start = time.time()
    variants: dict[str, dict] = {}
    for wname, width in WIDTHS.items():
        for hname, decoder in HEADS.items():
            key = f"{hname}, {wname} width"
            variants[key] = measure(decoder, width, args.size, args.batch, args.repeats)
            print(key, {k: round(v, 2) for k, v in variants[key].items()}, flush=True)
    ratios = {}
    for wname in WIDTHS:
        plain, dec = variants[f"plain regression, {wname} width"], variants[f"truth-map decoder, {wname} width"]
        ratios[wname] = {"activation_memory": dec["activation_mb"] / plain["activation_mb"],
                         "train_speed": dec["train_img_per_s"] / plain["train_img_per_s"],
                         "qar_speed": dec["qar_img_per_s"] / plain["qar_img_per_s"]}
    out = {"variants": variants, "decoder_vs_plain": ratios, "torch_threads": torch.get_num_threads(),
           "wall_s": time.time() - start,
           "protocol": (f"QualityPredictor ResNet-18, RGB {args.size}x{args.size} + 1 mask channel, batch "
                        f"{args.batch}, mean of {args.repeats} steps after one warm-up; activation memory = bytes "
                        f"saved for backward in one training forward; CPU, {torch.get_num_threads()} thread(s)")}
    rows = [(k, (f"train {v['train_img_per_s']:.1f} img/s; QAR {v['qar_img_per_s']:.1f} img/s; "
                 f"activations {v['activation_mb']:.0f} MB; {v['parameters_m']:.2f} M parameters"))
            for k, v in variants.items()]
    rows += [(f"decoder / plain, {w} width", (f"memory x{r['activation_memory']:.2f}; training speed "
                                             f"x{r['train_speed']:.2f}; QAR speed x{r['qar_speed']:.2f}"))
             for w, r in ratios.items()]
    rows.append(("wall s", f"{out['wall_s']:.0f}"))
    path = write_result("predictor_cost", out, rows, "Quality predictor: cost of the truth-map decoder")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
