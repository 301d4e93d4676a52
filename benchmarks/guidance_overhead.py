"""Cost of quality guidance: seconds per training step of each method unguided and guided.

    OMP_NUM_THREADS=1 python benchmarks/guidance_overhead.py [--config ssl_ph2] [--steps 12]

Protocol: the sizes of a config preset (default ``ssl_ph2``: 96x96 RGB, MONAI U-Net 16..128,
8 labeled + 16 unlabeled images, quality predictor ResNet-18 at quarter width with the
truth-map decoder at 96x96), synthetic tensors (the cost does not depend on the data or on the
predictor's weights, so a freshly initialised predictor of the preset's architecture is used),
one CPU thread, a full step = method step + guidance + backward + optimiser step + EMA hook;
median of ``--steps`` steps after 3 warm-up steps. Ratio = guided / unguided step of the same
method; for QAR alone the unguided method is SUP, which reads no unlabeled batch at all, so its
ratio includes the student's forward pass on the unlabeled batch that QAR adds.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_result  # noqa: E402

from qgseg.config import load_config  # noqa: E402
from qgseg.guidance import QualityCritic, QualityGuidance  # noqa: E402
from qgseg.models import build_model  # noqa: E402
from qgseg.quality.predictor import QualityPredictor  # noqa: E402
from qgseg.ssl import Batch, UnlabeledBatch, build_method  # noqa: E402

VARIANTS = {"sup": ("supervised", False, False), "qar": ("supervised", False, True)}
for _m in ("pl-c", "mt", "fixmatch", "cps", "bcp"):
    VARIANTS[_m] = (_m, False, False)
    VARIANTS[f"{_m}-qw"] = (_m, True, False)
    VARIANTS[f"{_m}-qw+qar"] = (_m, True, True)


def critic_for(cfg, channels: int, classes: list[str]) -> QualityCritic:
    q = cfg.quality
    size = q.image_size or cfg.data.image_size
    model = QualityPredictor(len(size), channels, len(classes) - 1, depth=q.depth, width=q.width,
                             no_max_pool=min(q.roi_size or size) < 64, truth_decoder=q.truth_map_weight > 0,
                             roi_size=q.roi_size, roi_margin=q.roi_margin, roi_min_fraction=q.roi_min_fraction)
    meta = {"classes": classes, "image_size": list(size), "normalize": cfg.data.normalize, "spatial_dims": len(size),
            "image_channels": channels}
    return QualityCritic(model, meta)


def step_seconds(cfg, variant: str, channels: int, classes: list[str], steps: int) -> float:
    method_name, qw, qar = VARIANTS[variant]
    cfg.ssl.method, cfg.guidance.qw, cfg.guidance.qar, cfg.guidance.qar_start = method_name, qw, qar, 0.0
    torch.manual_seed(0)
    method = build_method(cfg, len(classes))
    if qw or qar:
        method = QualityGuidance(method, critic_for(cfg, channels, classes), cfg.guidance)
    method.configure(1000, torch.Generator().manual_seed(0))
    m = cfg.model
    nets = {"student": build_model(m.name, 2, channels, len(classes), m.features, 0.0)}
    for name in method.extra_students:
        nets[name] = build_model(m.name, 2, channels, len(classes), m.features, 0.0)
    method.setup(nets["student"])
    opt = torch.optim.AdamW([p for n in nets.values() for p in n.parameters()], 1e-3)
    size = cfg.data.image_size
    b, bu = cfg.train.batch_size, cfg.ssl.unlabeled_batch_size or 2 * cfg.train.batch_size
    g = torch.Generator().manual_seed(0)
    labeled = Batch(torch.randn(b, channels, *size, generator=g), torch.randint(0, len(classes), (b, *size), generator=g))
    weak = torch.rand(bu, channels, *size, generator=g)
    unlabeled = UnlabeledBatch(weak, None, torch.full((bu, channels), 255.0), torch.zeros(bu, channels), True,
                               strong=weak.clone())
    times = []
    for i in range(steps + 3):
        t = time.perf_counter()
        for n in nets.values():
            n.train()
        out = method.step(nets, labeled, unlabeled, 500)
        loss = out.total()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        method.after_optimizer_step(nets, 500)
        if i >= 3:
            times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="ssl_ph2")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    args = parser.parse_args()
    torch.set_num_threads(1)
    cfg = load_config(args.config)
    channels = 3 if "ph2" in args.config else 1
    classes = cfg.data.classes or ["background", "foreground"]
    start = time.time()
    secs = {}
    for v in args.variants.split(","):
        secs[v] = step_seconds(cfg, v, channels, classes, args.steps)
        print(f"{v:>16}: {secs[v]:.3f} s/step", flush=True)
    ratios = {}
    for v in secs:
        if v == "qar":
            base = "sup"
        elif "-qw" in v:
            base = v.split("-qw")[0]
        else:
            continue
        if base in secs:
            ratios[v] = secs[v] / secs[base]
    with_unlabeled = {v: r for v, r in ratios.items() if v != "qar"}
    result = {"step_s": secs, "ratio": ratios, "max_ratio": max(with_unlabeled.values()) if with_unlabeled else None,
              "max_ratio_incl_qar_vs_sup": max(ratios.values()) if ratios else None, "wall_s": time.time() - start,
              "protocol": (f"{args.config}: image {cfg.data.image_size}, {cfg.model.name} {cfg.model.features}, batch "
                           f"{cfg.train.batch_size} labeled + {cfg.ssl.unlabeled_batch_size} unlabeled, predictor "
                           f"ResNet-{cfg.quality.depth} width {cfg.quality.width} at {cfg.quality.image_size} "
                           f"(roi {cfg.quality.roi_size}), synthetic tensors, 1 CPU thread, median of {args.steps} "
                           f"steps after 3 warm-up; max_ratio over guided variants of methods that read unlabeled "
                           f"data (QAR alone vs SUP reported separately)")}
    rows = [(v, f"{s:.3f} s" + (f" ({ratios[v]:.2f}x)" if v in ratios else "")) for v, s in secs.items()]
    rows.append(("max_ratio (guided / same method unguided)", f"{result['max_ratio']:.2f}"))
    name = "guidance_overhead" if args.config == "ssl_ph2" else f"guidance_overhead_{args.config}"
    path = write_result(name, result, rows, f"Guidance overhead per training step ({args.config})")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
