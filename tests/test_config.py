import pytest
import yaml

from qgseg.config import CONFIG_DIR, ConfigError, RunConfig, load_config, save_config


def test_defaults_and_overrides():
    cfg = load_config(None, ["train.lr=3e-4", "data.image_size=[64,64]", "model.name=unet++", "train.ema=0.99"])
    assert isinstance(cfg, RunConfig)
    assert cfg.train.lr == pytest.approx(3e-4)
    assert cfg.data.image_size == [64, 64]
    assert cfg.model.name == "unet++"
    assert cfg.train.ema == 0.99


def test_unknown_keys_are_named():
    with pytest.raises(ConfigError, match=r"train\.iteratons.*did you mean 'iterations'"):
        load_config({"train": {"iteratons": 10}})
    with pytest.raises(ConfigError, match="modle"):
        load_config({"modle": {}})
    with pytest.raises(ConfigError, match="unknown config key"):
        load_config(None, ["data.colour=1"])


def test_type_and_choice_errors_name_the_key():
    with pytest.raises(ConfigError, match=r"train\.iterations"):
        load_config({"train": {"iterations": "many"}})
    with pytest.raises(ConfigError, match=r"train\.optimizer"):
        load_config({"train": {"optimizer": "lbfgs"}})
    with pytest.raises(ConfigError, match=r"data\.image_size"):
        load_config({"data": {"image_size": [64]}})
    with pytest.raises(ConfigError, match="train.ema"):
        load_config(None, ["train.ema=1.5"])
    with pytest.raises(ConfigError, match="key.path=value"):
        load_config(None, ["nonsense"])


@pytest.mark.parametrize("preset", sorted(p.stem for p in CONFIG_DIR.glob("*.yaml")))
def test_every_committed_config_validates(preset):
    load_config(preset)


def test_missing_config_lists_presets():
    with pytest.raises(ConfigError, match="demo"):
        load_config("no-such-config")


def test_saved_config_round_trips(tmp_path):
    cfg = load_config("demo", ["train.iterations=7"])
    save_config(cfg, tmp_path / "config.yaml")
    again = load_config(tmp_path / "config.yaml")
    assert again == cfg
    assert yaml.safe_load((tmp_path / "config.yaml").read_text())["train"]["iterations"] == 7


def test_agreement_readout_needs_the_truth_map_decoder():
    from qgseg.config import ConfigError, load_config

    assert load_config("quality_demo", ["quality.readout=agreement"]).quality.readout == "agreement"
    with pytest.raises(ConfigError, match="truth_map_weight"):
        load_config("quality_demo", ["quality.readout=agreement", "quality.truth_map_weight=0"])
    with pytest.raises(ConfigError, match="quality.readout"):
        load_config("quality_demo", ["quality.readout=best"])


def test_early_stop_start_is_a_fraction():
    from qgseg.config import ConfigError, load_config
    from qgseg.quality.training import quality_run_config

    cfg = load_config("quality_ph2", ["quality.early_stop_start=0.25"])
    assert quality_run_config(cfg).train.early_stop_start == 0.25
    with pytest.raises(ConfigError, match="quality.early_stop_start"):
        load_config("quality_ph2", ["quality.early_stop_start=1.0"])
    with pytest.raises(ConfigError, match="train.early_stop_start"):
        load_config(None, ["train.early_stop_start=-0.1"])


def test_augment_settings_are_checked_and_named():
    cfg = load_config("quality_colondb", ["quality.augment.blur_p=0.25", "quality.augment.blur_sigma=[0.5, 2.0]"])
    assert cfg.quality.augment.blur_p == 0.25 and cfg.quality.augment.blur_sigma == [0.5, 2.0]
    assert cfg.quality.augment.color_p == 0.0, "off by default"
    for bad, key in (("quality.augment.blur_p=1.5", "quality.augment.blur_p"),
                     ("quality.augment.blur_sigma=[2.0, 1.0]", "quality.augment.blur_sigma"),
                     ("quality.augment.color_gain=1.0", "quality.augment.color_gain"),
                     ("quality.augment.blurp=0.1", "blur_p"),
                     ("train.augment.flip_p=-0.1", "train.augment.flip_p")):
        with pytest.raises(ConfigError, match=key):
            load_config("quality_colondb", [bad])
