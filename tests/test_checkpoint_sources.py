"""Kinetics I3D checkpoints compute in strg what they computed in the code that trained them.

Independent of strg's model code, this file writes down
* the parameters of an I3D ResNet (R50 pattern, shrunk), from the architecture's facts;
* the key names each source writes for them (PySlowFast ``.pyth``, mmaction2 ``.pth``, Caffe2
  ``.pkl``), as facts read in those projects' module structure (docs/checkpoints.md);
* a plain-tensor forward pass of each source's computation (F.conv3d, F.max_pool3d, einsum):
  its stem pooling, its non-local variant, its normalisation on its own value scale and its
  input channel order.
A file written in a source's layout from random parameters is loaded with ``build_model``; strg's
features at every stage, from a raw 0-255 RGB clip normalised with the source's ``data_mean`` /
``data_std``, must equal the plain forward's within float32 round-off, and differ clearly from
what the other semantics compute (so each check would catch the error it is about).
"""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from strg.errors import CheckpointError, ConfigError
from strg.models import build_model

TINY = dict(width=4, stage_blocks=(1, 2, 4, 1))
# The R50 I3D's temporal kernels (first conv of each block) and non-local positions (0-based
# blocks of res3, res4), as PySlowFast's "i3d" _TEMPORAL_KERNEL_BASIS / NONLOCAL.LOCATION and
# mmaction2's inflate / non_local tables give them; cut to TINY's blocks.
KERNELS = ((3, 3, 3), (3, 1, 3, 1), (3, 1, 3, 1, 3, 1), (1, 3, 1))
NONLOCAL = ((), (1, 3), (1, 3, 5), ())
SPATIAL = ((1, 1), (2, 1), (2, 1), (1, 2))  # (stride, dilation) per stage: strg's dilated res5
EPS = 1e-5


# ------------------------------------------------------------------ parameters, independently


def reference_params(
    *, width=4, stage_blocks=(1, 2, 4, 1), nonlocal_=True, pairwise="embedded_gaussian", out_bias=True, seed=0
) -> dict:
    """Canonical name -> tensor. Convs scaled so activations stay O(1); BN and non-local gammas
    away from 0 so that every part (the non-local blocks too) changes the output."""
    g = torch.Generator().manual_seed(seed)
    p = {}

    def conv(name, shape):
        fan_in = shape[1] * math.prod(shape[2:])
        p[name] = torch.randn(shape, generator=g) * math.sqrt(2.0 / fan_in)

    def bn(name, c, gamma=1.0):
        p[name + ".w"] = (torch.rand(c, generator=g) + 0.5) * gamma
        p[name + ".b"] = torch.randn(c, generator=g) * 0.1
        p[name + ".rm"] = torch.randn(c, generator=g) * 0.1
        p[name + ".rv"] = torch.rand(c, generator=g) + 0.5

    conv("stem.conv", (width, 3, 5, 7, 7))
    bn("stem.bn", width)
    c_in = width
    for i, n in enumerate(stage_blocks):
        inner = width * 2**i
        out = inner * 4
        for j in range(n):
            b = f"s{i}.b{j}"
            conv(b + ".conv1", (inner, c_in, KERNELS[i][j], 1, 1))
            bn(b + ".bn1", inner)
            conv(b + ".conv2", (inner, inner, 1, 3, 3))
            bn(b + ".bn2", inner)
            conv(b + ".conv3", (out, inner, 1, 1, 1))
            bn(b + ".bn3", out, gamma=0.5)
            if j == 0:
                conv(b + ".down", (out, c_in, 1, 1, 1))
                bn(b + ".down_bn", out, gamma=0.5)
            if nonlocal_ and j in NONLOCAL[i]:
                heads = ("g",) if pairwise == "gaussian" else ("theta", "phi", "g")
                for h in heads:
                    conv(f"{b}.nl.{h}", (out // 2, out, 1, 1, 1))
                    if pairwise == "dot_product" and h != "g":  # f / N' is not normalised: keep f small
                        p[f"{b}.nl.{h}"] *= 0.02
                    p[f"{b}.nl.{h}_b"] = torch.randn(out // 2, generator=g) * 0.1
                conv(f"{b}.nl.out", (out, out // 2, 1, 1, 1))
                if out_bias:
                    p[f"{b}.nl.out_b"] = torch.randn(out, generator=g) * 0.1
                bn(f"{b}.nl.bn", out)
            c_in = out
    return p


# ------------------------------------------------------------------ the sources' key names


_BN_PT = {"w": "weight", "b": "bias", "rm": "running_mean", "rv": "running_var"}
_BN_C2 = {"w": "s", "b": "b", "rm": "rm", "rv": "riv"}


def _split(name):
    parts = name.split(".")
    return parts, (int(parts[0][1:]), int(parts[1][1:])) if parts[0].startswith("s") and parts[0] != "stem" else None


def pyslowfast_key(name: str) -> str:
    """PySlowFast (video_model_builder.ResNet + resnet_helper + nonlocal_helper) names."""
    parts = name.split(".")
    if parts[0] == "stem":
        return "s1.pathway0_stem.conv.weight" if parts[1] == "conv" else f"s1.pathway0_stem.bn.{_BN_PT[parts[2]]}"
    i, j = int(parts[0][1:]), int(parts[1][1:])
    if parts[2] == "nl":
        head = parts[3]
        if head == "bn":
            return f"s{i + 2}.pathway0_nonlocal{j}.bn.{_BN_PT[parts[4]]}"
        conv, bias = (head[:-2], True) if head.endswith("_b") else (head, False)
        return f"s{i + 2}.pathway0_nonlocal{j}.conv_{conv}.{'bias' if bias else 'weight'}"
    res = f"s{i + 2}.pathway0_res{j}"
    part = parts[2]
    if part == "down":
        return f"{res}.branch1.weight"
    if part == "down_bn":
        return f"{res}.branch1_bn.{_BN_PT[parts[3]]}"
    letter = "abc"[int(part[-1]) - 1]
    return (
        f"{res}.branch2.{letter}.weight" if part.startswith("conv") else f"{res}.branch2.{letter}_bn.{_BN_PT[parts[3]]}"
    )


def mmaction2_key(name: str) -> str:
    """mmaction2 ResNet3d (ConvModule: .conv/.bn) with mmcv NonLocal3d (sub_sample: g.0, phi.0)."""
    parts = name.split(".")
    if parts[0] == "stem":
        return "backbone.conv1.conv.weight" if parts[1] == "conv" else f"backbone.conv1.bn.{_BN_PT[parts[2]]}"
    i, j = int(parts[0][1:]), int(parts[1][1:])
    block = f"backbone.layer{i + 1}.{j}"
    if parts[2] == "nl":
        head = parts[3]
        if head == "bn":
            return f"{block}.non_local_block.conv_out.bn.{_BN_PT[parts[4]]}"
        conv, bias = (head[:-2], True) if head.endswith("_b") else (head, False)
        module = {"theta": "theta.conv", "phi": "phi.0.conv", "g": "g.0.conv", "out": "conv_out.conv"}[conv]
        return f"{block}.non_local_block.{module}.{'bias' if bias else 'weight'}"
    part = parts[2]
    if part == "down":
        return f"{block}.downsample.conv.weight"
    if part == "down_bn":
        return f"{block}.downsample.bn.{_BN_PT[parts[3]]}"
    return (
        f"{block}.conv{part[-1]}.conv.weight"
        if part.startswith("conv")
        else f"{block}.conv{part[-1]}.bn.{_BN_PT[parts[3]]}"
    )


def caffe2_key(name: str) -> str:
    """Caffe2 video-nonlocal-net blob names (resnet_video*.py, resnet_helper.py, nonlocal_helper.py)."""
    parts = name.split(".")
    if parts[0] == "stem":
        return "conv1_w" if parts[1] == "conv" else f"res_conv1_bn_{_BN_C2[parts[2]]}"
    i, j = int(parts[0][1:]), int(parts[1][1:])
    if parts[2] == "nl":
        head = parts[3]
        prefix = f"nonlocal_conv{i + 2}_{j}"
        if head == "bn":
            return f"{prefix}_bn_{_BN_C2[parts[4]]}"
        return f"{prefix}_{head[:-2]}_b" if head.endswith("_b") else f"{prefix}_{head}_w"
    res = f"res{i + 2}_{j}"
    part = parts[2]
    if part == "down":
        return f"{res}_branch1_w"
    if part == "down_bn":
        return f"{res}_branch1_bn_{_BN_C2[parts[3]]}"
    letter = "abc"[int(part[-1]) - 1]
    return f"{res}_branch2{letter}_w" if part.startswith("conv") else f"{res}_branch2{letter}_bn_{_BN_C2[parts[3]]}"


def write_pyslowfast(path, params, cfg: str | None = None):
    state = {pyslowfast_key(k): v for k, v in params.items()}
    for k in [k for k in state if k.endswith("running_var")]:  # nn.BatchNorm3d's counter
        state[k.replace("running_var", "num_batches_tracked")] = torch.tensor(7)
    state["head.projection.weight"], state["head.projection.bias"] = torch.zeros(400, 128), torch.zeros(400)
    obj = {"epoch": 196, "model_state": state, "optimizer_state": {}}
    if cfg is not None:
        obj["cfg"] = cfg
    torch.save(obj, path)


def write_mmaction2(path, params, meta_cfg: str | None = None):
    state = {mmaction2_key(k): v for k, v in params.items()}
    for k in [k for k in state if k.endswith("running_var")]:
        state[k.replace("running_var", "num_batches_tracked")] = torch.tensor(7)
    state["cls_head.fc_cls.weight"], state["cls_head.fc_cls.bias"] = torch.zeros(400, 128), torch.zeros(400)
    obj = {"state_dict": state, "meta": {"epoch": 100}}
    if meta_cfg is not None:
        obj["meta"]["cfg"] = meta_cfg
    torch.save(obj, path)


def write_caffe2(path, params):
    blobs = {caffe2_key(k): v.numpy().copy() for k, v in params.items()}
    blobs.update(
        {
            "pred_w": np.zeros((400, 128), np.float32),
            "pred_b": np.zeros(400, np.float32),
            "conv1_w_momentum": np.zeros_like(blobs["conv1_w"]),
            "lr": np.array([0.01], np.float32),
            "model_iter": np.array([400000], np.int64),
        }
    )
    path.write_bytes(pickle.dumps({"blobs": blobs}, protocol=2))


def test_key_sets_are_the_sources_names():
    """The names of every parameter kind, written out as the sources write them."""
    p = reference_params()
    assert pyslowfast_key("stem.conv") == "s1.pathway0_stem.conv.weight"
    assert pyslowfast_key("s1.b1.nl.theta_b") == "s3.pathway0_nonlocal1.conv_theta.bias"
    assert pyslowfast_key("s0.b0.down_bn.rv") == "s2.pathway0_res0.branch1_bn.running_var"
    assert pyslowfast_key("s2.b3.bn2.w") == "s4.pathway0_res3.branch2.b_bn.weight"
    assert mmaction2_key("stem.bn.rm") == "backbone.conv1.bn.running_mean"
    assert mmaction2_key("s0.b0.conv1") == "backbone.layer1.0.conv1.conv.weight"
    assert mmaction2_key("s0.b0.down") == "backbone.layer1.0.downsample.conv.weight"
    assert mmaction2_key("s1.b1.nl.g_b") == "backbone.layer2.1.non_local_block.g.0.conv.bias"
    assert mmaction2_key("s1.b1.nl.phi") == "backbone.layer2.1.non_local_block.phi.0.conv.weight"
    assert mmaction2_key("s1.b1.nl.theta") == "backbone.layer2.1.non_local_block.theta.conv.weight"
    assert mmaction2_key("s1.b1.nl.out") == "backbone.layer2.1.non_local_block.conv_out.conv.weight"
    assert mmaction2_key("s1.b1.nl.bn.w") == "backbone.layer2.1.non_local_block.conv_out.bn.weight"
    assert caffe2_key("stem.bn.rv") == "res_conv1_bn_riv"
    assert caffe2_key("s2.b5.conv3") == "res4_5_branch2c_w"
    assert caffe2_key("s1.b3.nl.out_b") == "nonlocal_conv3_3_out_b"
    assert caffe2_key("s1.b3.nl.bn.w") == "nonlocal_conv3_3_bn_s"
    for namer in (pyslowfast_key, mmaction2_key, caffe2_key):
        assert len({namer(k) for k in p}) == len(p)  # one name per parameter


# ------------------------------------------------------------------ the sources' computation, plainly


def _bn(x, p, name):
    shape = (1, -1, 1, 1, 1)
    return (x - p[name + ".rm"].view(shape)) / torch.sqrt(p[name + ".rv"].view(shape) + EPS) * p[name + ".w"].view(
        shape
    ) + p[name + ".b"].view(shape)


def _pointwise(x, w, b=None):
    y = torch.einsum("oc,bcthw->bothw", w.flatten(1), x)
    return y if b is None else y + b.view(1, -1, 1, 1, 1)


def _nonlocal(x, p, b, sem):
    """The block as each source writes it: Caffe2 nonlocal_helper / PySlowFast Nonlocal (pool x,
    then phi and g; scaled softmax), mmcv NonLocal3d (phi and g pooled after their convs;
    use_scale; dot_product divides by N'; gaussian compares x itself)."""
    pairwise, pool, scale = sem["nl"]
    pool2d = lambda t: F.max_pool3d(t, (1, 2, 2), (1, 2, 2))  # noqa: E731
    n, c, t, h, w = x.shape
    if pairwise == "gaussian":
        theta, phi = x.flatten(2), pool2d(x).flatten(2)
        g = pool2d(_pointwise(x, p[f"{b}.nl.g"], p[f"{b}.nl.g_b"])).flatten(2)
    elif pool == "before":
        xp = pool2d(x)
        theta = _pointwise(x, p[f"{b}.nl.theta"], p[f"{b}.nl.theta_b"]).flatten(2)
        phi = _pointwise(xp, p[f"{b}.nl.phi"], p[f"{b}.nl.phi_b"]).flatten(2)
        g = _pointwise(xp, p[f"{b}.nl.g"], p[f"{b}.nl.g_b"]).flatten(2)
    else:
        theta = _pointwise(x, p[f"{b}.nl.theta"], p[f"{b}.nl.theta_b"]).flatten(2)
        phi = pool2d(_pointwise(x, p[f"{b}.nl.phi"], p[f"{b}.nl.phi_b"])).flatten(2)
        g = pool2d(_pointwise(x, p[f"{b}.nl.g"], p[f"{b}.nl.g_b"])).flatten(2)
    f = torch.einsum("bci,bcj->bij", theta, phi)
    if pairwise == "dot_product":
        attn = f / f.shape[-1]
    else:
        attn = (f * theta.shape[1] ** -0.5 if scale else f).softmax(-1)
    y = torch.einsum("bij,bcj->bci", attn, g).reshape(n, -1, t, h, w)
    return x + _bn(_pointwise(y, p[f"{b}.nl.out"], p.get(f"{b}.nl.out_b")), p, f"{b}.nl.bn")


def reference_forward(p, raw, sem, stage_blocks=(1, 2, 4, 1)) -> dict:
    """raw: (B, 3, T, H, W) RGB frames with values in [0, 255] -> features after res2 (and
    pool2), res3, res4, res5, computed as the source computes them."""
    frames = raw.flip(1) if sem["channels"] == "bgr" else raw  # what the source's decoder fed its net
    mean = torch.tensor(sem["mean"]).view(1, 3, 1, 1, 1)
    std = torch.tensor(sem["std"]).view(1, 3, 1, 1, 1)
    x = (frames * (sem["value_scale"] / 255.0) - mean) / std
    s_conv1, s_pool1, s_pool2 = sem["strides"]
    x = F.relu(_bn(F.conv3d(x, p["stem.conv"], stride=(s_conv1, 2, 2), padding=(2, 3, 3)), p, "stem.bn"))
    kt = s_pool1 if sem["stem_pool"] == "pairs" else 1
    pad = sem["stem_pad"]
    x = F.max_pool3d(x, (kt, 3, 3), stride=(s_pool1, 2, 2), padding=(0, pad, pad))
    out = {}
    for i, n in enumerate(stage_blocks):
        stride, dil = SPATIAL[i]
        for j in range(n):
            b, s = f"s{i}.b{j}", stride if j == 0 else 1
            k = KERNELS[i][j]
            y = F.relu(_bn(F.conv3d(x, p[b + ".conv1"], padding=(k // 2, 0, 0)), p, b + ".bn1"))
            y = F.relu(
                _bn(
                    F.conv3d(y, p[b + ".conv2"], stride=(1, s, s), padding=(0, dil, dil), dilation=(1, dil, dil)),
                    p,
                    b + ".bn2",
                )
            )
            y = _bn(F.conv3d(y, p[b + ".conv3"]), p, b + ".bn3")
            short = _bn(F.conv3d(x, p[b + ".down"], stride=(1, s, s)), p, b + ".down_bn") if j == 0 else x
            x = F.relu(y + short)
            if f"{b}.nl.g" in p:
                x = _nonlocal(x, p, b, sem)
        if i == 0:
            kp = sem["pool2"]
            x = F.max_pool3d(x, (kp, 1, 1), stride=(s_pool2, 1, 1), padding=(kp // 2 if kp == 3 else 0, 0, 0))
        out[f"res{i + 2}"] = x
    return out


def strg_features(model, raw) -> dict:
    """strg's backbone on the raw clip normalised by the model's source (data_mean / data_std,
    RGB on [0, 1], as strg's data pipeline does)."""
    bb = model.backbone
    mean = torch.tensor(bb.source.data_mean).view(1, 3, 1, 1, 1)
    std = torch.tensor(bb.source.data_std).view(1, 3, 1, 1, 1)
    x = (raw / 255.0 - mean) / std
    out = {}
    with torch.no_grad():
        x = bb.maxpool(bb.relu(bb.bn1(bb.conv1(x))))
        out["res2"] = x = bb.pool2(bb.layer1(x))
        out["res3"] = x = bb.layer2(x)
        out["res4"] = x = bb.layer3(x)
        out["res5"] = bb.layer4(x)
    return out


def rel(a, b) -> float:
    return float((a - b).norm() / b.norm())


def assert_same(got: dict, want: dict, tol=2e-5):
    for stage in want:
        assert got[stage].shape == want[stage].shape, stage
        assert rel(got[stage], want[stage]) < tol, (stage, rel(got[stage], want[stage]))


def raw_clip(t=16, size=64, seed=1):
    return torch.rand(1, 3, t, size, size, generator=torch.Generator().manual_seed(seed)) * 255


# Each source's semantics, as facts (docs/checkpoints.md has file and line for each):
PYSLOWFAST = dict(
    stem_pool="subsample",
    stem_pad=1,
    pool2=2,
    nl=("embedded_gaussian", "before", True),
    channels="rgb",
    mean=(0.45,) * 3,
    std=(0.225,) * 3,
    value_scale=1.0,
)
MMACTION2 = dict(
    stem_pool="subsample",
    stem_pad=1,
    pool2=2,
    nl=("embedded_gaussian", "after", False),
    channels="rgb",
    mean=(123.675, 116.28, 103.53),
    std=(58.395, 57.12, 57.375),
    value_scale=255.0,
)
VIDEO_NONLOCAL_NET = dict(
    stem_pool="pairs",
    stem_pad=0,
    pool2=2,
    nl=("embedded_gaussian", "before", True),
    channels="rgb",
    mean=(114.75,) * 3,
    std=(57.375,) * 3,
    value_scale=255.0,
)


def _build(path, nl=True, **kw):
    return build_model(
        "nl_i3d_r50" if nl else "i3d_r50", num_classes=3, **TINY, backbone_checkpoint=str(path), **kw
    ).eval()


# ------------------------------------------------------------------ PySlowFast


@pytest.mark.parametrize("nl", [False, True])
def test_pyslowfast_pyth_features(tmp_path, nl):
    p = reference_params(nonlocal_=nl)
    path = tmp_path / "I3D_NLN_8x8_R50.pyth"
    write_pyslowfast(path, p)
    model = _build(path, nl=nl, temporal_strides=(1, 1, 2))  # the 8x8 configs: no stride before pool2
    assert model.backbone.source.name == "pyslowfast" and model.backbone.pool2_kernel == 2
    raw = raw_clip(t=8)
    sem = dict(PYSLOWFAST, strides=(1, 1, 2))
    assert_same(strg_features(model, raw), reference_forward(p, raw, sem))
    if nl:  # the non-local blocks matter: mmcv's variant gives other features
        other = reference_forward(p, raw, dict(sem, nl=("embedded_gaussian", "after", False)))
        assert rel(strg_features(model, raw)["res4"], other["res4"]) > 1e-2


def test_pyslowfast_saved_cfg_dot_product_and_normalisation(tmp_path):
    """A .pyth's cfg (PySlowFast saves cfg.dump()) tells the non-local instantiation and DATA.MEAN/STD."""
    p = reference_params(pairwise="dot_product")
    cfg = "DATA:\n  MEAN: [0.4, 0.45, 0.5]\n  STD: [0.2, 0.225, 0.25]\nNONLOCAL:\n  INSTANTIATION: dot_product\n"
    path = tmp_path / "dot.pyth"
    write_pyslowfast(path, p, cfg=cfg)
    model = _build(path, temporal_strides=(1, 1, 2))
    src = model.backbone.source
    assert (
        src.name == "pyslowfast_dot_product"
        and src.data_mean == (0.4, 0.45, 0.5)
        and src.data_std == (0.2, 0.225, 0.25)
    )
    raw = raw_clip(t=8)
    sem = dict(
        PYSLOWFAST,
        strides=(1, 1, 2),
        nl=("dot_product", "before", False),
        mean=(0.4, 0.45, 0.5),
        std=(0.2, 0.225, 0.25),
    )
    assert_same(strg_features(model, raw), reference_forward(p, raw, sem))
    with pytest.raises(CheckpointError, match="dot.pyth.*'pyslowfast' contradicts the file"):
        _build(path, temporal_strides=(1, 1, 2), backbone_source="pyslowfast")


# ------------------------------------------------------------------ mmaction2


def test_mmaction2_i3d_r50_subsamples_in_the_stem(tmp_path):
    """mmaction2's I3D R50 config: conv1_stride_t=2, pool1_stride_t=2 with a (1, 3, 3) pool1."""
    p = reference_params(nonlocal_=False)
    path = tmp_path / "i3d_r50.pth"
    write_mmaction2(path, p)
    model = _build(path, nl=False, temporal_strides=(2, 2, 2))
    src = model.backbone.source
    assert src.name == "mmaction2" and model.backbone.maxpool.kernel_size == (1, 3, 3)
    assert src.data_mean == (0.485, 0.456, 0.406) and src.data_std == (0.229, 0.224, 0.225)  # /255
    raw = raw_clip()
    sem = dict(MMACTION2, strides=(2, 2, 2))
    got = strg_features(model, raw)
    assert_same(got, reference_forward(p, raw, sem))
    pairs = reference_forward(p, raw, dict(sem, stem_pool="pairs"))  # what strg computed before
    assert rel(got["res5"], pairs["res5"]) > 1e-2
    kinetics_norm = reference_forward(p, raw, dict(sem, mean=(0.45,) * 3, std=(0.225,) * 3, value_scale=1.0))
    assert rel(got["res2"], kinetics_norm["res2"]) > 1e-2


@pytest.mark.parametrize(
    "mode,name",
    [("embedded_gaussian", "mmaction2"), ("dot_product", "mmaction2_dot_product"), ("gaussian", "mmaction2_gaussian")],
)
def test_mmaction2_nonlocal_variants(tmp_path, mode, name):
    """mmaction2's I3D NL configs: non_local_cfg sub_sample=True, use_scale=False, BN3d norm on
    conv_out (no bias), mode embedded_gaussian / dot_product / gaussian."""
    p = reference_params(pairwise=mode, out_bias=False)
    path = tmp_path / f"i3d_nl_{mode}.pth"
    meta = f"model = dict(backbone=dict(non_local_cfg=dict(sub_sample=True, use_scale=False, mode='{mode}')))"
    write_mmaction2(path, p, meta_cfg=meta)
    model = _build(path, temporal_strides=(2, 2, 2))
    assert model.backbone.source.name == name
    assert "out.bias" not in "".join(model.backbone.state_dict())
    raw = raw_clip()
    sem = dict(MMACTION2, strides=(2, 2, 2), nl=(mode, "after", False))
    got = strg_features(model, raw)
    assert_same(got, reference_forward(p, raw, sem))
    if mode != "gaussian":  # pooling before phi and g (Caffe2, PySlowFast) computes otherwise
        before = reference_forward(p, raw, dict(sem, nl=(mode, "before", False)))
        assert rel(got["res4"], before["res4"]) > 1e-3
    if mode == "embedded_gaussian":  # use_scale=False matters too
        scaled = reference_forward(p, raw, dict(sem, nl=(mode, "after", True)))
        assert rel(got["res4"], scaled["res4"]) > 1e-2


def test_mmaction2_without_saved_config_assumes_embedded_gaussian(tmp_path, caplog):
    p = reference_params(pairwise="dot_product", out_bias=False)
    path = tmp_path / "nl.pth"
    write_mmaction2(path, p)
    with caplog.at_level("INFO"):
        model = _build(path, temporal_strides=(2, 2, 2))
    assert model.backbone.source.name == "mmaction2" and "embedded_gaussian' assumed" in caplog.text
    model = _build(path, temporal_strides=(2, 2, 2), backbone_source="mmaction2_dot_product")  # the user decides
    raw = raw_clip()
    assert_same(
        strg_features(model, raw),
        reference_forward(p, raw, dict(MMACTION2, strides=(2, 2, 2), nl=("dot_product", "after", False))),
    )
    with pytest.raises(CheckpointError, match="nl.pth.*'pyslowfast' cannot be a mmaction2 checkpoint"):
        _build(path, temporal_strides=(2, 2, 2), backbone_source="pyslowfast")


# ------------------------------------------------------------------ Caffe2 .pkl


def test_caffe2_pkl_video_nonlocal_net_default(tmp_path, caplog):
    """video-nonlocal-net's I3D 32x2: conv1 stride 2 in time, pool1 kernels [2, 3, 3] strides
    [2, 2, 2] pads 0, pool2 [2, 1, 1]; RGB frames (MODEL.USE_BGR False), 114.75 / 57.375 on 0-255."""
    p = reference_params()
    path = tmp_path / "i3d_nonlocal_32x2_IN_pretrain_400k.pkl"
    write_caffe2(path, p)
    with caplog.at_level("INFO"):
        model = _build(path, temporal_strides=(2, 2, 2))
    src = model.backbone.source
    assert src.name == "video_nonlocal_net" and "video_nonlocal_net assumed" in caplog.text
    assert src.data_mean == (0.45,) * 3 and src.data_std == (0.225,) * 3
    raw = raw_clip()
    sem = dict(VIDEO_NONLOCAL_NET, strides=(2, 2, 2))
    got = strg_features(model, raw)
    assert_same(got, reference_forward(p, raw, sem))
    bgr = reference_forward(p, raw, dict(sem, channels="bgr"))  # what flipping conv1 for every .pkl gave
    assert rel(got["res2"], bgr["res2"]) > 1e-2


@pytest.mark.parametrize("name", ["pyslowfast", "video_nonlocal_net_bgr"])
def test_caffe2_pkl_origin_is_the_users_choice(tmp_path, name):
    p = reference_params()
    path = tmp_path / "I3D_NLN_8x8_R50.pkl"
    write_caffe2(path, p)
    strides = (1, 1, 2) if name == "pyslowfast" else (2, 2, 2)
    model = _build(path, temporal_strides=strides, backbone_source=name)
    raw = raw_clip(t=8 if name == "pyslowfast" else 16)
    sem = dict(PYSLOWFAST if name == "pyslowfast" else dict(VIDEO_NONLOCAL_NET, channels="bgr"), strides=strides)
    assert_same(strg_features(model, raw), reference_forward(p, raw, sem))
    with pytest.raises(CheckpointError, match="'mmaction2' cannot be a caffe2 checkpoint"):
        _build(path, temporal_strides=strides, backbone_source="mmaction2")


def test_caffe2_affine_bn_models(tmp_path):
    """video-nonlocal-net's "affine" models keep only *_bn_s / *_bn_b (AffineNd: x * s + b)."""
    p = reference_params(nonlocal_=False)
    path = tmp_path / "i3d_baseline_32x4_I3D_pretrain_400k.pkl"
    blobs = {caffe2_key(k): v.numpy().copy() for k, v in p.items() if not k.endswith((".rm", ".rv"))}
    path.write_bytes(pickle.dumps({"blobs": blobs}, protocol=2))
    model = _build(path, nl=False, temporal_strides=(2, 2, 2))
    for k in [k for k in p if k.endswith(".rm")]:
        p[k] = torch.zeros_like(p[k])
        p[k[:-3] + ".rv"] = torch.full_like(p[k], 1 - EPS)  # x * s + b exactly: (x - 0) / sqrt(1) * s + b
    raw = raw_clip()
    assert_same(strg_features(model, raw), reference_forward(p, raw, dict(VIDEO_NONLOCAL_NET, strides=(2, 2, 2))))


# ------------------------------------------------------------------ round trip and bad input


def test_round_trip_keeps_source_and_features(tmp_path):
    from strg.engine import checkpoint as ckpt_lib

    p = reference_params(out_bias=False)
    path = tmp_path / "mm.pth"
    write_mmaction2(path, p, meta_cfg="non_local_cfg=dict(sub_sample=True, use_scale=False, mode='embedded_gaussian')")
    first = _build(path, temporal_strides=(2, 2, 2))
    saved = tmp_path / "run.pt"
    ckpt_lib.save_checkpoint(
        saved, {"model": first.state_dict(), "config": {"model": {"backbone_source": "mmaction2"}}}
    )
    second = _build(saved, temporal_strides=(2, 2, 2))
    assert second.backbone.source.name == "mmaction2"
    raw = raw_clip()
    assert_same(strg_features(second, raw), strg_features(first, raw), tol=1e-7)
    bare = tmp_path / "bare.pth"  # a plain backbone state dict does not say its source
    torch.save(first.backbone.state_dict(), bare)
    with pytest.raises(CheckpointError, match="bare.pth.*'strg' assumed.*build it with backbone_source"):
        _build(bare, temporal_strides=(2, 2, 2))
    third = _build(bare, temporal_strides=(2, 2, 2), backbone_source="mmaction2")
    assert_same(strg_features(third, raw), strg_features(first, raw), tol=1e-7)


def test_bad_checkpoints_name_the_file_and_load_nothing(tmp_path):
    from strg.models.backbone import i3d_resnet
    from strg.models.weights import load_i3d_checkpoint

    junk = tmp_path / "junk.pth"
    torch.save({"state_dict": {"encoder.weight": torch.zeros(2)}}, junk)
    with pytest.raises(CheckpointError, match="junk.pth: unrecognised checkpoint keys"):
        _build(junk)
    p = reference_params()
    state = {mmaction2_key(k): v for k, v in p.items()}
    state["backbone.layer2.1.non_local_block.concat_project.conv.weight"] = torch.zeros(1, 16, 1, 1)
    concat = tmp_path / "concat.pth"
    torch.save({"state_dict": state}, concat)
    with pytest.raises(CheckpointError, match="concat.pth.*'concatenation'"):
        _build(concat, temporal_strides=(2, 2, 2))
    no_sub = tmp_path / "nosub.pth"
    torch.save(
        {"state_dict": {k.replace("g.0.conv", "g.conv"): v for k, v in state.items() if "concat" not in k}}, no_sub
    )
    with pytest.raises(CheckpointError, match="nosub.pth.*sub_sample=False"):
        _build(no_sub, temporal_strides=(2, 2, 2))
    odd = tmp_path / "odd.pyth"
    torch.save(
        {
            "model_state": {
                **{pyslowfast_key(k): v for k, v in p.items()},
                "s3.pathway0_res1.branch2.d.weight": torch.zeros(1),
            }
        },
        odd,
    )
    with pytest.raises(CheckpointError, match="odd.pyth: 1 pyslowfast backbone keys that strg cannot place"):
        _build(odd)

    deeper = reference_params(stage_blocks=(1, 2, 6, 1))  # another depth: more res4 blocks
    path = tmp_path / "deeper.pyth"
    write_pyslowfast(path, deeper)
    backbone = i3d_resnet(50, **TINY, nonlocal_=True, source="pyslowfast")
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    with pytest.raises(
        CheckpointError, match=r"deeper.pyth.*unexpected.*\(1, 2, 6, 1\) in the file, \(1, 2, 4, 1\) in this backbone"
    ):
        load_i3d_checkpoint(backbone, path)
    assert all(torch.equal(before[k], v) for k, v in backbone.state_dict().items())  # nothing half-loaded
    mm = tmp_path / "mm.pth"
    write_mmaction2(mm, reference_params(out_bias=False))
    with pytest.raises(CheckpointError, match="mm.pth: the checkpoint's source is 'mmaction2'.*built for 'pyslowfast'"):
        load_i3d_checkpoint(backbone, mm)
    assert all(torch.equal(before[k], v) for k, v in backbone.state_dict().items())


# ------------------------------------------------------------------ the run config keeps the source


def test_config_fills_and_guards_the_source(tmp_path):
    from strg.config import load_config
    from strg.engine.backbone_source import apply_backbone_source
    from strg.engine.stage_checks import check_backbone_settings

    path = tmp_path / "mm.pth"
    write_mmaction2(path, reference_params(nonlocal_=False))
    base = {
        "model": {
            "name": "i3d_r50",
            "width": 4,
            "stage_blocks": [1, 2, 4, 1],
            "temporal_strides": [2, 2, 2],
            "backbone_checkpoint": str(path),
        },
        "data": {"kind": "charades", "root": str(tmp_path)},
    }
    cfg = load_config(base)
    assert cfg.data.options.mean is None and cfg.model.backbone_source is None
    notes = apply_backbone_source(cfg)
    assert cfg.model.backbone_source == "mmaction2" and cfg.model.pool2_kernel == 2
    assert cfg.data.options.mean == (0.485, 0.456, 0.406) and cfg.data.options.std == (0.229, 0.224, 0.225)
    assert any("model.backbone_source: mmaction2" in n for n in notes)
    explicit = load_config(base, ["data.mean=[0.45,0.45,0.45]", "data.std=[0.225,0.225,0.225]"])
    assert any(
        "data.mean is [0.45, 0.45, 0.45]; source 'mmaction2'" in n for n in apply_backbone_source(explicit)
    )
    with pytest.raises(CheckpointError, match="mm.pth: backbone_source 'video_nonlocal_net' contradicts the file"):
        apply_backbone_source(load_config(base, ["model.backbone_source=video_nonlocal_net"]))
    with pytest.raises(ConfigError, match="model.backbone_source: must be one of"):
        load_config(base, ["model.backbone_source=caffe3"])
    # a later stage built without the Kinetics file gets source 'strg': refused against the run's
    later = load_config({**base, "model": {k: v for k, v in base["model"].items() if k != "backbone_checkpoint"}})
    apply_backbone_source(later)
    with pytest.raises(ConfigError, match="model.backbone_source: 'mmaction2' there, 'strg' here"):
        check_backbone_settings(cfg.to_dict(), later, "runs/a/checkpoints/x.pt")


def test_run_records_the_source_and_later_stages_keep_it(tmp_path, one_thread):
    """A backbone stage from a Kinetics file records the source in config.yaml and checkpoints; a
    graph stage built without it is refused, one that names it runs."""
    import yaml

    from strg.engine import train

    path = tmp_path / "i3d_r50.pth"
    write_mmaction2(path, reference_params(stage_blocks=(1, 1, 1, 1), nonlocal_=False))

    def tiny(name, **kw):
        return {
            "model": {"name": name, "width": 4, "stage_blocks": [1, 1, 1, 1], "dim": 8, "gcn_layers": 1},
            "data": {
                "kind": "random",
                "num_videos": 4,
                "num_classes": 3,
                "frames": 2,
                "size": 32,
                "boxes_per_frame": 2,
            },
            "train": {
                "iterations": 1,
                "batch_size": 1,
                "batch_per_device": 1,
                "checkpoint_period": 1,
                "num_workers": 0,
                "device": "cpu",
                "tensorboard": False,
                "progress": False,
                **kw,
            },
            "eval": {"split": None},
        }

    first = tiny("i3d_r50")
    first["model"]["backbone_checkpoint"] = str(path)
    train(first, run_dir=tmp_path / "backbone")
    saved = yaml.safe_load((tmp_path / "backbone" / "config.yaml").read_text())
    assert saved["model"]["backbone_source"] == "mmaction2" and saved["model"]["pool2_kernel"] == 2
    assert "model.backbone_source: mmaction2" in (tmp_path / "backbone" / "log.txt").read_text()
    graph = tiny("joint_gcn_r50", stage="graph", init=str(tmp_path / "backbone"))
    with pytest.raises(ConfigError, match=r"model.backbone_source: 'mmaction2' there, 'strg' here"):
        train(graph, run_dir=tmp_path / "graph")
    graph["model"]["backbone_source"] = "mmaction2"
    train(graph, run_dir=tmp_path / "graph2")
