"""Evaluation metrics: the official Charades mAP, top-k accuracy, and the Charades submission format.

``charades_map`` reproduces ``Charades_v1_classify.m`` (docs/formats.md) exactly:

* rows are videos in ground-truth order; videos without any label get ``-inf`` scores;
* per class, a *stable* sort by descending score (tied scores keep row order, no tie grouping);
* AP = sum of the precision at each positive / number of positives (no interpolation);
* mAP = mean AP over classes; wAP = sum(AP_c * npos_c) / sum(npos_c).

The official script returns NaN for a class without positives (0 / 0), which makes its mean NaN;
here such classes are reported (``missing_classes``), left out of the mean and warned about.
sklearn's ``average_precision_score`` groups tied scores and differs from the official numbers when
there are ties: do not use it for Charades.
"""

from __future__ import annotations

import csv
import math
import os
import re
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from strg.errors import DataError

__all__ = [
    "charades_map",
    "topk_accuracy",
    "write_submission",
    "read_submission",
    "read_charades_labels",
    "charades_eval",
]


def _as_2d(name: str, array) -> np.ndarray:
    if hasattr(array, "detach"):  # torch.Tensor
        array = array.detach().cpu().numpy()
    array = np.asarray(array, dtype=np.float64)
    if array.ndim != 2:
        raise ValueError(f"{name} must have shape (videos, classes), got shape {array.shape}")
    return array


def charades_map(scores, labels) -> dict:
    """Official Charades classification mAP (``Charades_v1_classify.m``, docs/formats.md).

    Args:
        scores (array[N, C]): one row per video, in ground-truth order; higher = more confident.
            ``-inf`` is allowed (the official script's score for a missing video); NaN is not.
        labels (array[N, C]): 0/1 (or bool) ground truth.

    Returns:
        dict with ``mAP`` and ``wAP`` (fractions in [0, 1]), ``ap`` (array[C], NaN for classes
        without positives), ``num_positives`` (array[C]) and ``missing_classes`` (list of the
        class indices without positives, left out of mAP).
    """
    scores = _as_2d("scores", scores)
    labels = _as_2d("labels", labels)
    if scores.shape != labels.shape:
        raise ValueError(f"scores {scores.shape} and labels {labels.shape} must have the same shape")
    if np.isnan(scores).any():
        raise ValueError("scores contain NaN")
    positive = labels > 0
    # Videos without any action are scored -inf by the official script (docs/formats.md).
    scores = np.where(positive.any(axis=1, keepdims=True), scores, -np.inf)

    # Stable sort of -score: descending, ties keep row order (MATLAB's sort is stable).
    order = np.argsort(-scores, axis=0, kind="stable")  # (N, C)
    hits = np.take_along_axis(positive, order, axis=0)  # (N, C) positives in ranked order
    tp = np.cumsum(hits, axis=0)  # (N, C)
    rank = np.arange(1, scores.shape[0] + 1)[:, None]  # tp + fp at each position
    precision = tp / rank  # (N, C)
    num_positives = positive.sum(axis=0)  # (C,)
    with np.errstate(invalid="ignore", divide="ignore"):
        ap = (precision * hits).sum(axis=0) / num_positives  # no interpolation; NaN if npos == 0
    missing = np.flatnonzero(num_positives == 0).tolist()
    if missing:
        warnings.warn(
            f"{len(missing)} of {scores.shape[1]} classes have no positive video and are left out "
            f"of mAP (classes {missing[:10]}{' ...' if len(missing) > 10 else ''})",
            stacklevel=2,
        )
    valid = num_positives > 0
    m_ap = float(ap[valid].mean()) if valid.any() else float("nan")
    w_ap = float((ap[valid] * num_positives[valid]).sum() / num_positives.sum()) if valid.any() else float("nan")
    return {
        "mAP": m_ap,
        "wAP": w_ap,
        "ap": ap,
        "num_positives": num_positives,
        "missing_classes": missing,
    }


def topk_accuracy(scores, targets, ks: Sequence[int] = (1, 5)) -> dict:
    """Top-k accuracy for single-label data.

    Args:
        scores (array[N, C]); targets (array[N]) class indices.

    Returns:
        ``{"top1": float, "top5": float, ...}`` fractions in [0, 1]; k larger than C counts every
        prediction as correct. A target ranks within the top k when fewer than k classes score
        strictly higher than it (ties count in the target's favour).
    """
    scores = _as_2d("scores", scores)
    if hasattr(targets, "detach"):
        targets = targets.detach().cpu().numpy()
    targets = np.asarray(targets, dtype=np.int64).reshape(-1)
    if targets.shape[0] != scores.shape[0]:
        raise ValueError(f"{scores.shape[0]} score rows but {targets.shape[0]} targets")
    if targets.size and (targets.min() < 0 or targets.max() >= scores.shape[1]):
        raise ValueError(f"targets must be in [0, {scores.shape[1]}), got [{targets.min()}, {targets.max()}]")
    target_score = scores[np.arange(scores.shape[0]), targets][:, None]  # (N, 1)
    higher = (scores > target_score).sum(axis=1)  # (N,) classes ranked above the target
    n = max(scores.shape[0], 1)
    return {f"top{k}": float((higher < k).sum() / n) for k in ks}


# --------------------------------------------------------------------------------------------------
# The Charades submission format: one line per video, "id score_1 ... score_C" (spaces or tabs).


def write_submission(path, video_ids: Sequence[str], scores) -> Path:
    """Write ``id score_1 ... score_C`` lines (the official Charades format), atomically.

    Args:
        video_ids: N ids; scores (array[N, C]).
    """
    scores = _as_2d("scores", scores)
    if len(video_ids) != scores.shape[0]:
        raise ValueError(f"{len(video_ids)} ids but {scores.shape[0]} score rows")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    with open(tmp, "w") as f:
        for vid, row in zip(video_ids, scores):
            if any(c.isspace() for c in vid) or not vid:
                raise ValueError(f"video id {vid!r} cannot be written in the submission format")
            # repr: the shortest text that reads back to the same float, so no new ties appear
            # (the official metric does not group ties: docs/formats.md)
            f.write(vid + " " + " ".join(repr(float(s)) for s in row) + "\n")
    os.replace(tmp, path)
    return path


def read_submission(path) -> tuple[list[str], np.ndarray]:
    """Read a Charades submission file.

    Returns:
        (ids, scores (array[N, C])). Raises DataError naming the file and line for a malformed
        line, a non-number, a row of the wrong length or a duplicated id.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: submission file not found")
    ids: list[str] = []
    rows: list[list[float]] = []
    seen: dict[str, int] = {}
    with open(path) as f:
        for lineno, line in enumerate(f, 1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) < 2:
                raise DataError(f"{path}:{lineno}: expected 'id score_1 ... score_C', got {line.strip()!r}")
            vid = fields[0]
            try:
                values = [float(x) for x in fields[1:]]
            except ValueError:
                raise DataError(f"{path}:{lineno}: video {vid}: scores must be numbers") from None
            if any(math.isnan(v) for v in values):
                raise DataError(f"{path}:{lineno}: video {vid}: NaN score")
            if rows and len(values) != len(rows[0]):
                raise DataError(
                    f"{path}:{lineno}: video {vid} has {len(values)} scores, earlier lines have {len(rows[0])}"
                )
            if vid in seen:
                raise DataError(f"{path}:{lineno}: video {vid} already appears on line {seen[vid]}")
            seen[vid] = lineno
            ids.append(vid)
            rows.append(values)
    if not rows:
        raise DataError(f"{path}: the submission file is empty")
    return ids, np.asarray(rows, dtype=np.float64)


_CLASS_RE = re.compile(r"^c(\d+)$")


def read_charades_labels(csv_path, num_classes: int = 157) -> tuple[list[str], np.ndarray]:
    """Read the ground truth of a Charades v1 CSV (``id,...,actions,length``; docs/formats.md).

    Returns:
        (ids in file order, labels (array[N, num_classes]) 0/1). ``actions`` holds
        ``cNNN start end`` triples joined by ``;`` and may be empty.
    """
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise DataError(f"{csv_path}: ground-truth CSV not found")
    ids: list[str] = []
    labels: list[np.ndarray] = []
    with open(csv_path, newline="", encoding="utf-8-sig") as f:  # tolerate a byte-order mark
        reader = csv.DictReader(f)
        if reader.fieldnames is None or "id" not in reader.fieldnames or "actions" not in reader.fieldnames:
            raise DataError(f"{csv_path}: not a Charades CSV (the header needs 'id' and 'actions' columns)")
        for row in reader:
            line = reader.line_num
            short = [k for k in reader.fieldnames if row.get(k) is None]
            if None in row or short:
                raise DataError(
                    f"{csv_path}:{line}: {len(reader.fieldnames) + len(row.get(None, ())) - len(short)} fields, the "
                    f"header has {len(reader.fieldnames)} (a damaged line would lose its actions)"
                )
            vid = (row.get("id") or "").strip()
            if not vid:
                raise DataError(f"{csv_path}:{line}: empty video id")
            y = np.zeros(num_classes, dtype=np.float64)
            for triple in filter(None, (t.strip() for t in (row.get("actions") or "").split(";"))):
                parts = triple.split()
                m = _CLASS_RE.match(parts[0]) if parts else None
                if m is None or len(parts) != 3:
                    raise DataError(
                        f"{csv_path}:{line}: video {vid}: bad action {triple!r} (expected 'cNNN start end')"
                    )
                c = int(m.group(1))
                if c >= num_classes:
                    raise DataError(f"{csv_path}:{line}: video {vid}: class c{c:03d} but only {num_classes} classes")
                y[c] = 1.0
            ids.append(vid)
            labels.append(y)
    return ids, np.stack(labels) if labels else np.zeros((0, num_classes))


def charades_eval(submission_path, gt_csv_path) -> dict:
    """Score a submission file against a Charades CSV the way ``Charades_v1_classify.m`` does.

    Rows follow the CSV order; ids of the CSV missing from the submission get -inf scores (with a
    warning), as the official script does, so a partial submission is scored as if its missing
    videos were ranked last in every class; ids of the submission not in the CSV are ignored
    (with a warning). When *no* id matches, the official script would still print a number (the
    ground truth in file order, about the share of positives): that is an error here (DataError
    naming both files), since it means the wrong file, not a weak model.
    """
    sub_ids, sub_scores = read_submission(submission_path)
    gt_ids, labels = read_charades_labels(gt_csv_path, num_classes=sub_scores.shape[1])
    if not gt_ids:
        raise DataError(f"{gt_csv_path}: no videos in the ground truth")
    index = {vid: i for i, vid in enumerate(sub_ids)}
    scores = np.full((len(gt_ids), sub_scores.shape[1]), -np.inf)
    rows = np.array([index.get(vid, -1) for vid in gt_ids], dtype=np.int64)
    found = rows >= 0
    if not found.any():
        raise DataError(
            f"{submission_path}: none of its {len(sub_ids)} video ids (e.g. {', '.join(sub_ids[:3])}) is in "
            f"{gt_csv_path} (e.g. {', '.join(gt_ids[:3])}); wrong ground-truth file or split?"
        )
    scores[found] = sub_scores[rows[found]]
    missing = [vid for vid, ok in zip(gt_ids, found) if not ok]
    if missing:
        warnings.warn(
            f"{submission_path}: {len(missing)} of {len(gt_ids)} ground-truth videos are missing and "
            f"scored -inf (e.g. {', '.join(missing[:5])})",
            stacklevel=2,
        )
    extra = set(sub_ids) - set(gt_ids)
    if extra:
        warnings.warn(f"{submission_path}: {len(extra)} ids are not in {gt_csv_path} and are ignored", stacklevel=2)
    result = charades_map(scores, labels)
    result["num_videos"] = len(gt_ids)
    result["num_missing"] = len(missing)
    return result
