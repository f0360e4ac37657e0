"""What a Kinetics I3D checkpoint computed in the code that trained it: one named "source".

A checkpoint's weight names and shapes do not say everything its network computed. Five things
differ between the codes that publish Kinetics-pretrained I3D ResNets, and none changes a key or
a shape, so loading alone cannot catch them (docs/checkpoints.md lists the facts, file by file):

* the stem's temporal pooling: pool1 striding ``s`` in time as a ``s``x3x3 max over frame groups
  (``"pairs"``: video-nonlocal-net's pool1 ``kernels=[2, 3, 3]``) or as a 1x3x3 kernel that keeps
  one frame in ``s`` (``"subsample"``: mmaction2's ``pool1_stride_t`` with its ``(1, 3, 3)``
  kernel), and pool1's spatial padding (1; 0 in video-nonlocal-net, whose Caffe2 pool1 has
  ``pads=0``: 112 -> 55 for a 224 input);
* the temporal kernel of pool2 (2 in every Kinetics source; 3 in the paper's Table 1);
* the non-local block (:class:`~strg.models.nonlocal_block.NonLocalVariant`): the pairwise
  function, max-pooling before phi and g (Caffe2, PySlowFast) or after them (mmcv's
  ``sub_sample``), the 1/sqrt(d) scale (on in Caffe2 and PySlowFast; ``use_scale=False`` in
  mmaction2's configs), and a bias on the output conv (mmcv's ``conv_out`` is a ConvModule with a
  norm, hence no bias);
* the input channel order the first conv was trained on (a BGR source's conv1 is flipped at load,
  so every strg backbone takes RGB clips);
* the normalisation: mean and std, written on the source's own value scale (0-255 for
  mmaction2 and Caffe2, 0-1 for PySlowFast), applied by strg's data pipeline on 0-1 RGB values.

The paper starts from a Kinetics-pretrained I3D (section 6.1). A :class:`BackboneSource` holds
all five under one name, e.g. ``build_model(..., backbone_source="mmaction2")``. Where a
checkpoint file tells its source (key names, a saved config),
:func:`strg.models.weights.detect_source` reads it and an explicit setting that contradicts it is
refused; where it cannot (a Caffe2 ``.pkl``: same blob names from
video-nonlocal-net and from PySlowFast's model zoo), the default is documented below and the
load report says it was assumed. ``"strg"`` is the source of a backbone built here (ImageNet
inflation or scratch): the paper's pool2 kernel 3 and ImageNet normalisation.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

from strg.models.nonlocal_block import NonLocalVariant
from strg.variants import SourceName

# The normalisation of strg's data pipeline is (x / 255 - mean) / std on RGB values; the sources
# write theirs on their own scale and channel order. ImageNet's (torchvision) on 0-1:
_IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225), 1.0)
_KINETICS_01 = ((0.45, 0.45, 0.45), (0.225, 0.225, 0.225), 1.0)  # PySlowFast DATA.MEAN / DATA.STD
_MMACTION2 = ((123.675, 116.28, 103.53), (58.395, 57.12, 57.375), 255.0)  # RGB, on 0-255
_CAFFE2 = ((114.75, 114.75, 114.75), (57.375, 57.375, 57.375), 255.0)  # MODEL.MEAN / MODEL.STD, on 0-255

_SOFTMAX_BEFORE = NonLocalVariant(pairwise="embedded_gaussian", pool="before", scale=True, out_bias=True)


@dataclass(frozen=True)
class BackboneSource:
    """The settings a source's I3D ran with that weights cannot show (see the module docstring).

    ``mean`` and ``std`` are in the source's own ``value_scale`` (1: values in [0, 1]; 255) and in
    RGB order: every source normalises the decoded RGB frames (PySlowFast's channel reversal comes
    after; video-nonlocal-net's mean and std are the same for the three channels).
    :attr:`data_mean` / :attr:`data_std` give them as strg's data options (RGB, on [0, 1]).
    """

    name: str
    stem_pool: Literal["pairs", "subsample"]
    nonlocal_variant: NonLocalVariant
    channels: Literal["rgb", "bgr"] = "rgb"
    mean: tuple[float, float, float] = _KINETICS_01[0]
    std: tuple[float, float, float] = _KINETICS_01[1]
    value_scale: float = 1.0
    pool2_kernel: int = 2
    stem_pool_padding: int = 1
    description: str = ""

    def _rgb01(self, values: tuple[float, float, float]) -> tuple[float, float, float]:
        return tuple(round(v / self.value_scale, 10) for v in values)

    @property
    def data_mean(self) -> tuple[float, float, float]:
        """``data.mean`` for strg's pipeline: RGB, on [0, 1] (e.g. 123.675 / 255 = 0.485)."""
        return self._rgb01(self.mean)

    @property
    def data_std(self) -> tuple[float, float, float]:
        """``data.std`` for strg's pipeline: RGB, on [0, 1]."""
        return self._rgb01(self.std)

    def with_normalisation(self, mean, std, value_scale: float) -> BackboneSource:
        """The same source with the normalisation a checkpoint file recorded."""
        return replace(
            self, mean=tuple(float(v) for v in mean), std=tuple(float(v) for v in std), value_scale=value_scale
        )


def _mm(pairwise: str) -> NonLocalVariant:
    # mmcv NonLocal3d: sub_sample pools after the g and phi convs; mmaction2's I3D NL configs set
    # use_scale=False; conv_out is a ConvModule with a BN3d norm, so its conv has no bias.
    return NonLocalVariant(pairwise=pairwise, pool="after", scale=False, out_bias=False)


SOURCES: dict[str, BackboneSource] = {
    s.name: s
    for s in (
        BackboneSource(
            "strg",
            stem_pool="pairs",
            nonlocal_variant=_SOFTMAX_BEFORE,
            mean=_IMAGENET[0],
            std=_IMAGENET[1],
            pool2_kernel=3,
            description="built here (ImageNet inflation or scratch): Table 1's pool2 kernel 3, ImageNet normalisation",
        ),
        BackboneSource(
            "pyslowfast",
            stem_pool="subsample",
            nonlocal_variant=_SOFTMAX_BEFORE,
            description="PySlowFast .pyth, and its model zoo's Caffe2 .pkl (configs/Kinetics/c2/I3D*_8x8_R50.yaml)",
        ),
        BackboneSource(
            "pyslowfast_dot_product",
            stem_pool="subsample",
            nonlocal_variant=NonLocalVariant(pairwise="dot_product", pool="before", scale=False, out_bias=True),
            description="PySlowFast with NONLOCAL.INSTANTIATION: dot_product",
        ),
        *(
            BackboneSource(
                name,
                stem_pool="subsample",
                nonlocal_variant=_mm(mode),
                mean=_MMACTION2[0],
                std=_MMACTION2[1],
                value_scale=_MMACTION2[2],
                description=description,
            )
            for name, mode, description in (
                ("mmaction2", "embedded_gaussian", "mmaction2 I3D R50 (its NL configs: embedded_gaussian)"),
                ("mmaction2_dot_product", "dot_product", "mmaction2 I3D NL, non_local_cfg mode='dot_product'"),
                ("mmaction2_gaussian", "gaussian", "mmaction2 I3D NL, non_local_cfg mode='gaussian'"),
            )
        ),
        BackboneSource(
            "video_nonlocal_net",
            stem_pool="pairs",
            nonlocal_variant=_SOFTMAX_BEFORE,
            mean=_CAFFE2[0],
            std=_CAFFE2[1],
            value_scale=_CAFFE2[2],
            stem_pool_padding=0,
            description="Caffe2 video-nonlocal-net .pkl (MODEL.USE_BGR False: RGB frames)",
        ),
        BackboneSource(
            "video_nonlocal_net_bgr",
            stem_pool="pairs",
            nonlocal_variant=_SOFTMAX_BEFORE,
            channels="bgr",
            mean=_CAFFE2[0],
            std=_CAFFE2[1],
            value_scale=_CAFFE2[2],
            stem_pool_padding=0,
            description="Caffe2 video-nonlocal-net .pkl trained with MODEL.USE_BGR True",
        ),
    )
}

# The checkpoint formats (what :func:`strg.models.weights.convert_i3d_checkpoint` reads) and the
# sources each may come from; the first is the default when the file does not say more.
FORMAT_SOURCES: dict[str, tuple[str, ...]] = {
    "pyslowfast": ("pyslowfast", "pyslowfast_dot_product"),
    "mmaction2": ("mmaction2", "mmaction2_dot_product", "mmaction2_gaussian"),
    # A .pkl cannot tell video-nonlocal-net's from PySlowFast's model zoo (same blob names). The
    # default is the original Caffe2 code the paper builds on; both evaluate on RGB frames.
    "caffe2": ("video_nonlocal_net", "pyslowfast", "video_nonlocal_net_bgr", "pyslowfast_dot_product"),
    "strg": tuple(SOURCES),
}


# The names, as a type (in strg.variants, which the config reads without importing the models)
assert set(SourceName.__args__) == set(SOURCES)


def get_source(name: str | BackboneSource) -> BackboneSource:
    """A source by name (see :data:`SOURCES`); ValueError listing the names for an unknown one."""
    if isinstance(name, BackboneSource):
        return name
    if name not in SOURCES:
        raise ValueError(f"unknown backbone source {name!r}; choose one of: {', '.join(SOURCES)}")
    return SOURCES[name]
