"""Class-agnostic region proposals from the RPN of torchvision's Faster R-CNN (paper section 4.1).

The paper's graph nodes are the proposals of "the RPN with ResNet-50 backbone and FPN,
pre-trained on MSCOCO" (section 4.1), class-agnostic. We run only the pieces of torchvision's
Faster R-CNN that produce them (docs/formats.md):

    frames -> model.transform (normalise, resize short side) -> model.backbone (R50-FPN)
           -> model.rpn (anchors, objectness, per-level top-n + per-level NMS)
           -> one global class-agnostic NMS -> top K per frame -> boxes in original pixels.

torchvision's RPN returns boxes only; its objectness scores exist inside ``filter_proposals``.
:class:`ScoringRPN` is a thin subclass that keeps what that step already returns, so no
torchvision code is copied.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn
from torchvision.models.detection import (
    FasterRCNN_ResNet50_FPN_V2_Weights,
    FasterRCNN_ResNet50_FPN_Weights,
    fasterrcnn_resnet50_fpn,
    fasterrcnn_resnet50_fpn_v2,
)
from torchvision.models.detection.rpn import RegionProposalNetwork
from torchvision.ops import batched_nms

from strg.errors import CheckpointError

# detector setting -> (torchvision builder, its COCO weights). v1 is the Detectron-era R50-FPN
# the paper used (section 4.1); v2 (Li et al. 2021 recipe) has better COCO boxes (46.7 vs 37.0
# box AP) at a somewhat higher cost.
DETECTORS = {
    "v1": (fasterrcnn_resnet50_fpn, FasterRCNN_ResNet50_FPN_Weights.COCO_V1),
    "v2": (fasterrcnn_resnet50_fpn_v2, FasterRCNN_ResNet50_FPN_V2_Weights.COCO_V1),
}


class ScoringRPN(RegionProposalNetwork):
    """torchvision's RPN, returning the objectness of every proposal next to its box.

    Same anchors, head, per-level top-n and per-level NMS as the parent; ``forward`` returns
    ``(boxes, scores)`` instead of ``(boxes, losses)``: ``boxes[i]`` (Tensor[P_i, 4]) in the
    coordinates of the resized image ``i``, ``scores[i]`` (Tensor[P_i]) objectness
    probabilities, sorted by descending score within each FPN level's NMS. Inference only.
    """

    @classmethod
    def from_rpn(
        cls,
        rpn: RegionProposalNetwork,
        *,
        pre_nms_top_n: int = 1000,
        post_nms_top_n: int = 1000,
        nms_thresh: float = 0.7,
        score_thresh: float = 0.0,
    ) -> "ScoringRPN":
        """Wrap the anchor generator and head (the weights) of an existing RPN.

        ``pre_nms_top_n`` / ``post_nms_top_n`` / ``nms_thresh`` are torchvision's test-time
        defaults for Faster R-CNN (1000 per level before NMS, 1000 per image after, IoU 0.7).
        """
        return cls(
            rpn.anchor_generator,
            rpn.head,
            fg_iou_thresh=rpn.proposal_matcher.high_threshold,
            bg_iou_thresh=rpn.proposal_matcher.low_threshold,
            batch_size_per_image=rpn.fg_bg_sampler.batch_size_per_image,
            positive_fraction=rpn.fg_bg_sampler.positive_fraction,
            pre_nms_top_n={"training": pre_nms_top_n, "testing": pre_nms_top_n},
            post_nms_top_n={"training": post_nms_top_n, "testing": post_nms_top_n},
            nms_thresh=nms_thresh,
            score_thresh=score_thresh,
        )

    def filter_proposals(self, proposals, objectness, image_shapes, num_anchors_per_level):
        boxes, scores = super().filter_proposals(proposals, objectness, image_shapes, num_anchors_per_level)
        self._last_scores = scores  # read (and cleared) by forward right after
        return boxes, scores

    def forward(self, images, features, targets=None) -> tuple[list[Tensor], list[Tensor]]:
        if self.training:
            raise RuntimeError("ScoringRPN is for inference; call .eval() first")
        boxes, _ = super().forward(images, features)
        scores, self._last_scores = self._last_scores, None
        return boxes, scores


class RPNProposer(nn.Module):
    """Frames -> the top ``top_k`` class-agnostic proposals of each frame, in original pixels.

    Args:
        transform: torchvision's ``GeneralizedRCNNTransform`` (normalise + resize short side to
            ``min_size``, long side at most ``max_size``); returns an ``ImageList``.
        backbone: images (Tensor[N, 3, H', W']) -> dict of FPN feature maps.
        rpn: ``rpn(image_list, features) -> (boxes, scores)``, lists of Tensor[P_i, 4] in resized
            coordinates and Tensor[P_i]; :class:`ScoringRPN` or anything with that contract.
        top_k: proposals kept per frame after the global NMS (paper section 6.1: 50 on Charades,
            10 on Something-Something).
        nms_iou: IoU threshold of the global class-agnostic NMS. torchvision's RPN runs its NMS
            per FPN level, so the same object can come back from two levels; this NMS merges
            them (docs/formats.md).
    """

    def __init__(self, transform: nn.Module, backbone: nn.Module, rpn: nn.Module, *, top_k: int = 50,
                 nms_iou: float = 0.7) -> None:
        super().__init__()
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        self.transform = transform
        self.backbone = backbone
        self.rpn = rpn
        self.top_k = int(top_k)
        self.nms_iou = float(nms_iou)

    @torch.inference_mode()
    def forward(self, frames: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """
        Args:
            frames (Tensor[N, H, W, 3]): uint8 RGB frames of one size, as decoded.

        Returns:
            boxes (Tensor[N, K, 4]): float32 x1 y1 x2 y2 in pixels of the original frames, sorted
                by descending score; rows past ``num_boxes[n]`` are zero.
            scores (Tensor[N, K]): float32 objectness probabilities (0 in padding rows).
            num_boxes (Tensor[N]): int64 number of real boxes of each frame (<= K).
        """
        n, h, w, _ = frames.shape
        k = self.top_k
        images = frames.permute(0, 3, 1, 2).float().div_(255.0)  # (N, 3, H, W) in [0, 1]
        image_list, _ = self.transform(list(images))
        features = self.backbone(image_list.tensors)
        boxes_list, scores_list = self.rpn(image_list, features)

        device = images.device
        boxes = torch.cat(boxes_list).float()  # (P, 4), resized coordinates
        scores = torch.cat(scores_list).float()  # (P,)
        frame_of = torch.repeat_interleave(
            torch.arange(n, device=device), torch.tensor([len(b) for b in boxes_list], device=device)
        )  # (P,) which frame each proposal belongs to

        # Global class-agnostic NMS within each frame; `keep` comes back by descending score.
        keep = batched_nms(boxes, scores, frame_of, self.nms_iou)
        keep = keep[torch.sort(frame_of[keep], stable=True).indices]  # group by frame, scores stay sorted
        kept_frame = frame_of[keep]
        counts = torch.bincount(kept_frame, minlength=n)  # (N,)
        rank = torch.arange(len(keep), device=device) - (torch.cumsum(counts, 0) - counts)[kept_frame]
        top = rank < k
        keep, kept_frame, rank = keep[top], kept_frame[top], rank[top]

        # Back to original pixels: resized size (h_i', w_i') -> (h, w), as torchvision's
        # postprocess does with resize_boxes (docs/formats.md).
        resized = torch.tensor(image_list.image_sizes, dtype=torch.float32, device=device)  # (N, 2) h', w'
        scale = torch.stack([w / resized[:, 1], h / resized[:, 0]], dim=1).repeat(1, 2)  # (N, 4) sx sy sx sy
        out_boxes = boxes.new_zeros(n, k, 4)
        out_scores = scores.new_zeros(n, k)
        out_boxes[kept_frame, rank] = boxes[keep] * scale[kept_frame]
        out_scores[kept_frame, rank] = scores[keep]
        limits = torch.tensor([w, h, w, h], dtype=torch.float32, device=device)
        out_boxes = torch.minimum(out_boxes.clamp_(min=0), limits)
        return out_boxes, out_scores, counts.clamp(max=k)


def _load_state(detector: str, weights: str | Path) -> dict[str, Tensor]:
    """The detector's state dict: torchvision's COCO weights ("coco") or a local file."""
    if str(weights) == "coco":
        enum = DETECTORS[detector][1]
        try:
            return enum.get_state_dict(progress=True, check_hash=True)
        except Exception as e:  # no internet, proxy, hash mismatch, ... : say how to get them
            file = enum.url.rsplit("/", 1)[-1]
            cache = Path(torch.hub.get_dir()) / "checkpoints" / file
            raise CheckpointError(
                f"could not get torchvision's COCO weights for detector {detector} ({enum.url}): "
                f"{type(e).__name__}: {e}. On a machine with internet, download that URL (or run "
                f"`python -c \"import torchvision; torchvision.models.detection."
                f"{DETECTORS[detector][0].__name__}(weights='DEFAULT')\"`) and either pass the file "
                f"with --detector-weights PATH or copy it to {cache}"
            ) from e
    path = Path(weights)
    if not path.is_file():
        raise CheckpointError(f"{path}: detector weights file not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(f"{path}: cannot read detector weights: {type(e).__name__}: {e}") from e
    for key in ("model", "state_dict"):  # training-script checkpoints wrap the state dict
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: expected a state dict of a Faster R-CNN, got {type(state).__name__}")
    return state


def build_rpn_proposer(
    *,
    detector: str = "v1",
    weights: str | Path | None = "coco",
    top_k: int = 50,
    nms_iou: float = 0.7,
    min_size: int = 800,
    max_size: int | None = None,
    pre_nms_top_n: int = 1000,
    post_nms_top_n: int = 1000,
) -> RPNProposer:
    """The proposal model of torchvision's Faster R-CNN R50-FPN (paper section 4.1), in eval mode.

    Args:
        detector: "v1" (``fasterrcnn_resnet50_fpn``) or "v2" (``fasterrcnn_resnet50_fpn_v2``).
        weights: "coco" (torchvision's COCO weights, downloaded once into the torch hub cache),
            a path to a Faster R-CNN state dict (the torchvision file, or any checkpoint holding
            its ``backbone.*`` and ``rpn.*`` keys), or None for random weights (tests, speed).
        top_k, nms_iou: see :class:`RPNProposer`.
        min_size: short side the frames are resized to (torchvision's default 800, the scale the
            COCO detector was trained at; smaller is faster and loses small objects).
        max_size: cap on the long side; default ``min_size * 5 / 3`` (torchvision's 1333 at 800).
        pre_nms_top_n, post_nms_top_n: RPN proposals per level before / per image after its
            per-level NMS (torchvision's test defaults).
    """
    if detector not in DETECTORS:
        raise ValueError(f"unknown detector {detector!r}; choose from {sorted(DETECTORS)}")
    if max_size is None:
        max_size = round(min_size * 5 / 3)
    builder = DETECTORS[detector][0]
    with torch.random.fork_rng(devices=[]):  # random weights are the same in every process (torchrun ranks, tests)
        torch.manual_seed(0)
        model = builder(weights=None, weights_backbone=None, num_classes=91, min_size=min_size, max_size=max_size)
    del model.roi_heads  # the box classifier is not used: proposals are class-agnostic
    if weights is not None:
        state = _load_state(detector, weights)
        state = {k: v for k, v in state.items() if k.startswith(("backbone.", "rpn."))}
        other = "v2" if detector == "v1" else "v1"
        hint = f"is it a {other} checkpoint (--detector {other})?"
        try:
            result = model.load_state_dict(state, strict=False)
        except RuntimeError as e:  # shape mismatches raise even when not strict
            reason = str(e).strip().splitlines()[-1].strip()
            raise CheckpointError(
                f"{weights}: not a Faster R-CNN R50-FPN {detector} checkpoint: {reason}; {hint}"
            ) from e
        # BatchNorm2d buffers absent from checkpoints of frozen-BN models are harmless.
        missing = [k for k in result.missing_keys if not k.endswith("num_batches_tracked")]
        if missing or result.unexpected_keys:
            raise CheckpointError(
                f"{weights}: not a Faster R-CNN R50-FPN {detector} checkpoint: "
                f"{len(missing)} missing keys (e.g. {missing[:3]}), {len(result.unexpected_keys)} "
                f"unexpected (e.g. {result.unexpected_keys[:3]}); {hint}"
            )
    rpn = ScoringRPN.from_rpn(model.rpn, pre_nms_top_n=pre_nms_top_n, post_nms_top_n=post_nms_top_n,
                              nms_thresh=model.rpn.nms_thresh)
    return RPNProposer(model.transform, model.backbone, rpn, top_k=top_k, nms_iou=nms_iou).eval()
