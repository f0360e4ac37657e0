"""Pictures of a prediction and of the space-time region graph behind it (paper Fig. 3 and 4).

:func:`explain` runs a model on one clip and returns what a figure needs; :func:`draw` renders it
with matplotlib: a row of feature frames with

* every proposal of the frame (thin grey);
* a query node (orange) and its strongest similarity neighbours in any frame (blue, line width
  by G_sim weight): Fig. 3 of the paper (models with a similarity branch);
* the query's trajectory through the spatial-temporal graph (green): from the query, follow the
  strongest G_front edge to the next frame and the strongest G_back edge to the previous one:
  Fig. 4;
* the top-5 predicted classes and the ground truth in the title.

``strg visualize CONFIG --video-id ID [--checkpoint RUN]`` writes such a PNG.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from strg.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from strg.errors import ConfigError
from strg.models.graphs import frame_pair_graphs


@dataclass
class Explanation:
    """Everything :func:`draw` needs, as numpy arrays on feature frames (T' frames, K boxes)."""

    frames: np.ndarray  # uint8[T', H, W, 3], the input frames the feature frames stand for
    boxes: np.ndarray  # float[T', K, 4] in pixels of ``frames``
    mask: np.ndarray  # bool[T', K]
    query: tuple[int, int]  # (frame, box) of the query node
    neighbours: list[tuple[int, int, float]]  # (frame, box, G_sim weight), strongest first
    trajectory: list[tuple[int, int]]  # (frame, box) along the strongest G_front / G_back edges
    top5: list[tuple[str, float]]  # (class name, score)
    truth: list[str]  # ground-truth class names
    title: str


def _trajectory(front: np.ndarray, back: np.ndarray, mask: np.ndarray, query: tuple[int, int]) -> list[tuple[int, int]]:
    """Follow the strongest edge forward (G_front) and backward (G_back) from the query.

    front, back (float[T'-1, K, K]): front[t, i, j] links (t, i) to (t+1, j); back[t, j, i] links
    (t+1, j) to (t, i). A node without an edge ends the chain.
    """
    t0, k0 = query
    path = [(t0, k0)]
    t, k = t0, k0
    while t < len(front) and front[t, k].max() > 0:  # forward in time
        k = int(front[t, k].argmax())
        t += 1
        path.append((t, k))
    t, k = t0, k0
    while t > 0 and back[t - 1, k].max() > 0:  # backward in time
        k = int(back[t - 1, k].argmax())
        t -= 1
        path.insert(0, (t, k))
    return [(t, k) for t, k in path if mask[t, k]]


@torch.no_grad()
def explain(model, item: dict, classes: list[str], *, multi_label: bool, query: tuple[int, int] | None = None,
            neighbours: int = 5) -> Explanation:
    """Run ``model`` on one dataset item and collect the graphs around a query node.

    Args:
        model: an :class:`~strg.models.STRG` (any variant; without a similarity branch there are
            no neighbours, without a graph head the graphs come from the boxes alone).
        item: a dataset item (``clip`` (Tensor[3, T, H, W]), ``boxes`` (Tensor[T, k, 4]),
            ``box_mask``, ``target``).
        classes: class names.
        multi_label: sigmoid scores (else softmax).
        query: (feature frame, box) of the query node; default: the first (highest-scoring) box
            of the middle frame that has one.
        neighbours: how many similarity neighbours to show.
    """
    model.eval()
    device = next(model.parameters()).device
    clip = item["clip"][None].to(device)  # (1, 3, T, H, W)
    boxes = item["boxes"][None].to(device).float()  # (1, T, k, 4)
    mask = item["box_mask"][None].to(device).bool()
    logits, graphs = model(clip, boxes, mask, return_graphs=True)  # the model's own pass keeps its graphs
    if "front" not in graphs:  # no spatial-temporal branch (baseline, Proposal+AvgPool): from the boxes
        graphs["front"], graphs["back"] = frame_pair_graphs(graphs["boxes"].float(), graphs["mask"])
    t_feat = graphs["boxes"].shape[1]
    scores = (torch.sigmoid(logits) if multi_label else torch.softmax(logits, dim=1))[0].double().cpu()
    top = scores.topk(min(5, len(classes)))
    top5 = [(classes[i], float(s)) for s, i in zip(top.values, top.indices)]
    target = item["target"]
    if multi_label:
        truth = [classes[i] for i in torch.nonzero(target).flatten().tolist()]
    else:
        truth = [classes[int(target)]] if int(target) >= 0 else []

    fboxes = graphs["boxes"][0].cpu().numpy()  # (T', K, 4)
    fmask = graphs["mask"][0].cpu().numpy()
    k = fboxes.shape[1]
    if query is not None and not (0 <= query[0] < t_feat and 0 <= query[1] < k):
        raise ConfigError(f"query {query[0]},{query[1]} is outside the graph: frame 0..{t_feat - 1} (feature frames) "
                          f"and box 0..{k - 1} (boxes per frame)")
    if query is None:
        order = sorted(range(t_feat), key=lambda t: abs(t - t_feat // 2))  # middle frame first
        query = next(((t, int(np.argmax(fmask[t]))) for t in order if fmask[t].any()), (t_feat // 2, 0))
    near: list[tuple[int, int, float]] = []
    if "sim" in graphs and fmask[query]:
        row = graphs["sim"][0, query[0] * k + query[1]].cpu()  # (T'*K,)
        row[query[0] * k + query[1]] = 0  # not itself
        vals, idx = row.topk(min(neighbours, int((row > 0).sum())))
        near = [(int(i) // k, int(i) % k, float(v)) for v, i in zip(vals, idx)]
    trajectory = []
    if fmask[query]:
        trajectory = _trajectory(graphs["front"][0].cpu().numpy(), graphs["back"][0].cpu().numpy(), fmask, query)

    step = clip.shape[2] // t_feat
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1, 1)
    frames = ((item["clip"][:, ::step][:, :t_feat] * std + mean).clamp(0, 1) * 255).byte()  # (3, T', H, W)
    return Explanation(
        frames=frames.permute(1, 2, 3, 0).numpy(), boxes=fboxes, mask=fmask, query=query, neighbours=near,
        trajectory=trajectory, top5=top5, truth=truth, title=str(item.get("video_id", "")),
    )


def draw(ex: Explanation, path, *, max_frames: int = 8):
    """Render an :class:`Explanation` to a PNG file (written atomically). Returns the path."""
    import os

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    t_feat = len(ex.frames)
    evenly = np.linspace(0, t_feat - 1, min(max_frames, t_feat)).round().astype(int).tolist()
    shown = sorted(set(evenly) | {ex.query[0]})
    fig, axes = plt.subplots(1, len(shown), figsize=(max(6.5, 2.2 * len(shown)), 2.9), squeeze=False)
    on_path = set(ex.trajectory)
    weights = {(t, k): w for t, k, w in ex.neighbours}
    wmax = max(weights.values(), default=1.0)
    for ax, t in zip(axes[0], shown):
        ax.imshow(ex.frames[t])
        ax.set_axis_off()
        ax.set_title(f"frame {t}", fontsize=8)
        for k in np.flatnonzero(ex.mask[t]):
            x1, y1, x2, y2 = ex.boxes[t, k]
            style = dict(edgecolor="0.8", linewidth=0.5, alpha=0.6)
            if (t, k) in on_path:
                style = dict(edgecolor="limegreen", linewidth=1.8)
            if (t, k) in weights:
                style = dict(edgecolor="deepskyblue", linewidth=0.8 + 2.5 * weights[(t, k)] / wmax)
            if (t, k) == tuple(ex.query):
                style = dict(edgecolor="orange", linewidth=2.5)
            ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, **style))
    pred = ", ".join(f"{name} {score:.2f}" for name, score in ex.top5)
    fig.suptitle(
        f"{ex.title}  truth: {', '.join(ex.truth) or '-'}\npredicted: {pred}\n"
        "orange: query   blue: strongest G_sim neighbours   green: G_front/G_back trajectory",
        fontsize=8,
    )
    fig.tight_layout()
    path = os.fspath(path)
    tmp = f"{path}.tmp{os.getpid()}.png"
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)
    return path
