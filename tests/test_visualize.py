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


def test_return_graphs_keeps_the_graphs_of_the_forward_pass():
    """model(..., return_graphs=True): the same logits, and the G_sim of Eq. 1-2 written as plain ops."""
    torch.manual_seed(0)
    model = build_model("joint_gcn_r50", num_classes=3, width=4, stage_blocks=(1, 1, 1, 1), dim=8).eval()
    it = _item()
    clip, boxes, mask = it["clip"][None], it["boxes"][None], it["box_mask"][None]
    with torch.no_grad():
        logits, graphs = model(clip, boxes, mask, return_graphs=True)
        torch.testing.assert_close(logits, model(clip, boxes, mask))
        feats = model.reduce(model.backbone(clip))  # (1, 8, 4, 4, 4)
        nodes = torch.zeros(4, 2, 8)  # RoIAlign by torchvision, max over the 7x7 bins, feature frame t = input 2t
        from torchvision.ops import roi_align

        for t in range(4):
            rois = torch.cat([torch.zeros(2, 1), boxes[0, 2 * t]], 1)
            pooled = roi_align(feats[:, :, t], rois, 7, spatial_scale=1 / 16, sampling_ratio=-1, aligned=True)
            nodes[t] = pooled.amax((2, 3))
        real = mask[0, ::2].reshape(8)  # (8,) nodes frame-major
        x = nodes.reshape(8, 8)
        f = model.graph_head.sim.phi[0](x) @ model.graph_head.sim.phi_prime[0](x).T  # Eq. 1
        expected = torch.zeros(8, 8)
        expected[real[:, None] & real[None]] = torch.softmax(f[real][:, real], dim=1).reshape(-1)  # Eq. 2, real nodes
    torch.testing.assert_close(graphs["sim"][0], expected, atol=1e-5, rtol=1e-4)
    assert graphs["front"].shape == graphs["back"].shape == (1, 3, 2, 2) and graphs["boxes"].shape == (1, 4, 2, 4)
    base = build_model("i3d_r50", num_classes=3, width=4, stage_blocks=(1, 1, 1, 1)).eval()
    _, g = base(clip, boxes, mask, return_graphs=True)
    assert set(g) == {"boxes", "mask"}  # no graph in the baseline: where the boxes fall only
