"""Typed run configuration: YAML files -> dataclasses, with CLI overrides and strict key checking.

A config is a tree of dataclasses. ``load_config`` reads a YAML file (optionally a preset
name from ``configs/``), applies ``key.path=value`` overrides and validates everything into
:class:`RunConfig`; unknown keys are rejected with a message that names them (and suggests
the closest valid key), so a typo never silently falls back to a default.
"""
from __future__ import annotations

import dataclasses
import re
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import yaml

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"


_SCIENTIFIC = re.compile(r"[+-]?\d+(\.\d*)?[eE][+-]?\d+")
#: Names of MONAI's FlexibleUNet on a ResNet encoder (group 1: the depth; empty = 18), see qgseg.models.
RESNET_UNET = re.compile(r"resnet(\d*)-unet|flexible-?unet")
#: Quality-predictor backbones (``quality.backbone``): MONAI ResNet (depth/width) or a MONAI classifier.
QUALITY_BACKBONES = ("resnet", "densenet121", "efficientnet-b0")


class ConfigError(ValueError):
    """A config value or key is invalid; the message names the key path."""


@dataclass
class DataConfig:
    """Where the data comes from and how it is turned into training tensors."""

    dataset: str = "demo"  # folder / csv / yaml path, or "demo" for the built-in data
    root: str | None = None  # base for relative dataset paths (``--data-root``)
    classes: list[str] | None = None  # class names incl. background; inferred when None
    image_size: list[int] = field(default_factory=lambda: [96, 96])  # training size (H, W[, D])
    resize: bool = True  # True: resize whole images to image_size; False: random crops + sliding window
    # with resize false: share of each labeled batch cropped around a foreground voxel (nnU-Net's 0.33)
    fg_oversample: float = 0.33
    # labeled cases read like the unlabeled pool (DataLoader workers, bounded cache) instead of all held as
    # float32: false | true | auto (lazy when their estimated float32 size exceeds labeled_cache_mb)
    lazy_labeled: bool | str = False
    labeled_cache_mb: int = 2048  # bound of the lazy labeled cache (split over ssl.pool_workers), auto's threshold
    normalize: str = "auto"  # auto | unit (x/255) | zscore | none
    train_split: str = "train"
    val_split: str = "val"
    test_split: str = "test"
    unlabeled_split: str | None = "unlabeled"
    unlabeled: str | None = None  # extra folder/dataset of unlabeled images
    # at most this many unlabeled images (pool-size studies): a fixed random subset (data.split_seed) of the
    # whole pool; subsets of one seed are nested (the 250 are among the 500)
    unlabeled_limit: int | None = None
    labeled: float | None = None  # int >= 1: number of labeled groups (first in order); fraction < 1: of groups
    split_sizes: dict[str, float] | None = None  # used when the data has no predefined splits
    split_seed: int = 0
    # folder of <split>.txt id lists that replace the data's splits of that name (kept with the configs:
    # relative paths are tried from the working directory, then from configs/)
    splits_dir: str | None = None
    augment: bool = True
    max_cases: int | None = None  # cap per split, for smoke tests
    skip_bad: bool = False  # leave out cases that cannot be indexed (listed) instead of refusing the data
    # binarise raster masks at this grey value (1..255): for binary masks saved as JPEG (values 0-8, 247-255)
    mask_threshold: int | None = None


@dataclass
class ModelConfig:
    """Segmentation network; see :func:`qgseg.models.build_segmenter`."""

    name: str = "unet"  # unet | unet++ | attention-unet | swin-unetr | segresnet | resnet-unet (resnet<depth>-unet)
    features: list[int] = field(default_factory=lambda: [16, 32, 64, 128, 256])
    dropout: float = 0.0
    pretrained: str | None = None  # local weight file (.pt/.safetensors)


@dataclass
class AugmentConfig:
    """Random augmentation of training batches (:mod:`qgseg.data.augment`). Each ``*_p`` is the
    probability per sample; blur and colour are off by default so that older runs reproduce."""

    flip_p: float = 0.5
    rotate_deg: float = 20.0
    scale: list[float] = field(default_factory=lambda: [0.85, 1.15])
    affine_p: float = 0.5
    brightness: float = 0.1
    contrast: list[float] = field(default_factory=lambda: [0.8, 1.2])
    gamma: list[float] = field(default_factory=lambda: [0.8, 1.25])
    noise_std: float = 0.03
    intensity_p: float = 0.5
    blur_p: float = 0.0  # Gaussian blur (in-plane): defocus and motion blur of endoscopy/ultrasound frames
    blur_sigma: list[float] = field(default_factory=lambda: [0.5, 1.5])  # pixels, drawn uniformly
    color_p: float = 0.0  # per-channel gains (white balance / light colour) of multi-channel images
    color_gain: float = 0.1  # gains drawn uniformly from [1 - color_gain, 1 + color_gain]


@dataclass
class TrainConfig:
    """Optimisation schedule of the shared training engine."""

    iterations: int = 2000
    batch_size: int = 8
    optimizer: str = "adamw"  # adamw | sgd
    lr: float = 1e-3
    weight_decay: float = 1e-4
    momentum: float = 0.9
    schedule: str = "poly"  # poly | cosine | constant
    warmup: int = 0
    val_every: int = 200
    checkpoint_every: int | None = None  # default: val_every
    early_stop_patience: int | None = None  # in validations without improvement
    early_stop_start: float = 0.0  # fraction of iterations before which no validation counts against the patience
    ema: float | None = None  # EMA decay of the weights used for validation, e.g. 0.99
    loss: str = "dice_ce"  # dice_ce | ce | dice
    seed: int = 0
    deterministic: bool = False
    select: str = "best"  # best: checkpoint with the best validation metric | last: the last model, no selection
    augment: AugmentConfig = field(default_factory=AugmentConfig)  # of labeled batches (when data.augment)


@dataclass
class RuntimeConfig:
    """Lightning Fabric settings."""

    accelerator: str = "auto"  # cpu | gpu | cuda | mps | auto
    devices: Union[int, str] = 1
    strategy: str = "auto"  # auto | ddp | ...
    precision: str = "32-true"  # 32-true | 16-mixed | bf16-mixed
    num_nodes: int = 1
    progress: bool = True
    # intra-op CPU threads per process; null: OMP_NUM_THREADS if set, else min(available CPUs, 8)
    # (qgseg.threads explains why; `qgseg compare --jobs N` gives each run CPUs // N)
    threads: int | None = None


@dataclass
class EvalConfig:
    """Evaluation and prediction."""

    overlays: int = 4  # number of overlay PNGs written
    sw_batch_size: int = 4
    sw_overlap: float = 0.25


@dataclass
class PretrainConfig:
    """Self-supervised pretraining of the predictor's encoder on the run's training images
    (:mod:`qgseg.quality.pretrain`); ``steps: 0`` switches it off."""

    steps: int = 0
    batch_size: int = 16
    lr: float = 1e-3


@dataclass
class QualityConfig:
    """Quality predictor (phase 1)."""

    backbone: str = "resnet"  # resnet (depth, width) | densenet121 | efficientnet-b0 (MONAI, standard sizes)
    depth: int = 18
    width: list[int] | None = None  # ResNet block widths; None = standard (64,128,256,512)
    image_size: list[int] | None = None  # images/masks prepared (and Dice measured) at this size; default data.image_size
    masks_per_image: int = 10
    epochs: int = 10
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-4
    loss: str = "smoothl1"  # smoothl1 | mse
    val_every_epochs: int = 1
    early_stop_patience: int | None = None
    early_stop_start: float = 0.5  # early validations (high learning rate) are noisy; only the second half counts
    probabilities: dict[str, float] | None = None  # sampler category probabilities
    soft_fraction: float = 0.15
    balance_bins: int | None = None
    weak_epochs: list[int] = field(default_factory=lambda: [1, 3, 5, 10, 15, 20])
    weak_model: str | None = None  # default: model.name
    weak_iterations_per_epoch: int | None = None  # default: labeled cases / batch size
    weak_probability: float = 0.15
    weak_folds: int = 1  # >1: cross-fitted snapshots, each predicting the labeled images it never saw
    pretrained: str | None = None  # local encoder weights (.pt/.safetensors: ImageNet, RadImageNet, qgseg quality pretrain)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)  # steps > 0 and no `pretrained`: pretrain first
    augment: AugmentConfig = field(default_factory=AugmentConfig)  # of the training images (spatial + intensity)
    truth_map_weight: float = 1.0  # >0: add the truth-map decoder, trained with this weight on a dense loss; 0: plain ResNet
    roi_size: list[int] | None = None  # network input = mask-centred crop of this size (None: the whole image_size input)
    roi_margin: float = 0.5  # context on each side of that crop, as a fraction of the mask extent
    roi_min_fraction: float = 0.25  # smallest crop side, as a fraction of the image side
    readout: str = "auto"  # decoder models: "agreement" (mask vs decoded truth), "fused" (regression head), "auto" (lower val MAE)
    eval_masks_per_image: int = 5
    eval_seed: int = 1234
    eval_tta: bool = False  # flip test-time augmentation in the final evaluation
    eval_weak_model: str | None = None  # unseen networks for the real-mask evaluation; default: weak model, other seed
    eval_weak_epochs: list[int] | None = None  # epochs of those unseen snapshots; default: weak_epochs
    eval_real_networks: bool = True  # train those unseen snapshots after the predictor (evaluation part b)


@dataclass
class SSLConfig:
    """Semi-supervised method (phase 2); see :mod:`qgseg.ssl` for the methods and their knobs."""

    method: str = "supervised"  # supervised | pl-t | pl-c | mt | ua-mt | ict | cps | cl | fixmatch | bcp
    unlabeled_batch_size: int | None = None  # default: 2 x train.batch_size
    unlabeled_weight: float | None = None  # lambda_max of the unlabeled loss; None: the method's default
    rampup: float | None = None  # fraction of the iterations of lambda(t)'s sigmoid ramp-up; None: method default
    params: dict[str, Any] = field(default_factory=dict)  # method knobs (ema_decay, confidence, ...), validated
    pool_cache_mb: int = 2048  # bound of the unlabeled pool's in-memory cache (images are read lazily)
    pool_workers: int | None = None  # DataLoader processes reading the pool; None: 2 on a GPU, 0 on CPU
    pool_prefetch: int = 2  # unlabeled batches each pool worker reads ahead
    strong: AugmentConfig = field(default_factory=lambda: AugmentConfig(
        flip_p=0.0, affine_p=0.0, intensity_p=1.0, brightness=0.2, contrast=[0.6, 1.4], gamma=[0.7, 1.5],
        noise_std=0.05, blur_p=0.5, color_p=0.8, color_gain=0.2))  # photometric part of the strong view


@dataclass
class GuidanceConfig:
    """Quality guidance of any SSL method by a frozen quality predictor g (see :mod:`qgseg.guidance`)."""

    predictor: str | None = None  # checkpoint / run folder; None: `qgseg run` trains one (phase 1)
    qar: bool = False  # quality-aware regularisation: + lambda_qar(t) * (1 - mean g(x_u, softmax f(x_u)))
    qar_weight: float = 0.01  # lambda_qar after its ramp (published default)
    qar_start: float = 0.1  # fraction of the iterations before QAR starts (warm-up: g judges random masks badly)
    qar_rampup: float = 0.2  # fraction of the iterations of the linear ramp after qar_start
    qar_truth_stopgrad: bool = True  # stop the gradient through g's decoded truth (student cannot move g's truth)
    qw: bool = False  # quality-weighted pseudolabels: w = q^T [q >= tau], normalised over the batch
    qw_power: float = 2.0  # T
    qw_threshold: float = 0.5  # tau
    qw_keep: float = 1.0  # share of each batch's pseudolabels -QW may keep: the best-rated by g (per class); 1: all
    qw_start: float = 0.0  # fraction of the iterations with uniform weights before -QW starts
    qw_per_class: bool = True  # multi-class: one weight per class (g predicts a Dice per class); false: mean
    allow_unverified_predictor: bool = False  # accept a predictor that does not record its training cases
    probe_cases: int = 16  # labeled cases whose pseudolabels g scores at each validation (logged only; 0: off)

    @property
    def enabled(self) -> bool:
        return self.qar or self.qw


@dataclass
class RunConfig:
    """A whole run: what ``qgseg train`` / ``qgseg demo`` consume and save as ``config.yaml``."""

    name: str = "run"
    output_dir: str = "runs"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    quality: QualityConfig = field(default_factory=QualityConfig)
    ssl: SSLConfig = field(default_factory=SSLConfig)
    guidance: GuidanceConfig = field(default_factory=GuidanceConfig)


# ----------------------------------------------------------------------------- validation

def _check_value(value: Any, tp: Any, path: str) -> Any:
    """Coerce/validate ``value`` against the annotation ``tp``; raise ConfigError naming ``path``."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _check_value(value, arg, path)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(f"{path}: {value!r} does not match {tp}")
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a mapping, got {value!r}")
        return from_dict(tp, value, path)
    if origin is list:
        if isinstance(value, tuple):
            value = list(value)
        if not isinstance(value, list):
            raise ConfigError(f"{path}: expected a list, got {value!r}")
        (item_tp,) = typing.get_args(tp)
        return [_check_value(v, item_tp, f"{path}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a mapping, got {value!r}")
        key_tp, val_tp = typing.get_args(tp)
        return {_check_value(k, key_tp, path): _check_value(v, val_tp, f"{path}.{k}") for k, v in value.items()}
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{path}: expected a number, got {value!r}")
        return float(value) if not isinstance(value, int) else value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{path}: expected an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: expected true/false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{path}: expected a string, got {value!r}")
        return value
    return value


def from_dict(cls: type, data: dict[str, Any], path: str = "") -> Any:
    """Build dataclass ``cls`` from ``data``; unknown keys raise ConfigError naming them."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in data if k not in names]
    if unknown:
        msgs = []
        for key in unknown:
            full = f"{path}.{key}" if path else key
            close = difflib.get_close_matches(key, names, n=1)
            msgs.append(full + (f" (did you mean '{close[0]}'?)" if close else ""))
        section = path or "top level"
        raise ConfigError(f"unknown config key(s) in {section}: {', '.join(msgs)}; valid keys: {', '.join(names)}")
    kwargs = {k: _check_value(v, hints[k], f"{path}.{k}" if path else k) for k, v in data.items()}
    return cls(**kwargs)


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def _set_path(tree: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = tree
    for key in keys[:-1]:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {dotted}: '{key}' is not a section")
    node[keys[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    """``train.lr=3e-4`` -> ("train.lr", 0.0003); values are parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"override '{text}' must look like key.path=value")
    key, raw = text.split("=", 1)
    value = yaml.safe_load(raw) if raw.strip() else None
    if isinstance(value, str) and _SCIENTIFIC.fullmatch(value):  # PyYAML reads 3e-4 as a string
        value = float(value)
    return key.strip(), value


def resolve_config_path(name_or_path: str | Path) -> Path:
    """A YAML path, or the name of a preset in ``configs/`` (``demo`` -> configs/demo.yaml)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    preset = CONFIG_DIR / f"{name_or_path}.yaml"
    if preset.is_file():
        return preset
    presets = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml")) if CONFIG_DIR.is_dir() else []
    raise ConfigError(f"config '{name_or_path}' not found: not a file, and not a preset ({', '.join(presets) or 'none'})")


_GPU_COMMENT = re.compile(r"^(?P<indent>\s*)(?P<key>[\w.]+):\s*(?P<value>[^#]*?)\s*#\s*GPU:\s*(?P<gpu>.+?)\s*$")


def preset_gpu_overrides(name_or_path: str | Path) -> list[str]:
    """The ``--set`` overrides of a preset's GPU sizes, read from its ``# GPU: value`` comments.

    Presets default to sizes that train on a CPU in minutes; each size knob carries its GPU
    value as a comment (``image_size: [128, 128]  # GPU: [224, 224]``). Only one level of
    nesting (``section.key``) is used by the presets, which is all this reads.
    """
    section, out = "", []
    for line in resolve_config_path(name_or_path).read_text().splitlines():
        if line and not line[0].isspace() and line.rstrip().endswith(":"):
            section = line.split(":", 1)[0].strip()
        m = _GPU_COMMENT.match(line)
        if m and m["gpu"].replace(" ", "") != m["value"].replace(" ", ""):
            key = f"{section}.{m['key']}" if m["indent"] else m["key"]
            out.append(f"{key}={m['gpu'].replace(' ', '')}")
    return out


def load_config(source: str | Path | dict | None = None, overrides: list[str] | None = None) -> RunConfig:
    """Load a :class:`RunConfig` from a YAML path / preset name / dict, then apply overrides."""
    if source is None:
        tree: dict[str, Any] = {}
    elif isinstance(source, dict):
        tree = dict(source)
    else:
        path = resolve_config_path(source)
        with open(path) as fh:
            try:
                tree = yaml.safe_load(fh) or {}
            except yaml.YAMLError as exc:
                raise ConfigError(f"{path}: invalid YAML: {exc}") from exc
        if not isinstance(tree, dict):
            raise ConfigError(f"{path}: the top level must be a mapping")
    for text in overrides or []:
        key, value = parse_override(text)
        _set_path(tree, key, value)
    cfg = from_dict(RunConfig, tree)
    validate(cfg)
    return cfg


def validate(cfg: RunConfig) -> None:
    """Cross-field checks that types alone cannot express."""
    choices = {
        "train.optimizer": (cfg.train.optimizer, {"adamw", "sgd"}),
        "train.schedule": (cfg.train.schedule, {"poly", "cosine", "constant"}),
        "train.loss": (cfg.train.loss, {"dice_ce", "ce", "dice"}),
        "train.select": (cfg.train.select, {"best", "last"}),
        "data.normalize": (cfg.data.normalize, {"auto", "unit", "zscore", "none"}),
        "quality.loss": (cfg.quality.loss, {"smoothl1", "mse"}),
        "quality.readout": (cfg.quality.readout, {"auto", "agreement", "fused"}),
        "quality.backbone": (cfg.quality.backbone, set(QUALITY_BACKBONES)),
    }
    for key, (value, allowed) in choices.items():
        if value not in allowed:
            raise ConfigError(f"{key}: '{value}' is not one of {sorted(allowed)}")
    if cfg.quality.readout == "agreement" and cfg.quality.truth_map_weight <= 0:
        raise ConfigError("quality.readout: 'agreement' needs the truth-map decoder (quality.truth_map_weight > 0)")
    if cfg.quality.backbone != "resnet":
        if cfg.quality.truth_map_weight > 0:
            raise ConfigError(f"quality.backbone: the truth-map decoder needs a ResNet backbone, not "
                              f"{cfg.quality.backbone}; set quality.truth_map_weight=0")
        if cfg.quality.width is not None:
            raise ConfigError(f"quality.width sets ResNet stage widths; quality.backbone {cfg.quality.backbone} "
                              "has its standard widths (set quality.width=null)")
        if cfg.quality.pretrain.steps > 0 and not cfg.quality.pretrained:
            raise ConfigError(f"quality.pretrain pretrains a ResNet encoder; with quality.backbone "
                              f"{cfg.quality.backbone} set quality.pretrain.steps=0")
    if cfg.train.iterations < 1:
        raise ConfigError("train.iterations must be >= 1")
    if cfg.train.select == "last" and cfg.train.early_stop_patience is not None:
        raise ConfigError("train.early_stop_patience needs train.select: best (early stopping judges validations; "
                          "with 'last' nothing is selected on them)")
    if cfg.train.batch_size < 1:
        raise ConfigError("train.batch_size must be >= 1")
    if cfg.train.val_every < 1:
        raise ConfigError("train.val_every must be >= 1")
    if isinstance(cfg.data.lazy_labeled, str) and cfg.data.lazy_labeled != "auto":
        raise ConfigError(f"data.lazy_labeled must be true, false or auto, got '{cfg.data.lazy_labeled}'")
    if not 0.0 <= cfg.data.fg_oversample <= 1.0:
        raise ConfigError(f"data.fg_oversample is a share of the batch in [0, 1], got {cfg.data.fg_oversample}")
    if len(cfg.data.image_size) not in (2, 3):
        raise ConfigError(f"data.image_size must have 2 or 3 entries, got {cfg.data.image_size}")
    for key, start in (("train", cfg.train.early_stop_start), ("quality", cfg.quality.early_stop_start)):
        if not 0.0 <= start < 1.0:
            raise ConfigError(f"{key}.early_stop_start must be in [0, 1), got {start}")
    q = cfg.quality
    if q.roi_size is not None:
        size = q.image_size or cfg.data.image_size
        if len(q.roi_size) != len(size) or min(q.roi_size) < 1:
            raise ConfigError(f"quality.roi_size must be {len(size)} positive sizes (like the predictor input "
                              f"{list(size)}), got {q.roi_size}")
        if q.roi_margin < 0 or not 0.0 < q.roi_min_fraction <= 1.0:
            raise ConfigError(f"quality.roi_margin must be >= 0 and quality.roi_min_fraction in (0, 1], "
                              f"got {q.roi_margin} and {q.roi_min_fraction}")
    _validate_ranges(cfg)
    _validate_image_size(cfg)
    _validate_augment(cfg.train.augment, "train.augment")
    _validate_augment(q.augment, "quality.augment")
    _validate_augment(cfg.ssl.strong, "ssl.strong")
    if cfg.train.ema is not None and not 0.0 < cfg.train.ema < 1.0:
        raise ConfigError(f"train.ema must be in (0, 1), got {cfg.train.ema}")
    _validate_ssl(cfg)


#: Numeric settings that must be > 0 (``None`` = "use the default" is allowed where typed so).
_POSITIVE = ("train.iterations", "train.batch_size", "train.val_every", "train.checkpoint_every",
             "train.early_stop_patience", "quality.epochs", "quality.batch_size",
             "quality.masks_per_image", "quality.val_every_epochs", "quality.early_stop_patience",
             "quality.eval_masks_per_image", "quality.weak_folds", "quality.weak_iterations_per_epoch",
             "eval.sw_batch_size", "data.max_cases", "data.labeled", "runtime.num_nodes", "runtime.threads", "ssl.pool_cache_mb",
             "data.labeled_cache_mb", "data.unlabeled_limit",
             "quality.pretrain.batch_size", "ssl.pool_prefetch")
#: ... and those that must be >= 0 (a learning rate of 0 freezes the weights: allowed, e.g. to test selection).
_NON_NEGATIVE = ("train.lr", "quality.lr", "train.weight_decay", "train.warmup", "quality.weight_decay",
                 "eval.overlays", "quality.truth_map_weight", "quality.soft_fraction", "quality.weak_probability",
                 "quality.pretrain.steps", "quality.pretrain.lr", "ssl.pool_workers")
#: ... and those that are fractions in [0, 1).
_FRACTIONS = ("model.dropout", "train.momentum", "eval.sw_overlap")


def _get(cfg: RunConfig, dotted: str) -> Any:
    node: Any = cfg
    for key in dotted.split("."):
        node = getattr(node, key)
    return node


def _validate_ranges(cfg: RunConfig) -> None:
    """Positive counts and rates, non-negative weights, fractions: one message naming the key."""
    for key in _POSITIVE:
        value = _get(cfg, key)
        if value is not None and value <= 0:
            raise ConfigError(f"{key} must be > 0, got {value}")
    for key in _NON_NEGATIVE:
        value = _get(cfg, key)
        if value is not None and value < 0:
            raise ConfigError(f"{key} must be >= 0, got {value}")
    for key in _FRACTIONS:
        value = _get(cfg, key)
        if not 0.0 <= value < 1.0:
            raise ConfigError(f"{key} must be in [0, 1), got {value}")
    if not cfg.model.features or min(cfg.model.features) < 1:
        raise ConfigError(f"model.features must be positive channel widths, got {cfg.model.features}")


def network_stride(name: str, features: list[int]) -> int | None:
    """Total down-sampling factor of segmentation network ``name`` (``None``: unknown name).

    U-Net / Attention U-Net halve the size once per extra level of ``features``; UNet++ has 4
    poolings, SegResNet 3 down-sampling stages, SwinUNETR 5 patch merges, resnet-unet a stride-2
    stem, a max-pool and 3 strided stages (checked on MONAI: other sizes fail on skip connections,
    or with a 1-pixel bottleneck).
    """
    key = name.lower().replace("_", "-")
    if key in ("unet", "attention-unet", "attentionunet", "attunet"):
        return 2 ** (len(features) - 1)
    if RESNET_UNET.fullmatch(key):
        return 32
    return {"unet++": 16, "unetplusplus": 16, "basicunetplusplus": 16, "segresnet": 8,
            "swin-unetr": 32, "swinunetr": 32}.get(key)


def _validate_image_size(cfg: RunConfig) -> None:
    """``data.image_size`` entries > 0 and divisible by the network's down-sampling factor.

    The network always sees inputs of exactly this size (whole images resized to it with
    ``data.resize``, else random crops of it in training and sliding windows of it when
    predicting), so this holds with and without resizing.
    """
    size = cfg.data.image_size
    if min(size) < 1:
        raise ConfigError(f"data.image_size entries must be > 0, got {size}")
    stride = network_stride(cfg.model.name, cfg.model.features)
    bad = [s for s in size if stride and s % stride]
    if bad:
        s = bad[0]
        near = sorted({max(stride, s // stride * stride), (s // stride + 1) * stride})
        levels = f" with {len(cfg.model.features)} feature levels" if cfg.model.name in ("unet", "attention-unet") else ""
        raise ConfigError(f"data.image_size {size}: every entry must be a multiple of {stride}, the total "
                          f"down-sampling of model {cfg.model.name}{levels}; nearest valid size for {s}: "
                          f"{' or '.join(map(str, near))}")


def _validate_ssl(cfg: RunConfig) -> None:
    from .ssl import METHODS, method_params

    s, g = cfg.ssl, cfg.guidance
    if s.method not in METHODS:
        close = difflib.get_close_matches(s.method, list(METHODS), n=1)
        raise ConfigError(f"ssl.method: unknown method '{s.method}'" + (f" (did you mean '{close[0]}'?)" if close else "")
                          + f"; choose one of {', '.join(METHODS)}")
    method_params(s.method, s.params)  # raises ConfigError naming unknown / ill-typed knobs
    if s.unlabeled_batch_size is not None and s.unlabeled_batch_size < 1:
        raise ConfigError(f"ssl.unlabeled_batch_size must be >= 1, got {s.unlabeled_batch_size}")
    if s.unlabeled_weight is not None and s.unlabeled_weight < 0:
        raise ConfigError(f"ssl.unlabeled_weight must be >= 0, got {s.unlabeled_weight}")
    if s.rampup is not None and not 0.0 <= s.rampup <= 1.0:
        raise ConfigError(f"ssl.rampup is a fraction of the iterations, got {s.rampup}")
    for key in ("qar_start", "qar_rampup", "qw_start"):
        if not 0.0 <= getattr(g, key) <= 1.0:
            raise ConfigError(f"guidance.{key} is a fraction of the iterations, got {getattr(g, key)}")
    if g.qar_weight < 0 or g.qw_power < 0:
        raise ConfigError(f"guidance.qar_weight and guidance.qw_power must be >= 0, got {g.qar_weight}, {g.qw_power}")
    if g.probe_cases < 0:
        raise ConfigError(f"guidance.probe_cases is a number of labeled cases (0: off), got {g.probe_cases}")
    if not 0.0 < g.qw_keep <= 1.0:
        raise ConfigError(f"guidance.qw_keep is the share of a batch's pseudolabels -QW may keep, in (0, 1], "
                          f"got {g.qw_keep}")
    if not 0.0 <= g.qw_threshold <= 1.0:
        raise ConfigError(f"guidance.qw_threshold is a Dice in [0, 1], got {g.qw_threshold}")
    if g.qw and not METHODS[s.method].makes_pseudolabels:
        raise ConfigError(f"guidance.qw: method '{s.method}' produces no pseudolabels to weight "
                          f"(use it with one of: {', '.join(k for k, m in METHODS.items() if m.makes_pseudolabels)})")


def _validate_augment(a: AugmentConfig, key: str) -> None:
    for name in ("flip_p", "affine_p", "intensity_p", "blur_p", "color_p"):
        if not 0.0 <= getattr(a, name) <= 1.0:
            raise ConfigError(f"{key}.{name} is a probability, got {getattr(a, name)}")
    for name in ("scale", "contrast", "gamma", "blur_sigma"):
        lo_hi = getattr(a, name)
        if len(lo_hi) != 2 or not 0.0 < lo_hi[0] <= lo_hi[1]:
            raise ConfigError(f"{key}.{name} must be [low, high] with 0 < low <= high, got {lo_hi}")
    for name in ("rotate_deg", "brightness", "noise_std"):
        if getattr(a, name) < 0:
            raise ConfigError(f"{key}.{name} must be >= 0, got {getattr(a, name)}")
    if not 0.0 <= a.color_gain < 1.0:
        raise ConfigError(f"{key}.color_gain must be in [0, 1), got {a.color_gain}")


def save_config(cfg: RunConfig, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        yaml.safe_dump(to_dict(cfg), fh, sort_keys=False)
