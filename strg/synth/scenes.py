"""Scene scripts: which objects exist, how they and the hand move, and what the action is.

The classes are defined by how the hand, the object it handles and a second object relate and
change over time, never by appearance: every object gets a random shape, colour and
texture; backgrounds, clutter, distractors that move on their own and camera jitter are drawn
independently of the class. Pairs of classes are built so that a single frame does not tell them
apart:

* pushing left-to-right / right-to-left / pretending to push: the hand makes the same kind of
  stroke towards an object; only whether (and where) the object follows differs;
* moving closer to / away from: the hand carries an object along a line through a second object;
  the start and end distances of one class are the end and start distances of the other;
* opening / closing and putting onto / taking off: the same trajectories played in the opposite
  order (the lid or the object goes from on top to aside, or from aside to on top);
* pretending to take off: the hand grasps an object lying on another and leaves it there.

Distractors do the same kinds of motion on their own (drifting, approaching another object,
static stacks and containers), so "something moved" or "something is on something" is no cue:
what matters is which object moves with the hand and how it moves relative to another one.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from strg.synth.render import PATTERNS, SHAPES, Layer

# (template with placeholders, number of placeholders) — Something-Something v2 style
# (docs/formats.md: the class is the template with the brackets removed).
ACTIONS: tuple[tuple[str, str], ...] = (
    ("push_lr", "Pushing [something] from left to right"),
    ("push_rl", "Pushing [something] from right to left"),
    ("pretend_push", "Pretending to push [something]"),
    ("closer", "Moving [something] closer to [something]"),
    ("away", "Moving [something] away from [something]"),
    ("open", "Opening [something]"),
    ("close", "Closing [something]"),
    ("onto", "Putting [something] onto [something]"),
    ("off", "Taking [something] off [something]"),
    ("pretend_off", "Pretending to take [something] off [something]"),
)

COLOURS = {
    "red": (0.85, 0.12, 0.12), "green": (0.15, 0.7, 0.2), "blue": (0.15, 0.3, 0.85),
    "yellow": (0.92, 0.85, 0.15), "purple": (0.55, 0.2, 0.7), "orange": (0.95, 0.55, 0.1),
    "cyan": (0.15, 0.8, 0.85), "white": (0.95, 0.95, 0.95), "black": (0.08, 0.08, 0.08),
    "pink": (0.95, 0.5, 0.7), "brown": (0.45, 0.28, 0.12), "grey": (0.5, 0.5, 0.5),
}
NOUNS = {"rect": "block", "ellipse": "ball", "diamond": "tile", "triangle": "wedge"}


@dataclass(eq=False)
class Thing:
    """A scene object: its layer, its role and (for annotated objects) its name."""

    layer: Layer
    role: str  # "object", "distractor", "hand"
    name: str
    track: int = -1  # Something-Else standard_category ("0000", ...) for placeholder objects


@dataclass(eq=False)
class SceneBuilder:
    """Collects the objects of one video and the waypoints of the hand."""

    rng: np.random.Generator
    size: int
    T: int
    things: list[Thing] = field(default_factory=list)
    hand_points: list[tuple[float, np.ndarray]] = field(default_factory=list)
    next_track: int = 0
    scale: float = 1.3  # object and hand size relative to the nominal ranges below
    hand_r: float = 0.0  # palm radius, pixels (set in __post_init__)

    def __post_init__(self) -> None:
        self.hand_r = 0.07 * self.scale * self.size * self.rng.uniform(0.9, 1.1)

    # ---- objects -------------------------------------------------------------------------
    def new_object(self, scale: tuple[float, float], *, shape: str | None = None,
                   pattern: str | None = None, role: str = "object", noun: str | None = None,
                   square: bool = False, angle: float | None = None) -> Thing:
        rng, S = self.rng, self.size
        shape = shape or str(rng.choice(SHAPES))
        a = rng.uniform(*scale) * S * self.scale
        b = a if square else a * rng.uniform(0.7, 1.3)
        cname = str(rng.choice(list(COLOURS)))
        c0 = np.clip(np.array(COLOURS[cname]) + rng.normal(0, 0.05, 3), 0, 1)
        c1 = np.clip(c0 * rng.uniform(0.3, 0.7) + rng.uniform(0, 0.4, 3), 0, 1)
        layer = Layer(shape=shape, pos=np.zeros((self.T, 2), np.float32), half=(a, b),
                      angle=rng.uniform(-0.5, 0.5) if angle is None else angle,
                      colours=np.stack([c0, c1]).astype(np.float32),
                      pattern=pattern or str(rng.choice(PATTERNS)), freq=rng.uniform(0.6, 1.4))
        thing = Thing(layer, role, f"{cname} {noun or NOUNS[shape]}")
        if role == "object":
            thing.track, self.next_track = self.next_track, self.next_track + 1
        self.things.append(thing)
        return thing

    def extent(self, thing: Thing) -> np.ndarray:
        """Half extent (x, y) of the rotated shape, pixels."""
        a, b = thing.layer.half
        c, s = abs(np.cos(thing.layer.angle)), abs(np.sin(thing.layer.angle))
        return np.array([a * c + b * s, a * s + b * c])

    def free_point(self, avoid: list[np.ndarray], min_dist: float, lo: float = 0.18,
                   hi: float = 0.82) -> np.ndarray:
        """A random point in [lo, hi] * size at least ``min_dist`` from each point in ``avoid``."""
        S = self.size
        best, best_d = None, -1.0
        for _ in range(30):
            p = self.rng.uniform(lo * S, hi * S, 2)
            d = min((np.hypot(*(p - q)) for q in avoid), default=np.inf)
            if d >= min_dist:
                return p
            if d > best_d:
                best, best_d = p, d
        return best

    def occupied(self) -> list[np.ndarray]:
        return [t.layer.pos[0] for t in self.things] + [t.layer.pos[-1] for t in self.things]

    def inside(self, p: np.ndarray, pad: float = 0.12) -> bool:
        return bool(np.all(p > pad * self.size) and np.all(p < (1 - pad) * self.size))

    def set_track(self, thing: Thing, points: list[tuple[float, np.ndarray]]) -> None:
        """Piecewise-linear path through (frame, xy) waypoints, constant before/after."""
        thing.layer.pos = track(self.T, points)

    # ---- the hand ------------------------------------------------------------------------
    def rest_point(self) -> np.ndarray:
        S = self.size
        return np.array([self.rng.uniform(0.1, 0.9) * S, self.rng.uniform(0.95, 1.2) * S])

    def hand_to(self, t: float, p: np.ndarray) -> None:
        self.hand_points.append((float(t), np.asarray(p, np.float64)))


def track(T: int, points: list[tuple[float, np.ndarray]]) -> np.ndarray:
    """Positions (T, 2) interpolated through sorted (frame, xy) waypoints."""
    ts = np.array([p[0] for p in points], np.float64)
    xy = np.stack([np.asarray(p[1], np.float64) for p in points])
    f = np.arange(T, dtype=np.float64)
    return np.stack([np.interp(f, ts, xy[:, 0]), np.interp(f, ts, xy[:, 1])], 1).astype(np.float32)


def phases(rng: np.random.Generator, t0: float, t1: float) -> tuple[float, float]:
    """Frames where the hand reaches the object and where the manipulation ends."""
    L = t1 - t0
    return t0 + L * rng.uniform(0.22, 0.38), t0 + L * rng.uniform(0.62, 0.78)


def unit(rng: np.random.Generator) -> np.ndarray:
    th = rng.uniform(0, 2 * np.pi)
    return np.array([np.cos(th), np.sin(th)])


# ---- the action scripts: each adds its objects, moves them and sets hand waypoints ----------
# Each returns the placeholder objects (in template order).

def act_push(sb: SceneBuilder, t0: float, t1: float, kind: str) -> list[Thing]:
    rng, S = sb.rng, sb.size
    A = sb.new_object((0.07, 0.11))
    d = {"push_lr": 1.0, "push_rl": -1.0}.get(kind, rng.choice([-1.0, 1.0]))
    D = rng.uniform(0.2, 0.32) * S
    for _ in range(30):
        p = sb.free_point(sb.occupied(), 0.3 * S, 0.25, 0.75)
        if sb.inside(p + [d * D, 0]) and sb.inside(p - [d * (D + 0.15 * S), 0], 0.0):
            break
    ta, tb = phases(rng, t0, t1)
    r = sb.hand_r
    contact = p - np.array([d * (sb.extent(A)[0] + 0.8 * r), -rng.uniform(-0.3, 0.3) * r])
    sb.hand_to(t0, sb.rest_point())
    if kind == "pretend_push":
        # Same stroke length, but it ends where a push would begin: the object stays.
        sb.set_track(A, [(0, p)])
        sb.hand_to(ta, contact - [d * D, 0])
        sb.hand_to(tb, contact + [d * 0.15 * r, 0])
    else:
        sb.set_track(A, [(ta, p), (tb, p + [d * D, 0])])
        sb.hand_to(ta, contact)
        sb.hand_to(tb, contact + [d * D, 0])
    sb.hand_to(t1, sb.rest_point())
    return [A]


def grasp_offset(sb: SceneBuilder, thing: Thing) -> np.ndarray:
    """The palm holds an object from below (the arm comes from the bottom edge)."""
    return np.array([sb.rng.uniform(-0.2, 0.2) * sb.extent(thing)[0], 0.55 * sb.extent(thing)[1]])


def act_closer_away(sb: SceneBuilder, t0: float, t1: float, kind: str) -> list[Thing]:
    rng, S = sb.rng, sb.size
    A, B = sb.new_object((0.07, 0.1)), sb.new_object((0.08, 0.11))
    near_min = (np.hypot(*sb.extent(A)) + np.hypot(*sb.extent(B))) * 0.9
    for _ in range(40):
        pB = sb.free_point(sb.occupied(), 0.3 * S)
        e = unit(rng)
        # The near and far distances share one distribution for both classes: a "closer"
        # clip played backwards has the distances of an "away" clip.
        near = max(rng.uniform(0.16, 0.24) * S, near_min)
        far = near + rng.uniform(0.2, 0.3) * S
        if sb.inside(pB + e * far) and sb.inside(pB + e * near):
            break
    sb.set_track(B, [(0, pB)])
    d0, d1 = (far, near) if kind == "closer" else (near, far)
    ta, tb = phases(rng, t0, t1)
    sb.set_track(A, [(ta, pB + e * d0), (tb, pB + e * d1)])
    g = grasp_offset(sb, A)
    sb.hand_to(t0, sb.rest_point())
    sb.hand_to(ta, pB + e * d0 + g)
    sb.hand_to(tb, pB + e * d1 + g)
    sb.hand_to(t1, sb.rest_point())
    return [A, B]


def container_pair(sb: SceneBuilder, role: str = "object") -> tuple[Thing, Thing]:
    """An open-topped container seen from above and its lid (same outline, slightly larger)."""
    rng = sb.rng
    shape = str(rng.choice(["rect", "ellipse"]))
    C = sb.new_object((0.09, 0.12), shape=shape, role=role, noun="container", square=True, angle=0.0)
    C.layer.inner = np.clip(C.layer.colours[0] * 0.25, 0, 1).astype(np.float32)
    L = sb.new_object((0.09, 0.12), shape=shape, role="distractor" if role == "distractor" else "lid",
                      noun="lid", square=True, angle=0.0)
    L.layer.half = (C.layer.half[0] * 1.08, C.layer.half[1] * 1.08)
    return C, L


def act_open_close(sb: SceneBuilder, t0: float, t1: float, kind: str) -> list[Thing]:
    rng, S = sb.rng, sb.size
    C, L = container_pair(sb)
    for _ in range(40):
        pC = sb.free_point(sb.occupied(), 0.32 * S)
        pS = pC + unit(rng) * rng.uniform(0.3, 0.42) * S
        if sb.inside(pS):
            break
    sb.set_track(C, [(0, pC)])
    ta, tb = phases(rng, t0, t1)
    a, b = (pC, pS) if kind == "open" else (pS, pC)  # the same path, opposite order
    sb.set_track(L, [(ta, a), (tb, b)])
    g = grasp_offset(sb, L)
    sb.hand_to(t0, sb.rest_point())
    sb.hand_to(ta, a + g)
    sb.hand_to(tb, b + g)
    sb.hand_to(t1, sb.rest_point())
    return [C]


def act_onto_off(sb: SceneBuilder, t0: float, t1: float, kind: str) -> list[Thing]:
    rng, S = sb.rng, sb.size
    A = sb.new_object((0.05, 0.075))
    B = sb.new_object((0.11, 0.14), square=True)
    sb.things.remove(A)  # A is drawn on top of B
    sb.things.append(A)
    for _ in range(40):
        pB = sb.free_point(sb.occupied(), 0.32 * S)
        pAside = pB + unit(rng) * rng.uniform(0.3, 0.42) * S
        if sb.inside(pAside):
            break
    pOn = pB + rng.uniform(-0.2, 0.2, 2) * sb.extent(B)
    sb.set_track(B, [(0, pB)])
    ta, tb = phases(rng, t0, t1)
    g = grasp_offset(sb, A)
    sb.hand_to(t0, sb.rest_point())
    if kind == "pretend_off":
        sb.set_track(A, [(0, pOn)])
        wiggle = rng.uniform(0.03, 0.06) * S * unit(rng)
        sb.hand_to(ta, pOn + g)
        sb.hand_to((ta + tb) / 2, pOn + g + wiggle)
        sb.hand_to(tb, pOn + g)
    else:
        a, b = (pAside, pOn) if kind == "onto" else (pOn, pAside)
        sb.set_track(A, [(ta, a), (tb, b)])
        sb.hand_to(ta, a + g)
        sb.hand_to(tb, b + g)
    sb.hand_to(t1, sb.rest_point())
    return [A, B]


SCRIPTS = {
    "push_lr": act_push, "push_rl": act_push, "pretend_push": act_push,
    "closer": act_closer_away, "away": act_closer_away,
    "open": act_open_close, "close": act_open_close,
    "onto": act_onto_off, "off": act_onto_off, "pretend_off": act_onto_off,
}


def add_distractors(sb: SceneBuilder, n: int) -> None:
    """Objects that move on their own (or stay still), and static look-alikes of end states."""
    rng, S, T = sb.rng, sb.size, sb.T
    if rng.random() < 0.25:  # a closed or open container that nobody touches
        C, L = container_pair(sb, role="distractor")
        pC = sb.free_point(sb.occupied(), 0.3 * S)
        sb.set_track(C, [(0, pC)])
        sb.set_track(L, [(0, pC if rng.random() < 0.5 else pC + unit(rng) * 0.35 * S)])
    if rng.random() < 0.25:  # a small object lying on a larger one
        B = sb.new_object((0.1, 0.13), role="distractor", square=True)
        A = sb.new_object((0.05, 0.07), role="distractor")
        p = sb.free_point(sb.occupied(), 0.3 * S)
        sb.set_track(B, [(0, p)])
        sb.set_track(A, [(0, p + rng.uniform(-0.2, 0.2, 2) * sb.extent(B))])
    for _ in range(n):
        D = sb.new_object((0.05, 0.1), role="distractor")
        kind = rng.choice(["static", "drift", "approach", "slide"])
        p0 = sb.free_point(sb.occupied(), 0.22 * S, 0.1, 0.9)
        ta, tb = sorted(rng.uniform(0, T - 1, 2))
        if kind == "static":
            sb.set_track(D, [(0, p0)])
        elif kind == "drift":  # slow motion over the whole clip
            sb.set_track(D, [(0, p0), (T - 1, p0 + unit(rng) * rng.uniform(0.1, 0.3) * S)])
        elif kind == "slide":  # a fast horizontal move, like a push without a hand
            sb.set_track(D, [(ta, p0), (tb, p0 + [rng.choice([-1, 1]) * rng.uniform(0.2, 0.3) * S, 0])])
        else:  # moves towards or away from another object on its own
            others = [t.layer.pos[-1] for t in sb.things if t is not D]
            q = others[rng.integers(len(others))] if others else p0
            e = (q - p0) / max(np.hypot(*(q - p0)), 1e-3)
            step = rng.choice([-1, 1]) * rng.uniform(0.1, 0.25) * S
            sb.set_track(D, [(ta, p0), (tb, p0 + e * step)])


def add_hand(sb: SceneBuilder) -> tuple[Thing, dict]:
    """The hand-like agent: a skin-toned palm on a forearm that comes from the bottom edge."""
    rng, S = sb.rng, sb.size
    skin = np.array([rng.uniform(0.55, 0.95), rng.uniform(0.4, 0.7), rng.uniform(0.3, 0.55)])
    r = sb.hand_r
    palm = Layer(shape="ellipse", pos=np.zeros((sb.T, 2), np.float32), half=(r, r * 1.15),
                 angle=rng.uniform(-0.3, 0.3), colours=np.stack([skin, skin * 0.85]).astype(np.float32),
                 pattern="rings", freq=0.35)
    pts = sorted(sb.hand_points, key=lambda p: p[0])
    wob = rng.normal(0, 0.01 * S, (sb.T, 2)).cumsum(0) * 0.3  # a little tremor
    palm.pos = track(sb.T, pts) + wob.astype(np.float32)
    arm = {"anchor": np.array([rng.uniform(0.25, 0.75) * S, 1.7 * S]),
           "width": 1.2 * r, "colour": np.clip(rng.uniform(0.1, 0.9, 3), 0, 1)}
    hand = Thing(palm, "hand", "hand")
    return hand, arm
