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
    monkeypatch.setattr(arch, "committed_result", lambda name: None)  # no committed files: runs only
    for m, dice in (("sup", 0.91), ("mt", 0.92), ("mt-qw", 0.93)):
        _run(out / "ph2_unet++", f"{m}_s0", dice)
    for seed, base in ((0, 0.55), (1, 0.65)):
        for m, dice in (("sup", base), ("cps", base + 0.02), ("cps-qw", base + 0.04)):
            _run(out / "acdc3_attention-unet", f"{m}_s{seed}", dice)
    # the seed-1 call's own table, which knows seed 1 only
    (out / "acdc3_attention-unet" / "comparison.json").write_text(
        json.dumps({"methods": {m: {"per_seed": {"1": 0.6}} for m in ("sup", "cps", "cps-qw")}}))

    data, carried = arch.collect(["ph2", "acdc3"], Namespace(seeds="0,1,2", methods=None, output_dir=str(out)))

    attention = data["acdc3"]["attention-unet"]
    assert attention["cps-qw"]["seeds"] == [0, 1] and abs(attention["cps-qw"]["dice"] - 0.64) < 1e-9
    assert data["acdc3"]["unet"]["cps"]["seeds"] == [0, 1]
    assert data["ph2"]["unet"]["mt"]["seeds"] == [0] and abs(data["ph2"]["unet"]["mt"]["dice"] - 0.51) < 1e-9
    assert set(data["ph2"]) == {"unet", "unet++"} and data["ph2"]["unet++"]["mt-qw"]["dice"] == 0.93
    assert carried == {}


def test_a_fresh_checkout_keeps_the_committed_seeds_and_settings_it_has_no_runs_for(tmp_path, monkeypatch):
    """Adding one network's seed in a checkout without the other run folders keeps every committed number,
    and the U-Net column comes from the committed study result (all its seeds)."""
    arch = load_bench("study_architectures")
    out = tmp_path / "architectures"
    study = {"methods": {m: {"per_seed": {"0": 0.5, "1": 0.6, "2": 0.7}, "wall_s": 5.0}
                         for m in ("sup", "mt", "mt-qw")}}
    (tmp_path / "study_ph2.json").write_text(json.dumps(study))
    monkeypatch.setattr(arch, "committed_result", lambda name: json.loads((tmp_path / f"{name}.json").read_text()))
    settings = {"ph2": {**arch.SETTINGS["ph2"], "grid": str(tmp_path / "gone"), "result": "study_ph2"}}
    monkeypatch.setattr(arch, "SETTINGS", settings)
    committed = {"ph2": {"attention-unet": {m: {"per_seed": {"0": 0.8, "1": 0.81}, "wall_s": 9.0}
                                            for m in ("sup", "mt", "mt-qw")}},
                 "acdc3": {"unet": {"cps": {"per_seed": {"0": 0.55}}}}}
    for m, dice in (("sup", 0.82), ("mt", 0.83), ("mt-qw", 0.84)):
        _run(out / "ph2_attention-unet", f"{m}_s2", dice)

    data, carried = arch.collect(["ph2"], Namespace(seeds="0,1,2", methods=None, output_dir=str(out)), committed)

    assert data["acdc3"] == committed["acdc3"] and "not asked for" in carried["acdc3"]
    att = data["ph2"]["attention-unet"]["mt-qw"]
    assert att["seeds"] == [0, 1, 2] and abs(att["dice"] - (0.8 + 0.81 + 0.84) / 3) < 1e-9
    assert carried["ph2 attention-unet"]["mt-qw"] == [0, 1]
    assert data["ph2"]["unet"]["mt"]["seeds"] == [0, 1, 2] and carried["ph2 unet"]["mt"] == [0, 1, 2]
    # the report after a training call (`--seeds 2`) tabulates every seed, not just the one trained
    data, _ = arch.collect(["ph2"], Namespace(seeds=None, methods=None, output_dir=str(out)), committed)
    assert data["ph2"]["attention-unet"]["sup"]["seeds"] == [0, 1, 2]
    assert data["ph2"]["unet"]["sup"]["seeds"] == [0, 1, 2]
    narrowed, _ = arch.collect(["ph2"], Namespace(seeds="2", methods=None, output_dir=str(out)), committed)
    assert narrowed["ph2"]["attention-unet"]["sup"]["seeds"] == [2]  # --report-only --seeds narrows on purpose
