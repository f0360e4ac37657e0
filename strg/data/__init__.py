"""Video data: decoding, datasets in the real formats, the proposals store, transforms, batching.

``build_dataset(kind, *, split, training, **options)`` is the one entry point for datasets
(docs/DESIGN.md, "Datasets"); the per-kind builders in :data:`DATASET_BUILDERS` have keyword-only,
annotated options with defaults, which is what a config's ``data`` section is validated against.
"""

from __future__ import annotations

__all__ = ["DATASET_KINDS", "build_dataset", "dataset_builder"]

DATASET_KINDS = ("charades", "something_v2", "something_v1", "manifest")


def dataset_builder(kind: str):
    """The builder function of a dataset kind (its signature lists the valid options)."""
    from strg.data import datasets
    from strg.errors import ConfigError

    try:
        return datasets.DATASET_BUILDERS[kind]
    except KeyError:
        raise ConfigError(f"unknown dataset kind {kind!r} (expected one of {', '.join(DATASET_KINDS)})") from None


def build_dataset(kind: str, *, split: str, training: bool, **options):
    """Build a dataset: ``kind`` in :data:`DATASET_KINDS`; see docs/data.md for the options."""
    return dataset_builder(kind)(split=split, training=training, **options)
