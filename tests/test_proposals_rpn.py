"""The proposal model: box mapping through the resize, global NMS + top K, torchvision's RPN."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torchvision.models.detection import fasterrcnn_resnet50_fpn
from torchvision.models.detection.transform import GeneralizedRCNNTransform

from strg.errors import CheckpointError
from strg.proposals.rpn import DETECTORS, RPNProposer, ScoringRPN, build_rpn_proposer


class FeatureStub(nn.Module):
    """Backbone stand-in: one tiny feature map, no weights."""

    def forward(self, images):
        return {"0": images[:, :1, ::8, ::8]}


class FixedRPN(nn.Module):
    """RPN stand-in: per image, the given boxes (original pixels) moved into resized coordinates
    with the sizes the transform actually produced, plus fixed scores. Records those sizes."""

    def __init__(self, boxes, scores, original_hw):
        super().__init__()
        self.boxes, self.scores, self.original_hw = boxes, scores, original_hw
        self.seen_sizes = None

    def forward(self, image_list, features):
        self.seen_sizes = list(image_list.image_sizes)
        h, w = self.original_hw
        out = []
        for (rh, rw), b in zip(image_list.image_sizes, self.boxes):
            out.append(b * torch.tensor([rw / w, rh / h, rw / w, rh / h]))
        return out, [s.clone() for s in self.scores]


def make_transform(min_size, max_size=1000):
    return GeneralizedRCNNTransform(min_size, max_size, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225])


@pytest.mark.parametrize("hw,min_size", [((60, 90), 120), ((50, 77), 64), ((90, 40), 33)])
def test_boxes_map_back_to_original_pixels(hw, min_size):
    h, w = hw
    torch.manual_seed(0)
    n = 3
    xy = torch.rand(n, 5, 2) * torch.tensor([w / 2, h / 2])
    wh = torch.rand(n, 5, 2) * torch.tensor([w / 2, h / 2]) + 1
    boxes = list(torch.cat([xy, xy + wh], dim=-1))  # n x (5, 4) in original pixels, inside the frame
    scores = [torch.linspace(0.9, 0.5, 5) for _ in range(n)]
    rpn = FixedRPN(boxes, scores, (h, w))
    proposer = RPNProposer(make_transform(min_size), FeatureStub(), rpn, top_k=5, nms_iou=1.0)
    out_boxes, out_scores, num = proposer(torch.randint(0, 256, (n, h, w, 3), dtype=torch.uint8))
    # the transform really resized (otherwise the test would prove nothing)
    assert all(min(s) == min_size or max(s) == 1000 for s in rpn.seen_sizes)
    assert rpn.seen_sizes[0] != (h, w)
    assert num.tolist() == [5] * n
    torch.testing.assert_close(out_boxes, torch.stack(boxes), atol=1e-3, rtol=1e-5)
    torch.testing.assert_close(out_scores, torch.stack(scores))


def naive_nms_topk(boxes, scores, iou_thr, k):
    """Greedy NMS written out with Python loops, float64, then the first k."""
    order = sorted(range(len(scores)), key=lambda i: -float(scores[i]))
    kept = []
    for i in order:
        bi = boxes[i].double()
        ok = True
        for j in kept:
            bj = boxes[j].double()
            iw = max(0.0, float(min(bi[2], bj[2]) - max(bi[0], bj[0])))
            ih = max(0.0, float(min(bi[3], bj[3]) - max(bi[1], bj[1])))
            inter = iw * ih
            union = float((bi[2] - bi[0]) * (bi[3] - bi[1]) + (bj[2] - bj[0]) * (bj[3] - bj[1])) - inter
            if inter / union > iou_thr:
                ok = False
                break
        if ok:
            kept.append(i)
    return kept[:k]


def test_global_nms_and_top_k_per_frame():
    torch.manual_seed(1)
    h = w = 64
    k = 6
    boxes, scores = [], []
    for count in (40, 3, 0, 25):  # many, fewer than K, none at all, some
        xy = torch.rand(count, 2) * 40
        b = torch.cat([xy, xy + torch.rand(count, 2) * 20 + 4], dim=1)
        if count >= 2:  # a near-duplicate, as two FPN levels return for one object
            b = torch.cat([b, b[:2] + 0.5])
        boxes.append(b)
        scores.append(torch.rand(len(b)))
    # min_size = frame size: resized coordinates are the original ones
    rpn = FixedRPN(boxes, scores, (h, w))
    proposer = RPNProposer(make_transform(h, 1000), FeatureStub(), rpn, top_k=k, nms_iou=0.5)
    out_boxes, out_scores, num = proposer(torch.zeros(len(boxes), h, w, 3, dtype=torch.uint8))
    assert out_boxes.shape == (4, k, 4) and out_scores.shape == (4, k)
    for f in range(len(boxes)):
        want = naive_nms_topk(boxes[f], scores[f], 0.5, k)
        assert num[f].item() == len(want)
        n = len(want)
        torch.testing.assert_close(out_boxes[f, :n], boxes[f][want])
        torch.testing.assert_close(out_scores[f, :n], scores[f][want])
        assert (out_boxes[f, n:] == 0).all() and (out_scores[f, n:] == 0).all()
    assert num.tolist()[2] == 0
    assert num.tolist()[0] == k  # 42 boxes, NMS cannot bring them below K here


@pytest.fixture(scope="module")
def small_detector():
    torch.manual_seed(0)
    model = fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=91, min_size=96, max_size=160)
    return model.eval()


def test_scoring_rpn_returns_torchvision_boxes_with_scores(small_detector):
    model = small_detector
    images = [torch.rand(3, 72, 120), torch.rand(3, 72, 120)]
    with torch.no_grad():
        image_list, _ = model.transform(images)
        features = model.backbone(image_list.tensors)
        reference, _ = model.rpn(image_list, features)
        rpn = ScoringRPN.from_rpn(model.rpn).eval()
        boxes, scores = rpn(image_list, features)
    assert len(boxes) == len(scores) == 2
    for b, r, s in zip(boxes, reference, scores):
        torch.testing.assert_close(b, r)
        assert s.shape == (len(b),)
        assert ((s > 0) & (s < 1)).all()
    with pytest.raises(RuntimeError, match="inference"):
        rpn.train()(image_list, features)


def test_built_proposer_on_random_weights(small_detector, tmp_path):
    path = tmp_path / "detector.pth"
    torch.save(small_detector.state_dict(), path)
    proposer = build_rpn_proposer(weights=path, top_k=7, min_size=96, max_size=160)
    # the file's weights were loaded (a fresh random init would differ)
    torch.testing.assert_close(proposer.rpn.head.conv[0][0].weight, small_detector.rpn.head.conv[0][0].weight)
    frames = torch.randint(0, 256, (2, 45, 80, 3), dtype=torch.uint8)
    boxes, scores, num = proposer(frames)
    assert boxes.shape == (2, 7, 4) and num.tolist() == [7, 7]
    assert (boxes[..., 0] >= 0).all() and (boxes[..., 2] <= 80).all() and (boxes[..., 3] <= 45).all()
    assert (boxes[..., 2] >= boxes[..., 0]).all() and (boxes[..., 3] >= boxes[..., 1]).all()
    assert (scores[:, :-1] >= scores[:, 1:]).all()  # sorted by descending score


def test_wrong_weights_file_is_a_checkpoint_error(tmp_path):
    path = tmp_path / "junk.pth"
    torch.save({"backbone.body.conv1.weight": torch.zeros(64, 3, 7, 7)}, path)
    with pytest.raises(CheckpointError, match="junk.pth.*missing keys"):
        build_rpn_proposer(weights=path, min_size=64)
    torch.save({"model": {"backbone.body.conv1.weight": torch.zeros(1)}}, path)
    with pytest.raises(CheckpointError, match="junk.pth.*size mismatch.*--detector v2"):
        build_rpn_proposer(weights=path, min_size=64)
    with pytest.raises(CheckpointError, match="not found"):
        build_rpn_proposer(weights=tmp_path / "nope.pth", min_size=64)


def test_missing_coco_weights_say_how_to_get_them(monkeypatch, tmp_path):
    enum = DETECTORS["v1"][1]

    def offline(self, *args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(type(enum), "get_state_dict", offline)
    with pytest.raises(CheckpointError) as info:
        build_rpn_proposer(weights="coco", min_size=64)
    message = str(info.value)
    assert "--detector-weights" in message and enum.url in message and "network is unreachable" in message
