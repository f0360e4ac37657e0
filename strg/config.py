"""YAML run configs: four sections, dotted overrides, validation by name and type.

A config has exactly the sections ``model``, ``data``, ``train`` and ``eval`` (and an optional
top-level ``base``: a YAML file, relative to this one, whose values this file overrides)::

    model: {name: joint_gcn_r50, dropout: 0.3}        # ModelConfig: name + build_model's keywords
    data:  {kind: charades, root: /data/charades}      # DataConfig: kind + that kind's options
    train: {iterations: 100000, batch_size: 8}         # TrainConfig below
    eval:  {combine: max}                              # EvalConfig below

* ``model`` is :class:`ModelConfig`, the keyword arguments of ``strg.models.build_model`` (a test
  keeps the two alike); ``model.name`` is checked against :mod:`strg.variants`.
* ``data`` is ``kind``, ``train_split`` and the fields of the kind's options class
  (:mod:`strg.data.options`), validated against that class.
* ``train`` and ``eval`` are the dataclasses below; every field has the paper's default
  (section 6.1, docs/model.md "Training and inference").
* Overrides are ``section.key=value`` strings; the value is parsed as a YAML scalar
  (``train.amp=bf16``, ``model.stage_blocks=[1,1,1,1]``, ``train.init=null``).
* Unknown keys and wrong types raise ``ConfigError`` naming the file and the dotted key.

:func:`load_config` returns a :class:`RunConfig` of those typed sections; the engine reads it and
turns it into explicit arguments of the models and datasets, which never see a config.
``RunConfig.to_dict()`` is the plain form that ``save_config`` writes into the run folder (so that
a run can be repeated from its own folder) and that checkpoints keep. This module imports neither
the engine nor the models.
"""

from __future__ import annotations

import collections.abc
import copy
import dataclasses
import inspect
import logging
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional

import yaml

from strg.config_checks import check_settings
from strg.data import dataset_options
from strg.errors import ConfigError
from strg.variants import SourceName, list_models

SECTIONS = ("model", "data", "train", "eval")
logger = logging.getLogger(__name__)


@dataclass
class ModelConfig:
    """The ``model`` section: a variant name and the keyword arguments of
    ``strg.models.build_model`` (see its docstring; tests/test_config.py keeps the two alike)."""

    name: str
    num_classes: Optional[int] = None  # None: the dataset's number of classes
    width: int = 64
    stage_blocks: Optional[tuple[int, ...]] = None
    dim: int = 512
    pool2_kernel: Optional[int] = None  # None: the backbone source's (3 for strg, the paper's Table 1)
    temporal_strides: Optional[tuple[int, ...]] = None
    frozen_bn: bool = True
    gcn_layers: int = 3
    sim_per_layer: bool = False
    dropout: float = 0.3
    in_channels: int = 3
    inflate_from: Optional[str] = None  # the starting weights: ImageNet 2D ResNet inflated (section 4.1)
    backbone_checkpoint: Optional[str] = None  # ... or a Kinetics-pretrained I3D
    backbone_source: Optional[SourceName] = None  # None: read from backbone_checkpoint (strg without one)
    compile_graph_head: bool = False
    roi_impl: str = "auto"
    box_geometry: bool = False  # region nodes also embed their box geometry (not in the paper; models/geometry.py)

    def build_kwargs(self, *, starting_weights: bool = True) -> dict:
        """The keyword arguments of build_model (all but ``name`` and ``num_classes``); without
        ``starting_weights`` the weight files are left out (a checkpoint replaces them anyway)."""
        own = ("name", "num_classes")
        kwargs = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in own}
        if not starting_weights:
            kwargs.update(inflate_from=None, backbone_checkpoint=None)
        return kwargs


@dataclass
class DataConfig:
    """The ``data`` section: the dataset ``kind``, the split trained on, and the kind's options
    (an instance of its class in :mod:`strg.data.options`), written flat in the YAML."""

    kind: str
    options: Any
    train_split: str = "train"

    def options_dict(self) -> dict:
        """The options as keyword arguments of ``strg.data.build_dataset``."""
        return {f.name: getattr(self.options, f.name) for f in dataclasses.fields(self.options)}


@dataclass
class TrainConfig:
    """The ``train`` section. Defaults are the paper's (section 6.1)."""

    stage: Literal["backbone", "graph", "joint"] = "backbone"  # section 6.1 stage-wise training
    init: Optional[str] = None  # checkpoint (or run folder) of the previous stage, see engine/checkpoint.py
    iterations: int = 100_000  # section 6.1: 100K iterations
    batch_size: int = 8  # global clips per optimizer step (4 GPUs x 2 clips in the paper)
    batch_per_device: int = 2  # clips per forward pass; the rest is gradient accumulation
    base_lr: float = 0.00125  # section 6.1, for a global batch of base_batch clips
    base_batch: int = 8  # lr = base_lr * batch_size / base_batch (linear scaling)
    lr_decay_at: float = 0.9  # fraction of iterations after which lr is multiplied by lr_decay
    lr_decay: float = 0.1  # section 6.1: /10 for the last 10K of 100K iterations
    warmup_iters: int = 0  # linear warmup from warmup_factor * lr (not in the paper)
    warmup_factor: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 0.0001  # not given in the paper; the Non-local paper's value
    loss: Literal["auto", "bce", "ce"] = "auto"  # auto: BCE for multi-label data, CE otherwise
    amp: Literal["auto", "none", "bf16", "fp16"] = "auto"  # auto: bf16 on GPU, none on CPU
    device: str = "auto"  # auto | cpu | cuda | cuda:N (with torchrun: the local rank's GPU)
    seed: int = 0
    checkpoint_period: int = 1000  # iterations between checkpoints
    keep_checkpoints: int = 2  # periodic checkpoints kept (the newest ones); 0 keeps all
    log_period: int = 20  # iterations between metrics.jsonl / TensorBoard records
    eval_period: int = 0  # iterations between evaluations on the val split; 0: at the end only
    grad_clip: Optional[float] = None  # max gradient norm (not in the paper)
    # region variants: random shifts / dropped proposals in training (not in the paper; data/box_augment.py)
    box_jitter: float = 0.0
    box_drop: float = 0.0
    # stage graph: compute the frozen backbone's output once (small data; engine/feature_cache.py)
    cache_features: bool = False
    cache_dir: Optional[str] = None  # with cache_features: save the cache here and reuse it across runs
    num_workers: int = 4  # DataLoader worker processes per rank
    progress: bool = True  # tqdm progress bar (rank 0)
    tensorboard: bool = True  # TensorBoard scalars in <run>/tensorboard (rank 0)


@dataclass
class EvalConfig:
    """The ``eval`` section (section 6.1 "Inference")."""

    split: Optional[str] = "val"  # null: no evaluation
    combine: Literal["max", "mean"] = "max"  # clips x views of a video: max (paper) or mean
    scores: Literal["prob", "logit"] = "prob"  # combine sigmoid/softmax outputs or raw logits
    batch_per_device: int = 1
    num_workers: int = 4
    max_videos: Optional[int] = None  # evaluate only the first N videos (quick checks)


@dataclass
class RunConfig:
    """A validated config: the four typed sections, and where it came from (for messages)."""

    model: ModelConfig
    data: DataConfig
    train: TrainConfig
    eval: EvalConfig
    source: str = field(default="<config>", compare=False)

    def to_dict(self) -> dict:
        """The plain nested dict (the YAML of ``save_config``, the ``config`` of checkpoints)."""
        data = {"kind": self.data.kind, "train_split": self.data.train_split, **self.data.options_dict()}
        return {"model": dataclasses.asdict(self.model), "data": copy.deepcopy(data),
                "train": dataclasses.asdict(self.train), "eval": dataclasses.asdict(self.eval)}


# --------------------------------------------------------------------------------------------------
# Loading


def _read_yaml(path: Path) -> dict:
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config must be a mapping with sections {', '.join(SECTIONS)}")
    base = data.pop("base", None)
    if base is not None:
        parent = _read_yaml((path.parent / str(base)).resolve())
        data = _merge(parent, data)
    return data


def _merge(base: dict, top: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in top.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"train.base_lr=0.01"`` -> (["train", "base_lr"], 0.01); the value is a YAML scalar."""
    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected KEY=VALUE, e.g. train.iterations=1000")
    key, value = text.split("=", 1)
    parts = key.strip().split(".")
    if len(parts) != 2 or not all(parts):
        raise ConfigError(f"override {text!r}: the key must be section.name, e.g. train.iterations")
    try:
        parsed = yaml.safe_load(value) if value.strip() else None
    except yaml.YAMLError:
        parsed = value
    return parts, parsed


def read_config(config: str | os.PathLike | dict, overrides: list[str] | tuple[str, ...] = ()) -> tuple[dict, str]:
    """Read a YAML file (following ``base``) or take a dict, apply ``section.key=value`` overrides;
    no validation. Returns (the plain nested dict, its source name for messages)."""
    if isinstance(config, RunConfig):
        source, data = config.source, config.to_dict()
    elif isinstance(config, dict):
        source = "<config>"
        data = _merge({}, config)
        data.pop("base", None)
    else:
        path = Path(config)
        source = str(path)
        data = _read_yaml(path)
    for text in overrides:
        (section, key), value = parse_override(text)
        if section not in SECTIONS:
            raise ConfigError(f"override {text!r}: unknown section {section!r} (sections: {', '.join(SECTIONS)})")
        if not isinstance(data.get(section), dict):
            data[section] = {}
        data[section][key] = value
    return data, source


def load_config(config: str | os.PathLike | dict | RunConfig, overrides: list[str] | tuple[str, ...] = ()) -> RunConfig:
    """Read a config (a YAML path, a dict or a RunConfig), apply the overrides, validate.

    Returns the typed :class:`RunConfig`, every default filled in.
    """
    data, source = read_config(config, overrides)
    return validate_config(data, source=source)


# --------------------------------------------------------------------------------------------------
# Validation


def _type_name(tp) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def check_value(key: str, value: Any, tp: Any, source: str = "<config>") -> Any:
    """Return ``value`` converted to type ``tp`` or raise ConfigError naming ``key``.

    Understands int, float (ints and strings like "1e-4" accepted), bool, str, Optional, Union,
    Literal, tuple[...] / list[...] (YAML lists accepted) and Any.
    """
    if tp is Any or tp is inspect.Parameter.empty:
        return value
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)

    def fail(extra: str = ""):
        raise ConfigError(f"{source}: {key}: expected {_type_name(tp)}, got {value!r}{extra}")

    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for option in args:
            if option is type(None):
                continue
            try:
                return check_value(key, value, option, source)
            except ConfigError:
                continue
        choices = [a for option in args if typing.get_origin(option) is Literal for a in typing.get_args(option)]
        if choices:  # Optional[Literal[...]]: name the choices
            raise ConfigError(f"{source}: {key}: must be one of {', '.join(map(repr, choices))} or null, got {value!r}")
        fail()
    if origin is Literal:
        if value in args:
            return value
        raise ConfigError(f"{source}: {key}: must be one of {', '.join(map(repr, args))}, got {value!r}")
    if origin in (tuple, list, collections.abc.Sequence) or tp in (tuple, list):
        if not isinstance(value, (list, tuple)):
            fail()
        if origin is tuple and args and not (len(args) == 2 and args[1] is Ellipsis) and len(args) != len(value):
            fail(f" ({len(args)} items needed)")
        item_tp = args[0] if args else Any
        items = [
            check_value(f"{key}[{i}]", v,
                        args[i] if origin is tuple and args and args[-1] is not Ellipsis else item_tp, source)
            for i, v in enumerate(value)
        ]
        return tuple(items) if (origin is tuple or tp is tuple) else items
    if tp is bool:
        if isinstance(value, bool):
            return value
        fail()
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        fail()
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # PyYAML reads "1e-4" (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        fail()
    if tp is str:
        if isinstance(value, str):
            return value
        fail()
    if isinstance(tp, type):
        if isinstance(value, tp):
            return value
        fail()
    return value


_REQUIRED = inspect.Parameter.empty


def _check_section(section: str, values: dict, cls, source: str, what: str, skip: tuple[str, ...] = ()) -> dict:
    """The keyword arguments of dataclass ``cls`` from ``values``, each checked against the field's
    type; unknown keys and missing required ones raise ConfigError naming ``section.key``."""
    hints = typing.get_type_hints(cls)
    fields = [f for f in dataclasses.fields(cls) if f.name not in skip]
    names = {f.name for f in fields}
    for key in values:
        if key not in names:
            known = ", ".join(sorted(names))
            raise ConfigError(f"{source}: unknown key {section}.{key} ({what}; known keys: {known})")
    out = {}
    for f in fields:
        if f.name in values:
            out[f.name] = check_value(f"{section}.{f.name}", values[f.name], hints[f.name], source)
        elif f.default is dataclasses.MISSING:
            raise ConfigError(f"{source}: {section}.{f.name} is required")
    return out


def validate_config(data: dict, source: str = "<config>") -> RunConfig:
    """Check every section and fill the defaults; returns the typed config."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: a config must be a mapping with sections {', '.join(SECTIONS)}")
    for key in data:
        if key not in SECTIONS:
            raise ConfigError(f"{source}: unknown section {key!r} (sections: {', '.join(SECTIONS)})")
    sections = {}
    for name in SECTIONS:
        values = data.get(name) or {}
        if not isinstance(values, dict):
            raise ConfigError(f"{source}: section {name!r} must be a mapping, got {values!r}")
        sections[name] = dict(values)
    _legacy_init_2d(sections, source)
    if "name" not in sections["model"]:
        raise ConfigError(f"{source}: model.name is required (a variant name, e.g. joint_gcn_r50)")
    model = ModelConfig(**_check_section("model", sections["model"], ModelConfig, source,
                                         "not a build_model keyword argument"))
    if model.name not in list_models():
        known = ", ".join(sorted(list_models()))
        raise ConfigError(f"{source}: model.name: unknown variant {model.name!r} (known: {known})")
    cfg = RunConfig(
        model=model,
        data=_check_data(sections["data"], source),
        train=TrainConfig(**_check_section("train", sections["train"], TrainConfig, source,
                                           "see strg.config.TrainConfig")),
        eval=EvalConfig(**_check_section("eval", sections["eval"], EvalConfig, source, "see strg.config.EvalConfig")),
        source=source,
    )
    _check_values(cfg, source)
    check_settings(cfg, source)  # value ranges of model / train / eval keys (strg/config_checks.py)
    return cfg


def _check_data(values: dict, source: str) -> DataConfig:
    kind = values.get("kind")
    if not isinstance(kind, str):
        raise ConfigError(f"{source}: data.kind is required (e.g. charades, something_v2, manifest, random)")
    try:
        options_cls = dataset_options(kind)
    except ConfigError as e:
        raise ConfigError(f"{source}: data.kind: {e}") from None
    own = {k: values[k] for k in ("kind", "train_split") if k in values}
    split = check_value("data.train_split", own.get("train_split", "train"), str, source)
    options = {k: v for k, v in values.items() if k not in own}
    checked = _check_section("data", options, options_cls, source, f"not an option of the {kind!r} dataset")
    return DataConfig(kind=kind, options=options_cls(**checked), train_split=split)


def _legacy_init_2d(sections: dict, source: str) -> None:
    """``train.init_2d`` was a second way to start from ImageNet weights: it is read as
    ``model.inflate_from`` (null: nothing), and refused next to another source of starting weights."""
    if "init_2d" not in sections["train"]:
        return
    value = sections["train"].pop("init_2d")
    if value is None:
        return
    model = sections["model"]
    others = [f"model.{k}" for k in ("inflate_from", "backbone_checkpoint") if model.get(k) is not None]
    if others:
        raise ConfigError(
            f"{source}: train.init_2d would overwrite the backbone weights of {' / '.join(others)}: the starting "
            f"weights are model.inflate_from (ImageNet) or model.backbone_checkpoint (Kinetics); remove train.init_2d"
        )
    logger.warning("%s: train.init_2d is now model.inflate_from; read as model.inflate_from: %s", source, value)
    model["inflate_from"] = value


def _check_values(cfg: RunConfig, source: str) -> None:
    t, e = cfg.train, cfg.eval
    positive = {
        "train.iterations": t.iterations,
        "train.batch_size": t.batch_size,
        "train.batch_per_device": t.batch_per_device,
        "train.base_batch": t.base_batch,
        "train.checkpoint_period": t.checkpoint_period,
        "train.log_period": t.log_period,
        "eval.batch_per_device": e.batch_per_device,
    }
    for key, value in positive.items():
        if value <= 0:
            raise ConfigError(f"{source}: {key} must be positive, got {value}")
    at_least_zero = {"eval_period": t.eval_period, "warmup_iters": t.warmup_iters,
                     "keep_checkpoints": t.keep_checkpoints, "num_workers": t.num_workers}
    for key, value in at_least_zero.items():
        if value < 0:
            raise ConfigError(f"{source}: train.{key} must be >= 0, got {value}")
    if t.base_lr <= 0:
        raise ConfigError(f"{source}: train.base_lr must be positive, got {t.base_lr}")
    if not 0.0 <= t.lr_decay_at <= 1.0:
        raise ConfigError(
            f"{source}: train.lr_decay_at is a fraction of train.iterations in [0, 1], got {t.lr_decay_at}"
        )
    if t.batch_size % t.batch_per_device:
        raise ConfigError(
            f"{source}: train.batch_size ({t.batch_size}) must be a multiple of "
            f"train.batch_per_device ({t.batch_per_device})"
        )
    if cfg.model.inflate_from is not None and cfg.model.backbone_checkpoint is not None:
        raise ConfigError(f"{source}: model.inflate_from and model.backbone_checkpoint are both set; the backbone "
                          "starts from one of them (ImageNet weights inflated, or a Kinetics I3D)")


# --------------------------------------------------------------------------------------------------
# Saving


def dump_config(cfg: dict) -> str:
    def plain(v):
        if isinstance(v, tuple):
            return [plain(x) for x in v]
        if isinstance(v, list):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return yaml.safe_dump(plain(cfg), sort_keys=False, default_flow_style=False)


def save_config(cfg: RunConfig | dict, path: str | os.PathLike) -> Path:
    """Write the resolved config as YAML, atomically (tmp + rename)."""
    cfg = cfg.to_dict() if isinstance(cfg, RunConfig) else cfg
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_text(dump_config(cfg))
    os.replace(tmp, path)
    return path
