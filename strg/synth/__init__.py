"""The synthetic relational-action generator behind ``strg synth`` and ``strg demo``.

``generate_dataset(out_dir, seed=..., num_videos=..., frames=..., size=..., variant=...)``
writes Something-Something v2 (or Charades v1) files with Something-Else boxes and a proposals
store; see docs/demo.md. Modules: render (numpy drawing), scenes (the action scripts),
video (one video: render, boxes, proposals, encoding), dataset (the files).
"""

from strg.synth.dataset import VARIANTS, class_names, generate_dataset
from strg.synth.scenes import ACTIONS

__all__ = ["ACTIONS", "VARIANTS", "class_names", "generate_dataset"]
