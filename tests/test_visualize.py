"""`strg visualize`: the graphs around a query node, and the PNG."""

from pathlib import Path

import torch

from strg.cli import main
from strg.models import build_model
from strg.visualize import draw, explain


def _item(t=8, size=64):
    """Box 0 moves right by 2 px a frame (a track); box 1 stays far away; frame 5 has no box 1."""
    boxes = torch.zeros(t, 2, 4)
    for i in range(t):
        boxes[i, 0] = torch.tensor([4.0 + 2 * i, 8.0, 24.0 + 2 * i, 28.0])
        boxes[i, 1] = torch.tensor([40.0, 40.0, 60.0, 60.0])
    mask = torch.ones(t, 2, dtype=torch.bool)
    mask[4, 1] = False  # input frame 4 = feature frame 2
    return {"clip": torch.randn(3, t, size, size), "boxes": boxes, "box_mask": mask,
            "target": torch.tensor(1), "video_id": "v0"}


def test_explain_follows_the_track_and_ranks_neighbours():
    torch.manual_seed(0)
    model = build_model("joint_gcn_r50", num_classes=3, width=4, stage_blocks=(1, 1, 1, 1), dim=8)
    ex = explain(model, _item(), ["a", "b", "c"], multi_label=False, query=(1, 0))
    assert ex.frames.shape == (4, 64, 64, 3) and ex.boxes.shape == (4, 2, 4)
    assert ex.trajectory == [(0, 0), (1, 0), (2, 0), (3, 0)]  # box 0 overlaps itself frame to frame
    assert ex.truth == ["b"] and sorted(n for n, _ in ex.top5) == ["a", "b", "c"]
    assert len(ex.neighbours) == 5 and (1, 0) not in [(t, k) for t, k, _ in ex.neighbours]
    assert all(w1 >= w2 for (_, _, w1), (_, _, w2) in zip(ex.neighbours, ex.neighbours[1:]))
    assert all(ex.mask[t, k] for t, k, _ in ex.neighbours)  # padded nodes are never neighbours
    other = explain(model, _item(), ["a", "b", "c"], multi_label=False, query=(1, 1))
    assert other.trajectory == [(0, 1), (1, 1)]  # box 1 is missing in frame 2: the chain stops


def test_baseline_has_no_similarity_neighbours(tmp_path):
    model = build_model("i3d_r50", num_classes=3, width=4, stage_blocks=(1, 1, 1, 1))
    ex = explain(model, _item(), ["a", "b", "c"], multi_label=False)
    assert ex.neighbours == [] and len(ex.trajectory) >= 2
    path = draw(ex, tmp_path / "fig.png")
    assert open(path, "rb").read(8) == b"\x89PNG\r\n\x1a\n"


TINY = str(Path(__file__).resolve().parent.parent / "configs" / "tiny_cpu.yaml")


def test_cli_visualize_tiny_config(tmp_path, capsys):
    out = tmp_path / "v.png"
    assert main(["visualize", TINY, "--out", str(out)]) == 0
    assert out.stat().st_size > 1000 and "predicted" in capsys.readouterr().out
    assert main(["visualize", TINY, "--video-id", "nope", "--out", str(out)]) == 2
