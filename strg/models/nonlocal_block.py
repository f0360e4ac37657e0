"""Non-local block, embedded Gaussian version (Wang et al., CVPR 2018; docs/model.md).

    y_i = sum_j softmax_j(theta(x_i) . phi(x_j) / sqrt(d_inner)) g(x_j)
    z   = BN(W_z y) + x

* theta, phi, g: 1x1x1 convs to ``inner = channels / 2``; phi and g see a (1, 2, 2) max-pooled
  input (the subsampling of the Non-local paper).
* The 1/sqrt(d_inner) scaling is that of the Caffe2 original and PySlowFast (``use_scale``); a
  setting (``scale``), on by default.
* W_z is followed by a BN whose gamma starts at 0, so a new block is an identity. With frozen BN
  that BN keeps trainable affine parameters (else gamma would stay 0 and the block never learn).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn


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
    ):
        super().__init__()
        inner = inner_channels or channels // 2
        self.inner_channels = inner
        self.scale = scale
        self.theta = nn.Conv3d(channels, inner, 1)
        self.phi = nn.Conv3d(channels, inner, 1)
        self.g = nn.Conv3d(channels, inner, 1)
        self.pool = nn.MaxPool3d((1, 2, 2), stride=(1, 2, 2)) if subsample else nn.Identity()
        self.out = nn.Conv3d(inner, channels, 1)
        if norm_layer is None:
            self.bn = nn.BatchNorm3d(channels)
        else:
            self.bn = norm_layer(channels, trainable_affine=True)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for conv in (self.theta, self.phi, self.g, self.out):
            nn.init.normal_(conv.weight, std=0.01)
            nn.init.zeros_(conv.bias)
        with torch.no_grad():
            self.bn.weight.zero_()  # gamma = 0: the block starts as an identity
            self.bn.bias.zero_()

    def forward(self, x: Tensor) -> Tensor:
        b, c, t, h, w = x.shape
        theta = self.theta(x).flatten(2)  # (B, inner, THW)
        pooled = self.pool(x)
        phi = self.phi(pooled).flatten(2)  # (B, inner, THW')
        g = self.g(pooled).flatten(2)  # (B, inner, THW')
        affinity = theta.transpose(1, 2) @ phi  # (B, THW, THW')
        if self.scale:
            affinity = affinity * self.inner_channels**-0.5
        attention = affinity.softmax(dim=-1)
        y = (attention @ g.transpose(1, 2)).transpose(1, 2)  # (B, inner, THW)
        y = y.reshape(b, self.inner_channels, t, h, w)
        return x + self.bn(self.out(y))
