"""Issue 14, second axis: segmentation architectures on PH2 and ACDC-3 (the study's protocols).

    OMP_NUM_THREADS=1 python benchmarks/study_architectures.py ph2 --archs unet++,attention-unet,swin-unetr \\
        --seeds 0 --data-root ../shared/data
    python benchmarks/study_architectures.py ph2 acdc3 --report-only

For each setting and architecture: SUP, the setting's best unguided method of the study and its
guided variant (PH2: MT and MT-QW; ACDC-3: CPS and CPS-QW, over 3 seeds; ``--methods`` overrides), each a
``qgseg compare`` grid with ``model.name`` (and the widths below) changed and the study's quality
predictor (the predictor judges masks, not networks, so one predictor per setting serves every
architecture). U-Net is the study's own grid (``--base-grid``). Runs go to ``--output-dir``
(resumable). Writes ``benchmarks/results/study_architectures.{json,md,png}``.

Widths (CPU-sized, documented in docs/benchmarks.md): U-Net++ 8..128 (0.57 M parameters; at the U-Net's
widths it costs ~11x a U-Net step); Attention U-Net the U-Net's; SwinUNETR ``feature_size`` 12 (MONAI's
smallest multiple of 12; image sides 96 and 128 are multiples of 32 as it needs). Measured forward +
backward of 24 images on one (shared) thread, 96 / 128 px: U-Net 0.24 / 0.48 s, U-Net++ 1.25 / 2.35 s,
Attention U-Net 0.65 / 1.48 s, SwinUNETR 1.30 / 2.73 s: the three others exceed the study's ~12 minutes
per run on one thread (2-5x a U-Net run), so this axis is meant for a GPU or a long CPU session.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (DEFAULT_DATA_ROOT, carry_committed, committed_result, grid_rows, qgseg_cli,  # noqa: E402
                    refresh_comparison, write_result)

OUT_NAME = "study_architectures"

# setting -> preset, study grid (U-Net) and its result file, predictor, default methods (SUP, best unguided,
# its guided variant)
SETTINGS = {
    "ph2": {"preset": "ssl_ph2", "grid": "runs/bench/ssl_ph2_grid", "result": "study_ph2",
            "predictor": "runs/bench/q_ssl_ph2/checkpoints/best.ckpt",
            "methods": ["sup", "mt", "mt-qw"], "overrides": []},
    "acdc3": {"preset": "ssl_acdc", "grid": "runs/bench/ssl_acdc3_grid", "result": "study_acdc3",
              "predictor": "runs/bench/q_ssl_acdc/checkpoints/best.ckpt", "methods": ["sup", "cps", "cps-qw"],
              "overrides": []},
}
ARCH_OVERRIDES = {
    "unet++": {"ph2": ["model.features=[8,16,32,64,128]"], "acdc3": ["model.features=[8,16,32,64,128]"]},
    "attention-unet": {"ph2": [], "acdc3": []},
    "swin-unetr": {"ph2": ["model.features=[12]"], "acdc3": ["model.features=[12]"]},
}
ARCHS = ["unet", *ARCH_OVERRIDES]


def collect(settings: list[str], args, committed: dict | None = None) -> tuple[dict, dict]:
    """``({setting: {arch: grid_rows}}, carried)`` on the seeds asked for. Each architecture grid's comparison
    is rebuilt from all its finished runs first (a later ``--seeds 1`` call's table holds seed 1 only); the
    U-Net column (the study grid, 3 seeds) is narrowed to the seeds the other networks of the setting
    have, so the networks are compared on the same seeds. ``committed`` (the committed result's
    ``settings``) completes what has no run folder here: its seeds of a network, and whole settings
    not asked for, so that adding one network's seed never drops the rest; ``carried`` lists them.
    ``args.seeds`` None: every seed."""
    seeds = [s.strip() for s in args.seeds.split(",")] if args.seeds else None
    committed = committed or {}
    out: dict = {s: rows for s, rows in committed.items() if s not in settings}
    carried: dict = {s: "the whole setting (not asked for)" for s in out}
    for s in settings:
        spec = SETTINGS[s]
        methods = args.methods.split(",") if args.methods else spec["methods"]
        old = {arch: {m: r for m, r in rows.items() if m in methods} for arch, rows in committed.get(s, {}).items()}
        rows = {}
        for arch in ARCHS[1:]:
            grid = Path(args.output_dir) / f"{s}_{arch}"
            if (grid / "runs").is_dir():
                refresh_comparison(grid, methods)
            found, carried[f"{s} {arch}"] = carry_committed(grid_rows(grid, methods, seeds), old.get(arch), seeds)
            if found:
                rows[arch] = found
        seeds_run = sorted({str(k) for r in rows.values() for m in r.values() for k in m["seeds"]}, key=int)
        # U-Net without its grid here: the committed study result, which has every seed the grid had
        study = {m: r for m, r in ((committed_result(spec["result"]) or {}).get("methods") or {}).items()
                 if m in methods}
        unet, carried[f"{s} unet"] = carry_committed(grid_rows(Path(spec["grid"]), methods, seeds_run or seeds),
                                                     study or old.get("unet"), seeds_run or seeds)
        out[s] = {"unet": unet, **rows} if unet else rows
    return out, {k: v for k, v in carried.items() if v}


def plot(data: dict, path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5 * len(data), 3.4))
    FigureCanvasAgg(fig)
    for k, (setting, rows) in enumerate(data.items(), start=1):
        ax = fig.add_subplot(1, len(data), k)
        archs = list(rows)
        methods = sorted({m for r in rows.values() for m in r}, key=lambda m: (m != "sup", "-qw" in m, m))
        width = 0.8 / max(1, len(methods))
        for j, m in enumerate(methods):
            xs = [i + (j - (len(methods) - 1) / 2) * width for i, a in enumerate(archs) if m in rows[a]]
            ys = [rows[a][m]["dice"] for a in archs if m in rows[a]]
            errs = [rows[a][m]["dice_std"] or 0 for a in archs if m in rows[a]]
            ax.bar(xs, ys, width, yerr=errs, label=m)
        ax.set_xticks(range(len(archs)), archs, fontsize=8)
        lo = min((r[m]["dice"] for r in rows.values() for m in r), default=0)
        ax.set_ylim(max(0, lo - 0.1), None)
        ax.set_title(setting)
        ax.set_ylabel("test Dice")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("settings", nargs="+", choices=sorted(SETTINGS))
    parser.add_argument("--archs", default=",".join(ARCH_OVERRIDES), help="architectures to train (U-Net is the study grid)")
    parser.add_argument("--methods", default=None, help="override the setting's SUP,best unguided,guided")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--jobs", type=int, default=1, help="runs at a time (qgseg compare --jobs; one thread each)")
    parser.add_argument("--data-root", default=str(DEFAULT_DATA_ROOT))
    parser.add_argument("--output-dir", default="runs/bench/architectures")
    parser.add_argument("--report-only", action="store_true")
    parser.add_argument("--note", default=None, help="provenance to record (e.g. the command that trained the runs)")
    args = parser.parse_args()
    start = time.time()
    out_dir = Path(args.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    archs = [a.strip() for a in args.archs.split(",") if a.strip()]
    unknown = [a for a in archs if a not in ARCH_OVERRIDES]
    if unknown:
        raise SystemExit(f"unknown architecture {unknown}; choose from {', '.join(ARCH_OVERRIDES)}")
    if not args.report_only:
        for s in args.settings:
            spec = SETTINGS[s]
            methods = args.methods or ",".join(spec["methods"])
            for arch in archs:
                sets = [f"model.name={arch}", *ARCH_OVERRIDES[arch][s], *spec["overrides"]]
                t0 = time.time()
                qgseg_cli(["compare", spec["preset"], "--methods", methods, "--seeds", args.seeds,
                           "--jobs", str(args.jobs),
                           "--predictor", spec["predictor"], "--data-root", args.data_root, "--output-dir", str(out_dir),
                           "--name", f"{s}_{arch}", *[x for o in sets for x in ("--set", o)]],
                          out_dir / f"{s}_{arch}.log")
                print(f"{s} {arch}: done in {time.time() - t0:.0f} s", flush=True)
    # after training, tabulate every seed: a table of the seeds just trained would replace the others
    report = args if args.report_only else argparse.Namespace(**{**vars(args), "seeds": None})
    data, carried = collect(args.settings, report, (committed_result(OUT_NAME) or {}).get("settings"))
    rows = []
    for s, by_arch in data.items():
        for arch, methods in by_arch.items():
            cells = "; ".join(f"{m} {r['dice']:.4f}" + (f" ± {r['dice_std']:.4f}" if r["dice_std"] else "")
                              + f" (n={len(r['seeds'])})" for m, r in methods.items())
            rows.append((f"{s} {arch}", cells))
    result = {"settings": data, "seeds": args.seeds, "wall_s": time.time() - start, "note": args.note,
              "carried_over": carried,
              "widths": ARCH_OVERRIDES,
              "protocol": ("the study's protocols (configs/ssl_ph2.yaml, configs/ssl_acdc.yaml) with model.name changed; "
                           "the setting's own quality predictor; SUP, the best unguided method and its guided variant; "
                           f"seeds {args.seeds if args.report_only else 'all'} (each network on those it has run); "
                           "U-Net from the study grid "
                           "on the seeds the other networks of the setting have; CPU, one thread per run")}
    if carried:
        rows.append(("carried over", "committed results without a run folder here, kept as they were: " + "; ".join(
            f"{k}: {v if isinstance(v, str) else ', '.join(f'{m} seeds {s}' for m, s in v.items())}"
            for k, v in carried.items())))
    rows += [("note", args.note)] if args.note else []
    path = write_result(OUT_NAME, result, rows, "Architectures (issue 14, second axis)",
                        draw=(lambda out: plot(data, out)) if rows else None)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
