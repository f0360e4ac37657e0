"""Weights kept apart from model code: 2D -> 3D inflation of ImageNet ResNets (paper 4.1).

A t x k x k kernel is inflated from a k x k kernel by repeating it t times along time and
dividing by t (paper section 4.1; docs/model.md "Backbone"), so that a clip of identical frames
gives the 2D network's response. The 3D backbone uses torchvision's key names, so keys map one
to one; nothing is left at random init silently: a missing key, an unexpected key or a shape
mismatch raises :class:`~strg.errors.CheckpointError` listing them.
"""

from __future__ import annotations

import os
import pickle
import re
from dataclasses import dataclass, field, replace

import numpy as np

import torch
from torch import Tensor, nn

from strg.errors import CheckpointError
from strg.models.sources import FORMAT_SOURCES, BackboneSource, get_source

# 2D keys that have no 3D counterpart and are dropped on purpose.
_IGNORED_2D = ("fc.weight", "fc.bias")


@dataclass
class InflationReport:
    """What :func:`inflate_resnet2d` did, key by key."""

    loaded: list[str] = field(default_factory=list)  # 3D keys filled from the 2D weights
    inflated: list[str] = field(default_factory=list)  # of those, conv kernels repeated over time
    new: list[str] = field(default_factory=list)  # 3D keys with no 2D counterpart (non-local blocks)
    ignored: list[str] = field(default_factory=list)  # 2D keys dropped (the ImageNet classifier)

    def summary(self) -> str:
        return (
            f"inflated {len(self.loaded)} tensors ({len(self.inflated)} conv kernels repeated over time); "
            f"{len(self.new)} new tensors left at their init (non-local blocks); "
            f"ignored {', '.join(self.ignored) or 'nothing'}"
        )


def _load_state(path: str, wrappers: tuple[str, ...]) -> dict:
    """torch.load a weights file on the CPU (tensors only), unwrapping the first of ``wrappers``
    found (e.g. ``state_dict``); CheckpointError naming the file when it is missing or unreadable."""
    obj = _torch_load(path)
    for key in wrappers:
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            return obj[key]
    return obj


def load_resnet2d_state_dict(source: str | os.PathLike, *, depth: int = 50) -> dict[str, Tensor]:
    """A torchvision ResNet-50/101 state dict from a file, or ``"torchvision"`` for its weights.

    ``"torchvision"`` downloads ImageNet weights (IMAGENET1K_V1) on first use and needs internet.
    """
    if str(source) == "torchvision":
        import torchvision

        builder = {50: torchvision.models.resnet50, 101: torchvision.models.resnet101}[depth]
        try:
            return builder(weights="IMAGENET1K_V1").state_dict()
        except Exception as e:  # no network, proxy, ...
            raise CheckpointError(
                f"could not download torchvision's ImageNet ResNet-{depth} weights ({e}); download "
                f"them on a machine with internet and pass the .pth file path instead"
            ) from e
    path = os.fspath(source)
    state = _load_state(path, ("state_dict",))
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: expected a state dict of tensors (torchvision ResNet keys)")
    return state


def inflate_resnet2d(
    backbone: nn.Module, state_dict_2d: dict[str, Tensor], *, source: str = "2D weights"
) -> InflationReport:
    """Fill a :class:`~strg.models.backbone.ResNet3d` from a torchvision 2D ResNet state dict.

    Args:
        backbone: the 3D backbone (``model.backbone``), modified in place.
        state_dict_2d: torchvision ResNet keys (``conv1.weight``, ``layer1.0.conv1.weight``, ...).
        source: a name for error messages (e.g. the file path).

    Returns:
        An :class:`InflationReport`. Raises :class:`CheckpointError` on any missing, unexpected
        or mismatched key.
    """
    target = backbone.state_dict()
    report = InflationReport()
    new_state: dict[str, Tensor] = {}
    missing, mismatched = [], []
    for key, dst in target.items():
        if ".nonlocal_block." in key:
            report.new.append(key)
            continue
        src = state_dict_2d.get(key)
        if src is None:
            missing.append(key)
            continue
        if dst.dim() == 5 and src.dim() == 4:  # conv: (O, I, k, k) -> (O, I, t, k, k) / t
            t = dst.shape[2]
            if src.shape != dst.shape[:2] + dst.shape[3:]:
                mismatched.append(f"{key}: 2D {tuple(src.shape)} vs 3D {tuple(dst.shape)}")
                continue
            new_state[key] = src.unsqueeze(2).repeat(1, 1, t, 1, 1) / t
            report.inflated.append(key)
        elif src.shape == dst.shape:
            new_state[key] = src.clone()
        else:
            mismatched.append(f"{key}: 2D {tuple(src.shape)} vs 3D {tuple(dst.shape)}")
            continue
        report.loaded.append(key)
    used = set(report.loaded) | set(missing) | {k for k in state_dict_2d if k.endswith("num_batches_tracked")}
    unexpected = [k for k in state_dict_2d if k not in used and k not in _IGNORED_2D and k not in target]
    report.ignored = [k for k in _IGNORED_2D if k in state_dict_2d]
    def listed(keys: list[str], sep: str = ", ") -> str:
        return sep.join(keys[:8]) + (" ..." if len(keys) > 8 else "")

    problems = []
    if missing:
        problems.append(f"{len(missing)} backbone keys missing from the 2D weights: {listed(missing)}")
    if mismatched:
        problems.append(f"{len(mismatched)} shape mismatches: {listed(mismatched, '; ')}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected 2D keys: {listed(unexpected)}")
    if problems:
        raise CheckpointError(f"{source}: cannot inflate into the 3D backbone: " + "; ".join(problems))
    backbone.load_state_dict(new_state, strict=False)
    return report


# ---------------------------------------------------------------------------------------------
# Kinetics-pretrained I3D checkpoints of the field (docs/formats.md "Checkpoints")
# ---------------------------------------------------------------------------------------------

_PYSLOWFAST_STEM = re.compile(r"^s1\.pathway0_stem\.(conv|bn)\.(.+)$")
_PYSLOWFAST_RES = re.compile(r"^s(\d)\.pathway0_res(\d+)\.(branch1|branch1_bn|branch2\.(a|b|c)(_bn)?)\.(.+)$")
_PYSLOWFAST_NL = re.compile(r"^s(\d)\.pathway0_nonlocal(\d+)\.(conv_theta|conv_phi|conv_g|conv_out|bn)\.(.+)$")
_MMACTION_STEM = re.compile(r"^backbone\.conv1\.(conv|bn)\.(.+)$")
_MMACTION_RES = re.compile(r"^backbone\.layer(\d)\.(\d+)\.(conv[123]|downsample)\.(conv|bn)\.(.+)$")
_MMACTION_NL = re.compile(
    r"^backbone\.layer(\d)\.(\d+)\.non_local_block\.(theta\.conv|phi\.0\.conv|g\.0\.conv|conv_out\.conv|conv_out\.bn)\.(.+)$"
)
_NL_NAMES = {"conv_theta": "theta", "conv_phi": "phi", "conv_g": "g", "conv_out": "out", "bn": "bn",
             "theta.conv": "theta", "phi.0.conv": "phi", "g.0.conv": "g",
             "conv_out.conv": "out", "conv_out.bn": "bn"}


def _pyslowfast_key(key: str) -> str | None:
    if m := _PYSLOWFAST_STEM.match(key):
        return f"{'conv1' if m.group(1) == 'conv' else 'bn1'}.{m.group(2)}"
    if m := _PYSLOWFAST_RES.match(key):
        stage, block, part, abc, bn, rest = m.groups()
        layer = f"layer{int(stage) - 1}.{block}"
        if part == "branch1":
            return f"{layer}.downsample.0.{rest}"
        if part == "branch1_bn":
            return f"{layer}.downsample.1.{rest}"
        idx = "abc".index(abc) + 1
        return f"{layer}.{'bn' if bn else 'conv'}{idx}.{rest}"
    if m := _PYSLOWFAST_NL.match(key):
        stage, block, part, rest = m.groups()
        return f"layer{int(stage) - 1}.{block}.nonlocal_block.{_NL_NAMES[part]}.{rest}"
    return None


def _mmaction_key(key: str) -> str | None:
    if m := _MMACTION_STEM.match(key):
        return f"{'conv1' if m.group(1) == 'conv' else 'bn1'}.{m.group(2)}"
    if m := _MMACTION_NL.match(key):
        layer, block, part, rest = m.groups()
        return f"layer{layer}.{block}.nonlocal_block.{_NL_NAMES[part]}.{rest}"
    if m := _MMACTION_RES.match(key):
        layer, block, part, kind, rest = m.groups()
        if part == "downsample":
            return f"layer{layer}.{block}.downsample.{0 if kind == 'conv' else 1}.{rest}"
        idx = part[-1]
        return f"layer{layer}.{block}.{'conv' if kind == 'conv' else 'bn'}{idx}.{rest}"
    return None


# Caffe2 (video-nonlocal-net) blob names. BN blobs: ``_s`` scale, ``_b`` bias, ``_rm`` running mean,
# ``_riv`` the running variance: Caffe2's SpatialBN names that slot "inv_var" but normalises with
# rsqrt(var + eps) in test mode, and the converters of the field (PySlowFast, mmaction2) map it to
# ``running_var`` too. ``res{S}_{i}_branch1`` is the shortcut, ``branch2{a,b,c}`` the bottleneck;
# ``nonlocal_conv{S}_{i}`` follows res block i of stage S, like PySlowFast's ``nonlocal{i}``.
_CAFFE2_BN = {"s": "weight", "b": "bias", "rm": "running_mean", "riv": "running_var"}
_CAFFE2_STEM = re.compile(r"^(conv1_w|res_conv1_bn_(s|b|rm|riv))$")
_CAFFE2_RES = re.compile(r"^res(\d)_(\d+)_branch(1|2a|2b|2c)_(w|bn_s|bn_b|bn_rm|bn_riv)$")
_CAFFE2_NL = re.compile(r"^nonlocal_conv(\d)_(\d+)_(?:(theta|phi|g|out)_(w|b)|bn_(s|b|rm|riv))$")


def _caffe2_key(key: str) -> str | None:
    if m := _CAFFE2_STEM.match(key):
        return "conv1.weight" if m.group(2) is None else f"bn1.{_CAFFE2_BN[m.group(2)]}"
    if m := _CAFFE2_RES.match(key):
        stage, block, branch, blob = m.groups()
        layer = f"layer{int(stage) - 1}.{block}"
        if branch == "1":
            return f"{layer}.downsample.0.weight" if blob == "w" else f"{layer}.downsample.1.{_CAFFE2_BN[blob[3:]]}"
        idx = "abc".index(branch[1]) + 1
        return f"{layer}.conv{idx}.weight" if blob == "w" else f"{layer}.bn{idx}.{_CAFFE2_BN[blob[3:]]}"
    if m := _CAFFE2_NL.match(key):
        stage, block, conv, wb, bn = m.groups()
        name = ("weight" if wb == "w" else "bias") if conv else _CAFFE2_BN[bn]
        return f"layer{int(stage) - 1}.{block}.nonlocal_block.{conv or 'bn'}.{name}"
    return None


class _Caffe2Unpickler(pickle.Unpickler):
    """Reads a Caffe2 .pkl (a pickled dict of numpy arrays, often from Python 2) and refuses any
    other object: unpickling runs whatever a file names, so only numpy's array constructors pass."""

    _ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
                ("numpy", "ndarray"), ("numpy", "dtype"), ("collections", "OrderedDict"),
                ("_codecs", "encode")}  # how Python 3 writes bytes at pickle protocol 2

    def find_class(self, module: str, name: str):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} (only numpy arrays are expected)")
        return super().find_class(module, name)


def load_caffe2_blobs(path: str | os.PathLike) -> dict[str, Tensor]:
    """The weights of a Caffe2 .pkl checkpoint (video-nonlocal-net, Detectron) as tensors.

    The file is a pickle, latin1 strings, of ``{"blobs": {name: ndarray}, ...}`` (or of the blobs
    dict itself). Optimiser state (``*_momentum``) and integer counters are dropped; the rest
    (the classifier ``pred_*``, a float ``lr``) comes back, for :func:`load_i3d_checkpoint` to
    report as unused.
    Raises :class:`CheckpointError` naming the file when it is missing, unreadable or holds
    anything but arrays.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: no such weights file")
    try:
        with open(path, "rb") as f:
            obj = _Caffe2Unpickler(f, encoding="latin1").load()
    except Exception as e:
        raise CheckpointError(f"{path}: not a readable Caffe2 .pkl checkpoint ({e})") from e
    blobs = obj.get("blobs", obj) if isinstance(obj, dict) else None
    if not isinstance(blobs, dict) or not blobs:
        raise CheckpointError(
            f"{path}: expected a dict of Caffe2 blobs (with a 'blobs' entry), got {type(obj).__name__}"
        )
    out = {}
    for name, value in blobs.items():
        if name.endswith("_momentum") or not isinstance(value, np.ndarray) or value.dtype.kind != "f":
            continue  # optimiser state, integer counters
        out[str(name)] = torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32))
    return out


# Keys inside each format's backbone: one that does not map is an error, not an unused key.
_BACKBONE_PREFIX = {"pyslowfast": re.compile(r"^s\d\."), "mmaction2": re.compile(r"^backbone\."),
                    "caffe2": re.compile(r"^(res\d|res_conv1|conv1|nonlocal_)"), "strg": re.compile(r"^$")}


def convert_i3d_checkpoint(
    state: dict[str, Tensor], source: str = "checkpoint"
) -> tuple[dict[str, Tensor], str, list[str]]:
    """Rename a PySlowFast, mmaction2 or Caffe2 I3D ResNet state dict to strg backbone keys.

    Returns (backbone state dict, detected format, keys not used: heads, counters). ``source``
    names the file in errors.
    """
    if any(k.startswith("s1.pathway0_stem.") for k in state):
        fmt, rename = "pyslowfast", _pyslowfast_key
    elif "conv1_w" in state and any(k.startswith("res_conv1_bn_") for k in state):
        fmt, rename = "caffe2", _caffe2_key
    elif "backbone.conv1.conv.weight" in state:
        fmt, rename = "mmaction2", _mmaction_key
    elif any(k.startswith(("layer1.0.conv1.", "backbone.layer1.0.conv1.")) for k in state):
        fmt = "strg"
        if any(k.startswith("backbone.") for k in state):  # a whole STRG model: take its backbone
            rename = lambda k: k[len("backbone."):] if k.startswith("backbone.") else None  # noqa: E731
        else:
            rename = lambda k: k  # noqa: E731
    else:
        raise CheckpointError(
            f"{source}: unrecognised checkpoint keys (expected PySlowFast 's1.pathway0_stem.*', mmaction2 "
            f"'backbone.conv1.conv.*', Caffe2 'conv1_w' or strg 'layer1.0.conv1.*'); "
            f"first keys: {', '.join(list(state)[:5])}"
        )
    if fmt == "mmaction2":
        _check_mmaction_nonlocal(state, source)
    out, unused, unknown = {}, [], []
    for key, value in state.items():
        new = rename(key)
        if new is None and _BACKBONE_PREFIX[fmt].match(key) and not key.endswith("num_batches_tracked"):
            unknown.append(key)
        elif key.endswith("num_batches_tracked"):
            continue  # BatchNorm's step counter: no weight
        elif new is None:
            unused.append(key)
        else:
            out[new] = value
    if unknown:
        raise CheckpointError(f"{source}: {len(unknown)} {fmt} backbone keys that strg cannot place: "
                              f"{', '.join(unknown[:8])}{' ...' if len(unknown) > 8 else ''}")
    if fmt == "caffe2":
        _affine_bn_to_frozen(out)
    return out, fmt, unused


def _check_mmaction_nonlocal(state: dict, source: str) -> None:
    """Refuse the mmcv non-local blocks strg does not compute: concatenation, no sub_sample."""
    nl = [k for k in state if ".non_local_block." in k]
    if any(".concat_project." in k for k in nl):
        raise CheckpointError(
            f"{source}: its non-local blocks use mmcv's 'concatenation' pairwise function (concat_project keys), "
            "which strg does not implement (supported: embedded_gaussian, dot_product, gaussian)"
        )
    if any(".non_local_block.g.conv." in k for k in nl):
        raise CheckpointError(
            f"{source}: its non-local blocks were built with sub_sample=False (keys 'non_local_block.g.conv.*'); "
            "strg's non-local blocks subsample phi and g by (1, 2, 2) as every mmaction2 I3D NL config does"
        )


def _affine_bn_to_frozen(state: dict[str, Tensor], eps: float = 1e-5) -> None:
    """video-nonlocal-net's "affine" models replace BN by y = x * s + b (blobs ``*_bn_s``/``*_bn_b``
    only): as a BN, running mean 0 and running variance 1 - eps give the same map."""
    for key in [k for k in state if k.endswith(".weight") and k[: -len("weight")] + "bias" in state]:
        prefix = key[: -len("weight")]
        if state[key].dim() == 1 and prefix + "running_mean" not in state and prefix + "running_var" not in state:
            state[prefix + "running_mean"] = torch.zeros_like(state[key])
            state[prefix + "running_var"] = torch.full_like(state[key], 1.0 - eps)


@dataclass
class I3DCheckpoint:
    """A Kinetics I3D checkpoint read from a file, renamed to strg keys (see :func:`read_i3d_checkpoint`)."""

    path: str
    state: dict[str, Tensor]  # strg backbone keys
    format: str  # pyslowfast | mmaction2 | caffe2 | strg
    unused: list[str]  # file keys that are not backbone weights (classifier, counters)
    saved_config: dict = field(default_factory=dict)  # what the file says besides its weights


def _torch_load(path: str):
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: no such weights file")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(f"{path}: not a readable PyTorch weights file ({e})") from e


def _saved_config(obj) -> dict:
    """The settings a checkpoint file records beside its weights: PySlowFast's ``cfg`` (a YAML
    dump), mmaction2's ``meta`` config text (``meta["cfg"]``, mmcv-era ``meta["config"]``),
    strg's run config (``config.model.backbone_source``)."""
    if not isinstance(obj, dict):
        return {}
    out = {}
    if isinstance(obj.get("cfg"), str):
        out["pyslowfast_cfg"] = obj["cfg"]
    meta = obj.get("meta")
    if isinstance(meta, dict):
        text = meta.get("cfg", meta.get("config"))
        if isinstance(text, str):
            out["mmaction2_cfg"] = text
    model_cfg = (obj.get("config") or {}).get("model") if isinstance(obj.get("config"), dict) else None
    name = obj.get("backbone_source") or (model_cfg or {}).get("backbone_source")
    if isinstance(name, str):
        out["strg_source"] = name
    return out


def read_i3d_checkpoint(path: str | os.PathLike) -> I3DCheckpoint:
    """Read a PySlowFast ``.pyth``, mmaction2 ``.pth``, Caffe2 ``.pkl`` or strg checkpoint.

    Raises :class:`CheckpointError` naming the file when it is missing, unreadable, not a state
    dict of tensors, or holds a non-local variant strg does not compute.
    """
    path = os.fspath(path)
    if path.endswith(".pkl"):
        blobs, saved = load_caffe2_blobs(path), {}
    else:
        obj = _torch_load(path)
        saved = _saved_config(obj)
        blobs = obj
        for key in ("model_state", "state_dict", "model"):  # PySlowFast, mmaction2, strg
            if isinstance(obj, dict) and isinstance(obj.get(key), dict):
                blobs = obj[key]
                break
    if not isinstance(blobs, dict) or not blobs or not all(isinstance(v, Tensor) for v in blobs.values()):
        raise CheckpointError(f"{path}: expected a state dict of tensors, got {type(blobs).__name__}")
    state, fmt, unused = convert_i3d_checkpoint(blobs, source=path)
    return I3DCheckpoint(path, state, fmt, unused, saved)


def _yaml_get(text: str, *keys: str):
    import yaml

    try:
        node = yaml.safe_load(text)
    except yaml.YAMLError:
        return None
    for key in keys:
        node = node.get(key) if isinstance(node, dict) else None
    return node


def _mmaction_mode(text: str) -> str | None:
    """``mode`` of the ``non_local_cfg`` in mmaction2 config text (Python source), if it is there."""
    m = re.search(r"non_local_cfg\s*=\s*dict\(([^)]*)\)", text)
    mode = re.search(r"mode\s*=\s*['\"](\w+)['\"]", m.group(1)) if m else None
    return mode.group(1) if mode else None


def detect_source(ckpt: I3DCheckpoint) -> tuple[str, bool, str]:
    """What the file says about its source: (source name, told by the file?, how it was decided)."""
    has_nl = any(".nonlocal_block." in k for k in ckpt.state)
    saved = ckpt.saved_config
    if ckpt.format == "pyslowfast":
        inst = _yaml_get(saved["pyslowfast_cfg"], "NONLOCAL", "INSTANTIATION") if "pyslowfast_cfg" in saved else None
        if inst is not None or not has_nl:
            name = "pyslowfast_dot_product" if has_nl and inst == "dot_product" else "pyslowfast"
            told = f" and its saved cfg (NONLOCAL.INSTANTIATION: {inst})" if has_nl else ""
            return name, True, "PySlowFast keys" + told
        return "pyslowfast", False, "PySlowFast keys, no saved cfg: softmax non-local assumed (its NLN configs')"
    if ckpt.format == "mmaction2":
        if has_nl and not any(".nonlocal_block.theta." in k for k in ckpt.state):
            return "mmaction2_gaussian", True, "mmaction2 keys, non-local without theta/phi convs (mode='gaussian')"
        mode = _mmaction_mode(saved["mmaction2_cfg"]) if "mmaction2_cfg" in saved else None
        if mode is not None and has_nl:
            if mode not in ("embedded_gaussian", "dot_product"):
                raise CheckpointError(f"{ckpt.path}: its config's non-local mode {mode!r} is not supported "
                                      "(supported: embedded_gaussian, dot_product, gaussian)")
            return ("mmaction2" if mode == "embedded_gaussian" else "mmaction2_dot_product"), True, \
                f"mmaction2 keys and its saved config (non_local_cfg mode={mode!r})"
        if not has_nl:
            return "mmaction2", True, "mmaction2 keys"
        return "mmaction2", False, "mmaction2 keys, no saved config: mode='embedded_gaussian' assumed (its NL configs')"
    if ckpt.format == "caffe2":
        return "video_nonlocal_net", False, (
            "Caffe2 blob names, the same in video-nonlocal-net and PySlowFast's model zoo: video_nonlocal_net assumed"
        )
    if "strg_source" in saved:
        return saved["strg_source"], True, "strg checkpoint, its recorded backbone_source"
    return "strg", False, "strg keys without a recorded source: 'strg' assumed"


def resolve_source(ckpt: I3DCheckpoint, source: str | BackboneSource | None = None) -> tuple[BackboneSource, str]:
    """The source to build and load ``ckpt`` with: the file's, or ``source`` where the file cannot
    say. CheckpointError when ``source`` contradicts the file. Returns (source, how decided)."""
    told, certain, how = detect_source(ckpt)
    wanted = None if source is None else get_source(source).name
    if wanted is not None and wanted != told:
        if certain:
            raise CheckpointError(f"{ckpt.path}: backbone_source {wanted!r} contradicts the file ({how}: {told!r})")
        if ckpt.format != "strg" and wanted not in FORMAT_SOURCES[ckpt.format]:
            raise CheckpointError(f"{ckpt.path}: backbone_source {wanted!r} cannot be a {ckpt.format} checkpoint "
                                  f"(choose one of: {', '.join(FORMAT_SOURCES[ckpt.format])})")
        src, how = get_source(wanted), f"{how}; overridden by backbone_source={wanted!r}"
    else:
        try:
            src = get_source(source if isinstance(source, BackboneSource) else told)
        except ValueError as e:
            raise CheckpointError(f"{ckpt.path}: {e}") from None
    return _pyslowfast_normalisation(ckpt, src), how


def _pyslowfast_normalisation(ckpt: I3DCheckpoint, src: BackboneSource) -> BackboneSource:
    """A PySlowFast cfg's DATA.MEAN / DATA.STD (0-1, RGB) and DATA.REVERSE_INPUT_CHANNEL."""
    text = ckpt.saved_config.get("pyslowfast_cfg")
    if ckpt.format != "pyslowfast" or text is None:
        return src
    mean, std = _yaml_get(text, "DATA", "MEAN"), _yaml_get(text, "DATA", "STD")
    if isinstance(mean, list) and isinstance(std, list) and len(mean) == len(std) == 3:
        src = src.with_normalisation(mean, std, 1.0)
    if _yaml_get(text, "DATA", "REVERSE_INPUT_CHANNEL") is True:
        src = replace(src, channels="bgr")
    return src


@dataclass
class LoadReport:
    """What :func:`load_i3d_checkpoint` did."""

    path: str
    format: str
    source: BackboneSource
    how: str  # how the source was decided (told by the file, assumed, given)
    unused: list[str]
    flipped_to_rgb: bool = False

    def summary(self) -> str:
        s, nl = self.source, self.source.nonlocal_variant
        on = {True: "on", False: "off"}
        flipped = " (conv1 flipped to take RGB)" if self.flipped_to_rgb else ""
        return (
            f"{self.path}: {self.format} I3D loaded as source {s.name!r} ({self.how}): stem pool {s.stem_pool}, "
            f"non-local {nl.pairwise} pooled {nl.pool} phi/g, scale {on[nl.scale]}, out bias {on[nl.out_bias]}; "
            f"{s.channels.upper()} input{flipped}; normalise with data.mean={list(s.data_mean)} "
            f"data.std={list(s.data_std)}; not used: {', '.join(self.unused) or 'nothing'}"
        )


def _computes_otherwise(backbone: nn.Module, src: BackboneSource) -> list[str]:
    """How ``backbone``'s pool1 and non-local blocks differ from what ``src`` computed."""
    from strg.models.nonlocal_block import NonLocalBlock

    diffs = []
    pool = getattr(backbone, "maxpool", None)
    if isinstance(pool, nn.MaxPool3d):
        stride_t = pool.stride[0]
        kernel_t = stride_t if src.stem_pool == "pairs" else 1
        if pool.kernel_size[0] != kernel_t or pool.padding[1] != src.stem_pool_padding:
            diffs.append(f"pool1 kernel {tuple(pool.kernel_size)} padding {tuple(pool.padding)}, the source's "
                         f"({kernel_t}, 3, 3) padding (0, {src.stem_pool_padding}, {src.stem_pool_padding})")
    variants = {m.variant for m in backbone.modules() if isinstance(m, NonLocalBlock)}
    if variants and variants != {src.nonlocal_variant}:
        diffs.append(f"non-local {', '.join(map(str, variants))}, the source's {src.nonlocal_variant}")
    return diffs


def _blocks_per_stage(keys) -> tuple[int, ...]:
    return tuple(len({k.split(".")[1] for k in keys if k.startswith(f"layer{i}.")}) for i in range(1, 5))


def load_i3d_checkpoint(backbone: nn.Module, checkpoint: str | os.PathLike | I3DCheckpoint, *,
                        source: str | BackboneSource | None = None) -> LoadReport:
    """Load a Kinetics-pretrained I3D ResNet into ``backbone``: PySlowFast .pyth, mmaction2 .pth,
    Caffe2 .pkl (video-nonlocal-net or PySlowFast's model zoo) or strg.

    The source (:mod:`strg.models.sources`) is read from the file where it can be, else
    ``source`` or the format's documented default; the backbone must have been built for a
    source that computes the same (``i3d_resnet(source=...)``, what ``build_model`` does), and
    the same architecture (depth, temporal kernels, non-local positions and variant): every
    backbone key present with the same shape. Otherwise :class:`CheckpointError` names the file and
    the differences, and nothing is loaded. A BGR source's first conv is flipped so that the
    backbone takes RGB clips.
    """
    ckpt = checkpoint if isinstance(checkpoint, I3DCheckpoint) else read_i3d_checkpoint(checkpoint)
    path, state = ckpt.path, dict(ckpt.state)
    src, how = resolve_source(ckpt, source)
    diffs = _computes_otherwise(backbone, src)
    if diffs:
        built = getattr(getattr(backbone, "source", None), "name", "?")
        raise CheckpointError(f"{path}: the checkpoint's source is {src.name!r} ({how}), this backbone was built for "
                              f"{built!r}: {'; '.join(diffs)}; build it with backbone_source={src.name!r}")
    flip = src.channels == "bgr" and ckpt.format != "strg" and "conv1.weight" in state
    if flip:
        state["conv1.weight"] = state["conv1.weight"].flip(1)  # (O, 3, t, k, k): BGR -> RGB inputs
    target = backbone.state_dict()
    missing = [k for k in target if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in target]
    mismatched = [
        f"{k}: {tuple(state[k].shape)} vs {tuple(v.shape)}"
        for k, v in target.items()
        if k in state and state[k].shape != v.shape
    ]
    if missing or unexpected or mismatched:
        have, want = _blocks_per_stage(state), _blocks_per_stage(target)
        depth = ""
        if have != want:
            depth = f"; blocks per stage {have} in the file, {want} in this backbone (another depth?)"
        hint = "; if the file comes from another source, build it with backbone_source=NAME" if "assumed" in how else ""
        raise CheckpointError(
            f"{path} ({ckpt.format}, source {src.name!r}: {how}) does not fit this backbone: "
            f"{len(missing)} missing ({', '.join(missing[:5])}), {len(unexpected)} unexpected "
            f"({', '.join(unexpected[:5])}), {len(mismatched)} shape mismatches ({'; '.join(mismatched[:5])})"
            f"{depth}{hint}"
        )
    backbone.load_state_dict(state, strict=False)  # strict apart from BN counters (checked above)
    return LoadReport(path, ckpt.format, src, how, ckpt.unused, flip)


def resolve_backbone_source(checkpoint: str | os.PathLike | None, source: str | None) -> tuple[BackboneSource, str]:
    """The source a model with this ``backbone_checkpoint`` and ``backbone_source`` is built for:
    the file's (:func:`resolve_source`), else ``source``, else ``"strg"``. Returns (source, how)."""
    if checkpoint is None:
        try:
            return get_source(source or "strg"), "given" if source else "default (no Kinetics checkpoint)"
        except ValueError as e:
            raise CheckpointError(str(e)) from None
    return resolve_source(read_i3d_checkpoint(checkpoint), source)
