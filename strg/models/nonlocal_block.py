"""Non-local block (Wang et al., CVPR 2018; docs/model.md), in the variants of the codes that
publish Kinetics I3D checkpoints (docs/checkpoints.md).

Embedded Gaussian (the default, Non-local paper eq. 2-3 with the softmax)::

    y_i = sum_j softmax_j(theta(x_i) . phi(x_j) * s) g(x_j)     s = 1/sqrt(d_inner) or 1
    z   = BN(W_z y) + x

* theta, phi, g: 1x1x1 convs to ``inner = channels / 2``. phi and g see a (1, 2, 2)-subsampled
  input: max-pooled *before* the convs (``pool="before"``: the Caffe2 original and PySlowFast, the
  default here) or their outputs max-pooled *after* them (``pool="after"``: mmcv's ``sub_sample``,
  used by mmaction2). A 1x1 conv does not commute with a max, so the two differ.
* ``scale``: the 1/sqrt(d_inner) of the Caffe2 original and PySlowFast; mmaction2's non-local
  configs set ``use_scale=False``.
* ``out_bias``: W_z has a bias in Caffe2 and PySlowFast; mmcv's ``conv_out`` is a ConvModule with
  a norm, hence none.
* Other pairwise functions (Non-local paper section 3.2): ``dot_product``: f / N' with N' the
  number of (subsampled) positions j, no softmax (all three codes); ``gaussian`` (mmcv): no theta
  and phi convs, softmax_j(x_i . x_j) with x_j max-pooled, never scaled. mmcv's
  ``concatenation`` is not implemented.
* W_z is followed by a BN whose gamma starts at 0, so a new block is an identity. With frozen BN
  that BN keeps trainable affine parameters (else gamma would stay 0 and the block never learn).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal

import torch
from torch import Tensor, nn

PAIRWISE = ("embedded_gaussian", "dot_product", "gaussian")


@dataclass(frozen=True)
class NonLocalVariant:
    """How a non-local block computes (see the module docstring)."""

    pairwise: Literal["embedded_gaussian", "dot_product", "gaussian"] = "embedded_gaussian"
    pool: Literal["before", "after"] = "before"
    scale: bool = True
    out_bias: bool = True

    def __post_init__(self):
        if self.pairwise not in PAIRWISE:
            raise ValueError(
                f"non-local pairwise function {self.pairwise!r} is not supported (supported: {', '.join(PAIRWISE)})"
            )
        if self.pool not in ("before", "after"):
            raise ValueError(f"non-local pool must be 'before' or 'after', got {self.pool!r}")


class NonLocalBlock(nn.Module):
    """x (Tensor[B, C, T, H, W]) -> Tensor[B, C, T, H, W]."""

    def __init__(
        self,
        channels: int,
        *,
        inner_channels: int | None = None,
        subsample: bool = True,
        scale: bool = True,
        norm_layer: Callable[..., nn.Module] | None = None,
        variant: NonLocalVariant | None = None,
    ):
        super().__init__()
        variant = variant if variant is not None else NonLocalVariant(scale=scale)
        inner = inner_channels or channels // 2
        self.inner_channels = inner
        self.variant = variant
        self.scale = variant.scale and variant.pairwise == "embedded_gaussian"
        if variant.pairwise != "gaussian":  # the Gaussian compares the input itself
            self.theta = nn.Conv3d(channels, inner, 1)
            self.phi = nn.Conv3d(channels, inner, 1)
        self.g = nn.Conv3d(channels, inner, 1)
        self.pool = nn.MaxPool3d((1, 2, 2), stride=(1, 2, 2)) if subsample else nn.Identity()
        self.out = nn.Conv3d(inner, channels, 1, bias=variant.out_bias)
        if norm_layer is None:
            self.bn = nn.BatchNorm3d(channels)
        else:
            self.bn = norm_layer(channels, trainable_affine=True)
        self.reset_parameters()

    def _convs(self) -> list[nn.Conv3d]:
        return [
            m for m in (getattr(self, "theta", None), getattr(self, "phi", None), self.g, self.out) if m is not None
        ]

    def reset_parameters(self) -> None:
        for conv in self._convs():
            nn.init.normal_(conv.weight, std=0.01)
            if conv.bias is not None:
                nn.init.zeros_(conv.bias)
        with torch.no_grad():
            self.bn.weight.zero_()  # gamma = 0: the block starts as an identity
            self.bn.bias.zero_()

    def _keys_values(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(theta (B, d, N), phi (B, d, N'), g (B, inner, N')), N' the subsampled positions."""
        v = self.variant
        if v.pairwise == "gaussian":
            return x.flatten(2), self.pool(x).flatten(2), self.pool(self.g(x)).flatten(2)
        if v.pool == "before":
            pooled = self.pool(x)
            return self.theta(x).flatten(2), self.phi(pooled).flatten(2), self.g(pooled).flatten(2)
        return self.theta(x).flatten(2), self.pool(self.phi(x)).flatten(2), self.pool(self.g(x)).flatten(2)

    def forward(self, x: Tensor) -> Tensor:
        b, c, t, h, w = x.shape
        theta, phi, g = self._keys_values(x)
        affinity = theta.transpose(1, 2) @ phi  # (B, THW, THW')
        if self.variant.pairwise == "dot_product":
            attention = affinity / affinity.shape[-1]  # f / N'
        else:
            if self.scale:
                affinity = affinity * self.inner_channels**-0.5
            attention = affinity.softmax(dim=-1)
        y = (attention @ g.transpose(1, 2)).transpose(1, 2)  # (B, inner, THW)
        y = y.reshape(b, self.inner_channels, t, h, w)
        return x + self.bn(self.out(y))
