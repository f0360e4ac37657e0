"""Video data: decoding, datasets in the real formats, the proposals store, transforms, batching.

``build_dataset(kind, *, split, training, **options)`` is the one entry point for datasets
(docs/DESIGN.md, "Datasets"): the CLI, the engine, the demo and ``strg visualize`` all call it.
The options of each kind are declared once, as a dataclass in :mod:`strg.data.options`
(:func:`dataset_options`); a config's ``data`` section is validated against it.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import typing

from strg.data.options import DATASET_OPTIONS
from strg.errors import ConfigError

__all__ = ["DATASET_KINDS", "build_dataset", "dataset_builder", "dataset_options"]

DATASET_KINDS = tuple(DATASET_OPTIONS)

# kind -> (module, builder function ``fn(options, *, split, training)``); imported when used
_BUILDERS = {
    "charades": ("strg.data.datasets", "charades"),
    "something_v2": ("strg.data.datasets", "something_v2"),
    "something_v1": ("strg.data.datasets", "something_v1"),
    "manifest": ("strg.data.datasets", "manifest"),
    "random": ("strg.data.random_clips", "random_clips"),
}


def dataset_options(kind: str) -> type:
    """The options dataclass of a dataset kind (its fields are the valid options)."""
    try:
        return DATASET_OPTIONS[kind]
    except KeyError:
        raise ConfigError(f"unknown dataset kind {kind!r} (expected one of {', '.join(DATASET_KINDS)})") from None


def dataset_builder(kind: str):
    """``fn(*, split, training, **options)`` for ``kind``; its signature lists the options
    (keyword-only, annotated, with defaults), taken from :func:`dataset_options`."""
    options_cls = dataset_options(kind)
    module, name = _BUILDERS[kind]
    build = getattr(importlib.import_module(module), name)

    def builder(*, split: str, training: bool, **options):
        return build(options_cls(**options), split=split, training=training)

    hints = typing.get_type_hints(options_cls)
    kw = inspect.Parameter.KEYWORD_ONLY
    params = [inspect.Parameter("split", kw, annotation=str), inspect.Parameter("training", kw, annotation=bool)]
    params += [inspect.Parameter(f.name, kw, default=f.default, annotation=hints[f.name])
               for f in dataclasses.fields(options_cls)]
    builder.__signature__ = inspect.Signature(params)
    builder.__name__ = builder.__qualname__ = kind
    builder.__doc__ = build.__doc__
    return builder


def build_dataset(kind: str, *, split: str, training: bool, **options):
    """Build one split of a dataset: ``kind`` in :data:`DATASET_KINDS`, ``options`` the fields of
    its options class (docs/data.md); an unknown option is a TypeError naming it."""
    return dataset_builder(kind)(split=split, training=training, **options)
