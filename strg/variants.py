"""Model variant names: ``[nl_]<head>_<depth>``, one for every row of the paper's Tables 2-4.

* ``<head>``: ``i3d`` (the baseline), ``proposal_avgpool`` (Table 2a "Proposal+AvgPool"),
  ``st_gcn`` (spatial-temporal graph only), ``sim_gcn`` (similarity graph only), ``joint_gcn``
  (both, two branches summed);
* ``nl_``: the backbone carries non-local blocks (Table 2b, 3, 4 "NL");
* ``<depth>``: ``r50`` or ``r101``.

The names alone, without the model code: :mod:`strg.models.registry` builds them and
:mod:`strg.config` checks a config's ``model.name`` against them.
"""

from __future__ import annotations

import re
from typing import Literal

__all__ = ["HEADS", "DEPTHS", "SourceName", "list_models", "parse_name"]

# head -> graph branches (None: no region head at all)
HEADS: dict[str, tuple[str, ...] | None] = {
    "i3d": None,
    "proposal_avgpool": (),
    "st_gcn": ("st",),
    "sim_gcn": ("sim",),
    "joint_gcn": ("sim", "st"),
}
DEPTHS = {"r50": 50, "r101": 101}
_NAME = re.compile(r"^(nl_)?(" + "|".join(HEADS) + r")_(" + "|".join(DEPTHS) + r")$")


def list_models() -> list[str]:
    """All variant names, baseline first."""
    return [f"{nl}{head}_{depth}" for depth in DEPTHS for nl in ("", "nl_") for head in HEADS]


def parse_name(name: str) -> tuple[bool, str, int]:
    """``"nl_joint_gcn_r50"`` -> (nonlocal, head, depth) = (True, "joint_gcn", 50)."""
    m = _NAME.match(name)
    if m is None:
        raise ValueError(f"unknown model variant {name!r}; choose one of: {', '.join(list_models())}")
    return m.group(1) is not None, m.group(2), DEPTHS[m.group(3)]


# The sources of Kinetics I3D checkpoints whose computation strg reproduces (their settings:
# strg.models.sources). ``model.backbone_source`` in a config is checked against these names.
SourceName = Literal[
    "strg",
    "pyslowfast",
    "pyslowfast_dot_product",
    "mmaction2",
    "mmaction2_dot_product",
    "mmaction2_gaussian",
    "video_nonlocal_net",
    "video_nonlocal_net_bgr",
]
