"""The full model: I3D backbone -> region features -> graph head -> classifier (paper Fig. 2).

* ``i3d`` baseline (Table 2a row 1): global average pool of the 2048-d res5 output, dropout,
  linear classifier. No reduction conv: the paper adds the 1x1x1 2048 -> 512 conv "on top of the
  I3D baseline model" for the graph (section 6.1), and the 153 GMAC of the baseline (section
  6.2) is met without it.
* Region variants: a 1x1x1 conv reduces 2048 -> d = 512 (section 6.1); RoIAlign 7x7 + max-pool
  on the reduced map gives the node features (section 3); the graph head averages the output
  node features over the real nodes (d); the reduced map is average-pooled (d); both are
  concatenated (2d), then dropout 0.3 ("on the last global pooling layer") and the classifier.

Forward: clips (Tensor[B, 3, T, H, W]), boxes (Tensor[B, T_b, K, 4] in input pixels, T_b = T or
the number of feature frames), box_mask (Tensor[B, T_b, K] bool) -> logits (Tensor[B, C]).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from strg.models.backbone import ResNet3d
from strg.models.gcn import RegionGraphHead
from strg.models.region import boxes_to_feature_frames


class PointwiseConv3d(nn.Conv3d):
    """The 1x1x1 convolution C -> d before the graph head (section 6.1), an ``nn.Conv3d``.

    x (Tensor[B, C, T, H, W]) -> Tensor[B, d, T, H, W], the same values as the convolution.
    One clip on the CPU (batch-1 training and inference, ``strg visualize``) is computed as one
    matrix product on a transposed view of the input, whose output is channels-last in memory
    (a cell's d channels contiguous, as RoIAlign reads them); MKL-DNN's convolution takes longer
    for the same three products (forward + backward at the paper configuration, 2-core CPU: about
    110 against 120 ms, BENCHMARKS.md). A batch of clips is a strided 3-D operand that the matrix
    product would first copy, and elsewhere the convolution kernels are the tuned path: both use
    the convolution.
    """

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__(in_channels, out_channels, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        b, c, t, h, w = x.shape
        if b != 1 or x.device.type != "cpu" or not x.is_contiguous():
            return super().forward(x)
        rows = x.view(b, c, t * h * w).transpose(1, 2)  # (1, T*H*W, C), a view
        y = nn.functional.linear(rows, self.weight.view(self.out_channels, c), self.bias)  # (1, T*H*W, d)
        return y.view(b, t, h, w, -1).permute(0, 4, 1, 2, 3)  # (1, d, T, H, W), channels-last memory


def keyed_dropout(x: Tensor, p: float, keys: Tensor) -> Tensor:
    """Dropout (training) whose mask for row i is drawn from a generator seeded with ``keys[i]``.

    x (Tensor[B, F]), keys (Tensor[B] int64) -> Tensor[B, F]: ``x * mask / (1 - p)``, mask[i] of
    Bernoulli(1 - p) draws that depend on ``keys[i]`` alone (drawn on the CPU, so the same on every
    device), not on the batch, the process or the state of the global generator. The engine keys
    each training sample by its place in the data stream (strg/engine/sample_keys.py).
    """
    if p == 0.0:
        return x
    gen = torch.Generator()
    rows = []
    for key in keys.tolist():
        gen.manual_seed(int(key))
        rows.append(torch.rand(x.shape[1], generator=gen) >= p)
    mask = torch.stack(rows).to(device=x.device, dtype=x.dtype)  # (B, F)
    return x * mask / (1.0 - p)


class STRG(nn.Module):
    """Space-time region graph model.

    Args:
        backbone: the video backbone; ``out_channels`` and ``spatial_stride`` attributes are used.
        num_classes: classifier outputs.
        graph_head: None for the I3D baseline; else a :class:`RegionGraphHead`.
        dim: d, the reduced channel number (graph variants only).
        dropout: dropout before the classifier (0.3 in the paper).
    """

    def __init__(
        self,
        backbone: ResNet3d,
        *,
        num_classes: int,
        graph_head: RegionGraphHead | None = None,
        dim: int = 512,
        dropout: float = 0.3,
    ):
        super().__init__()
        self.backbone = backbone
        self.graph_head = graph_head
        if graph_head is not None:
            self.reduce = PointwiseConv3d(backbone.out_channels, dim)
            feature_dim = 2 * dim
        else:
            self.reduce = None
            feature_dim = backbone.out_channels
        self.num_features = feature_dim
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(feature_dim, num_classes)
        nn.init.normal_(self.classifier.weight, std=0.01)
        nn.init.zeros_(self.classifier.bias)

    @property
    def uses_boxes(self) -> bool:
        return self.graph_head is not None

    def forward_features(self, clips: Tensor | None, boxes: Tensor | None = None, box_mask: Tensor | None = None,
                         *, backbone_features: Tensor | None = None, graphs: dict | None = None) -> Tensor:
        """clips (Tensor[B, 3, T, H, W]) -> the pooled feature (Tensor[B, num_features]).

        ``backbone_features`` (Tensor[B, 2048, T', H', W']): the backbone's output for these clips,
        computed earlier (a frozen backbone, ``train.cache_features``); ``clips`` is then unused.
        ``graphs``: when a dict, filled with the region graphs of this pass (see :meth:`forward`).
        """
        x = self.backbone(clips) if backbone_features is None else backbone_features  # (B, 2048, T', H', W')
        if self.graph_head is None:
            if graphs is not None and boxes is not None:  # no graph: only where the boxes fall
                if box_mask is None:
                    box_mask = torch.ones(boxes.shape[:3], dtype=torch.bool, device=boxes.device)
                graphs["boxes"], graphs["mask"] = boxes_to_feature_frames(boxes, box_mask.bool(), x.shape[2])
            return x.mean(dim=(2, 3, 4))  # (B, 2048)
        x = self.reduce(x)  # (B, d, T', H', W')
        video = x.mean(dim=(2, 3, 4))  # (B, d)
        b = x.shape[0]
        if boxes is None:  # no proposals: the graph part contributes nothing
            return torch.cat([video, torch.zeros_like(video)], dim=1)
        if box_mask is None:
            box_mask = torch.ones(boxes.shape[:3], dtype=torch.bool, device=boxes.device)
        if boxes.shape[0] != b or boxes.shape[-1] != 4 or box_mask.shape != boxes.shape[:3]:
            raise ValueError(
                f"boxes must be (B, T, K, 4) with box_mask (B, T, K) for B={b}; got "
                f"{tuple(boxes.shape)} and {tuple(box_mask.shape)}"
            )
        graph = self.graph_head(x, boxes, box_mask.bool(), graphs)  # RoIAlign + GCN + node mean: (B, d)
        return torch.cat([video, graph], dim=1)  # (B, 2d)

    def forward_head(self, features: Tensor, dropout_keys: Tensor | None = None) -> Tensor:
        """features (Tensor[B, num_features]) -> logits (Tensor[B, num_classes]).

        ``dropout_keys`` (Tensor[B] int64, training only): draw row i's dropout mask from a
        generator seeded with ``dropout_keys[i]`` (:func:`keyed_dropout`) instead of the global one.
        """
        if dropout_keys is not None and self.training:
            return self.classifier(keyed_dropout(features, self.dropout.p, dropout_keys))
        return self.classifier(self.dropout(features))

    def forward(self, clips: Tensor | None, boxes: Tensor | None = None, box_mask: Tensor | None = None,
                *, backbone_features: Tensor | None = None, dropout_keys: Tensor | None = None,
                return_graphs: bool = False):
        """logits (Tensor[B, C]); with ``return_graphs=True``, ``(logits, graphs)``: the region graphs
        this very pass built (paper Fig. 3, 4), a dict with ``boxes`` (Tensor[B, T', K, 4]) and
        ``mask`` (Tensor[B, T', K]) on the feature frames, ``sim`` (Tensor[B, T'*K, T'*K], the first
        GCN layer's G_sim; similarity branch), ``front`` and ``back`` (Tensor[B, T'-1, K, K];
        spatial-temporal branch). The I3D baseline has no graph: only ``boxes`` and ``mask`` (when
        boxes are given); without boxes the dict is empty. ``dropout_keys``: see :meth:`forward_head`."""
        graphs: dict | None = {} if return_graphs else None
        features = self.forward_features(clips, boxes, box_mask, backbone_features=backbone_features, graphs=graphs)
        logits = self.forward_head(features, dropout_keys)
        return (logits, graphs) if return_graphs else logits
