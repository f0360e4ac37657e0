"""Models of "Videos as Space-Time Region Graphs": build one with :func:`build_model`."""

from strg.models.registry import build_model, list_models, parse_name
from strg.models.strg import STRG

__all__ = ["STRG", "build_model", "list_models", "parse_name"]
