"""Parameter counts and GMACs without real compute (meta tensors + torch's FLOP counter).

The paper's "FLOPs" are multiply-accumulates (docs/model.md); torch's
``FlopCounterMode`` counts 2 FLOPs per MAC, so GMAC = counted FLOPs / 2 / 1e9. Convolutions,
matmuls and linear layers are counted; element-wise ops, pooling, softmax, LayerNorm and RoIAlign
are not (they are a small fraction and the paper's convention leaves them out too). The model is
counted with torchvision's RoIAlign (``roi_impl="roi_align"``): the matrix-product form computes
the same values with dense products over the 14x14 map, which the counter would add.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch.utils.flop_counter import FlopCounterMode

from strg.models.registry import build_model


@dataclass
class Complexity:
    variant: str
    frames: int
    size: int
    boxes_per_frame: int
    num_classes: int
    params: int
    params_backbone: int
    gmac: float
    gmac_backbone: float

    def as_dict(self) -> dict:
        return asdict(self)


def _gmac(fn) -> float:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops() / 2 / 1e9


def count_complexity(
    variant: str,
    *,
    frames: int = 32,
    size: int = 224,
    boxes_per_frame: int = 50,
    num_classes: int = 157,
    batch: int = 1,
    **model_kwargs,
) -> Complexity:
    """Count parameters and GMACs (per clip) of ``variant`` on a (frames, size, size) input.

    The model is built on the meta device: no memory is allocated and nothing is computed, so
    this takes well under a second even for the R101.
    """
    with torch.device("meta"):
        model_kwargs.setdefault("roi_impl", "roi_align")
        model = build_model(variant, num_classes=num_classes, **model_kwargs).eval()
        clips = torch.empty(batch, model.backbone.conv1.in_channels, frames, size, size)
        boxes = torch.empty(batch, frames, boxes_per_frame, 4)
        mask = torch.empty(batch, frames, boxes_per_frame, dtype=torch.bool)
    params = sum(p.numel() for p in model.parameters())
    params_backbone = sum(p.numel() for p in model.backbone.parameters())
    with torch.no_grad():
        gmac_backbone = _gmac(lambda: model.backbone(clips))
        gmac = _gmac(lambda: model(clips, boxes, mask))
    return Complexity(
        variant=variant, frames=frames, size=size, boxes_per_frame=boxes_per_frame,
        num_classes=num_classes, params=params, params_backbone=params_backbone,
        gmac=gmac / batch, gmac_backbone=gmac_backbone / batch,
    )
