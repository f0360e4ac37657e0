"""I3D ResNet backbones (paper section 4.1, Table 1; docs/model.md "Backbone").

The layout follows torchvision's 2D ResNet (``conv1``, ``bn1``, ``layer1`` ... ``layer4``, blocks
with ``conv1``/``bn1``/``conv2``/``bn2``/``conv3``/``bn3``/``downsample``), so that ImageNet
weights inflate key for key (see :mod:`strg.models.weights`). Differences from 2D:

* conv1 is 5x7x7, stride (1, 2, 2); pool1 1x3x3, stride (1, 2, 2). With a temporal stride s
  on pool1, ``stem_pool`` says how: an s x3x3 max over groups of s frames (``"pairs"``, the
  Caffe2 original's pool1) or the 1x3x3 kernel keeping one frame in s (``"subsample"``,
  mmaction2's ``pool1_stride_t``); ``stem_pool_padding`` is pool1's spatial padding (1; 0 in the
  Caffe2 original). Both are set by the checkpoint's source (:mod:`strg.models.sources`).
* pool2, after res2 (``layer1``): max-pool kernel ``pool2_kernel`` x1x1, temporal stride 2. The
  paper's Table 1 prints kernel 3; the Caffe2 original and PySlowFast use 2 (same parameters,
  different outputs). A setting.
* The temporal kernel (3 or 1) sits on the first 1x1 conv of a block (docs/model.md "Backbone": the pattern
  of the Non-local paper's I3D that the paper's 153 GMAC is met by). Which blocks carry it is the
  data table :data:`TEMPORAL_KERNELS`.
* res5 (``layer4``) has spatial stride 1 and dilation 2 in its 3x3 convs, so 224 px in gives a
  14x14 map: the network's spatial stride is 16 (PySlowFast SPATIAL_STRIDES/SPATIAL_DILATIONS).
* Stride is on the 3x3 conv (torchvision's "ResNet v1.5", PySlowFast's STRIDE_1X1=False), which
  is what the inflated torchvision weights were trained with.
* BatchNorm is frozen by default (section 6.1: "we freeze the parameters in all BN layers").

Output of the R50 at 32x224x224: (B, 2048, 16, 14, 14).
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import Tensor, nn

from strg.models.nonlocal_block import NonLocalBlock, NonLocalVariant
from strg.models.sources import BackboneSource, get_source

# Temporal kernel size of the first (1x1) conv of each block, per stage (res2..res5).
# R50: the Non-local paper's I3D (Caffe2 video-nonlocal-net, PySlowFast `i3d`, mmaction2
# inflate=(1,1,1),(1,0,1,0),(1,0,1,0,1,0),(0,1,0)); counted at 152.5 GMAC (docs/model.md).
# R101: the same alternation continued over res4's 23 blocks (3,1,3,1,...,3): our choice, as
# the paper does not print it; the Caffe2 R101 I3D alternates the same way.
TEMPORAL_KERNELS: dict[str, tuple[tuple[int, ...], ...]] = {
    "r50": ((3, 3, 3), (3, 1, 3, 1), (3, 1, 3, 1, 3, 1), (1, 3, 1)),
    "r101": ((3, 3, 3), (3, 1, 3, 1), tuple(3 if i % 2 == 0 else 1 for i in range(23)), (1, 3, 1)),
}

STAGE_BLOCKS: dict[str, tuple[int, int, int, int]] = {"r50": (3, 4, 6, 3), "r101": (3, 4, 23, 3)}

# Non-local blocks: inserted after these (0-based) blocks of res3 and res4 (docs/model.md
# "Non-local blocks": PySlowFast / mmaction2 for R50, the Caffe2 original for R101).
NONLOCAL_BLOCKS: dict[str, tuple[tuple[int, ...], ...]] = {
    "r50": ((), (1, 3), (1, 3, 5), ()),
    "r101": ((), (1, 3), (6, 13, 20), ()),
}


class FrozenBatchNorm3d(nn.Module):
    """BatchNorm with fixed statistics and, by default, fixed affine parameters.

    y = (x - running_mean) / sqrt(running_var + eps) * weight + bias, per channel. State-dict keys
    are those of ``nn.BatchNorm3d`` (``weight``, ``bias``, ``running_mean``, ``running_var``), so
    either loads into the other. With ``trainable_affine=True`` weight and bias are parameters
    (used for the new BN at the end of each non-local block, whose gamma starts at 0: frozen, it
    would keep the block an identity forever).
    """

    def __init__(self, num_features: int, eps: float = 1e-5, trainable_affine: bool = False):
        super().__init__()
        self.eps = eps
        weight, bias = torch.ones(num_features), torch.zeros(num_features)
        if trainable_affine:
            self.weight, self.bias = nn.Parameter(weight), nn.Parameter(bias)
        else:
            self.register_buffer("weight", weight)
            self.register_buffer("bias", bias)
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        state_dict.pop(prefix + "num_batches_tracked", None)  # present in nn.BatchNorm checkpoints
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, x: Tensor) -> Tensor:
        scale = self.weight * (self.running_var + self.eps).rsqrt()
        shift = self.bias - self.running_mean * scale
        shape = (1, -1) + (1,) * (x.dim() - 2)
        return x * scale.reshape(shape).to(x.dtype) + shift.reshape(shape).to(x.dtype)

    def extra_repr(self) -> str:
        return f"{self.running_mean.shape[0]}, eps={self.eps}"


def make_norm(frozen: bool) -> Callable[..., nn.Module]:
    """The norm layer factory: ``norm(channels, trainable_affine=False)``."""

    def norm(channels: int, trainable_affine: bool = False) -> nn.Module:
        if frozen:
            return FrozenBatchNorm3d(channels, trainable_affine=trainable_affine)
        return nn.BatchNorm3d(channels)

    return norm


class Bottleneck3d(nn.Module):
    """ResNet bottleneck with a ``temporal_kernel`` x1x1 first conv (docs/model.md "Backbone").

    x (Tensor[B, C_in, T, H, W]) -> Tensor[B, 4 * width, T, H / stride, W / stride]
    """

    expansion = 4

    def __init__(
        self,
        in_channels: int,
        width: int,
        *,
        temporal_kernel: int = 1,
        stride: int = 1,
        dilation: int = 1,
        norm_layer: Callable[..., nn.Module],
        nonlocal_block: nn.Module | None = None,
    ):
        super().__init__()
        out_channels = width * self.expansion
        kt = temporal_kernel
        self.conv1 = nn.Conv3d(in_channels, width, (kt, 1, 1), padding=(kt // 2, 0, 0), bias=False)
        self.bn1 = norm_layer(width)
        self.conv2 = nn.Conv3d(
            width, width, (1, 3, 3), stride=(1, stride, stride), padding=(0, dilation, dilation),
            dilation=(1, dilation, dilation), bias=False,
        )
        self.bn2 = norm_layer(width)
        self.conv3 = nn.Conv3d(width, out_channels, 1, bias=False)
        self.bn3 = norm_layer(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv3d(in_channels, out_channels, 1, stride=(1, stride, stride), bias=False),
                norm_layer(out_channels),
            )
        # The non-local block of this position runs on the block's output (inserted "after a
        # residual block", docs/model.md); kept inside the block so that torchvision keys map 1:1.
        self.nonlocal_block = nonlocal_block

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.relu(self.bn3(self.conv3(out)) + identity)
        if self.nonlocal_block is not None:
            out = self.nonlocal_block(out)
        return out


class ResNet3d(nn.Module):
    """I3D ResNet (paper Table 1). See the module docstring for the architecture choices.

    Args:
        stage_blocks: blocks per stage (res2..res5), e.g. (3, 4, 6, 3) for R50.
        temporal_kernels: per stage, per block, the temporal kernel of the block's first conv.
        width: channels of res2's bottleneck (64 for the paper; small values for tests and CPU).
        nonlocal_blocks: per stage, the 0-based indices of the blocks followed by a non-local block.
        pool2_kernel: temporal kernel of pool2 (3: paper Table 1; 2: Caffe2 / PySlowFast).
        temporal_strides: temporal strides of (conv1, pool1, pool2); the product is the total
            temporal stride: (1, 1, 2) for 32 -> 16 frames (R50), (2, 2, 2) for 128 -> 16 (R101
            at 128 frames, our choice: the paper does not say where the extra stride sits).
        frozen_bn: freeze BatchNorm statistics and affine parameters (paper section 6.1).
        in_channels: input channels (3 for RGB).
        stem_pool: pool1's temporal stride as a max over frame groups (``"pairs"``) or a
            subsampling 1x3x3 kernel (``"subsample"``); the same when that stride is 1.
        stem_pool_padding: pool1's spatial padding (1, or 0 as in the Caffe2 original).
        nonlocal_variant: how the non-local blocks compute (:class:`NonLocalVariant`).

    Shapes: x (Tensor[B, C_in, T, H, W]) -> Tensor[B, 32 * width, T / stride_t, H / 16, W / 16].
    """

    spatial_stride = 16

    def __init__(
        self,
        *,
        stage_blocks: Sequence[int] = (3, 4, 6, 3),
        temporal_kernels: Sequence[Sequence[int]] = TEMPORAL_KERNELS["r50"],
        width: int = 64,
        nonlocal_blocks: Sequence[Sequence[int]] = ((), (), (), ()),
        pool2_kernel: int = 3,
        temporal_strides: tuple[int, int, int] = (1, 1, 2),
        frozen_bn: bool = True,
        in_channels: int = 3,
        stem_pool: str = "pairs",
        stem_pool_padding: int = 1,
        nonlocal_variant: NonLocalVariant | None = None,
    ):
        super().__init__()
        if stem_pool not in ("pairs", "subsample"):
            raise ValueError(f"stem_pool must be 'pairs' or 'subsample', got {stem_pool!r}")
        if len(stage_blocks) != 4 or len(temporal_kernels) != 4 or len(nonlocal_blocks) != 4:
            raise ValueError("stage_blocks, temporal_kernels and nonlocal_blocks need 4 stages each")
        for i, (n, kernels) in enumerate(zip(stage_blocks, temporal_kernels)):
            if len(kernels) < n:
                raise ValueError(f"stage {i + 2} has {n} blocks but {len(kernels)} temporal kernels")
            for j in nonlocal_blocks[i]:
                if j >= n:
                    raise ValueError(f"non-local block after block {j} of res{i + 2}, which has {n}")
        if pool2_kernel not in (1, 2, 3):
            raise ValueError(f"pool2_kernel must be 1, 2 or 3, got {pool2_kernel}")
        norm = make_norm(frozen_bn)
        s_conv1, s_pool1, s_pool2 = temporal_strides
        self.temporal_stride = s_conv1 * s_pool1 * s_pool2
        self.pool2_kernel = pool2_kernel
        self.source: BackboneSource | None = None  # set by i3d_resnet: what the weights expect
        self.out_channels = width * 8 * Bottleneck3d.expansion

        self.conv1 = nn.Conv3d(in_channels, width, (5, 7, 7), stride=(s_conv1, 2, 2), padding=(2, 3, 3), bias=False)
        self.bn1 = norm(width)
        self.relu = nn.ReLU(inplace=True)
        t_pool1 = s_pool1 if stem_pool == "pairs" else 1
        pad1 = stem_pool_padding
        self.maxpool = nn.MaxPool3d((t_pool1, 3, 3), stride=(s_pool1, 2, 2), padding=(0, pad1, pad1))
        # pool2: kernel k, stride 2 in time; padding keeps T/2 for k = 3 (and k = 2 needs none).
        pad2 = pool2_kernel // 2 if pool2_kernel == 3 else 0
        self.pool2 = nn.MaxPool3d((pool2_kernel, 1, 1), stride=(s_pool2, 1, 1), padding=(pad2, 0, 0))

        spatial_strides, dilations = (1, 2, 2, 1), (1, 1, 1, 2)  # res5: stride 1, dilation 2
        in_ch = width
        layers = []
        for i in range(4):
            blocks = []
            w = width * 2**i
            for j in range(stage_blocks[i]):
                out_ch = w * Bottleneck3d.expansion
                nl = None
                if j in nonlocal_blocks[i]:
                    nl = NonLocalBlock(out_ch, norm_layer=norm, variant=nonlocal_variant)
                blocks.append(
                    Bottleneck3d(
                        in_ch, w, temporal_kernel=temporal_kernels[i][j],
                        stride=spatial_strides[i] if j == 0 else 1, dilation=dilations[i],
                        norm_layer=norm, nonlocal_block=nl,
                    )
                )
                in_ch = out_ch
            layers.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv3d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        for m in self.modules():  # non-local blocks keep their own init (identity at start)
            if isinstance(m, NonLocalBlock):
                m.reset_parameters()

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))  # (B, w, T, H/4, W/4)
        x = self.pool2(self.layer1(x))  # (B, 4w, T/2, H/4, W/4)
        x = self.layer2(x)  # (B, 8w, T/2, H/8, W/8)
        x = self.layer3(x)  # (B, 16w, T/2, H/16, W/16)
        return self.layer4(x)  # (B, 32w, T/2, H/16, W/16): res5 keeps the spatial size


def i3d_resnet(
    depth: int = 50,
    *,
    width: int = 64,
    stage_blocks: Sequence[int] | None = None,
    nonlocal_: bool = False,
    pool2_kernel: int | None = None,
    temporal_strides: tuple[int, int, int] | None = None,
    frozen_bn: bool = True,
    in_channels: int = 3,
    source: str | BackboneSource = "strg",
) -> ResNet3d:
    """Build the I3D ResNet-50 or ResNet-101 of the paper (optionally with non-local blocks).

    ``width`` and ``stage_blocks`` shrink the same architecture for tests and CPU runs; a stage
    with fewer blocks keeps the first entries of the temporal-kernel and non-local tables.
    ``source`` (a name of :data:`strg.models.sources.SOURCES`) sets what its weights computed:
    the stem's temporal pooling, the non-local variant and, unless ``pool2_kernel`` is given,
    pool2's kernel. The backbone keeps it as ``.source``.
    """
    src = get_source(source)
    key = {50: "r50", 101: "r101"}.get(depth)
    if key is None:
        raise ValueError(f"depth must be 50 or 101, got {depth}")
    blocks = tuple(stage_blocks) if stage_blocks is not None else STAGE_BLOCKS[key]
    nl = NONLOCAL_BLOCKS[key] if nonlocal_ else ((), (), (), ())
    nl = tuple(tuple(j for j in stage if j < n) for stage, n in zip(nl, blocks))
    if temporal_strides is None:
        temporal_strides = (1, 1, 2) if depth == 50 else (2, 2, 2)
    net = ResNet3d(
        stage_blocks=blocks, temporal_kernels=TEMPORAL_KERNELS[key], width=width, nonlocal_blocks=nl,
        pool2_kernel=src.pool2_kernel if pool2_kernel is None else pool2_kernel, temporal_strides=temporal_strides,
        frozen_bn=frozen_bn, in_channels=in_channels, stem_pool=src.stem_pool, stem_pool_padding=src.stem_pool_padding,
        nonlocal_variant=src.nonlocal_variant,
    )
    net.source = src
    return net
