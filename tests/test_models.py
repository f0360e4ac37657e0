"""The model: shapes, graphs against hand-computed cases, gradients, RoIAlign, inflation."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torchvision
from torch import nn

from strg.errors import CheckpointError
from strg.models import build_model, list_models
from strg.models.backbone import FrozenBatchNorm3d, i3d_resnet
from strg.models.complexity import count_complexity
from strg.models.graphs import (
    box_iou_batched,
    frame_pair_graphs,
    frame_pair_messages,
    similarity_graph,
    spatial_temporal_graphs,
)
from strg.models.nonlocal_block import NonLocalBlock
from strg.models.region import region_features
from strg.models.weights import inflate_resnet2d

TINY = dict(width=4, stage_blocks=(1, 1, 2, 1), dim=8)
HEADS = ["i3d", "proposal_avgpool", "st_gcn", "sim_gcn", "joint_gcn"]


def tiny_inputs(b=2, t=8, k=3, size=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    clips = torch.randn(b, 3, t, size, size, generator=g)
    xy = torch.rand(b, t, k, 2, generator=g) * size * 0.6
    wh = torch.rand(b, t, k, 2, generator=g) * size * 0.3 + 4
    boxes = torch.cat([xy, xy + wh], dim=-1)
    mask = torch.rand(b, t, k, generator=g) > 0.2
    mask[:, :, 0] = True
    return clips, boxes, mask


# ---------------------------------------------------------------- shapes and registry


def test_registry_names_and_errors():
    names = list_models()
    assert len(names) == 20 and len(set(names)) == 20
    assert {"i3d_r50", "joint_gcn_r50", "nl_joint_gcn_r101", "proposal_avgpool_r101"} <= set(names)
    with pytest.raises(ValueError, match="unknown model variant"):
        build_model("joint_gcn_r34", num_classes=3)


@pytest.mark.parametrize("head", HEADS)
@pytest.mark.parametrize("nl", ["", "nl_"])
def test_forward_shapes_every_variant(head, nl):
    torch.manual_seed(0)
    model = build_model(f"{nl}{head}_r50", num_classes=5, **TINY).eval()
    clips, boxes, mask = tiny_inputs()
    with torch.no_grad():
        feats = model.backbone(clips)
        assert feats.shape == (2, 32 * TINY["width"], 4, 4, 4)  # T/2, H/16
        out = model(clips, boxes, mask)
    assert out.shape == (2, 5)
    assert torch.isfinite(out).all()
    assert model.uses_boxes == (head != "i3d")
    assert model.num_features == (2 * TINY["dim"] if head != "i3d" else 32 * TINY["width"])


def test_paper_backbone_shape_meta():
    with torch.device("meta"):
        backbone = i3d_resnet(50)
        out = backbone(torch.empty(1, 3, 32, 224, 224))
    assert out.shape == (1, 2048, 16, 14, 14)  # paper Table 1 / section 3


@pytest.mark.parametrize("kernel", [2, 3])
def test_pool2_kernel_setting(kernel):
    b = i3d_resnet(50, width=4, stage_blocks=(1, 1, 1, 1), pool2_kernel=kernel)
    assert b.pool2.kernel_size[0] == kernel
    assert b(torch.randn(1, 3, 8, 32, 32)).shape[2] == 4


def test_frozen_bn_default_and_setting():
    frozen = i3d_resnet(50, width=4, stage_blocks=(1, 1, 1, 1))
    assert not any(isinstance(m, nn.BatchNorm3d) for m in frozen.modules())
    assert not any("bn" in n for n, _ in frozen.named_parameters())
    free = i3d_resnet(50, width=4, stage_blocks=(1, 1, 1, 1), frozen_bn=False)
    assert any(isinstance(m, nn.BatchNorm3d) for m in free.modules())


def test_frozen_bn_matches_batchnorm_eval():
    bn = nn.BatchNorm3d(6).eval()
    bn.running_mean.normal_()
    bn.running_var.uniform_(0.5, 2)
    bn.weight.data.normal_()
    bn.bias.data.normal_()
    frozen = FrozenBatchNorm3d(6)
    frozen.load_state_dict(bn.state_dict())
    x = torch.randn(2, 6, 3, 4, 4)
    torch.testing.assert_close(frozen(x), bn(x))


def test_nonlocal_positions_and_identity_at_init():
    r50 = i3d_resnet(50, width=4, nonlocal_=True)
    where = [n for n, m in r50.named_modules() if isinstance(m, NonLocalBlock)]
    assert where == [
        "layer2.1.nonlocal_block", "layer2.3.nonlocal_block",
        "layer3.1.nonlocal_block", "layer3.3.nonlocal_block", "layer3.5.nonlocal_block",
    ]
    r101 = i3d_resnet(101, width=4, nonlocal_=True)
    where = [n for n, m in r101.named_modules() if isinstance(m, NonLocalBlock)]
    assert where[2:] == ["layer3.6.nonlocal_block", "layer3.13.nonlocal_block", "layer3.20.nonlocal_block"]
    block = NonLocalBlock(8)
    x = torch.randn(1, 8, 2, 4, 4)
    torch.testing.assert_close(block(x), x)  # gamma = 0: a new block is an identity


def test_temporal_kernel_table_r50():
    b = i3d_resnet(50, width=4)
    kernels = [[blk.conv1.kernel_size[0] for blk in layer] for layer in (b.layer1, b.layer2, b.layer3, b.layer4)]
    assert kernels == [[3, 3, 3], [3, 1, 3, 1], [3, 1, 3, 1, 3, 1], [1, 3, 1]]
    assert b.conv1.kernel_size == (5, 7, 7)
    assert b.layer4[1].conv2.dilation == (1, 2, 2) and b.layer4[0].conv2.stride == (1, 1, 1)


# ---------------------------------------------------------------- complexity (paper figures)


def test_paper_gmacs_and_params():
    base = count_complexity("i3d_r50")
    joint = count_complexity("joint_gcn_r50")
    # Paper section 6.2: 153 GMAC baseline, 158 with Joint GCN (see README for the difference).
    assert abs(base.gmac - 152.47) < 0.05
    assert abs(joint.gmac - 159.91) < 0.05
    assert joint.gmac_backbone == pytest.approx(base.gmac_backbone)
    assert base.params == 27_492_445  # ResNet-50 I3D + 157-way fc
    d = 512
    reduce, classifier = 2048 * d + d, 2 * d * 157 + 157
    sim = 2 * d * d + (d * d + d) + 3 * d * d + 3 * 2 * d  # phi, phi', g, W x 3, LayerNorm x 3
    st = (d * d + d) + 2 * 3 * d * d + 3 * 2 * d  # g, W_front and W_back x 3, LayerNorm x 3
    assert joint.params == base.params_backbone + reduce + sim + st + classifier
    nl = count_complexity("nl_i3d_r50")
    assert abs((nl.gmac - base.gmac) - 68.4) < 0.5  # five NL blocks, docs/model.md: about 68 GMAC


# ---------------------------------------------------------------- graph builders


def test_similarity_graph_hand_case_and_padding():
    a = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [5.0, 5.0]]])
    b = torch.tensor([[[1.0, 0.0], [0.0, 2.0], [9.0, 9.0]]])
    mask = torch.tensor([[True, True, False]])
    g = similarity_graph(a, b, mask)
    # row 0: logits (1, 0) over the two real nodes; row 1: (0, 2)
    e = math.e
    expected = torch.tensor([[[e / (e + 1), 1 / (e + 1), 0.0],
                              [1 / (1 + e**2), e**2 / (1 + e**2), 0.0],
                              [0.0, 0.0, 0.0]]])
    torch.testing.assert_close(g, expected)
    # unmasked: a softmax over all columns
    torch.testing.assert_close(similarity_graph(a, b).sum(-1), torch.ones(1, 3))


def test_similarity_graph_no_real_node_is_zero_not_nan():
    a = torch.randn(1, 4, 3, requires_grad=True)
    g = similarity_graph(a, a, torch.zeros(1, 4, dtype=torch.bool))
    assert torch.equal(g, torch.zeros(1, 4, 4))
    g.sum().backward()
    assert torch.isfinite(a.grad).all()


def test_iou_continuous_coordinates():
    a = torch.tensor([[0.0, 0.0, 2.0, 2.0]])
    b = torch.tensor([[1.0, 1.0, 3.0, 3.0], [2.0, 0.0, 4.0, 2.0], [0.0, 0.0, 2.0, 2.0]])
    torch.testing.assert_close(box_iou_batched(a, b), torch.tensor([[1 / 7, 0.0, 1.0]]))


def test_spatial_temporal_graphs_hand_case():
    # frame 0: node 0 = [0,0,2,2], node 1 = [10,10,12,12] (overlaps nothing)
    # frame 1: node 2 = [1,1,3,3] (IoU 1/7 with node 0), node 3 = [0,0,2,2] (IoU 1 with node 0)
    # node 4: padded
    boxes = torch.tensor([[[0, 0, 2, 2], [10, 10, 12, 12], [1, 1, 3, 3], [0, 0, 2, 2], [0, 0, 2, 2]]],
                         dtype=torch.float)
    frames = torch.tensor([[0, 0, 1, 1, 1]])
    mask = torch.tensor([[True, True, True, True, False]])
    front, back = spatial_temporal_graphs(boxes, frames, mask)
    s = 1 / 7 + 1
    exp_front = torch.zeros(1, 5, 5)
    exp_front[0, 0, 2], exp_front[0, 0, 3] = (1 / 7) / s, 1 / s
    exp_back = torch.zeros(1, 5, 5)
    exp_back[0, 2, 0] = 1.0  # node 2 overlaps only node 0 in frame 0
    exp_back[0, 3, 0] = 1.0
    torch.testing.assert_close(front, exp_front)
    torch.testing.assert_close(back, exp_back)
    assert torch.equal(front[0, 1], torch.zeros(5))  # no overlap: an all-zero row, not NaN
    assert front[0, 4].abs().sum() == 0 and front[0, :, 4].abs().sum() == 0  # padded node
    assert back[0, 4].abs().sum() == 0 and back[0, :, 4].abs().sum() == 0


def test_frame_pair_graphs_equal_dense_graphs():
    _, boxes, mask = tiny_inputs(b=2, t=5, k=4, seed=3)
    b, t, k = mask.shape
    front_blocks, back_blocks = frame_pair_graphs(boxes, mask)
    frames = torch.arange(t).repeat_interleave(k).expand(b, -1)
    front, back = spatial_temporal_graphs(boxes.reshape(b, t * k, 4), frames, mask.reshape(b, t * k))
    for i in range(t - 1):
        rows, cols = slice(i * k, (i + 1) * k), slice((i + 1) * k, (i + 2) * k)
        torch.testing.assert_close(front[:, rows, cols], front_blocks[:, i])
        torch.testing.assert_close(back[:, cols, rows], back_blocks[:, i])
    x_f, x_b = torch.randn(b, t, k, 6), torch.randn(b, t, k, 6)
    dense = front @ x_f.reshape(b, t * k, 6) + back @ x_b.reshape(b, t * k, 6)
    torch.testing.assert_close(frame_pair_messages(front_blocks, back_blocks, x_f, x_b).reshape(b, t * k, 6), dense)


# ---------------------------------------------------------------- padded nodes, empty boxes, gradients


@pytest.mark.parametrize("head", ["proposal_avgpool", "st_gcn", "sim_gcn", "joint_gcn"])
def test_padded_nodes_change_nothing(head):
    """Adding padded boxes (any coordinates) must not change the output."""
    torch.manual_seed(0)
    model = build_model(f"{head}_r50", num_classes=4, **TINY).eval()
    for p in model.graph_head.parameters():  # W = 0 at init would hide message passing
        nn.init.normal_(p, std=0.3)
    clips, boxes, mask = tiny_inputs(k=3)
    junk = torch.rand(2, 8, 2, 4) * 60
    junk[..., 2:] += junk[..., :2]
    boxes_pad = torch.cat([boxes, junk], dim=2)
    mask_pad = torch.cat([mask, torch.zeros(2, 8, 2, dtype=torch.bool)], dim=2)
    with torch.no_grad():
        torch.testing.assert_close(model(clips, boxes, mask), model(clips, boxes_pad, mask_pad))


@pytest.mark.parametrize("head", ["proposal_avgpool", "joint_gcn"])
def test_zero_boxes_no_nan_and_graph_contributes_nothing(head):
    torch.manual_seed(0)
    model = build_model(f"nl_{head}_r50", num_classes=4, **TINY).train()
    clips, boxes, _ = tiny_inputs()
    mask = torch.zeros(2, 8, 3, dtype=torch.bool)
    mask[0, 2, 1] = True  # video 0 has one box in one (even) frame; video 1 has none at all
    feats = model.forward_features(clips, boxes, mask)
    d = TINY["dim"]
    assert torch.isfinite(feats).all()
    assert torch.equal(feats[1, d:], torch.zeros(d))  # no box: the graph half is zero
    assert feats[0, d:].abs().sum() > 0
    out = model.forward_head(feats)
    out.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    no_boxes = model(clips)  # no proposals at all
    assert torch.isfinite(no_boxes).all()


def test_every_parameter_receives_a_gradient():
    """phi and phi' included (the public reimplementation detached them)."""
    torch.manual_seed(0)
    model = build_model("nl_joint_gcn_r50", num_classes=4, frozen_bn=False, sim_per_layer=True, **TINY).train()
    clips, boxes, mask = tiny_inputs()
    target = torch.tensor([1, 3])
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    # The paper initialises W = 0 (and NL gammas = 0), so the gradient of phi, phi' is exactly zero
    # on the very first step; after one step every parameter must receive a gradient.
    for _ in range(2):
        opt.zero_grad()
        nn.functional.cross_entropy(model(clips, boxes, mask), target).backward()
        opt.step()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert no_grad == []
    assert any("phi_prime" in n for n, _ in model.named_parameters())


def test_graph_branches_are_separate_and_summed():
    model = build_model("joint_gcn_r50", num_classes=4, **TINY)
    head = model.graph_head
    assert head.sim is not None and head.st is not None
    w_front = {id(p) for p in head.st.w_front.parameters()}
    w_back = {id(p) for p in head.st.w_back.parameters()}
    assert not (w_front & w_back)  # Eq. 8: weights not shared between graphs
    assert all((p == 0).all() for p in head.st.w_front.parameters())  # W init 0 (section 6.1)
    assert 0.005 < head.sim.phi[0].weight.std() < 0.02  # N(0, 0.01)


# ---------------------------------------------------------------- RoIAlign scale


@pytest.mark.parametrize("impl", ["roi_align", "matmul", "sparse"])
def test_roi_align_reads_the_cell_under_the_box(impl):
    """A signal planted in one feature cell comes back under a box over it (stride 16)."""
    feats = torch.zeros(1, 2, 3, 14, 14)
    feats[0, 0, 1, 10, 12] = 5.0  # frame 1, row 10, column 12: input pixels x 192..208, y 160..176
    boxes = torch.zeros(1, 3, 2, 4)
    boxes[0, 1, 0] = torch.tensor([190.0, 158.0, 210.0, 178.0])  # over the cell
    boxes[0, 1, 1] = torch.tensor([20.0, 20.0, 60.0, 60.0])  # elsewhere
    boxes[0, 0, 0] = torch.tensor([190.0, 158.0, 210.0, 178.0])  # right place, wrong frame
    mask = torch.ones(1, 3, 2, dtype=torch.bool)
    out = region_features(feats, boxes, mask, spatial_scale=1 / 16, impl=impl)
    assert out.shape == (1, 3, 2, 2)
    assert out[0, 1, 0, 0] > 2.0
    assert out[0, 1, 1, 0] == 0 and out[0, 0, 0, 0] == 0
    # With the 1/8 scale of the public reimplementation, the box reads the wrong place.
    wrong = region_features(feats, boxes, mask, spatial_scale=1 / 8, impl=impl)
    assert wrong[0, 1, 0, 0] == 0


def test_model_maps_input_frame_boxes_to_feature_frames():
    """Boxes of input frames 0, 2, 4, ... reach feature frames 0, 1, 2, ..."""
    torch.manual_seed(0)
    model = build_model("proposal_avgpool_r50", num_classes=2, **TINY).eval()
    clips, boxes, mask = tiny_inputs(b=1, t=8, k=1)
    odd_only = mask.clone()
    odd_only[:, 0::2] = False  # keep the boxes of odd input frames only: the model ignores them
    with torch.no_grad():
        feats = model.forward_features(clips, boxes, odd_only)
    assert torch.equal(feats[0, TINY["dim"]:], torch.zeros(TINY["dim"]))


# ---------------------------------------------------------------- inflation


def _dilated_resnet50_2d():
    net = torchvision.models.resnet50().eval()
    for block in net.layer4:  # res5 with stride 1, dilation 2, like the I3D's
        block.conv2.stride, block.conv2.dilation, block.conv2.padding = (1, 1), (2, 2), (2, 2)
        if block.downsample is not None:
            block.downsample[0].stride = (1, 1)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):  # non-trivial statistics
            m.running_mean.normal_(0, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    return net


def test_inflation_equals_2d_on_static_clip():
    torch.manual_seed(0)
    net2d = _dilated_resnet50_2d()
    backbone = i3d_resnet(50, nonlocal_=True).eval()
    report = inflate_resnet2d(backbone, net2d.state_dict())
    assert len(report.inflated) == 53 and report.ignored == ["fc.weight", "fc.bias"]
    assert report.new and all(".nonlocal_block." in k for k in report.new)
    img = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        y2 = nn.Sequential(*list(net2d.children())[:-2])(img)  # (1, 2048, 2, 2)
        y3 = backbone(img[:, :, None].expand(-1, -1, 48, -1, -1).contiguous())  # (1, 2048, 24, 2, 2)
    middle = y3[:, :, 12]  # far from the temporal zero padding at both ends
    torch.testing.assert_close(middle, y2, rtol=1e-4, atol=1e-4 * y2.abs().max().item())
    assert (y3[:, :, 0] - y2).abs().max() > 1e-2  # the ends do see the padding


def test_inflation_fails_loudly():
    backbone = i3d_resnet(50, width=4, stage_blocks=(1, 1, 1, 1))
    state = torchvision.models.resnet50().state_dict()
    with pytest.raises(CheckpointError, match="shape mismatches"):
        inflate_resnet2d(backbone, state)  # width 4 vs 64
    full = i3d_resnet(50)
    del state["layer2.1.conv2.weight"]
    with pytest.raises(CheckpointError, match="missing.*layer2.1.conv2.weight"):
        inflate_resnet2d(full, state)
    state = torchvision.models.resnet50().state_dict()
    state["layer9.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError, match="unexpected.*layer9.weight"):
        inflate_resnet2d(full, state)


# ---------------------------------------------------------------- CLI


def test_cli_info(capsys):
    from strg.cli import main

    assert main(["info", "joint_gcn_r50", "--json"]) == 0
    import json

    out = json.loads(capsys.readouterr().out)
    assert out["variant"] == "joint_gcn_r50" and abs(out["gmac"] - 159.91) < 0.05
    assert main(["info", "joint_gcn_r34"]) == 2
    assert "unknown model variant" in capsys.readouterr().err


# ---------------------------------------------------------------- checkpoints of the field


def _to_pyslowfast(state):
    """Our backbone keys written the PySlowFast way (docs/formats.md "Checkpoints"), independently."""
    out = {}
    for key, v in state.items():
        parts = key.split(".")
        if parts[0] in ("conv1", "bn1"):
            out[f"s1.pathway0_stem.{'conv' if parts[0] == 'conv1' else 'bn'}.{parts[1]}"] = v
            continue
        stage, block = int(parts[0][5:]) + 1, parts[1]
        if parts[2] == "nonlocal_block":
            name = {"theta": "conv_theta", "phi": "conv_phi", "g": "conv_g", "out": "conv_out", "bn": "bn"}[parts[3]]
            out[f"s{stage}.pathway0_nonlocal{block}.{name}.{parts[4]}"] = v
        elif parts[2] == "downsample":
            out[f"s{stage}.pathway0_res{block}.branch1{'' if parts[3] == '0' else '_bn'}.{parts[4]}"] = v
        else:
            letter = "abc"[int(parts[2][-1]) - 1]
            bn_suffix = "_bn" if parts[2].startswith("bn") else ""
            out[f"s{stage}.pathway0_res{block}.branch2.{letter}{bn_suffix}.{parts[3]}"] = v
    out["head.projection.weight"] = torch.zeros(400, 8)
    return out


def _to_mmaction(state):
    out = {}
    for key, v in state.items():
        parts = key.split(".")
        if parts[0] in ("conv1", "bn1"):
            out[f"backbone.conv1.{'conv' if parts[0] == 'conv1' else 'bn'}.{parts[1]}"] = v
        elif parts[2] == "nonlocal_block":
            name = {"theta": "theta.conv", "phi": "phi.0.conv", "g": "g.0.conv", "out": "conv_out.conv",
                    "bn": "conv_out.bn"}[parts[3]]
            out[f"backbone.{parts[0]}.{parts[1]}.non_local_block.{name}.{parts[4]}"] = v
        elif parts[2] == "downsample":
            out[f"backbone.{parts[0]}.{parts[1]}.downsample.{'conv' if parts[3] == '0' else 'bn'}.{parts[4]}"] = v
        else:
            kind = "conv" if parts[2].startswith("conv") else "bn"
            out[f"backbone.{parts[0]}.{parts[1]}.conv{parts[2][-1]}.{kind}.{parts[3]}"] = v
    out["cls_head.fc_cls.weight"] = torch.zeros(400, 8)
    return {"state_dict": out}


@pytest.mark.parametrize("fmt,convert", [("pyslowfast", lambda s: {"model_state": _to_pyslowfast(s)}),
                                         ("mmaction2", _to_mmaction)])
def test_load_field_checkpoints(tmp_path, fmt, convert):
    from strg.models.weights import load_i3d_checkpoint

    torch.manual_seed(0)
    src = i3d_resnet(50, width=4, stage_blocks=(1, 2, 4, 1), nonlocal_=True, source=fmt)
    for p in src.state_dict().values():
        p.normal_()
    path = tmp_path / f"{fmt}.pth"
    torch.save(convert(src.state_dict()), path)
    dst = i3d_resnet(50, width=4, stage_blocks=(1, 2, 4, 1), nonlocal_=True, source=fmt)
    report = load_i3d_checkpoint(dst, path)
    assert report.format == fmt and report.source.name == fmt and len(report.unused) == 1
    for k, v in src.state_dict().items():
        assert torch.equal(dst.state_dict()[k], v), k
    plain = i3d_resnet(50, width=4, stage_blocks=(1, 2, 4, 1), source=fmt)  # no non-local blocks: must refuse
    with pytest.raises(CheckpointError, match="unexpected.*nonlocal"):
        load_i3d_checkpoint(plain, path)
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="bad.pth"):
        load_i3d_checkpoint(dst, bad)


def _to_caffe2(state):
    """strg backbone keys -> Caffe2 (video-nonlocal-net) blob names, as numpy arrays."""
    bn = {"weight": "s", "bias": "b", "running_mean": "rm", "running_var": "riv"}
    out = {}
    for key, v in state.items():
        if key.endswith("num_batches_tracked"):
            continue
        parts = key.split(".")
        if parts[0] == "conv1":
            name = "conv1_w"
        elif parts[0] == "bn1":
            name = f"res_conv1_bn_{bn[parts[1]]}"
        else:
            res = f"res{int(parts[0][-1]) + 1}_{parts[1]}"
            if parts[2] == "nonlocal_block":
                suffix = bn[parts[4]] if parts[3] == "bn" else {"weight": "w", "bias": "b"}[parts[4]]
                name = f"nonlocal_conv{int(parts[0][-1]) + 1}_{parts[1]}_{parts[3]}_{suffix}"
            elif parts[2] == "downsample":
                name = f"{res}_branch1_w" if parts[3] == "0" else f"{res}_branch1_bn_{bn[parts[4]]}"
            else:
                branch = "abc"[int(parts[2][-1]) - 1]
                name = (f"{res}_branch2{branch}_w" if parts[2].startswith("conv")
                        else f"{res}_branch2{branch}_bn_{bn[parts[3]]}")
        out[name] = v.numpy().copy()
    return out


def test_load_caffe2_pkl(tmp_path):
    """A video-nonlocal-net .pkl (pickled blobs, Python-2-era numpy references, momentum blobs and
    counters beside the weights) loads into the same backbone, as it is (RGB) or, for a BGR run,
    with its first conv turned from BGR to RGB inputs; a pickle that names anything but numpy
    arrays is refused without running it."""
    import pickle

    import numpy as np

    from strg.models.weights import load_i3d_checkpoint

    torch.manual_seed(0)
    src = i3d_resnet(50, width=4, stage_blocks=(1, 2, 4, 1), nonlocal_=True, source="video_nonlocal_net").eval()
    for p in src.state_dict().values():
        if p.is_floating_point():
            p.normal_()
    for name, p in src.state_dict().items():
        if name.endswith("running_var"):
            p.abs_().add_(0.5)
    blobs = _to_caffe2(src.state_dict())
    assert len(blobs) == sum(1 for k in src.state_dict() if not k.endswith("num_batches_tracked"))
    blobs.update({"pred_w": np.zeros((400, 8), np.float32), "pred_b": np.zeros(400, np.float32),
                  "res2_0_branch2a_w_momentum": np.zeros_like(blobs["res2_0_branch2a_w"]),
                  "lr": np.array([0.01], np.float32), "model_iter": np.array([400000], np.int64)})
    data = pickle.dumps({"blobs": blobs}, protocol=2).replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    path = tmp_path / "i3d_nonlocal_32x2_IN_pretrain_400k.pkl"
    path.write_bytes(data)

    dst = i3d_resnet(50, width=4, stage_blocks=(1, 2, 4, 1), nonlocal_=True, source="video_nonlocal_net").eval()
    report = load_i3d_checkpoint(dst, path)  # video-nonlocal-net evaluates on RGB frames: no flip
    assert report.format == "caffe2" and set(report.unused) == {"pred_w", "pred_b", "lr"} and not report.flipped_to_rgb
    for k, v in src.state_dict().items():
        assert torch.equal(dst.state_dict()[k], v), k
    load_i3d_checkpoint(dst, path, source="video_nonlocal_net_bgr")  # a MODEL.USE_BGR run
    assert torch.equal(dst.conv1.weight, src.conv1.weight.flip(1))
    clip = torch.randn(1, 3, 8, 32, 32, dtype=torch.float64)
    with torch.no_grad():  # RGB into the loaded backbone = BGR into the Caffe2 one (float64: the
        # random weights make large activations, and the flip changes the summation order)
        torch.testing.assert_close(copy.deepcopy(dst).double()(clip), copy.deepcopy(src).double()(clip.flip(1)))

    # no non-local blocks: must refuse
    plain = i3d_resnet(50, width=4, stage_blocks=(1, 2, 4, 1), source="video_nonlocal_net")
    with pytest.raises(CheckpointError, match="unexpected.*nonlocal"):
        load_i3d_checkpoint(plain, path)

    class Evil:
        def __reduce__(self):
            return (print, ("this must not run",))

    evil = tmp_path / "evil.pkl"
    evil.write_bytes(pickle.dumps({"blobs": {"conv1_w": Evil()}}))
    with pytest.raises(CheckpointError, match=r"evil.pkl.*refusing to load builtins.print"):
        load_i3d_checkpoint(dst, evil)
    junk = tmp_path / "junk.pkl"
    junk.write_bytes(b"\x80\x02not a pickle")
    with pytest.raises(CheckpointError, match="junk.pkl: not a readable Caffe2"):
        load_i3d_checkpoint(dst, junk)


def test_build_model_inflates_from_file(tmp_path):
    net2d = torchvision.models.resnet50()
    path = tmp_path / "resnet50.pth"
    torch.save(net2d.state_dict(), path)
    model = build_model("joint_gcn_r50", num_classes=3, inflate_from=str(path))
    w = model.backbone.layer1[0].conv1.weight  # temporal kernel 3
    torch.testing.assert_close(w.sum(dim=2), net2d.layer1[0].conv1.weight)  # t copies of W / t
    with pytest.raises(CheckpointError, match="no such weights file"):
        build_model("i3d_r50", num_classes=3, inflate_from=str(tmp_path / "missing.pth"))


def test_bfloat16_autocast_finite():
    torch.manual_seed(0)
    model = build_model("nl_joint_gcn_r50", num_classes=4, **TINY).eval()
    clips, boxes, mask = tiny_inputs()
    mask[1] = False
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(clips, boxes, mask)
    assert out.shape == (2, 4) and torch.isfinite(out.float()).all()


def test_compiled_graph_head_matches_eager():
    torch.manual_seed(0)
    eager = build_model("joint_gcn_r50", num_classes=3, **TINY).eval()
    for p in eager.graph_head.parameters():
        nn.init.normal_(p, std=0.3)
    compiled = build_model("joint_gcn_r50", num_classes=3, compile_graph_head=True, **TINY).eval()
    compiled.load_state_dict(eager.state_dict())
    clips, boxes, mask = tiny_inputs()
    with torch.no_grad():
        torch.testing.assert_close(compiled(clips, boxes, mask), eager(clips, boxes, mask), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("sampling_ratio", [0, 2])
def test_roi_align_matmul_equals_torchvision(sampling_ratio):
    """The matrix-product RoIAlign against torchvision's kernel, in float64, boxes partly outside."""
    from strg.models.region import roi_align_matmul

    torch.manual_seed(0)
    b, c, t, h, w, k = 2, 5, 3, 14, 11, 7
    feats = torch.randn(b, c, t, h, w, dtype=torch.float64)
    xy = torch.rand(b, t, k, 2, dtype=torch.float64) * torch.tensor([w * 16, h * 16]) * 1.1 - 20
    boxes = torch.cat([xy, xy + torch.rand(b, t, k, 2, dtype=torch.float64) * 120 + 0.5], dim=-1)
    ours = roi_align_matmul(feats, boxes, spatial_scale=1 / 16, sampling_ratio=sampling_ratio)
    frames = feats.transpose(1, 2).reshape(b * t, c, h, w)
    index = torch.arange(b * t, dtype=torch.float64).repeat_interleave(k)
    rois = torch.cat([index[:, None], boxes.reshape(-1, 4)], 1)
    ref = torchvision.ops.roi_align(frames, rois, 7, 1 / 16, sampling_ratio, True)
    torch.testing.assert_close(ours, ref.reshape(b, t, k, c, 49).transpose(-1, -2))
    mask = torch.rand(b, t, k) > 0.3
    feats32 = feats.float().requires_grad_(True)
    a = region_features(feats32, boxes.float(), mask, spatial_scale=1 / 16, impl="matmul",
                        sampling_ratio=sampling_ratio)
    a.sum().backward()
    grad_matmul = feats32.grad.clone()
    feats32.grad = None
    r = region_features(feats32, boxes.float(), mask, spatial_scale=1 / 16, impl="roi_align",
                        sampling_ratio=sampling_ratio)
    r.sum().backward()
    torch.testing.assert_close(a, r)
    torch.testing.assert_close(grad_matmul, feats32.grad)  # the same gradient too


@pytest.mark.parametrize("sampling_ratio", [0, 2])
def test_roi_align_sparse_equals_torchvision(sampling_ratio):
    """The sparse RoIAlign + max-pool (values and gradient) against torchvision's kernel followed
    by the max, in float64: boxes partly and wholly outside the map, boxes larger than the map
    (whose bins span more cells than the usual 3 x 3 window), empty boxes, padded boxes."""
    torch.manual_seed(1)
    b, c, t, h, w, k = 2, 5, 3, 14, 11, 7
    feats = torch.randn(b, c, t, h, w, dtype=torch.float64)
    xy = torch.rand(b, t, k, 2, dtype=torch.float64) * torch.tensor([w * 16, h * 16]) * 1.1 - 20
    boxes = torch.cat([xy, xy + torch.rand(b, t, k, 2, dtype=torch.float64) * 120 + 0.5], dim=-1)
    boxes[0, 0, 0] = torch.tensor([-300.0, -200.0, 600.0, 500.0])  # far larger than the map
    boxes[0, 0, 1] = torch.tensor([500.0, 500.0, 520.0, 530.0])  # wholly outside
    boxes[0, 1, 2] = torch.tensor([40.0, 40.0, 40.0, 40.0])  # empty
    mask = torch.rand(b, t, k) > 0.2
    grads = {}
    outs = {}
    for impl in ("roi_align", "sparse"):
        f = feats.clone().requires_grad_(True)
        outs[impl] = region_features(f, boxes, mask, spatial_scale=1 / 16, impl=impl, sampling_ratio=sampling_ratio)
        ramp = torch.linspace(-1, 2, outs[impl].numel(), dtype=torch.float64).reshape(outs[impl].shape)
        (outs[impl] * ramp).sum().backward()
        grads[impl] = f.grad
    torch.testing.assert_close(outs["sparse"], outs["roi_align"])
    torch.testing.assert_close(grads["sparse"], grads["roi_align"])
    assert grads["sparse"].abs().sum() > 0
    # float32 and bfloat16 features: computed in float32, returned in the input dtype
    for dtype in (torch.float32, torch.bfloat16):
        out = region_features(feats.to(dtype), boxes.float(), mask, spatial_scale=1 / 16, impl="sparse",
                              sampling_ratio=sampling_ratio)
        assert out.dtype == dtype
        torch.testing.assert_close(out.double(), outs["roi_align"].detach(),
                                   atol=0.05 if dtype == torch.bfloat16 else 1e-5, rtol=0.02)


@pytest.mark.parametrize("batch", [1, 2])
def test_reduction_equals_conv3d(batch):
    """The reduction conv (a matrix product for one clip on the CPU, channels-last output) gives
    the values and gradients of ``conv3d`` with its own weight and bias."""
    from strg.models.strg import PointwiseConv3d

    torch.manual_seed(0)
    layer = PointwiseConv3d(16, 6).double()
    nn.init.normal_(layer.bias)
    x = torch.randn(batch, 16, 3, 5, 4, dtype=torch.float64, requires_grad=True)
    y = layer(x)
    ref_x = x.detach().clone().requires_grad_(True)
    ref = nn.functional.conv3d(ref_x, layer.weight, layer.bias)
    torch.testing.assert_close(y, ref)
    probe = torch.randn_like(ref)
    grads = torch.autograd.grad((y * probe).sum(), (x, layer.weight, layer.bias))
    ref_grads = torch.autograd.grad((ref * probe).sum(), (ref_x, layer.weight, layer.bias))
    for got, want in zip(grads, ref_grads):
        torch.testing.assert_close(got, want)
    # one clip: a cell's channels are contiguous, so RoIAlign's (cells, channels) table is a view
    assert (y.stride(1) == 1) == (batch == 1)


@pytest.mark.parametrize("sim_per_layer", [False, True])
def test_gcn_branches_against_naive_equations(sim_per_layer):
    """Eq. 1-2, 4, 7, 8 written out naively (float64, dense graphs, one video at a time)."""
    from strg.models.gcn import SimilarityGCN, SpatialTemporalGCN

    torch.manual_seed(0)
    b, t, k, d, layers = 2, 4, 3, 6, 3
    _, boxes, mask = tiny_inputs(b=b, t=t, k=k, seed=5)
    x = torch.randn(b, t, k, d, dtype=torch.float64) * mask[..., None]
    sim = SimilarityGCN(d, num_layers=layers, sim_per_layer=sim_per_layer).double()
    st = SpatialTemporalGCN(d, num_layers=layers).double()
    for p in list(sim.parameters()) + list(st.parameters()):
        nn.init.normal_(p, std=0.4)  # W != 0, LayerNorm affine != identity
    frames = torch.arange(t).repeat_interleave(k)
    for v in range(b):
        m = mask[v].reshape(-1)
        nodes = x[v].reshape(-1, d)[m]  # the real nodes only: padding must not matter
        n_real = nodes.shape[0]
        # similarity branch
        h = nodes
        for layer in range(layers):
            i = layer if sim_per_layer else 0
            if layer == 0 or sim_per_layer:
                a, bb = h @ sim.phi[i].weight.T, h @ sim.phi_prime[i].weight.T  # Eq. 1 (no bias)
                graph = torch.softmax(a @ bb.T, dim=1)  # Eq. 2, over the real nodes
            if layer == 0:
                h = h @ sim.g.weight.T + sim.g.bias  # X = g(X) after G_sim
            z = graph @ h @ sim.weights[layer].weight.T + h  # Eq. 7
            h = torch.relu(nn.functional.layer_norm(z, (d,), sim.norms[layer].weight, sim.norms[layer].bias))
        expected_sim = h
        # spatial-temporal branch
        front, back = spatial_temporal_graphs(boxes[v].reshape(1, -1, 4)[:, m].double(), frames[m][None], None)
        h = nodes @ st.g.weight.T + st.g.bias
        for layer in range(layers):
            z = front[0] @ h @ st.w_front[layer].weight.T + back[0] @ h @ st.w_back[layer].weight.T + h  # Eq. 8
            h = torch.relu(nn.functional.layer_norm(z, (d,), st.norms[layer].weight, st.norms[layer].bias))
        expected_st = h
        got_sim = sim(x[v : v + 1].reshape(1, -1, d), mask[v : v + 1].reshape(1, -1))[0][m]
        got_st = st(x[v : v + 1], boxes[v : v + 1].double(), mask[v : v + 1])[0].reshape(-1, d)[m]
        assert n_real > 1
        torch.testing.assert_close(got_sim, expected_sim)
        torch.testing.assert_close(got_st, expected_st)
