"""Every row of the paper's Tables 2-4 as a named variant (names: :mod:`strg.variants`,
``[nl_]<head>_<depth>``).

For example ``joint_gcn_r50`` (Table 2a, 36.2 mAP on Charades) or ``nl_joint_gcn_r101``
(Table 3, 39.7).
"""

from __future__ import annotations

import logging
from typing import Sequence

from strg.errors import ConfigError
from strg.models.backbone import i3d_resnet
from strg.models.gcn import RegionGraphHead
from strg.models.geometry import BoxGeometryEmbedding
from strg.models.strg import STRG
from strg.models.weights import (
    inflate_resnet2d,
    load_i3d_checkpoint,
    load_resnet2d_state_dict,
    read_i3d_checkpoint,
    resolve_backbone_source,
    resolve_source,
)
from strg.variants import HEADS, SourceName, list_models, parse_name

__all__ = ["build_model", "list_models", "parse_name"]

logger = logging.getLogger(__name__)


ROI_IMPLS = ("auto", "sparse", "matmul", "roi_align")


def _positive_ints(value, count: int) -> bool:
    """True when ``value`` is a sequence of ``count`` ints >= 1."""
    return isinstance(value, (list, tuple)) and len(value) == count and all(
        isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in value)


def check_build_args(**kwargs) -> list[tuple[str, str]]:
    """The problems of ``build_model`` keyword arguments, as (argument, what is wrong) pairs.

    Checked before anything is built, so that a bad value is reported by name (the config reports
    it as ``model.<argument>``) instead of failing deep inside a layer. Only the arguments given
    are checked; a value of None means the variant's default.
    """
    problems = []

    def at_least(key: str, low: int) -> None:
        v = kwargs.get(key)
        if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < low):
            problems.append((key, f"must be an integer >= {low}, got {v!r}"))

    for key in ("num_classes", "width", "dim", "gcn_layers", "in_channels"):
        at_least(key, 1)
    if kwargs.get("pool2_kernel") is not None and kwargs["pool2_kernel"] not in (1, 2, 3):
        why = f"must be 1, 2 or 3 (the paper: 3; Caffe2 / PySlowFast: 2), got {kwargs['pool2_kernel']!r}"
        problems.append(("pool2_kernel", why))
    if kwargs.get("stage_blocks") is not None and not _positive_ints(kwargs["stage_blocks"], 4):
        problems.append(("stage_blocks", f"must be 4 integers >= 1 (res2..res5), got {kwargs['stage_blocks']!r}"))
    if kwargs.get("temporal_strides") is not None and not _positive_ints(kwargs["temporal_strides"], 3):
        why = f"must be 3 integers >= 1 (conv1, pool1, pool2), got {kwargs['temporal_strides']!r}"
        problems.append(("temporal_strides", why))
    p = kwargs.get("dropout")
    if p is not None and not (isinstance(p, (int, float)) and 0.0 <= p < 1.0):
        problems.append(("dropout", f"must be a probability in [0, 1) (1 would zero every feature), got {p!r}"))
    if kwargs.get("roi_impl") is not None and kwargs["roi_impl"] not in ROI_IMPLS:
        problems.append(("roi_impl", f"must be one of {', '.join(map(repr, ROI_IMPLS))}, got {kwargs['roi_impl']!r}"))
    return problems


# the build_model arguments that check_build_args checks
_CHECKED = ("num_classes", "width", "stage_blocks", "dim", "pool2_kernel", "temporal_strides", "gcn_layers", "dropout",
            "in_channels", "roi_impl")


def _checked_variant(name: str, arguments: dict) -> tuple[bool, str, int]:
    """parse_name(name), once the build_model ``arguments`` (its locals) pass check_build_args
    (ConfigError naming each bad one otherwise)."""
    if problems := check_build_args(**{k: v for k, v in arguments.items() if k in _CHECKED}):
        raise ConfigError(f"build_model({name!r}): " + "; ".join(f"{key}: {why}" for key, why in problems))
    return parse_name(name)


def _backbone(depth: int, *, inflate_from, backbone_checkpoint, backbone_source, pool2_kernel, **kwargs):
    """The I3D backbone of :func:`build_model`, built for its weights' source and loaded."""
    if inflate_from is not None and backbone_checkpoint is not None:
        raise ValueError("give inflate_from or backbone_checkpoint, not both")
    ckpt = read_i3d_checkpoint(backbone_checkpoint) if backbone_checkpoint is not None else None
    if ckpt is not None:
        source, _ = resolve_source(ckpt, backbone_source)
        if pool2_kernel is not None and pool2_kernel != source.pool2_kernel:
            logger.warning("pool2_kernel=%d, but source %r used %d: the loaded weights will compute something else",
                           pool2_kernel, source.name, source.pool2_kernel)
    else:
        source, _ = resolve_backbone_source(None, backbone_source)
    backbone = i3d_resnet(depth, pool2_kernel=pool2_kernel, source=source, **kwargs)
    if inflate_from is not None:
        state = load_resnet2d_state_dict(inflate_from, depth=depth)
        report = inflate_resnet2d(backbone, state, source=str(inflate_from))
        logger.info("%s: %s", inflate_from, report.summary())
    if ckpt is not None:
        logger.info("%s", load_i3d_checkpoint(backbone, ckpt, source=source).summary())
    return backbone


def _graph_head(name: str, graphs: tuple[str, ...] | None, dim: int, *, spatial_scale: float, gcn_layers: int,
                sim_per_layer: bool, roi_impl: str, box_geometry: bool,
                compile_graph_head: bool) -> RegionGraphHead | None:
    """The region graph head of a variant (None for the I3D baseline); see :func:`build_model`."""
    if graphs is None:
        if box_geometry:
            raise ValueError(f"box_geometry needs a region variant; {name!r} has no region nodes")
        return None
    head = RegionGraphHead(dim, spatial_scale=spatial_scale, graphs=graphs, num_layers=gcn_layers,
                           sim_per_layer=sim_per_layer, roi_impl=roi_impl,
                           geometry=BoxGeometryEmbedding(dim) if box_geometry else None)
    if compile_graph_head:
        head.compile()
    return head


def build_model(
    name: str,
    *,
    num_classes: int,
    width: int = 64,
    stage_blocks: Sequence[int] | None = None,
    dim: int = 512,
    pool2_kernel: int | None = None,
    temporal_strides: Sequence[int] | None = None,
    frozen_bn: bool = True,
    gcn_layers: int = 3,
    sim_per_layer: bool = False,
    dropout: float = 0.3,
    in_channels: int = 3,
    inflate_from: str | None = None,
    backbone_checkpoint: str | None = None,
    backbone_source: SourceName | None = None,
    compile_graph_head: bool = False,
    roi_impl: str = "auto",
    box_geometry: bool = False,
) -> STRG:
    """Build a variant by name (see the module docstring) with the paper's settings by default.

    Args:
        name: variant name, e.g. ``"joint_gcn_r50"``.
        num_classes: 157 for Charades, 174 for Something-Something.
        width: res2 bottleneck width (64 in the paper; e.g. 8 for tests and the CPU demo).
        stage_blocks: blocks per stage (default (3, 4, 6, 3) for R50, (3, 4, 23, 3) for R101).
        dim: d, node feature size after the 2048 -> d reduction (512).
        pool2_kernel: 3 (paper Table 1) or 2 (every Kinetics source); None: the backbone source's.
        temporal_strides: (conv1, pool1, pool2) temporal strides; default (1, 1, 2) for R50
            (32 -> 16 frames) and (2, 2, 2) for R101 (128 -> 16 frames).
        frozen_bn: frozen BatchNorm (paper section 6.1).
        gcn_layers: L (3).
        sim_per_layer: every GCN layer computes its own G_sim with its own phi, phi' (True), or
            G_sim is computed once from the region features and used by all L layers (False,
            the default: the paper's 158 GMAC is closer to this count; see README).
        dropout: before the classifier (0.3).
        in_channels: input channels (3).
        inflate_from: initialise the backbone by inflating ImageNet 2D ResNet weights: a
            torchvision ResNet state-dict file, or ``"torchvision"`` (downloads; needs internet).
        backbone_checkpoint: initialise the backbone from a Kinetics-pretrained I3D checkpoint
            (PySlowFast, mmaction2 or Caffe2 ``.pkl`` format, or a strg checkpoint), see
            :func:`strg.models.weights.load_i3d_checkpoint`.
        backbone_source: what the backbone's weights computed in the code that trained them
            (stem pooling, non-local variant, channel order, normalisation, pool2 kernel): a
            name of :data:`strg.models.sources.SOURCES`. None: read from ``backbone_checkpoint``
            where the file tells, the format's default where it cannot (a Caffe2 ``.pkl``:
            ``video_nonlocal_net``), ``"strg"`` without a checkpoint. A name that contradicts
            the file raises CheckpointError. The model keeps it as ``model.backbone.source``;
            its ``data_mean`` / ``data_std`` are the normalisation to feed it.
        compile_graph_head: ``torch.compile`` the region graph head (RoIAlign, graphs, GCN). On a
            GPU the eager head is bound by the launch overhead of its many small kernels; compiled,
            they fuse (BENCHMARKS.md). Same results; the first batches pay the compilation. The
            sparse RoIAlign (the CPU default) syncs with the host and splits the compiled graph
            there: compile with ``roi_impl="matmul"`` for one graph.
        roi_impl: how RoIAlign + the 7x7 max-pool are computed: ``"auto"`` (default:
            ``"sparse"`` on the CPU, ``"matmul"`` on other devices), ``"sparse"`` (one CSR
            product, fused max-pool), ``"matmul"`` (one batched dense matrix product) or
            ``"roi_align"`` (torchvision's kernel): the same values (tested), see
            :mod:`strg.models.region`.
        box_geometry: add to every node's RoIAlign feature an embedding of its box's position,
            size and displacement to the matched box in the neighbouring feature frames
            (:mod:`strg.models.geometry`; not in the paper, whose rows use False). Region
            variants only.
    """
    nonlocal_, head, depth = _checked_variant(name, locals())
    backbone = _backbone(
        depth, inflate_from=inflate_from, backbone_checkpoint=backbone_checkpoint, backbone_source=backbone_source,
        width=width, stage_blocks=stage_blocks, nonlocal_=nonlocal_, pool2_kernel=pool2_kernel,
        temporal_strides=tuple(temporal_strides) if temporal_strides is not None else None,
        frozen_bn=frozen_bn, in_channels=in_channels,
    )
    graph_head = _graph_head(name, HEADS[head], dim, spatial_scale=1.0 / backbone.spatial_stride, gcn_layers=gcn_layers,
                             sim_per_layer=sim_per_layer, roi_impl=roi_impl, box_geometry=box_geometry,
                             compile_graph_head=compile_graph_head)
    model = STRG(backbone, num_classes=num_classes, graph_head=graph_head, dim=dim, dropout=dropout)
    model.variant = name
    return model
