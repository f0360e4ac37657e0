"""The options of each dataset kind, declared once as dataclasses.

A config's ``data`` section is ``kind`` plus the fields of that kind's options class (the config
validation reads the field names, types and defaults from here), and
``strg.data.build_dataset(kind, split=..., training=..., **options)`` builds the options object
from the same keywords. :class:`ClipOptions` holds what every video kind shares (clip sampling,
transforms, proposals, decoding); each kind adds where its files are and sets its own defaults
(paper section 6.1: 32 frames at 6 fps and 50 boxes per frame for Charades, 10 boxes and 2 test
clips for Something-Something).

This module imports nothing heavy, so that ``strg.config`` can read it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

# ImageNet normalisation (torchvision's), the default of every kind; Kinetics I3D checkpoints of
# PySlowFast / Caffe2 were trained with 0.45 / 0.225 (docs/engine.md)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

__all__ = ["ClipOptions", "CharadesOptions", "SomethingV2Options", "SomethingV1Options", "ManifestOptions",
           "RandomOptions", "DATASET_OPTIONS", "IMAGENET_MEAN", "IMAGENET_STD"]


@dataclass
class ClipOptions:
    """Options shared by the video kinds (see :class:`strg.data.datasets.ClipDataset`).

    num_frames: T, frames per clip. stride, stride_unit: between clip frames, in "frames" or
    "seconds". test_clips, test_views: clips per video and spatial views per clip at test time.
    train_short_side ([min, max], random), crop_size, test_short_side: the frame transform.
    mean, std: normalisation (None: ImageNet's, or the backbone source's in a run). flip: random
    horizontal flip in training; flip_label_map: a JSON class -> mirrored class map for classes
    that name a direction. proposals: the proposals store
    (None: no boxes); max_boxes: boxes per frame; proposal_tolerance: nearest stored frame
    fallback in frames (None: half the store's interval). on_error: "raise" or "skip" unreadable
    videos. decode_backend (see strg.data.decode.DECODE_BACKENDS), decode_threads: the video decoder.
    """

    num_frames: int = 32
    stride: float = 1 / 6
    stride_unit: str = "seconds"
    test_clips: int = 10
    test_views: int = 1
    train_short_side: tuple[int, int] = (256, 320)
    crop_size: int = 224
    test_short_side: int = 256
    # None: the backbone source's normalisation (filled by the engine from model.backbone_source;
    # ImageNet's when a dataset is built directly)
    mean: Optional[tuple[float, float, float]] = None
    std: Optional[tuple[float, float, float]] = None
    flip: bool = False
    flip_label_map: Optional[str] = None
    proposals: Optional[str] = None
    max_boxes: int = 50
    proposal_tolerance: Optional[float] = None
    on_error: str = "raise"
    decode_backend: str = "auto"
    decode_threads: int = 1


@dataclass
class CharadesOptions(ClipOptions):
    """Charades v1. ``source`` "video" reads ``video_dir/<id><video_ext>`` (default
    ``root/Charades_v1``), "frames" reads ``video_dir/<id>/<id>-000001.jpg`` (default
    ``root/Charades_v1_rgb``) at ``frames_fps``. The default stride, 1/6 s, is the paper's 6 fps."""

    root: str = "."
    annotation_file: Optional[str] = None
    classes_file: Optional[str] = None
    video_dir: Optional[str] = None
    source: str = "video"
    video_ext: str = ".mp4"
    frames_fps: float = 24.0
    flip: bool = True


@dataclass
class _SomethingOptions(ClipOptions):
    """What both Something-Something versions share: files under ``root``, every 2nd frame, 2 test
    clips and 10 boxes per frame (section 6.1)."""

    root: str = "."
    annotation_file: Optional[str] = None
    labels_file: Optional[str] = None
    video_dir: Optional[str] = None
    stride: float = 2.0
    stride_unit: str = "frames"
    test_clips: int = 2
    max_boxes: int = 10


@dataclass
class SomethingV2Options(_SomethingOptions):
    """Something-Something v2 (webm videos, 12 fps): files under ``root`` (docs/data.md)."""

    video_ext: str = ".webm"


@dataclass
class SomethingV1Options(_SomethingOptions):
    """Something-Something v1 (JPEG frame folders at ``frames_fps``): files under ``root``."""

    frames_fps: float = 12.0


@dataclass
class ManifestOptions(ClipOptions):
    """Your own videos: ``manifest`` (.csv / .jsonl, ``{split}`` replaced by the split name),
    ``classes_file`` (one name per line), ``root`` for relative paths (default: the manifest's
    folder), ``multi_label`` targets, ``frames_fps`` of frame folders."""

    manifest: Optional[str] = None
    classes_file: Optional[str] = None
    root: Optional[str] = None
    multi_label: bool = False
    frames_fps: float = 24.0


@dataclass
class RandomOptions:
    """The synthetic ``random`` kind (:mod:`strg.data.random_clips`): ``num_videos`` clips of
    ``frames`` x ``size`` x ``size`` whose colour encodes one of ``num_classes`` classes (two with
    ``multi_label``), ``boxes_per_frame`` random boxes, ``test_clips`` clips per video at test time,
    generated from ``seed``."""

    num_videos: int = 16
    num_classes: int = 4
    frames: int = 4
    size: int = 32
    boxes_per_frame: int = 3
    multi_label: bool = False
    test_clips: int = 2
    seed: int = 0


#: kind -> its options class
DATASET_OPTIONS: dict[str, type] = {
    "charades": CharadesOptions,
    "something_v2": SomethingV2Options,
    "something_v1": SomethingV1Options,
    "manifest": ManifestOptions,
    "random": RandomOptions,
}
