"""What a run is made of, built from its typed config: the datasets, the model, the batching.

The one place where config values become the explicit arguments of ``strg.data.build_dataset``
and ``strg.models.build_model``; the models and datasets never see a config.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch.utils.data import Dataset

from strg.config import DataConfig, RunConfig
from strg.data import build_dataset
from strg.data.collate import make_collate
from strg.data.options import ClipOptions
from strg.errors import ConfigError
from strg.models import build_model


def dataset_from_config(data: DataConfig, split: str, *, training: bool) -> Dataset:
    """One split of the config's dataset (``training``: random clips; else every test clip x view)."""
    return build_dataset(data.kind, split=split, training=training, **data.options_dict())


def model_from_config(cfg: RunConfig, num_classes: int, *, starting_weights: bool = True):
    """The config's model for ``num_classes`` classes. ``starting_weights``: load
    ``model.inflate_from`` / ``model.backbone_checkpoint``; a run that then loads a checkpoint
    (``--resume``, ``train.init``, evaluation) leaves them out, as the checkpoint replaces them."""
    m = cfg.model
    if m.num_classes is not None and m.num_classes != num_classes:
        raise ConfigError(f"{cfg.source}: model.num_classes is {m.num_classes} but the {cfg.data.kind!r} dataset "
                          f"has {num_classes} classes")
    model = build_model(m.name, num_classes=num_classes, **m.build_kwargs(starting_weights=starting_weights))
    options = cfg.data.options
    if model.uses_boxes and isinstance(options, ClipOptions) and not options.proposals:
        raise ConfigError(f"{cfg.source}: model {m.name!r} uses region proposals: set data.proposals (a store made by "
                          "`strg proposals extract`)")
    return model


@dataclass
class RunData:
    """The datasets of a run and how their items become batches."""

    train_set: Dataset
    val_set: Dataset | None
    num_classes: int
    multi_label: bool
    max_boxes: int  # boxes per frame in a batch (0 for a model without boxes)
    collate_fn: object


def boxes_per_frame(data: DataConfig, dataset, uses_boxes: bool) -> int:
    """Boxes per frame in a batch (section 6.1: 50 for Charades, 10 for Something-Something): the
    config's ``max_boxes``, else the dataset's, else the first item's; 0 without boxes."""
    if not uses_boxes:
        return 0  # the I3D baseline takes no boxes
    declared = data.options.max_boxes if isinstance(data.options, ClipOptions) else None
    return int(declared or getattr(dataset, "max_boxes", None) or dataset[0]["boxes"].shape[1])


def build_run(cfg: RunConfig, *, starting_weights: bool, train_set=None, val_set=None):
    """The model and :class:`RunData` of a training run: the training set (``data.train_split``),
    the evaluation set (``eval.split``; none when null), the model for the training set's classes.
    ``train_set`` / ``val_set`` replace the config's datasets (tests, notebooks)."""
    if train_set is None:
        train_set = dataset_from_config(cfg.data, cfg.data.train_split, training=True)
    if val_set is None and cfg.eval.split is not None:
        val_set = dataset_from_config(cfg.data, cfg.eval.split, training=False)
    model = model_from_config(cfg, len(train_set.classes), starting_weights=starting_weights)
    max_boxes = boxes_per_frame(cfg.data, train_set, model.uses_boxes)
    data = RunData(train_set=train_set, val_set=val_set, num_classes=len(train_set.classes),
                   multi_label=bool(train_set.multi_label), max_boxes=max_boxes, collate_fn=make_collate(max_boxes))
    return model, data
