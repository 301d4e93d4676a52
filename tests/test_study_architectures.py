"""benchmarks/study_architectures.py: the report counts every seed an architecture grid has run, and compares
the study grid's U-Net on the seeds the other networks have."""
import json
from argparse import Namespace
from pathlib import Path

from test_benchmark_common import _run, load_bench


def _study_grid(path: Path, methods: list[str]) -> Path:
    per_seed = {m: {"per_seed": {"0": 0.50 + i / 100, "1": 0.60 + i / 100, "2": 0.70 + i / 100}}
                for i, m in enumerate(methods)}
    path.mkdir(parents=True)
    (path / "comparison.json").write_text(json.dumps({"methods": per_seed}))
    return path


def test_a_later_seed_joins_its_grid_and_unet_is_compared_on_the_same_seeds(tmp_path, monkeypatch):
    arch = load_bench("study_architectures")
    out = tmp_path / "architectures"
    settings = {
        "ph2": {**arch.SETTINGS["ph2"], "grid": str(_study_grid(tmp_path / "ph2_grid", ["sup", "mt", "mt-qw"]))},
        "acdc3": {**arch.SETTINGS["acdc3"], "grid": str(_study_grid(tmp_path / "acdc_grid", ["sup", "cps", "cps-qw"]))},
    }
    monkeypatch.setattr(arch, "SETTINGS", settings)
    for m, dice in (("sup", 0.91), ("mt", 0.92), ("mt-qw", 0.93)):
        _run(out / "ph2_unet++", f"{m}_s0", dice)
    for seed, base in ((0, 0.55), (1, 0.65)):
        for m, dice in (("sup", base), ("cps", base + 0.02), ("cps-qw", base + 0.04)):
            _run(out / "acdc3_attention-unet", f"{m}_s{seed}", dice)
    # the seed-1 call's own table, which knows seed 1 only
    (out / "acdc3_attention-unet" / "comparison.json").write_text(
        json.dumps({"methods": {m: {"per_seed": {"1": 0.6}} for m in ("sup", "cps", "cps-qw")}}))

    data = arch.collect(["ph2", "acdc3"], Namespace(seeds="0,1,2", methods=None, output_dir=str(out)))

    attention = data["acdc3"]["attention-unet"]
    assert attention["cps-qw"]["seeds"] == [0, 1] and abs(attention["cps-qw"]["dice"] - 0.64) < 1e-9
    assert data["acdc3"]["unet"]["cps"]["seeds"] == [0, 1]
    assert data["ph2"]["unet"]["mt"]["seeds"] == [0] and abs(data["ph2"]["unet"]["mt"]["dice"] - 0.51) < 1e-9
    assert set(data["ph2"]) == {"unet", "unet++"} and data["ph2"]["unet++"]["mt-qw"]["dice"] == 0.93
