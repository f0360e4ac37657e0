"""YAML run configs: four sections, dotted overrides, validation by name and type.

A config has exactly the sections ``model``, ``data``, ``train`` and ``eval`` (and an optional
top-level ``base``: a YAML file, relative to this one, whose values this file overrides)::

    model: {name: joint_gcn_r50, dropout: 0.3}        # name + build_model keyword arguments
    data:  {kind: charades, root: /data/charades}      # kind + the dataset builder's options
    train: {iterations: 100000, batch_size: 8}         # TrainConfig below
    eval:  {combine: max}                              # EvalConfig below

* ``model.*`` keys (other than ``name``) are checked against the keyword arguments of
  ``strg.models.build_model``; ``data.*`` keys (other than the engine's own, ``DATA_KEYS``) against
  the keyword-only options of the dataset builder of ``data.kind``. Types come from the
  annotations (or the defaults) of those signatures.
* ``train`` and ``eval`` are the dataclasses below; every field has the paper's default
  (section 6.1, REFERENCE.md section 1 "Training and inference").
* Overrides are ``section.key=value`` strings; the value is parsed as a YAML scalar
  (``train.amp=bf16``, ``model.stage_blocks=[1,1,1,1]``, ``train.init=null``).
* Unknown keys and wrong types raise ``ConfigError`` naming the file and the dotted key.

The resolved config (defaults filled in) is a plain nested dict; ``save_config`` writes it into the
run folder so that a run can be repeated from its own folder. Nothing below the engine reads the
config: :mod:`strg.engine.trainer` turns it into explicit arguments.
"""

from __future__ import annotations

import collections.abc
import copy
import dataclasses
import inspect
import os
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Optional

import yaml

from strg.config_checks import check_settings
from strg.errors import ConfigError

SECTIONS = ("model", "data", "train", "eval")


@dataclass
class TrainConfig:
    """The ``train`` section. Defaults are the paper's (section 6.1)."""

    stage: Literal["backbone", "graph", "joint"] = "backbone"  # section 6.1 stage-wise training
    init: Optional[str] = None  # checkpoint (or run folder) of the previous stage, see engine/checkpoint.py
    init_2d: Optional[str] = None  # ImageNet 2D ResNet weights inflated into the backbone (section 4.1)
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
    cache_features: bool = False  # stage graph: compute the frozen backbone's output once (small data; engine/feature_cache.py)
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


# Keys of the data section that the engine uses itself (everything else goes to the builder).
DATA_KEYS: dict[str, Any] = {"kind": str, "train_split": str}
DATA_DEFAULTS = {"train_split": "train"}


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


def load_config(config: str | os.PathLike | dict, overrides: list[str] | tuple[str, ...] = (), *, validate: bool = True) -> dict:
    """Read a YAML file (or take a dict), apply ``section.key=value`` overrides, validate.

    Returns the resolved config: a nested dict with all four sections and every default filled.
    """
    if isinstance(config, dict):
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
    return validate_config(data, source=source) if validate else data


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
            check_value(f"{key}[{i}]", v, args[i] if origin is tuple and args and args[-1] is not Ellipsis else item_tp, source)
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


def _check_section(section: str, values: dict, schema: dict[str, tuple[Any, Any]], source: str, what: str) -> dict:
    """schema: name -> (type, default); a default of ``inspect.Parameter.empty`` means required."""
    for key in values:
        if key not in schema:
            known = ", ".join(sorted(schema))
            raise ConfigError(f"{source}: unknown key {section}.{key} ({what}; known keys: {known})")
    out = {}
    for key, (tp, default) in schema.items():  # in schema order, so saved configs read alike
        if key in values:
            out[key] = check_value(f"{section}.{key}", values[key], tp, source)
        elif default is inspect.Parameter.empty:
            raise ConfigError(f"{source}: {section}.{key} is required")
        else:
            out[key] = copy.deepcopy(default)
    return out


def _dataclass_schema(cls) -> dict[str, tuple[Any, Any]]:
    hints = typing.get_type_hints(cls)
    return {f.name: (hints[f.name], f.default) for f in dataclasses.fields(cls)}


def signature_schema(fn, skip: tuple[str, ...] = ()) -> dict[str, tuple[Any, Any]]:
    """name -> (type, default) of the keyword arguments of ``fn``; the type is the annotation,
    else the type of the default (Any when the default is None or there is neither)."""
    try:
        hints = typing.get_type_hints(fn)
    except Exception:  # unresolvable annotations: fall back to the defaults
        hints = {}
    schema = {}
    for name, p in inspect.signature(fn).parameters.items():
        if name in skip or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD, p.POSITIONAL_ONLY):
            continue
        if name in hints:
            tp = hints[name]
        elif p.default is not p.empty and p.default is not None:
            tp = type(p.default)
        else:
            tp = Any
        schema[name] = (tp, p.default)
    return schema


def model_schema() -> dict[str, tuple[Any, Any]]:
    """The accepted ``model.*`` keys: ``name`` plus the keyword arguments of build_model."""
    from strg.models import build_model

    schema = signature_schema(build_model, skip=("name", "num_classes"))
    schema = {k: (tp, None if d is inspect.Parameter.empty else d) for k, (tp, d) in schema.items()}
    # name first, then num_classes (None: taken from the dataset), then the builder's keywords
    return {"name": (str, inspect.Parameter.empty), "num_classes": (Optional[int], None), **schema}


def data_schema(kind: str, source: str = "<config>") -> dict[str, tuple[Any, Any]]:
    """The accepted ``data.*`` keys for ``kind``: the engine's DATA_KEYS plus the builder options."""
    from strg.engine.datasets import dataset_builder

    builder = dataset_builder(kind, source=source)
    schema = signature_schema(builder, skip=("split", "training"))
    engine = {key: (tp, DATA_DEFAULTS.get(key, inspect.Parameter.empty)) for key, tp in DATA_KEYS.items()}
    return {**engine, **schema}


def validate_config(data: dict, source: str = "<config>") -> dict:
    """Check every section and fill the defaults; returns a new dict."""
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
        sections[name] = values
    out = {}
    model = sections["model"]
    if "name" not in model:
        raise ConfigError(f"{source}: model.name is required (a variant name, e.g. joint_gcn_r50)")
    out["model"] = _check_section("model", model, model_schema(), source, "not a build_model keyword argument")
    _check_model_name(out["model"]["name"], source)
    kind = sections["data"].get("kind")
    if not isinstance(kind, str):
        raise ConfigError(f"{source}: data.kind is required (e.g. charades, something_v2, manifest, random)")
    out["data"] = _check_section("data", sections["data"], data_schema(kind, source), source, f"not an option of the {kind!r} dataset")
    out["train"] = _check_section("train", sections["train"], _dataclass_schema(TrainConfig), source, "see strg.config.TrainConfig")
    out["eval"] = _check_section("eval", sections["eval"], _dataclass_schema(EvalConfig), source, "see strg.config.EvalConfig")
    _check_values(out, source)
    check_settings(out, source)  # value ranges of model / train / eval keys (strg/config_checks.py)
    return out


def _check_model_name(name: str, source: str) -> None:
    try:
        from strg.models import list_models
    except ImportError:
        return
    names = list_models()
    if name not in names:
        raise ConfigError(f"{source}: model.name: unknown variant {name!r} (known: {', '.join(sorted(names))})")


def _check_values(cfg: dict, source: str) -> None:
    t, e = cfg["train"], cfg["eval"]
    positive = {
        "train.iterations": t["iterations"],
        "train.batch_size": t["batch_size"],
        "train.batch_per_device": t["batch_per_device"],
        "train.base_batch": t["base_batch"],
        "train.checkpoint_period": t["checkpoint_period"],
        "train.log_period": t["log_period"],
        "eval.batch_per_device": e["batch_per_device"],
    }
    for key, value in positive.items():
        if value <= 0:
            raise ConfigError(f"{source}: {key} must be positive, got {value}")
    for key in ("eval_period", "warmup_iters", "keep_checkpoints", "num_workers"):
        if t[key] < 0:
            raise ConfigError(f"{source}: train.{key} must be >= 0, got {t[key]}")
    if t["base_lr"] <= 0:
        raise ConfigError(f"{source}: train.base_lr must be positive, got {t['base_lr']}")
    if not 0.0 <= t["lr_decay_at"] <= 1.0:
        raise ConfigError(f"{source}: train.lr_decay_at is a fraction of train.iterations in [0, 1], got {t['lr_decay_at']}")
    if t["batch_size"] % t["batch_per_device"]:
        raise ConfigError(
            f"{source}: train.batch_size ({t['batch_size']}) must be a multiple of train.batch_per_device ({t['batch_per_device']})"
        )


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


def save_config(cfg: dict, path: str | os.PathLike) -> Path:
    """Write the resolved config as YAML, atomically (tmp + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_text(dump_config(cfg))
    os.replace(tmp, path)
    return path
