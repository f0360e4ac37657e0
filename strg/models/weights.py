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
from dataclasses import dataclass, field

import numpy as np

import torch
from torch import Tensor, nn

from strg.errors import CheckpointError

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
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: no such weights file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(f"{path}: not a readable PyTorch weights file ({e})") from e
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


def inflate_resnet2d(backbone: nn.Module, state_dict_2d: dict[str, Tensor], *, source: str = "2D weights") -> InflationReport:
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
    problems = []
    if missing:
        problems.append(f"{len(missing)} backbone keys missing from the 2D weights: {', '.join(missing[:8])}{' ...' if len(missing) > 8 else ''}")
    if mismatched:
        problems.append(f"{len(mismatched)} shape mismatches: {'; '.join(mismatched[:8])}{' ...' if len(mismatched) > 8 else ''}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected 2D keys: {', '.join(unexpected[:8])}{' ...' if len(unexpected) > 8 else ''}")
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
_MMACTION_NL = re.compile(r"^backbone\.layer(\d)\.(\d+)\.non_local_block\.(theta\.conv|phi\.0\.conv|phi\.conv|g\.0\.conv|g\.conv|conv_out\.conv|conv_out\.bn)\.(.+)$")
_NL_NAMES = {"conv_theta": "theta", "conv_phi": "phi", "conv_g": "g", "conv_out": "out", "bn": "bn",
             "theta.conv": "theta", "phi.0.conv": "phi", "phi.conv": "phi", "g.0.conv": "g", "g.conv": "g",
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
        raise CheckpointError(f"{path}: expected a dict of Caffe2 blobs (with a 'blobs' entry), got {type(obj).__name__}")
    out = {}
    for name, value in blobs.items():
        if name.endswith("_momentum") or not isinstance(value, np.ndarray) or value.dtype.kind != "f":
            continue  # optimiser state, integer counters
        out[str(name)] = torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32))
    return out


def convert_i3d_checkpoint(state: dict[str, Tensor]) -> tuple[dict[str, Tensor], str, list[str]]:
    """Rename a PySlowFast, mmaction2 or Caffe2 I3D ResNet state dict to strg backbone keys.

    Returns (backbone state dict, detected format, keys not used: heads, counters).
    """
    if any(k.startswith("s1.pathway0_stem.") for k in state):
        fmt, rename = "pyslowfast", _pyslowfast_key
    elif "conv1_w" in state and any(k.startswith("res_conv1_bn_") for k in state):
        fmt, rename = "caffe2", _caffe2_key
    elif any(k.startswith("backbone.conv1.") for k in state):
        fmt, rename = "mmaction2", _mmaction_key
    elif any(k.startswith("layer1.0.conv1.") for k in state):
        fmt, rename = "strg", lambda k: k
    else:
        raise CheckpointError(
            "unrecognised checkpoint keys (expected PySlowFast 's1.pathway0_stem.*', mmaction2 "
            f"'backbone.conv1.*', Caffe2 'conv1_w' or strg 'layer1.0.conv1.*'); first keys: {', '.join(list(state)[:5])}"
        )
    out, unused = {}, []
    for key, value in state.items():
        new = rename(key)
        if new is None or key.endswith("num_batches_tracked"):
            unused.append(key)
        else:
            out[new] = value
    return out, fmt, unused


def load_i3d_checkpoint(backbone: nn.Module, path: str | os.PathLike, *, caffe2_bgr: bool = True) -> tuple[str, list[str]]:
    """Load a Kinetics-pretrained I3D ResNet into ``backbone``: PySlowFast .pyth, mmaction2 .pth,
    strg, or Caffe2 .pkl (video-nonlocal-net, the I3D and non-local models of the paper's backbone).

    The backbone must have the same architecture (depth, temporal-kernel pattern, non-local
    positions): every backbone key must be present with the same shape, or
    :class:`CheckpointError` lists the differences.

    Caffe2 models were trained on BGR frames (OpenCV decoding); with ``caffe2_bgr`` (default) the
    first convolution's input channels are reversed so that the backbone takes RGB clips like
    every other model here. (Their per-channel normalisation, 0.45 / 0.225 on [0, 1], is the same
    for the three channels, so only the order differs.)

    Returns (detected format, checkpoint keys not used, e.g. the classifier head).
    """
    path = os.fspath(path)
    if path.endswith(".pkl"):
        ckpt = load_caffe2_blobs(path)
    else:
        ckpt = _load_state(path, ("model_state", "state_dict", "model"))  # PySlowFast, mmaction2, strg
    state, fmt, unused = convert_i3d_checkpoint(ckpt)
    if fmt == "strg":
        state = {k[len("backbone."):] if k.startswith("backbone.") else k: v for k, v in state.items()}
    if fmt == "caffe2" and caffe2_bgr and "conv1.weight" in state:
        state["conv1.weight"] = state["conv1.weight"].flip(1)  # (O, 3, t, k, k): BGR -> RGB inputs
    target = backbone.state_dict()
    missing = [k for k in target if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in target]
    mismatched = [f"{k}: {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in target.items() if k in state and state[k].shape != v.shape]
    if missing or unexpected or mismatched:
        raise CheckpointError(
            f"{path} ({fmt}) does not fit this backbone: {len(missing)} missing ({', '.join(missing[:5])}), "
            f"{len(unexpected)} unexpected ({', '.join(unexpected[:5])}), {len(mismatched)} shape "
            f"mismatches ({'; '.join(mismatched[:5])})"
        )
    backbone.load_state_dict(state, strict=False)  # strict apart from BN counters (checked above)
    return fmt, unused
