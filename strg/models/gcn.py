"""Graph convolutions on the space-time region graph (paper section 5).

One layer (Eq. 4, 7, 8):   Z = sum_i G_i X W_i + X,   then LayerNorm, then ReLU.

* The similarity branch (:class:`SimilarityGCN`) uses G_sim alone (Eq. 7); the spatial-temporal
  branch (:class:`SpatialTemporalGCN`) uses G_front and G_back with separate weights (Eq. 8). The
  two run separately for L layers and their final node features are summed (section 5, "Combining
  Multiple Graphs": one fused branch over the three graphs hurt accuracy).
* First layer: X = g(X), a learned linear map (Eq. 5-6), while that layer's G_sim is computed
  from the features before g. We apply g at the start of both branches (each its own g).
* Init (section 6.1): phi, phi', g ~ N(0, 0.01); graph-conv weights W = 0 (so each layer starts
  as LayerNorm + ReLU of its input, and phi, phi' receive gradients once W has moved).
* Open choice (docs/model.md "GCN and head"): ``sim_per_layer=False`` (default) computes G_sim once, from the
  region features before g, and uses it in all L layers; this reading of section 5 ("G_sim is
  still computed based on the features before applying g") also gives the GMAC count closest
  to the paper's 158 (159.9 vs 161.4). ``True`` gives every layer its own phi, phi' and G_sim
  computed from that layer's input, like a stack of non-local blocks.
* phi(x) = w x and phi'(x) = w' x have no bias (Eq. 1); g has a bias (zero at init), being a
  convolution in Eq. 5.

Padded nodes (``mask`` False) are zeroed after every layer, and have zero rows and columns in the
graphs, so they neither send nor receive messages.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from strg.models.graphs import frame_pair_graphs, frame_pair_messages, similarity_graph
from strg.models.region import boxes_to_feature_frames, region_features


def _normal_linear(dim: int, bias: bool) -> nn.Linear:
    layer = nn.Linear(dim, dim, bias=bias)
    nn.init.normal_(layer.weight, std=0.01)
    if bias:
        nn.init.zeros_(layer.bias)
    return layer


def _zero_linear(dim: int) -> nn.Linear:
    layer = nn.Linear(dim, dim, bias=False)  # W of Eq. 4: a d x d matrix
    nn.init.zeros_(layer.weight)
    return layer


class SimilarityGCN(nn.Module):
    """L graph-conv layers on G_sim (Eq. 1-2, 7).

    x (Tensor[B, N, d]), mask (Tensor[B, N] bool) -> Tensor[B, N, d].
    """

    def __init__(self, dim: int, *, num_layers: int = 3, sim_per_layer: bool = False):
        super().__init__()
        self.sim_per_layer = sim_per_layer
        num_graphs = num_layers if sim_per_layer else 1
        self.phi = nn.ModuleList(_normal_linear(dim, bias=False) for _ in range(num_graphs))
        self.phi_prime = nn.ModuleList(_normal_linear(dim, bias=False) for _ in range(num_graphs))
        self.g = _normal_linear(dim, bias=True)
        self.weights = nn.ModuleList(_zero_linear(dim) for _ in range(num_layers))
        self.norms = nn.ModuleList(nn.LayerNorm(dim) for _ in range(num_layers))

    def forward(self, x: Tensor, mask: Tensor, graphs: dict | None = None) -> Tensor:
        """``graphs``: when a dict, the first layer's G_sim (Tensor[B, N, N]) is stored as ``sim``."""
        keep = mask[..., None].to(x.dtype)
        graph = None
        for layer, (w, norm) in enumerate(zip(self.weights, self.norms)):
            if layer == 0 or self.sim_per_layer:
                i = layer if self.sim_per_layer else 0
                graph = similarity_graph(self.phi[i](x), self.phi_prime[i](x), mask)  # (B, N, N)
                if layer == 0 and graphs is not None:
                    graphs["sim"] = graph
            if layer == 0:
                x = self.g(x)  # X = g(X); G_sim above saw the features before g (section 5)
            z = graph @ w(x) + x  # Eq. 7: G X W + X
            x = torch.relu(norm(z)) * keep
        return x


class SpatialTemporalGCN(nn.Module):
    """L graph-conv layers on G_front and G_back, weights not shared (Eq. 3, 8).

    x (Tensor[B, T, K, d]), boxes (Tensor[B, T, K, 4]), mask (Tensor[B, T, K] bool)
    -> Tensor[B, T, K, d].
    """

    def __init__(self, dim: int, *, num_layers: int = 3):
        super().__init__()
        self.g = _normal_linear(dim, bias=True)
        self.w_front = nn.ModuleList(_zero_linear(dim) for _ in range(num_layers))
        self.w_back = nn.ModuleList(_zero_linear(dim) for _ in range(num_layers))
        self.norms = nn.ModuleList(nn.LayerNorm(dim) for _ in range(num_layers))

    def forward(self, x: Tensor, boxes: Tensor, mask: Tensor, graphs: dict | None = None) -> Tensor:
        """``graphs``: when a dict, G_front and G_back (Tensor[B, T-1, K, K]) are stored as
        ``front`` and ``back``."""
        keep = mask[..., None].to(x.dtype)
        front, back = frame_pair_graphs(boxes.float(), mask)  # (B, T-1, K, K) each
        if graphs is not None:
            graphs["front"], graphs["back"] = front, back
        front, back = front.to(x.dtype), back.to(x.dtype)
        x = self.g(x)
        for w_front, w_back, norm in zip(self.w_front, self.w_back, self.norms):
            z = frame_pair_messages(front, back, w_front(x), w_back(x)) + x  # Eq. 8
            x = torch.relu(norm(z)) * keep
        return x


class RegionGraphHead(nn.Module):
    """Video features + boxes -> region nodes -> GCN branches -> mean over real nodes (Fig. 2).

    Args:
        dim: node feature size d (512 in the paper).
        spatial_scale: feature cells per input pixel for RoIAlign (1/16 for the I3D ResNet).
        roi_impl: RoIAlign + max-pool as one sparse product (``"sparse"``), a batched dense
            matrix product (``"matmul"``), torchvision's kernel (``"roi_align"``), or ``"auto"``
            (default: sparse on the CPU, matmul elsewhere); same values, see
            :mod:`strg.models.region`.
        graphs: which branches: ``("sim", "st")`` Joint GCN, ``("sim",)``, ``("st",)``, or ``()``
            for the Proposal + AvgPool row of Table 2a (region features averaged, no GCN).
        num_layers: L (3 in the paper).
        sim_per_layer: see the module docstring.
        geometry: an optional module ``(boxes, mask, frame_size) -> Tensor[B, T', K, d]`` added to
            the RoIAlign node features (:class:`strg.models.geometry.BoxGeometryEmbedding`, not in
            the paper; None for the paper's rows).

    forward: features (Tensor[B, d, T', H, W]), boxes (Tensor[B, T, K, 4]) in input pixels for
    the T input frames or the T' feature frames, mask (Tensor[B, T, K] bool) -> Tensor[B, d], the
    mean of the output node features over the real nodes (0 without any).

    The whole head is one module so that ``head.compile()`` fuses its many small operations (on a
    GPU the eager head is bound by kernel-launch overhead; see BENCHMARKS.md).
    """

    def __init__(
        self,
        dim: int,
        *,
        spatial_scale: float = 1 / 16,
        graphs: tuple[str, ...] = ("sim", "st"),
        num_layers: int = 3,
        sim_per_layer: bool = False,
        roi_impl: str = "auto",
        geometry: nn.Module | None = None,
    ):
        super().__init__()
        if roi_impl not in ("auto", "sparse", "matmul", "roi_align"):
            raise ValueError(f"roi_impl must be 'auto', 'sparse', 'matmul' or 'roi_align', got {roi_impl!r}")
        self.spatial_scale = spatial_scale
        self.roi_impl = roi_impl
        unknown = set(graphs) - {"sim", "st"}
        if unknown:
            raise ValueError(f"unknown graph branch(es) {sorted(unknown)}; use 'sim' and/or 'st'")
        self.graphs = tuple(graphs)
        self.sim = SimilarityGCN(dim, num_layers=num_layers, sim_per_layer=sim_per_layer) if "sim" in graphs else None
        self.st = SpatialTemporalGCN(dim, num_layers=num_layers) if "st" in graphs else None
        self.geometry = geometry

    def forward(self, features: Tensor, boxes: Tensor, mask: Tensor, graphs: dict | None = None) -> Tensor:
        """``graphs``: when a dict, filled with the graphs this forward pass builds (``boxes`` and
        ``mask`` of the feature frames, ``front`` / ``back`` and ``sim`` of the branches this head
        has), for inspection and figures (paper Fig. 3, 4); ``STRG.forward(..., return_graphs=True)``
        returns them."""
        boxes, mask = boxes_to_feature_frames(boxes, mask, features.shape[2])  # (B, T', K, 4)
        if graphs is not None:
            graphs["boxes"], graphs["mask"] = boxes, mask
        # (B, T', K, d)
        nodes = region_features(features, boxes, mask, spatial_scale=self.spatial_scale, impl=self.roi_impl)
        if self.geometry is not None:  # box geometry (option): the map's extent in input pixels
            frame = (features.shape[3] / self.spatial_scale, features.shape[4] / self.spatial_scale)
            nodes = nodes + self.geometry(boxes, mask, frame).to(nodes.dtype)
        return self.forward_nodes(nodes, boxes, mask, graphs)

    def forward_nodes(self, nodes: Tensor, boxes: Tensor, mask: Tensor, graphs: dict | None = None) -> Tensor:
        """nodes (Tensor[B, T', K, d]), boxes (Tensor[B, T', K, 4]), mask -> Tensor[B, d].
        ``graphs``: as in :meth:`forward`."""
        b, t, k, d = nodes.shape
        out = nodes
        if self.graphs:
            out = torch.zeros_like(nodes)
            if self.sim is not None:  # all T * K nodes of the video in one graph
                out = out + self.sim(nodes.reshape(b, t * k, d), mask.reshape(b, t * k), graphs).reshape(b, t, k, d)
            if self.st is not None:
                out = out + self.st(nodes, boxes, mask, graphs)  # the two branches fused by summation
        count = mask.sum(dim=(1, 2)).clamp(min=1).to(out.dtype)  # (B,)
        return (out * mask[..., None].to(out.dtype)).sum(dim=(1, 2)) / count[:, None]  # (B, d)
