"""Vectorised rendering of synthetic scenes: textured backgrounds, textured shapes, a hand.

Everything is drawn for all frames at once with numpy: a layer's pixels are computed on a
(T, W, W) grid around the layer's position in each frame and blended into a padded canvas
(T, S + 2M, S + 2M, 3) by one fancy-indexed write, so that a video costs a few milliseconds.
Coordinates are pixels of the output frame, x to the right, y down; boxes are x1 y1 x2 y2 with
x2/y2 the exclusive pixel edge, as in the Something-Else annotations (docs/formats.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

SHAPES = ("rect", "ellipse", "diamond", "triangle")
PATTERNS = ("solid", "stripes", "checker", "dots", "rings")


@dataclass(eq=False)
class Layer:
    """One moving object (or the hand's palm) to draw.

    pos (ndarray[T, 2]): centre (x, y) in output pixels, per frame.
    half (tuple): half extent (a, b) along the shape's own axes, pixels.
    colours (ndarray[2, 3]): the two colours of the texture, floats in [0, 1].
    inner (ndarray[3] or None): colour of an open container's inside (drawn at 0.62 scale).
    visible (ndarray[T] of bool): frames where the layer is drawn.
    """

    shape: str
    pos: np.ndarray
    half: tuple[float, float]
    angle: float
    colours: np.ndarray
    pattern: str
    freq: float
    inner: np.ndarray | None = None
    visible: np.ndarray | None = None
    boxes: np.ndarray | None = field(default=None, repr=False)  # filled by render: (T, 4), NaN if unseen


def shape_level(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Implicit level of a unit shape: < 1 inside, 1 on the edge. u, v are normalised coords."""
    if shape == "rect":
        return np.maximum(np.abs(u), np.abs(v))
    if shape == "ellipse":
        return np.sqrt(u * u + v * v)
    if shape == "diamond":
        return np.abs(u) + np.abs(v)
    if shape == "triangle":  # apex up; base at v = 1
        return np.maximum(np.abs(v), 2.0 * np.abs(u) - v)
    raise ValueError(f"unknown shape {shape!r}")


def pattern_mask(pattern: str, u: np.ndarray, v: np.ndarray, freq: float) -> np.ndarray:
    """Which pixels take the second colour; u, v in pixels of the object's own frame."""
    if pattern == "solid":
        return np.zeros(np.broadcast_shapes(u.shape, v.shape), dtype=bool)
    if pattern == "stripes":
        return np.sin(u * freq) > 0
    if pattern == "checker":
        return (np.sin(u * freq) > 0) ^ (np.sin(v * freq) > 0)
    if pattern == "dots":
        return (np.sin(u * freq) * np.sin(v * freq)) > 0.5
    if pattern == "rings":
        return np.sin(np.sqrt(u * u + v * v) * freq) > 0
    raise ValueError(f"unknown pattern {pattern!r}")


def draw_layer(canvas: np.ndarray, layer: Layer, margin: int) -> None:
    """Blend ``layer`` into ``canvas`` (T, S + 2M, S + 2M, 3) in place and set ``layer.boxes``.

    The shape is evaluated on a (T, W, W) window that follows the layer, W covering its
    rotated extent; edges are anti-aliased over about one pixel.
    """
    T, H, W_img, _ = canvas.shape
    size = H - 2 * margin
    a, b = layer.half
    reach = float(np.hypot(a, b)) + 2.0
    win = int(np.ceil(2 * reach)) + 1
    pos = layer.pos + margin  # canvas coordinates
    # Keep the window inside the canvas; a layer far off-frame is simply not visible.
    x0 = np.clip(np.floor(pos[:, 0] - reach).astype(np.int64), 0, W_img - win)  # (T,)
    y0 = np.clip(np.floor(pos[:, 1] - reach).astype(np.int64), 0, H - win)
    grid = np.arange(win, dtype=np.float32) + 0.5
    dx = (x0[:, None] + grid[None, :]) - pos[:, 0:1]  # (T, W): pixel centre minus object centre
    dy = (y0[:, None] + grid[None, :]) - pos[:, 1:2]
    c, s = np.cos(layer.angle), np.sin(layer.angle)
    uu = c * dx[:, None, :] + s * dy[:, :, None]  # (T, W, W) object-frame coordinates, pixels
    vv = -s * dx[:, None, :] + c * dy[:, :, None]
    level = shape_level(layer.shape, uu / a, vv / b)
    # Anti-aliasing: distance to the edge in pixels is about (1 - level) * min(a, b).
    alpha = np.clip((1.0 - level) * min(a, b) + 0.5, 0.0, 1.0).astype(np.float32)
    if layer.visible is not None:
        alpha *= layer.visible[:, None, None]
    second = pattern_mask(layer.pattern, uu, vv, layer.freq)
    colour = np.where(second[..., None], layer.colours[1], layer.colours[0]).astype(np.float32)
    if layer.inner is not None:  # an open container: darker inside, rim of the first colour
        inside = shape_level(layer.shape, uu / (0.62 * a), vv / (0.62 * b)) < 1.0
        colour = np.where(inside[..., None], layer.inner.astype(np.float32), colour)
    tt = np.arange(T)[:, None, None]
    yy = y0[:, None, None] + np.arange(win)[None, :, None]
    xx = x0[:, None, None] + np.arange(win)[None, None, :]
    old = canvas[tt, yy, xx]
    canvas[tt, yy, xx] = old + alpha[..., None] * (colour - old)
    # Box of the drawn pixels (alpha > 0.5), in output-frame pixels, clipped to the frame.
    solid = alpha > 0.5
    rows, cols = solid.any(axis=2), solid.any(axis=1)  # (T, W)
    seen = rows.any(axis=1)
    r1, r2 = rows.argmax(axis=1), win - rows[:, ::-1].argmax(axis=1)
    c1, c2 = cols.argmax(axis=1), win - cols[:, ::-1].argmax(axis=1)
    boxes = np.stack([x0 + c1, y0 + r1, x0 + c2, y0 + r2], axis=1).astype(np.float32) - margin
    boxes = np.clip(boxes, 0, size)
    seen &= ((boxes[:, 2] - boxes[:, 0]) >= 2) & ((boxes[:, 3] - boxes[:, 1]) >= 2)
    boxes[~seen] = np.nan
    layer.boxes = boxes


def draw_arm(canvas: np.ndarray, anchor: np.ndarray, palm: np.ndarray, width: float, colour: np.ndarray,
             margin: int, visible: np.ndarray | None = None) -> None:
    """A thick segment from ``anchor`` (T, 2) to ``palm`` (T, 2): the forearm of the agent."""
    T, H, W_img, _ = canvas.shape
    # Only the canvas region the arm can reach in some frame is evaluated.
    pts = np.concatenate([anchor, palm]) + margin
    x0, y0 = (np.floor(pts.min(0) - width).astype(int)).clip(0, [W_img, H])
    x1, y1 = (np.ceil(pts.max(0) + width).astype(int) + 1).clip(0, [W_img, H])
    if x1 <= x0 or y1 <= y0:
        return
    ys = np.arange(y0, y1, dtype=np.float32)[None, :, None] + 0.5 - margin
    xs = np.arange(x0, x1, dtype=np.float32)[None, None, :] + 0.5 - margin
    d = palm - anchor  # (T, 2)
    dd = np.maximum((d * d).sum(1), 1e-6)[:, None, None]
    px, py = xs - anchor[:, 0, None, None], ys - anchor[:, 1, None, None]
    t = np.clip((px * d[:, 0, None, None] + py * d[:, 1, None, None]) / dd, 0.0, 1.0)
    ex, ey = px - t * d[:, 0, None, None], py - t * d[:, 1, None, None]
    dist = np.sqrt(ex * ex + ey * ey)  # (T, h, w)
    alpha = np.clip(width / 2 - dist + 0.5, 0.0, 1.0).astype(np.float32)
    if visible is not None:
        alpha *= visible[:, None, None]
    region = canvas[:, y0:y1, x0:x1]
    region += alpha[..., None] * (colour.astype(np.float32) - region)


def background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A cluttered textured background (size, size, 3) float32 in [0, 1].

    A colour gradient, two oriented gratings and a few soft blobs, all of random colours.
    """
    ys, xs = np.meshgrid(np.arange(size, dtype=np.float32), np.arange(size, dtype=np.float32), indexing="ij")
    c0, c1 = rng.uniform(0.1, 0.9, (2, 3)).astype(np.float32)
    th = rng.uniform(0, 2 * np.pi)
    g = (np.cos(th) * xs + np.sin(th) * ys) / size
    img = c0 + (g - g.min())[..., None] / max(float(np.ptp(g)), 1e-6) * (c1 - c0)
    for _ in range(2):  # gratings
        th, f = rng.uniform(0, np.pi), rng.uniform(0.15, 0.6)
        amp = rng.uniform(0.03, 0.12) * rng.choice([-1, 1], 3)
        img = img + (np.sin(f * (np.cos(th) * xs + np.sin(th) * ys) + rng.uniform(0, 6.3)))[..., None] * amp
    n = rng.integers(3, 7)
    cen = rng.uniform(0, size, (n, 2)).astype(np.float32)
    rad = rng.uniform(0.08, 0.25, n).astype(np.float32) * size
    blob = np.exp(-(((xs[None] - cen[:, 0, None, None]) ** 2 + (ys[None] - cen[:, 1, None, None]) ** 2)
                    / (2 * rad[:, None, None] ** 2)))  # (n, H, W)
    img = img + np.einsum("nhw,nc->hwc", blob, rng.uniform(-0.25, 0.25, (n, 3)).astype(np.float32))
    return np.clip(img, 0.0, 1.0).astype(np.float32)


def compose(bg: np.ndarray, layers: list[Layer], arm: dict | None, jitter: np.ndarray, size: int,
            noise: float, rng: np.random.Generator) -> np.ndarray:
    """Render a video: uint8 (T, size, size, 3).

    bg (ndarray[size + 2J, size + 2J, 3]): background, J the jitter range; jitter (ndarray[T, 2])
    integer camera offsets in [0, 2J] (the view moves over the background, objects move with it).
    Layers are drawn in list order (later on top); ``arm`` (anchor, width, colour) is drawn
    just before the last layer, the palm, when given. Each layer's ``boxes`` are filled.
    """
    T = jitter.shape[0]
    J = (bg.shape[0] - size) // 2
    margin = int(max(np.ceil(np.hypot(*layer.half)) + 4 for layer in layers)) if layers else 0
    jy = jitter[:, 1, None, None] + np.arange(size)[None, :, None]
    jx = jitter[:, 0, None, None] + np.arange(size)[None, None, :]
    canvas = np.zeros((T, size + 2 * margin, size + 2 * margin, 3), np.float32)
    canvas[:, margin:margin + size, margin:margin + size] = bg[jy, jx]
    shift = (jitter - J).astype(np.float32)  # camera moves by +j: scene moves by -j
    for i, layer in enumerate(layers):
        moved = Layer(**{**layer.__dict__, "pos": layer.pos - shift})
        if arm is not None and i == len(layers) - 1:
            draw_arm(canvas, arm["anchor"][None, :] - shift, moved.pos, arm["width"], arm["colour"], margin,
                     layer.visible)
        draw_layer(canvas, moved, margin)
        layer.boxes = moved.boxes
    out = canvas[:, margin:margin + size, margin:margin + size]
    if noise > 0:
        out = out + rng.standard_normal(out.shape, dtype=np.float32) * np.float32(noise)
    return (np.clip(out, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
