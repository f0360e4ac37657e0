"""The synthetic generator: determinism, cache, and its files read back by the real readers."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest

from strg.data import build_dataset
from strg.data.something_else import import_something_else
from strg.data.proposals import ProposalStore
from strg.errors import DataError
from strg.synth import ACTIONS, class_names, generate_dataset

SMALL = dict(num_videos=20, frames=16, size=48, progress=False)


@pytest.fixture(scope="module")
def something(tmp_path_factory):
    root = tmp_path_factory.mktemp("ss")
    return root, generate_dataset(root, seed=3, workers=1, **SMALL)


def _files(root) -> dict[str, bytes]:
    out = {}
    for dirpath, _, names in os.walk(root):
        for n in names:
            p = os.path.join(dirpath, n)
            rel = os.path.relpath(p, root)
            if n.endswith(".sqlite") or rel == "synth.json":  # store compared by content; manifest has a time
                continue
            with open(p, "rb") as f:
                out[rel] = f.read()
    return out


def _store(path) -> dict:
    with ProposalStore(path, mode="r") as s:
        return {k: s.get(k) for k in s.keys()}


def test_same_seed_same_bytes_any_worker_count(something, tmp_path):
    root, _ = something
    again = tmp_path / "again"
    generate_dataset(again, seed=3, workers=2, **SMALL)
    a, b = _files(root), _files(again)
    assert sorted(a) == sorted(b) and len(a) >= SMALL["num_videos"] + 7
    assert [k for k in a if a[k] != b[k]] == []
    sa, sb = _store(root / "proposals.sqlite"), _store(again / "proposals.sqlite")
    assert sorted(sa) == sorted(sb)
    for k in sa:
        np.testing.assert_array_equal(sa[k]["boxes"], sb[k]["boxes"])
        np.testing.assert_array_equal(sa[k]["frames"], sb[k]["frames"])


def test_other_seed_other_data(something, tmp_path):
    root, _ = something
    generate_dataset(tmp_path / "s4", seed=4, workers=1, **SMALL)
    a, b = _files(root), _files(tmp_path / "s4")
    videos = [k for k in a if k.endswith(".webm")]
    assert sum(a[k] != b[k] for k in videos) == len(videos)


def test_cache_reuses_and_refuses_other_settings(something):
    root, manifest = something
    video = root / "20bn-something-something-v2" / "1.webm"
    mtime = os.stat(video).st_mtime_ns
    again = generate_dataset(root, seed=3, workers=1, **SMALL)
    assert again == manifest and os.stat(video).st_mtime_ns == mtime
    with pytest.raises(DataError, match="other settings"):
        generate_dataset(root, seed=99, workers=1, **SMALL)


def test_something_v2_files_read_by_the_real_reader(something):
    root, manifest = something
    labels = json.loads((root / "labels" / "something-something-v2-labels.json").read_text())
    assert list(labels) == class_names() and list(labels.values()) == [str(i) for i in range(len(ACTIONS))]
    entries = json.loads((root / "labels" / "something-something-v2-train.json").read_text())
    assert len(entries) == manifest["num_train"] == 16
    ds = build_dataset("something_v2", split="train", training=False, root=str(root),
                       proposals=str(root / "proposals.sqlite"), num_frames=16, stride=1, test_clips=1,
                       test_short_side=48, max_boxes=6)
    assert ds.classes == class_names() and len(ds) == len(entries)
    for i, e in enumerate(entries[:4]):
        # the label is the template filled with the placeholders, the class is the template
        assert e["label"] == e["template"].replace("[something]", "{}").format(*e["placeholders"])
        item = ds[i]
        assert item["video_id"] == e["id"]
        assert int(item["target"]) == int(labels[e["template"].replace("[", "").replace("]", "")])
        assert item["clip"].shape == (3, 16, 48, 48)
        assert item["box_mask"].any(dim=1).all()  # every frame has proposals


def _gt_tracks(root, video_id) -> dict[str, np.ndarray]:
    """Something-Else ground truth of one video: standard_category -> box centres (T, 2), NaN if absent."""
    data = {}
    for part in (1, 2):
        with open(root / "annotations" / f"bounding_box_smthsmth_part{part}.json") as f:
            data.update(json.load(f))
    frames = data[video_id]
    tracks = {}
    for t, fr in enumerate(frames):
        assert fr["name"] == f"{video_id}/{t + 1:04d}.jpg"
        for lab in fr["labels"]:
            b = lab["box2d"]
            assert b["x1"] < b["x2"] and b["y1"] < b["y2"]
            c = tracks.setdefault(lab["standard_category"], np.full((len(frames), 2), np.nan))
            c[t] = ((b["x1"] + b["x2"]) / 2, (b["y1"] + b["y2"]) / 2)
    return tracks


def test_boxes_follow_the_objects_of_the_template(tmp_path):
    """Ground-truth boxes move the way the class says (the classes are relations over time)."""
    root = tmp_path / "d"
    generate_dataset(root, seed=0, workers=1, num_videos=40, frames=16, size=64, progress=False)
    entries = []
    for split in ("train", "validation"):
        entries += json.loads((root / "labels" / f"something-something-v2-{split}.json").read_text())
    checked = set()
    for e in entries:
        tr = _gt_tracks(root, e["id"])
        assert "hand" in tr and "0000" in tr
        obj = tr["0000"]
        first, last = obj[np.isfinite(obj[:, 0])][[0, -1]]
        t = e["template"]
        if t.startswith("Pushing") and "left to right" in t:
            assert last[0] - first[0] > 8
        elif t.startswith("Pushing"):
            assert first[0] - last[0] > 8
        elif t.startswith("Pretending to push"):
            assert np.abs(last - first).max() < 3
        elif t.startswith("Moving"):
            other = tr["0001"]
            d0 = np.hypot(*(first - other[0]))
            d1 = np.hypot(*(last - other[-1]))
            assert (d1 < d0 - 8) if "closer" in t else (d1 > d0 + 8)
        else:
            continue
        # the hand reaches the object: its box centre comes within ~2 object sizes of it
        hand = tr["hand"]
        ok = np.isfinite(hand[:, 0]) & np.isfinite(obj[:, 0])
        assert np.hypot(*(hand[ok] - obj[ok]).T).min() < 20
        checked.add(t)
    assert len(checked) == 5


def test_proposals_look_like_a_detector(something):
    """Most hand/object boxes are found (IoU > 0.5), some are missed, and there are false positives."""
    root, _ = something
    gt_store, det_store = root / "gt.sqlite", root / "proposals.sqlite"
    import_something_else([root / "annotations" / f"bounding_box_smthsmth_part{p}.json" for p in (1, 2)],
                          gt_store, progress=False)
    found = total = extra = dets = 0
    with ProposalStore(gt_store) as g, ProposalStore(det_store) as d:
        for vid in g.keys():
            gr, dr = g.get(vid), d.get(vid)
            np.testing.assert_array_equal(gr["frames"], dr["frames"])
            for f in range(len(gr["frames"])):
                gb = gr["boxes"][f, : gr["num_boxes"][f]]
                db = dr["boxes"][f, : dr["num_boxes"][f]]
                iou = _iou(gb, db)
                found += int((iou.max(1) > 0.5).sum()) if db.size else 0
                total += len(gb)
                extra += int((iou.max(0) < 0.3).sum()) if gb.size else len(db)
                dets += len(db)
    assert 0.7 < found / total < 0.98  # misses, but a usable detector
    assert extra / dets > 0.2  # distractors and background false positives


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    area = lambda x: (x[:, 2:] - x[:, :2]).prod(-1)  # noqa: E731
    return inter / (area(a)[:, None] + area(b)[None] - inter)


def test_charades_variant_multi_label(tmp_path):
    root = tmp_path / "ch"
    m = generate_dataset(root, seed=1, workers=1, variant="charades", num_videos=12, frames=24, size=48,
                         progress=False)
    with open(root / "Charades_v1_train.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == m["num_train"] and rows[0]["length"] == "2.00"
    for r in rows:
        acts = [a.split() for a in r["actions"].split(";")]
        assert 2 <= len(acts) <= 3
        starts = [float(a[1]) for a in acts]
        assert starts == sorted(starts) and all(float(a[1]) < float(a[2]) for a in acts)
    ds = build_dataset("charades", split="val", training=False, root=str(root),
                       proposals=str(root / "proposals.sqlite"), num_frames=8, stride=1, stride_unit="frames",
                       test_clips=1, test_short_side=48, max_boxes=5)
    assert ds.multi_label and len(ds.classes) == len(ACTIONS)
    target = ds[0]["target"]
    assert target.shape == (len(ACTIONS),) and 2 <= float(target.sum()) <= 3


def test_bad_settings_raise_clear_errors(tmp_path):
    with pytest.raises(DataError, match="unknown variant"):
        generate_dataset(tmp_path / "x", variant="kinetics", progress=False)
    with pytest.raises(DataError, match="fewer than"):
        generate_dataset(tmp_path / "x", num_videos=3, progress=False)
    with pytest.raises(DataError, match="size"):
        generate_dataset(tmp_path / "x", num_videos=20, size=31, progress=False)


def test_cli_synth(tmp_path, capsys):
    from strg.cli import main

    assert main(["synth", str(tmp_path / "c"), "--num-videos", "10", "--size", "32", "--workers", "1"]) == 0
    assert "8 train + 2 validation videos" in capsys.readouterr().out
    assert main(["synth", str(tmp_path / "c"), "--num-videos", "11", "--size", "32"]) == 2


def test_demo_oracle_reads_the_boxes_and_trains_every_head(something):
    """benchmarks/demo_oracle.py: the nodes are the boxes of the JSON files, and it runs end to end."""
    import importlib.util

    oracle_path = Path(__file__).parents[1] / "benchmarks" / "demo_oracle.py"
    spec = importlib.util.spec_from_file_location("demo_oracle", oracle_path)
    oracle = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(oracle)
    something = Path(something[0])
    root = str(something)
    sources = (("gt", "annotations", "bounding_box_smthsmth_part"), ("proposals", "detections", "proposals_part"))
    for nodes, folder, stem in sources:
        data = oracle.load_nodes(root, nodes, max_boxes=8)
        entries = {}
        for part in (1, 2):
            entries.update(json.loads((something / folder / f"{stem}{part}.json").read_text()))
        train_file = something / "labels" / "something-something-v2-train.json"
        train_ids = [e["id"] for e in json.loads(train_file.read_text())]
        boxes, mask, targets = data["train"]
        assert len(train_ids) == len(targets) and mask.any()
        for v in (0, len(train_ids) - 1):
            frames = entries[train_ids[v]]
            for f, fr in enumerate(frames[: boxes.shape[1]]):
                n = min(8, len(fr["labels"]))
                assert int(mask[v, f].sum()) == n
                if n:
                    b = fr["labels"][0]["box2d"]
                    assert boxes[v, f, 0].tolist() == pytest.approx([b["x1"], b["y1"], b["x2"], b["y2"]], abs=1e-3)
    out = oracle.main([root, "--iters", "2"])
    assert set(out) == {"proposal_avgpool", "st_gcn", "sim_gcn", "joint_gcn"}
    assert all(0.0 <= r["top1"] <= 100.0 for r in out.values())
