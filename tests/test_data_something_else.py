"""Something-Else JSON -> proposals store: several files merged, frame indices, clipping, errors."""

import json

import numpy as np
import pytest

from strg.data.proposals import ProposalStore
from strg.data.something_else import import_something_else
from strg.data.testing import index_frames, write_video
from strg.errors import DataError


def _label(x1, y1, x2, y2, cat="0000"):
    return {"box2d": {"x1": x1, "y1": y1, "x2": x2, "y2": y2}, "category": "cup", "standard_category": cat,
            "gt_annotation": "object 0"}


def _frame(vid, n, labels):
    return {"name": f"{vid}/{n:04d}.jpg", "labels": labels, "gt_placeholders": ["cup"], "nr_instances": len(labels)}


def _write(path, data):
    path.write_text(json.dumps(data))
    return str(path)


def test_merge_two_files(tmp_path):
    a = _write(tmp_path / "part1.json", {
        "100": [_frame("100", 1, [_label(10, 20, 30, 40, "hand"), _label(50, 60, 70, 80)]),
                _frame("100", 3, [_label(11, 21, 31, 41)])],
        "101": [_frame("101", 2, [])],
    })  # fmt: skip
    b = _write(tmp_path / "part2.json", {"200": [_frame("200", 5, [_label(-3, 5, 330, 250)])]})
    counts = import_something_else([a, b], tmp_path / "se.db", progress=False)
    assert counts == {"videos": 3, "frames": 4, "boxes": 4, "clipped": 1, "skipped": 0}
    with ProposalStore(tmp_path / "se.db") as st:
        assert st.keys() == ["100", "101", "200"]
        r = st.get("100")
        assert r["frames"].tolist() == [0, 2] and r["num_boxes"].tolist() == [2, 1]  # 0001.jpg -> frame 0
        np.testing.assert_array_equal(r["boxes"][0], [[10, 20, 30, 40], [50, 60, 70, 80]])  # annotation order
        assert r["fps"] == 12.0 and r["frame_size"] == (240, 0)
        assert st.get("101")["num_boxes"].tolist() == [0]
        np.testing.assert_array_equal(st.get("200")["boxes"][0, 0], [0, 5, 330, 240])  # clipped to y <= 240
        boxes, mask = st.boxes_at("100", [0, 1, 2, 3, 9], max_boxes=3)  # tolerance 1 frame
        assert mask.sum(axis=1).tolist() == [2, 2, 1, 1, 0]


def test_frame_width_from_videos(tmp_path):
    write_video(tmp_path / "videos" / "100.webm", index_frames(4, height=48, width=80), fps=12)
    a = _write(tmp_path / "p.json", {"100": [_frame("100", 1, [_label(0, 0, 90, 10)])]})
    import_something_else([a], tmp_path / "se.db", video_root=str(tmp_path / "videos"), progress=False)
    with ProposalStore(tmp_path / "se.db") as st:
        r = st.get("100")
        assert r["frame_size"] == (48, 80)
        np.testing.assert_array_equal(r["boxes"][0, 0], [0, 0, 80, 10])
    with pytest.raises(DataError, match="outside the 80x48 frame"):
        import_something_else([a], tmp_path / "se2.db", video_root=str(tmp_path / "videos"), clip_boxes=False,
                              progress=False)


def test_bad_entries(tmp_path):
    bad_box = _write(tmp_path / "bad_box.json", {"7": [_frame("7", 1, [_label(30, 0, 10, 5)])]})
    with pytest.raises(DataError, match=r"video '7'.*x2 < x1"):
        import_something_else([bad_box], tmp_path / "s.db", progress=False)
    no_box = _write(tmp_path / "no_box.json", {"8": [_frame("8", 1, [{"category": "cup"}])]})
    with pytest.raises(DataError, match=r"no_box.json: video '8': 8/0001.jpg: label without a valid box2d"):
        import_something_else([no_box], tmp_path / "s.db", progress=False)
    (tmp_path / "broken.json").write_text('{"9": [\n{"name": }')
    with pytest.raises(DataError, match=r"broken.json:2: invalid JSON"):
        import_something_else([str(tmp_path / "broken.json")], tmp_path / "s.db", progress=False)
    good = _write(tmp_path / "good.json", {"8": [_frame("8", 1, [_label(1, 1, 2, 2)])]})
    with pytest.raises(DataError, match=r"dup.json: video '8' is also in .*good.json"):
        import_something_else([good, _write(tmp_path / "dup.json", {"8": []})], tmp_path / "s.db", progress=False)
    counts = import_something_else([bad_box, good], tmp_path / "s.db", on_error="skip", progress=False)
    assert counts["videos"] == 1 and counts["skipped"] == 1
    assert ProposalStore(tmp_path / "s.db").keys() == ["8"]


def test_optional_scores_sort_boxes(tmp_path):
    lab = [dict(_label(1, 1, 5, 5), score=0.2), dict(_label(2, 2, 6, 6), score=0.9)]
    a = _write(tmp_path / "det.json", {"3": [_frame("3", 1, lab)]})
    import_something_else([a], tmp_path / "d.db", progress=False)
    r = ProposalStore(tmp_path / "d.db").get("3")
    np.testing.assert_allclose(r["scores"][0], [0.9, 0.2])
    np.testing.assert_array_equal(r["boxes"][0], [[2, 2, 6, 6], [1, 1, 5, 5]])
    bad = _write(tmp_path / "bad.json", {"4": [_frame("4", 1, [dict(_label(1, 1, 5, 5), score="high")])]})
    with pytest.raises(DataError, match=r"bad.json: video '4': 4/0001.jpg: label without a valid box2d \(or score\)"):
        import_something_else([bad], tmp_path / "e.db", progress=False)
