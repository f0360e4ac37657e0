"""`strg proposals extract` under torchrun: 2 CPU processes (Gloo), shards merged into one store
equal to a one-process run's; resume per rank; shards left by an interrupted run are merged."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from strg.cli import main
from strg.data.proposals import ProposalStore
from strg.data.testing import index_frames, write_video
from strg.proposals.sharded import find_shards, merge_shards, shard_path

FAST = ["--random-weights", "--min-size", "64", "--workers", "0", "--no-progress", "--batch-size", "8",
        "--top-k", "4", "--device", "cpu"]


def _videos(root):
    root.mkdir()
    for i in range(3):  # 2 + i frames at 6 fps, sizes differ per video
        write_video(root / f"v{i}.mp4", index_frames(8 + 4 * i, 32 + 8 * (i % 2), 48), fps=24)
    return root


def _env():
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    return env


def _torchrun(args, nproc=2):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
           "-m", "strg.cli", "proposals", "extract", *args]
    return subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)


def _records(path):
    with ProposalStore(path, "r") as store:
        return {vid: store.get(vid) for vid in store.keys()}


def _same(a, b):
    assert sorted(a) == sorted(b)
    for vid in a:
        for key in ("frames", "boxes", "scores", "num_boxes"):
            np.testing.assert_allclose(a[vid][key], b[vid][key], rtol=1e-5, atol=1e-4, err_msg=f"{vid} {key}")
        assert a[vid]["frame_size"] == b[vid]["frame_size"] and a[vid]["fps"] == b[vid]["fps"]


@pytest.mark.slow
def test_two_processes_write_one_store_equal_to_one_process(tmp_path):
    videos = _videos(tmp_path / "videos")
    one = tmp_path / "one.sqlite"
    assert main(["proposals", "extract", "--videos", str(videos), "--out", str(one), *FAST]) == 0

    # rank 1 of an earlier 2-process run was interrupted after one video: its shard holds v1
    two = tmp_path / "two.sqlite"
    rec = _records(one)["v1"]
    with ProposalStore(shard_path(two, 1), "w") as shard:
        shard.put("v1", frames=rec["frames"], boxes=rec["boxes"], scores=rec["scores"],
                  num_boxes=rec["num_boxes"], frame_size=rec["frame_size"], fps=rec["fps"])
    proc = _torchrun(["--videos", str(videos), "--out", str(two), *FAST])
    assert proc.returncode == 0, proc.stderr[-3000:]
    # one report (rank 0) for all ranks; v1 was not extracted again
    assert proc.stdout.count("videos written") == 1 and "2 videos written, 1 already there, 0 failed" in proc.stdout
    assert find_shards(two) == []  # merged and deleted
    _same(_records(two), _records(one))  # the same records as one process (random weights are seeded)


def test_merge_shards_takes_every_shard_once(tmp_path):
    store = tmp_path / "s.sqlite"
    boxes = np.array([[[1, 2, 10, 12], [0, 0, 0, 0]]], dtype=np.float32)
    for rank, vid in [(0, "a"), (3, "b"), (3, "c")]:
        with ProposalStore(shard_path(store, rank), "a") as shard:
            shard.put(vid, frames=[rank], boxes=boxes, scores=[[0.9, 0.0]], num_boxes=[1], frame_size=(20, 30), fps=24)
    (tmp_path / "s.sqlite.rank3-journal").write_bytes(b"")  # SQLite's journal: not a shard
    (tmp_path / "s.sqlite.rankx").write_bytes(b"")
    assert [p.name for p in find_shards(store)] == ["s.sqlite.rank0", "s.sqlite.rank3"]
    assert sorted(merge_shards(store)) == ["a", "b", "c"]
    recs = _records(store)
    assert sorted(recs) == ["a", "b", "c"] and recs["b"]["frames"].tolist() == [3]
    np.testing.assert_array_equal(recs["c"]["boxes"], boxes)
    assert find_shards(store) == [] and merge_shards(store) == []
    assert main(["proposals", "merge", str(store)]) == 0
