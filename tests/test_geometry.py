"""Box geometry of region nodes (strg/models/geometry.py): features against a plain Python
reference, every parameter trained, shapes on meta tensors."""

import math

import pytest
import torch

from strg.models import build_model
from strg.models.geometry import box_geometry

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def iou(a, b):
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def delta(a, b):
    wa, ha, wb, hb = a[2] - a[0], a[3] - a[1], b[2] - b[0], b[3] - b[1]
    return [((b[0] + b[2]) / 2 - (a[0] + a[2]) / 2) / wa, ((b[1] + b[3]) / 2 - (a[1] + a[3]) / 2) / ha,
            math.log(wb / wa), math.log(hb / ha)]


def reference(boxes, mask, h, w):
    """The documented features, one node at a time."""
    bsz, t, k, _ = boxes.shape
    out = torch.zeros(bsz, t, k, 16)
    for b in range(bsz):
        for f in range(t):
            for i in range(k):
                if not mask[b, f, i]:
                    continue
                box = boxes[b, f, i].tolist()
                row = [box[0] / w, box[1] / h, box[2] / w, box[3] / h, (box[2] - box[0]) / w, (box[3] - box[1]) / h]
                for other, forward in ((f + 1, True), (f - 1, False)):
                    best, match = 0.0, None
                    if 0 <= other < t:
                        for j in range(k):  # the first box with the largest IoU
                            if mask[b, other, j] and iou(box, boxes[b, other, j].tolist()) > best:
                                best, match = iou(box, boxes[b, other, j].tolist()), boxes[b, other, j].tolist()
                    if match is None:
                        row += [0.0] * 5
                    else:
                        row += (delta(box, match) if forward else delta(match, box)) + [1.0]
                out[b, f, i] = torch.tensor(row)
    return out


def test_geometry_features_match_the_reference():
    torch.manual_seed(0)
    b, t, k, h, w = 2, 4, 5, 48.0, 64.0
    xy = torch.rand(b, t, k, 2) * torch.tensor([w - 12, h - 12])
    wh = 4 + torch.rand(b, t, k, 2) * 8
    boxes = torch.cat([xy, xy + wh], dim=-1)
    mask = torch.rand(b, t, k) > 0.25
    mask[0, 2] = False  # a frame without boxes: frames 1 and 3 have no match there
    boxes[1, 1, 0] = boxes[1, 0, 0] + torch.tensor([1.0, 0.5, 2.0, 0.5])  # an overlapping pair for sure
    mask[1, :2, 0] = True
    got = box_geometry(boxes, mask, (h, w))
    expected = reference(boxes, mask, h, w)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert got[1, 0, 0, 10] == 1.0 and got[1, 1, 0, 15] == 1.0  # matched forward and backward
    assert (got[0, 1, :, 10] == 0).all() and (got[0, 3, :, 15] == 0).all()


@pytest.mark.parametrize("head", ["proposal_avgpool", "st_gcn", "sim_gcn", "joint_gcn"])
def test_every_parameter_receives_a_gradient(head):
    torch.manual_seed(0)
    model = build_model(f"{head}_r50", num_classes=3, width=4, stage_blocks=(1, 1, 1, 1), dim=8, gcn_layers=2,
                        frozen_bn=False, box_geometry=True)
    clips = torch.randn(2, 3, 4, 32, 32)
    xy = torch.rand(2, 4, 3, 2) * 16
    boxes = torch.cat([xy, xy + 8 + torch.rand(2, 4, 3, 2) * 8], dim=-1)
    boxes[:, 1:] = boxes[:, :1] + torch.rand(2, 3, 3, 4)  # boxes that move a little: matches in every frame
    mask = torch.ones(2, 4, 3, dtype=torch.bool)
    # two steps: the graph-conv weights start at zero (section 6.1), so phi and phi' only get a
    # gradient once they have moved
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(2):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(clips, boxes, mask), torch.tensor([0, 2])).backward()
        opt.step()
    missing = [n for n, p in model.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert not missing
    assert any(n.startswith("graph_head.geometry.") for n, _ in model.named_parameters())


def test_geometry_is_an_option_of_region_variants_only():
    plain = build_model("joint_gcn_r50", num_classes=3, width=4, stage_blocks=(1, 1, 1, 1), dim=8)
    assert plain.graph_head.geometry is None  # the paper's rows
    with pytest.raises(ValueError, match="region variant"):
        build_model("i3d_r50", num_classes=3, width=4, stage_blocks=(1, 1, 1, 1), box_geometry=True)


def test_info_counts_the_geometry_flops(capsys):
    from strg.models.complexity import count_complexity

    plain = count_complexity("joint_gcn_r50", frames=8, size=64, boxes_per_frame=4)
    geo = count_complexity("joint_gcn_r50", frames=8, size=64, boxes_per_frame=4, box_geometry=True)
    # MLP 16 -> 512 -> 512 on 4 feature frames x 4 boxes: (16 * 512 + 512 * 512) MACs per node
    assert geo.gmac - plain.gmac == pytest.approx(4 * 4 * (16 * 512 + 512 * 512) / 1e9, rel=1e-6)
    # and the scales and shifts of the input BatchNorm (16 + 16) and of the output LayerNorm (512 + 512)
    assert geo.params - plain.params == 16 * 512 + 512 + 512 * 512 + 512 + 2 * 16 + 2 * 512


def test_masked_batchnorm_is_batchnorm_over_the_real_nodes():
    """Reference: torch's BatchNorm1d on the real nodes alone (training and running statistics)."""
    from strg.models.geometry import MaskedBatchNorm

    g = torch.Generator().manual_seed(0)
    ours, ref = MaskedBatchNorm(5), torch.nn.BatchNorm1d(5)
    with torch.no_grad():
        ours.weight.copy_(torch.rand(5, generator=g) + 0.5)
        ours.bias.copy_(torch.randn(5, generator=g))
        ref.weight.copy_(ours.weight)
        ref.bias.copy_(ours.bias)
    for _ in range(3):
        x = torch.randn(2, 4, 3, 5, generator=g) * 3 + 1
        mask = torch.rand(2, 4, 3, generator=g) > 0.4
        x_padded = x.masked_fill(~mask[..., None], 0.0)  # padding must not enter the statistics
        out = ours(x_padded, mask)
        torch.testing.assert_close(out[mask], ref(x[mask]))
    torch.testing.assert_close(ours.running_mean, ref.running_mean)
    torch.testing.assert_close(ours.running_var, ref.running_var)
    ours.eval()
    ref.eval()
    x = torch.randn(1, 2, 3, 5, generator=g)
    torch.testing.assert_close(ours(x, torch.ones(1, 2, 3, dtype=torch.bool)), ref(x.reshape(-1, 5)).reshape(x.shape))


def test_masked_batchnorm_keeps_its_statistics_without_two_real_nodes():
    from strg.models.geometry import MaskedBatchNorm

    bn = MaskedBatchNorm(3)
    x = torch.randn(2, 4, 3)
    for real in (0, 1):  # no real node, then one: nothing to estimate a variance from
        mask = torch.zeros(2, 4, dtype=torch.bool)
        mask.view(-1)[:real] = True
        out = bn(x, mask)
        assert torch.isfinite(out).all()
    assert torch.equal(bn.running_mean, torch.zeros(3)) and torch.equal(bn.running_var, torch.ones(3))
