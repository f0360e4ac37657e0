"""One synthetic video: scene script -> rendered frames -> boxes, detector-like proposals, file."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from strg.synth.render import SHAPES, Layer, background, compose, draw_layer
from strg.synth.scenes import ACTIONS, SCRIPTS, SceneBuilder, add_distractors, add_hand

CODECS = {"webm": ("libvpx-vp9", {"crf": "24", "b": "0", "deadline": "realtime", "cpu-used": "8",
                                  "row-mt": "0", "lag-in-frames": "0"}),
          "mp4": ("libx264", {"crf": "18", "preset": "veryfast", "tune": "zerolatency"})}


@dataclass(frozen=True)
class VideoSpec:
    """Everything that decides one video's content; its bytes depend on nothing else."""

    seed: int
    index: int
    video_id: str
    actions: tuple[int, ...]  # class indices, in temporal order
    frames: int
    size: int
    fps: float
    container: str  # "webm" | "mp4"
    distractors: tuple[int, int] = (1, 2)
    miss_rate: float = 0.1
    false_positives: float = 1.5


def _rng(spec: VideoSpec) -> np.random.Generator:
    # One independent stream per video: results do not depend on worker count or order.
    return np.random.default_rng([spec.seed, spec.index, 0x5E7])


def _clutter(rng: np.random.Generator, bg: np.ndarray, n: int) -> np.ndarray:
    """Paint ``n`` static shapes into the background; returns their boxes (n, 4) in bg pixels."""
    size = bg.shape[0]
    layers = []
    for _ in range(n):
        a = rng.uniform(0.03, 0.08) * size
        layers.append(Layer(shape=str(rng.choice(SHAPES)), pos=rng.uniform(0, size, (1, 2)).astype(np.float32),
                            half=(a, a * rng.uniform(0.5, 1.5)), angle=rng.uniform(0, np.pi),
                            colours=rng.uniform(0.1, 0.9, (2, 3)).astype(np.float32),
                            pattern="solid" if rng.random() < 0.5 else "stripes", freq=rng.uniform(0.5, 1.5)))
    margin = int(max(np.hypot(*layer.half) for layer in layers)) + 4
    canvas = np.pad(bg, ((margin, margin), (margin, margin), (0, 0)), mode="edge")[None]
    for layer in layers:
        draw_layer(canvas, layer, margin)
    bg[:] = canvas[0, margin:-margin, margin:-margin]
    return np.stack([layer.boxes[0] for layer in layers])


def _proposals(rng: np.random.Generator, true_boxes: np.ndarray, clutter: np.ndarray, spec: VideoSpec,
               ) -> list[tuple[np.ndarray, np.ndarray]]:
    """Detector-like boxes per frame: (boxes (k, 4), scores (k,)) sorted by descending score.

    true_boxes (ndarray[T, N, 4]): boxes of every object and the hand, NaN when not visible.
    Each is kept with probability 1 - miss_rate, its centre and size jittered; false positives
    (Poisson, mean ``false_positives``) land on background clutter or anywhere.
    """
    T, N, _ = true_boxes.shape
    S = spec.size
    wh = true_boxes[..., 2:] - true_boxes[..., :2]
    ctr = (true_boxes[..., 2:] + true_boxes[..., :2]) / 2 + rng.normal(0, 0.07, (T, N, 2)) * wh
    wh = wh * np.exp(rng.normal(0, 0.1, (T, N, 2)))
    jittered = np.concatenate([ctr - wh / 2, ctr + wh / 2], -1)
    keep = ~np.isnan(true_boxes[..., 0]) & (rng.random((T, N)) >= spec.miss_rate)
    scores = rng.uniform(0.55, 1.0, (T, N))
    out = []
    n_fp = rng.poisson(spec.false_positives, T)
    for t in range(T):  # per-frame lists have different lengths; T is small (<= ~100)
        k = n_fp[t]
        on_clutter = rng.random(k) < 0.5
        c = clutter[rng.integers(len(clutter), size=k)] if len(clutter) else np.zeros((k, 4))
        cc = (c[:, :2] + c[:, 2:]) / 2 + rng.normal(0, 2.0, (k, 2))
        cwh = (c[:, 2:] - c[:, :2]) * np.exp(rng.normal(0, 0.15, (k, 2)))
        rwh = rng.uniform(0.08, 0.35, (k, 2)) * S
        rc = rng.uniform(0, S, (k, 2))
        fc, fwh = np.where(on_clutter[:, None], cc, rc), np.where(on_clutter[:, None], cwh, rwh)
        fp = np.concatenate([fc - fwh / 2, fc + fwh / 2], 1)
        boxes = np.concatenate([jittered[t][keep[t]], fp]).clip(0, S)
        sc = np.concatenate([scores[t][keep[t]], rng.uniform(0.05, 0.7, k)])
        ok = ((boxes[:, 2] - boxes[:, 0]) >= 2) & ((boxes[:, 3] - boxes[:, 1]) >= 2)
        order = np.argsort(-sc[ok], kind="stable")
        out.append((boxes[ok][order].astype(np.float32), sc[ok][order].astype(np.float32)))
    return out


def render(spec: VideoSpec) -> dict:
    """Render ``spec``: frames uint8 (T, S, S, 3) plus the annotations of the video.

    Returns dict(frames, segments [(class, first_frame, last_frame)], objects [(name, track,
    role, boxes (T, 4))], proposals [(boxes, scores)] per frame, placeholders per action).
    """
    rng = _rng(spec)
    S, T = spec.size, spec.frames
    sb = SceneBuilder(rng, S, T)
    n = len(spec.actions)
    seg_len = T / n
    segments, placeholders = [], []
    for i, c in enumerate(spec.actions):
        t0, t1 = i * seg_len, (i + 1) * seg_len - 1
        kind = ACTIONS[c][0]
        objs = SCRIPTS[kind](sb, t0, t1, kind)
        segments.append((c, int(round(t0)), int(round(t1))))
        placeholders.append(objs)
    add_distractors(sb, int(rng.integers(spec.distractors[0], spec.distractors[1] + 1)))
    hand, arm = add_hand(sb)
    # Draw order: distractors and containers first, then the handled objects, then the hand.
    order = sorted(sb.things, key=lambda t: {"distractor": 0, "object": 1, "lid": 2}[t.role])
    J = int(rng.integers(0, 4)) if S >= 48 else 0
    bg = background(rng, S + 2 * J)
    clutter = _clutter(rng, bg, int(rng.integers(2, 6))) - J
    steps = rng.normal(0, 0.6, (T, 2)).cumsum(0)
    jitter = (np.clip(np.round(steps), -J, J) + J).astype(np.int64)
    layers = [t.layer for t in order] + [hand.layer]
    frames = compose(bg, layers, arm, jitter, S, noise=0.015, rng=rng)
    things = order + [hand]
    true_boxes = np.stack([t.layer.boxes for t in things], 1)  # (T, N, 4), NaN if unseen
    proposals = _proposals(rng, true_boxes, clutter, spec)
    objects = [(t.name, t.track, t.role, t.layer.boxes) for t in things]
    names = [[o.name for o in objs] for objs in placeholders]
    tracks = [[o.track for o in objs] for objs in placeholders]
    return {"frames": frames, "segments": segments, "objects": objects, "proposals": proposals,
            "placeholders": names, "placeholder_tracks": tracks}


def encode(frames: np.ndarray, path: str, container: str, fps: float) -> None:
    """Write uint8 frames (T, H, W, 3) as a VP9 webm or H.264 mp4, atomically and bit-exactly."""
    import av
    from fractions import Fraction

    codec, options = CODECS[container]
    tmp = f"{path}.tmp-{os.getpid()}"
    # bitexact: no random segment UID or encoder version string, so equal frames give equal bytes.
    out = av.open(tmp, "w", format="webm" if container == "webm" else "mp4", options={"fflags": "+bitexact"})
    try:
        stream = out.add_stream(codec, rate=Fraction(fps).limit_denominator(1000), options=options)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.thread_count = 1
        for f in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    finally:
        out.close()
    os.replace(tmp, path)
