"""The SQLite proposals store: round trip, score order, nearest-frame fallback, bad boxes, crashes."""

import multiprocessing as mp
import os
import pickle

import numpy as np
import pytest

from strg.data.proposals import ProposalStore
from strg.errors import DataError


def _record(f=3, k=4, seed=0, size=(100, 200)):
    rng = np.random.default_rng(seed)
    xy = rng.uniform(0, 80, size=(f, k, 2))
    wh = rng.uniform(1, 20, size=(f, k, 2))
    boxes = np.concatenate([xy, xy + wh], axis=-1).astype(np.float32)
    scores = rng.uniform(size=(f, k)).astype(np.float32)
    return dict(frames=np.arange(f) * 6, boxes=boxes, scores=scores, num_boxes=np.full(f, k), frame_size=size, fps=24.0)


def test_round_trip_sorted_by_score(tmp_path):
    rec = _record()
    rec["num_boxes"] = np.array([4, 2, 0])
    with ProposalStore(tmp_path / "p.db", mode="w") as st:
        st.put("vid1", **rec)
        assert "vid1" in st and "vid2" not in st and len(st) == 1 and st.keys() == ["vid1"]
    with ProposalStore(tmp_path / "p.db", mode="r") as st:
        got = st.get("vid1")
    assert got["frame_size"] == (100, 200) and got["fps"] == 24.0
    np.testing.assert_array_equal(got["frames"], rec["frames"])
    np.testing.assert_array_equal(got["num_boxes"], [4, 2, 0])
    for f, n in enumerate([4, 2, 0]):
        order = np.argsort(-rec["scores"][f, :n], kind="stable")
        np.testing.assert_allclose(got["scores"][f, :n], rec["scores"][f, :n][order])
        np.testing.assert_allclose(got["boxes"][f, :n], rec["boxes"][f, :n][order])
        assert (got["boxes"][f, n:] == 0).all()  # padding zeroed
    assert (np.diff(got["scores"][0]) <= 0).all()


def test_boxes_at_nearest_within_tolerance(tmp_path):
    rec = _record(f=3, k=4)  # frames 0, 6, 12: default tolerance 3 frames
    rec["num_boxes"] = np.array([4, 3, 2])
    with ProposalStore(tmp_path / "p.db", mode="w") as st:
        st.put("v", **rec)
        got = st.get("v")
        boxes, mask = st.boxes_at("v", [0, 2, 3, 4, 12, 15, 16, 40], max_boxes=5)
    assert boxes.shape == (8, 5, 4) and mask.shape == (8, 5) and mask.dtype == bool
    src = [0, 0, 0, 1, 2, 2, None, None]  # frame 3 is a tie -> the earlier; 16, 40 are too far
    for t, s in enumerate(src):
        if s is None:
            assert not mask[t].any() and (boxes[t] == 0).all()
        else:
            n = got["num_boxes"][s]
            assert mask[t].sum() == n and mask[t, :n].all()
            np.testing.assert_array_equal(boxes[t, :n], got["boxes"][s, :n])
    # explicit tolerance and K smaller than stored: best-scored boxes kept
    boxes, mask = ProposalStore(tmp_path / "p.db").boxes_at("v", [16], max_boxes=1, tolerance=4)
    assert mask[0].tolist() == [True]
    np.testing.assert_array_equal(boxes[0, 0], got["boxes"][2, 0])


@pytest.mark.parametrize(
    "box,msg",
    [([10, 10, 5, 20], "x2 < x1"), ([10, 20, 15, 10], "x2 < x1 or y2 < y1"), ([10, 10, 250, 20], "outside"),
     ([-5, 10, 20, 20], "outside"), ([10, 10, 20, 120], "outside")],
)
def test_invalid_box_rejected(tmp_path, box, msg):
    rec = _record(f=1, k=2)
    rec["boxes"][0, 1] = box
    with ProposalStore(tmp_path / "p.db", mode="w") as st:
        with pytest.raises(DataError, match=f"p.db.*'bad'.*{msg}"):
            st.put("bad", **rec)
        rec["num_boxes"] = np.array([1])  # the same box as padding is not checked
        st.put("ok", **rec)
        assert "bad" not in st and "ok" in st


def test_missing_video_and_missing_store(tmp_path):
    with pytest.raises(DataError, match="nope.db.*not found"):
        ProposalStore(tmp_path / "nope.db", mode="r")
    with ProposalStore(tmp_path / "p.db", mode="w") as st:
        st.put("a", **_record())
        with pytest.raises(DataError, match=r"p.db.*no proposals for video 'b'"):
            st.boxes_at("b", [0], max_boxes=2)
    (tmp_path / "junk.db").write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(DataError, match="junk.db"):
        ProposalStore(tmp_path / "junk.db", mode="r")


def _killed_writer(path):
    st = ProposalStore(path, mode="a")
    st.put("done", **_record(seed=1))
    with st.batch():
        st.put("in_progress", **_record(seed=2))
        os._exit(1)  # killed in the middle of a transaction


def test_killed_writer_loses_only_the_video_in_progress(tmp_path):
    path = str(tmp_path / "p.db")
    ctx = mp.get_context("spawn")
    p = ctx.Process(target=_killed_writer, args=(path,))
    p.start()
    p.join(60)
    assert p.exitcode == 1
    with ProposalStore(path, mode="r") as st:
        assert st.keys() == ["done"]
        np.testing.assert_allclose(st.get("done")["scores"].sum(), _record(seed=1)["scores"].sum(), rtol=1e-6)


def test_resume_after_a_killed_writer(tmp_path):
    """Appending (an extraction's resume) after a kill mid-transaction: the hot journal is rolled
    back, the finished video kept, the new one added."""
    path = str(tmp_path / "p.db")
    p = mp.get_context("spawn").Process(target=_killed_writer, args=(path,))
    p.start()
    p.join(60)
    assert p.exitcode == 1 and os.path.exists(path + "-journal")
    with ProposalStore(path, mode="a") as st:
        assert st.keys() == ["done"]
        st.put("next", **_record(seed=3))
    with ProposalStore(path, mode="r") as st:
        assert st.keys() == ["done", "next"]


def test_pickle_and_fork_reopen_lazily(tmp_path):
    path = tmp_path / "p.db"
    with ProposalStore(path, mode="w") as st:
        st.put("v", **_record())
    st = ProposalStore(path, mode="r")
    assert len(st) == 1  # connection opened in this process
    clone = pickle.loads(pickle.dumps(st))
    assert clone._conn is None and "v" in clone
    st._pid = -1  # as seen from a forked child: the inherited connection is not reused
    old = st._conn
    assert "v" in st and st._conn is not old
    with pytest.raises(DataError, match="read-only"):
        st.put("w", **_record())
