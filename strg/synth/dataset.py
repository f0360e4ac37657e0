"""Write a synthetic dataset in the real file formats (docs/formats.md).

``variant="something"`` writes Something-Something v2 (``labels/something-something-v2-labels.json``,
``-train.json``, ``-validation.json``, one webm per video in ``20bn-something-something-v2/``),
the ground-truth boxes of the hand and the placeholder objects in the Something-Else format
(``annotations/bounding_box_smthsmth_part{1,2}.json``) and detector-like proposals in the same
format (``detections/proposals_smthsmth_part{1,2}.json``), imported into ``proposals.sqlite``
through :func:`strg.data.something_else.import_something_else`, the path real data takes.

``variant="charades"`` writes Charades v1 (``Charades_v1_classes.txt``, ``Charades_v1_train.csv``,
``Charades_v1_test.csv``, mp4 files in ``Charades_v1/``): longer videos holding 2-3 actions with
start and end times, plus the same proposals JSON and store.

A ``synth.json`` manifest, written last, records the settings; a second call with the same
settings finds it and reuses the data (the cache).
"""

from __future__ import annotations

import csv
import io
import json
import os
import time
from multiprocessing import get_context

import numpy as np

from strg.errors import DataError
from strg.synth.scenes import ACTIONS
from strg.synth.video import VideoSpec, encode, render

FORMAT_VERSION = 1
VARIANTS = ("something", "charades")
SS_PREFIX = "something-something-v2"


def class_names() -> list[str]:
    """Class names: the templates with the brackets removed (docs/formats.md)."""
    return [t.replace("[", "").replace("]", "") for _, t in ACTIONS]


def _atomic_write(path: str, text: str) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8", newline="") as f:
        f.write(text)
    os.replace(tmp, path)


def _json(obj) -> str:
    return json.dumps(obj, indent=1, sort_keys=False) + "\n"


def _box(b) -> dict:
    return {"x1": round(float(b[0]), 2), "y1": round(float(b[1]), 2),
            "x2": round(float(b[2]), 2), "y2": round(float(b[3]), 2)}


def _something_else(video_id: str, r: dict) -> tuple[list, list]:
    """Per-frame Something-Else entries: ground truth (hand + placeholder objects) and proposals."""
    T = r["frames"].shape[0]
    placeholders = [n for names in r["placeholders"] for n in names]
    gt, det = [], []
    for t in range(T):
        labels = []
        for name, track, role, boxes in r["objects"]:
            b = boxes[t]
            if np.isnan(b[0]) or not (role == "hand" or track >= 0):
                continue
            cat, std = ("hand", "hand") if role == "hand" else (name, f"{track:04d}")
            labels.append({"box2d": _box(b), "category": cat, "standard_category": std,
                           "gt_annotation": "hand" if role == "hand" else f"object {track}"})
        frame = f"{video_id}/{t + 1:04d}.jpg"
        gt.append({"name": frame, "labels": labels, "gt_placeholders": placeholders,
                   "nr_instances": len(labels)})
        boxes, scores = r["proposals"][t]
        det.append({"name": frame, "labels": [
            {"box2d": _box(b), "category": "object", "standard_category": f"{k:04d}",
             "gt_annotation": f"proposal {k}", "score": round(float(s), 4)}
            for k, (b, s) in enumerate(zip(boxes, scores))], "nr_instances": int(len(boxes))})
    return gt, det


def _work(job: tuple[VideoSpec, str]) -> dict:
    """Render and encode one video (runs in a worker); returns its annotations, not its frames."""
    spec, path = job
    r = render(spec)
    encode(r["frames"], path, spec.container, spec.fps)
    gt, det = _something_else(spec.video_id, r)
    return {"video_id": spec.video_id, "segments": r["segments"], "placeholders": r["placeholders"],
            "gt": gt, "det": det, "frames": int(r["frames"].shape[0])}


def _plan(seed: int, num_videos: int, variant: str) -> tuple[list[tuple[int, ...]], np.ndarray]:
    """Actions of each video and the validation flags, balanced over classes."""
    rng = np.random.default_rng([seed, 0xC1A55])
    C = len(ACTIONS)
    if variant == "something":
        labels = rng.permutation(np.arange(num_videos) % C)
        actions = [(int(c),) for c in labels]
    else:
        n_act = rng.integers(2, 4, num_videos)
        actions = [tuple(int(c) for c in rng.choice(C, n, replace=False)) for n in n_act]
    val = np.zeros(num_videos, bool)
    val[rng.permutation(num_videos)[: max(1, num_videos // 5)]] = True  # 80 / 20 split
    return actions, val


def video_ids(num_videos: int, variant: str) -> list[str]:
    if variant == "something":
        return [str(i + 1) for i in range(num_videos)]  # SS v2 ids are integers
    digits = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    return ["S" + "".join(digits[(i // 36 ** k) % 36] for k in (3, 2, 1, 0)) for i in range(num_videos)]


def generate_dataset(out_dir: str | os.PathLike, *, seed: int = 0, num_videos: int = 3000,
                     frames: int | None = None, size: int = 96, variant: str = "something",
                     fps: float = 12.0, workers: int | None = None, overwrite: bool = False,
                     progress: bool = True) -> dict:
    """Generate (or reuse) a synthetic dataset in ``out_dir``; returns its manifest.

    frames: frames per video (default 16 for "something", 48 for "charades").
    workers: processes for rendering and encoding (default: up to 2, the CPU count).
    A dataset with the same settings already in ``out_dir`` is reused; one with other settings
    raises DataError unless ``overwrite``.
    """
    if variant not in VARIANTS:
        raise DataError(f"synth: unknown variant {variant!r}; choose one of {', '.join(VARIANTS)}")
    frames = frames or (16 if variant == "something" else 48)
    if num_videos < len(ACTIONS):
        raise DataError(f"synth: num_videos={num_videos} is fewer than the {len(ACTIONS)} classes")
    if size < 32 or size % 2:
        raise DataError(f"synth: size={size} must be even and >= 32")
    if frames < 8 or (variant == "charades" and frames < 24):
        raise DataError(f"synth: frames={frames} is too short (>= 8; >= 24 for charades)")
    settings = {"format_version": FORMAT_VERSION, "variant": variant, "seed": int(seed),
                "num_videos": int(num_videos), "frames": int(frames), "size": int(size), "fps": float(fps)}
    out_dir = os.fspath(out_dir)
    manifest_path = os.path.join(out_dir, "synth.json")
    if os.path.exists(manifest_path):
        try:
            with open(manifest_path, encoding="utf-8") as f:
                old = json.load(f)
        except (OSError, ValueError) as e:
            raise DataError(f"{manifest_path}: unreadable synth manifest ({e})") from e
        if old.get("settings") == settings:
            return old
        if not overwrite:
            raise DataError(f"{manifest_path}: holds a synthetic dataset with other settings "
                            f"({old.get('settings')}); use another folder or overwrite=True (--overwrite)")
        os.remove(manifest_path)

    start = time.time()
    container = "webm" if variant == "something" else "mp4"
    video_dir = os.path.join(out_dir, "20bn-something-something-v2" if variant == "something" else "Charades_v1")
    os.makedirs(video_dir, exist_ok=True)
    ids = video_ids(num_videos, variant)
    actions, val = _plan(seed, num_videos, variant)
    jobs = [(VideoSpec(seed=seed, index=i, video_id=ids[i], actions=actions[i], frames=frames, size=size,
                       fps=fps, container=container,
                       distractors=(1, 2) if variant == "something" else (0, 1)),
             os.path.join(video_dir, f"{ids[i]}.{container}")) for i in range(num_videos)]
    results = _run_jobs(jobs, workers, progress)

    files = _write_something(out_dir, results, val, seed) if variant == "something" \
        else _write_charades(out_dir, results, val, fps)
    files.update(_write_boxes(out_dir, results, val, variant))
    files["proposals"] = _import_proposals(out_dir, files, variant, size, fps)
    manifest = {"settings": settings, "classes": class_names(), "files": files,
                "num_train": int((~val).sum()), "num_val": int(val.sum()),
                "seconds": round(time.time() - start, 1)}
    _atomic_write(manifest_path, _json(manifest))
    return manifest


def _run_jobs(jobs: list, workers: int | None, progress: bool) -> list[dict]:
    from strg.progress import progress_bar

    workers = workers or min(2, os.cpu_count() or 1)
    bar = progress_bar(total=len(jobs), desc="synth: rendering", unit="video", disable=not progress, leave=False)
    if workers <= 1:
        results = []
        for job in jobs:
            results.append(_work(job))
            bar.update()
    else:
        # Each video has its own random stream (VideoSpec), so the output is the same for any
        # number of workers; imap keeps the order.
        with get_context("spawn" if os.name == "nt" else "fork").Pool(workers) as pool:
            results = []
            for r in pool.imap(_work, jobs, chunksize=8):
                results.append(r)
                bar.update()
    bar.close()
    return results


def _write_something(out_dir: str, results: list[dict], val: np.ndarray, seed: int) -> dict:
    names = class_names()
    labels = {n: str(i) for i, n in enumerate(names)}
    train, valid = [], []
    for r, is_val in zip(results, val):
        (c,), ph = r["segments"][0][:1], r["placeholders"][0]
        template = ACTIONS[c][1]
        label = template
        for p in ph:  # the label is the template with the placeholders filled in
            label = label.replace("[something]", p, 1)
        (valid if is_val else train).append({"id": r["video_id"], "label": label,
                                             "template": template, "placeholders": ph})
    os.makedirs(os.path.join(out_dir, "labels"), exist_ok=True)
    files = {"labels": f"labels/{SS_PREFIX}-labels.json", "train": f"labels/{SS_PREFIX}-train.json",
             "validation": f"labels/{SS_PREFIX}-validation.json", "videos": "20bn-something-something-v2"}
    _atomic_write(os.path.join(out_dir, files["labels"]), _json(labels))
    _atomic_write(os.path.join(out_dir, files["train"]), _json(train))
    _atomic_write(os.path.join(out_dir, files["validation"]), _json(valid))
    return files


def _write_charades(out_dir: str, results: list[dict], val: np.ndarray, fps: float) -> dict:
    names = class_names()
    files = {"classes": "Charades_v1_classes.txt", "train": "Charades_v1_train.csv",
             "validation": "Charades_v1_test.csv", "videos": "Charades_v1"}
    _atomic_write(os.path.join(out_dir, files["classes"]),
                  "".join(f"c{i:03d} {n}\n" for i, n in enumerate(names)))
    header = ["id", "subject", "scene", "quality", "relevance", "verified", "script", "objects",
              "descriptions", "actions", "length"]
    for split, want_val in (("train", False), ("validation", True)):
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(header)
        for r, is_val in zip(results, val):
            if bool(is_val) != want_val:
                continue
            acts = ";".join(f"c{c:03d} {t0 / fps:.2f} {(t1 + 1) / fps:.2f}" for c, t0, t1 in r["segments"])
            objs = ";".join(sorted({p for ph in r["placeholders"] for p in ph}))
            desc = " Then ".join(ACTIONS[c][1].replace("[", "").replace("]", "") for c, _, _ in r["segments"])
            w.writerow([r["video_id"], "SYNTH", "Table", "", "", "Yes", desc, objs, desc, acts,
                        f"{r['frames'] / fps:.2f}"])
        _atomic_write(os.path.join(out_dir, files[split]), buf.getvalue())
    return files


def _write_boxes(out_dir: str, results: list[dict], val: np.ndarray, variant: str) -> dict:
    """Something-Else JSON: ground truth (Something variant) and proposals, in two parts each."""
    os.makedirs(os.path.join(out_dir, "annotations"), exist_ok=True)
    os.makedirs(os.path.join(out_dir, "detections"), exist_ok=True)
    files = {"box_annotations": [], "proposal_json": []}
    # Two parts (train and validation videos), as the real annotations ship in several files.
    for part, want_val in ((1, False), (2, True)):
        sel = [r for r, v in zip(results, val) if bool(v) == want_val]
        if variant == "something":
            name = f"annotations/bounding_box_smthsmth_part{part}.json"
            _atomic_write(os.path.join(out_dir, name), json.dumps({r["video_id"]: r["gt"] for r in sel}))
            files["box_annotations"].append(name)
        name = f"detections/proposals_part{part}.json"
        _atomic_write(os.path.join(out_dir, name), json.dumps({r["video_id"]: r["det"] for r in sel}))
        files["proposal_json"].append(name)
    return files


def _import_proposals(out_dir: str, files: dict, variant: str, size: int, fps: float) -> str:
    """Import the proposals JSON into a ProposalStore, the way real Something-Else boxes enter."""
    try:
        from strg.data.something_else import import_something_else
    except ImportError as e:  # the importer is part of the data package (DESIGN.md)
        raise DataError(f"synth: cannot import proposals into a store: {e}") from e
    store = "proposals.sqlite"
    path = os.path.join(out_dir, store)
    if os.path.exists(path):
        os.remove(path)
    import_something_else([os.path.join(out_dir, p) for p in files["proposal_json"]], path,
                          video_root=os.path.join(out_dir, files["videos"]),
                          video_ext=".webm" if variant == "something" else ".mp4", fps=fps, progress=False)
    return store
