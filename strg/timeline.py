"""Per-class scores over a long video: a CSV table and a timeline picture (``strg predict``).

A timeline is the score of every class for clips slid over the video (long, Charades-style
videos). The paper classifies whole videos (section 6.1 "Inference"); it does not localise
actions in time, so the clip scores are shown as they are, without smoothing or thresholds.
"""

from __future__ import annotations

import csv
import io
import os

import numpy as np

__all__ = ["draw_timeline", "write_timeline_csv"]


def _replace(tmp: str, path: str) -> str:
    os.replace(tmp, path)
    return path


def write_timeline_csv(path: str | os.PathLike, times: np.ndarray, scores: np.ndarray, classes: list[str]) -> str:
    """One row per clip: ``start,end,<class 1>,...,<class C>`` (seconds, scores). Written atomically.

    times (float[W, 2]): start and end of each clip in seconds; scores (float[W, C]).
    """
    path = os.fspath(path)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["start", "end", *classes])
    for (t0, t1), row in zip(times, scores):
        writer.writerow([f"{t0:.3f}", f"{t1:.3f}", *(f"{s:.6g}" for s in row)])
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8", newline="") as f:
        f.write(buf.getvalue())
    return _replace(tmp, path)


def draw_timeline(path: str | os.PathLike, times: np.ndarray, scores: np.ndarray, classes: list[str],
                  rows: list[int], *, title: str = "", score_label: str = "score",
                  limits: tuple[float, float] | None = (0.0, 1.0)) -> str:
    """A PNG: time on x, the classes ``rows`` (indices, top first) as rows, the score as colour.

    ``limits``: the scores the colour scale spans ((0, 1) for probabilities; None: the data's).

    Each clip paints the stretch from its centre half-way to its neighbours' centres, so
    overlapping clips do not hide each other. Written atomically; returns the path.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    centres = times.mean(axis=1)  # (W,)
    edges = np.concatenate([[times[0, 0]], (centres[1:] + centres[:-1]) / 2, [times[-1, 1]]])  # (W + 1,)
    grid = scores[:, rows].T  # (R, W)
    fig, ax = plt.subplots(figsize=(10, 0.45 * len(rows) + 1.4))
    lo, hi = limits if limits is not None else (None, None)
    mesh = ax.pcolormesh(edges, np.arange(len(rows) + 1), grid, cmap="viridis", shading="flat", vmin=lo, vmax=hi)
    ax.set_yticks(np.arange(len(rows)) + 0.5)
    ax.set_yticklabels([classes[r] for r in rows], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("time (s)")
    ax.set_title(title, fontsize=9)
    fig.colorbar(mesh, ax=ax, label=score_label, pad=0.01)
    fig.tight_layout()
    path = os.fspath(path)
    tmp = f"{path}.tmp{os.getpid()}.png"
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    return _replace(tmp, path)
