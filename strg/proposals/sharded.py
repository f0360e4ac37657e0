"""Proposal extraction over many processes (torchrun): one shard store per rank, merged into one.

``torchrun --nproc_per_node N [--nnodes M ...] -m strg.cli proposals extract ... --out STORE``:

1. Rank 0 lists the videos not yet done: those in ``STORE`` and in any shard ``STORE.rankR``
   left by an earlier run (any number of processes), and sends the list to every rank.
2. Rank ``r`` of ``W`` takes videos ``r, r + W, r + 2W, ...`` of that list and writes them into its
   own shard ``STORE.rank<r>`` (SQLite, one transaction per video, as a one-process run writes
   ``STORE``): ranks never write the same file, so no locking between machines. Each rank
   decodes in its own DataLoader workers and runs the detector on its own GPU (``cuda:LOCAL_RANK``).
3. When every rank is done (a barrier), rank 0 copies every shard into ``STORE`` (one
   transaction per shard) and deletes the shard. ``STORE`` then reads as if one process had
   written it.

Interrupted (Ctrl-C, a killed or preempted job): the finished videos of every rank are in its
shard; rerunning the same command, with any number of processes, skips them and merges
everything at the end. ``strg proposals merge STORE`` merges shards by hand (for example shards
extracted on machines without a shared file system and copied next to ``STORE``).

The ranks only exchange the video list, small results and barriers, over Gloo (CPU), whose
timeout is set to :data:`BARRIER_TIMEOUT` because a rank that finishes early waits at the final
barrier for the slowest one (hours on a large dataset).
"""

from __future__ import annotations

import datetime
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
import torch.distributed as dist

from strg.engine.distributed import choose_device
from strg.proposals.extract import ExtractResult, VideoEntry, extract_proposals

#: how long a rank may wait for the others at a barrier
BARRIER_TIMEOUT = datetime.timedelta(hours=48)

_SHARD = re.compile(r"\.rank(\d+)$")


def shard_path(store_path: str | Path, rank: int) -> Path:
    """The shard of ``rank``: ``STORE.rank<rank>`` next to the store."""
    return Path(f"{os.fspath(store_path)}.rank{int(rank)}")


def find_shards(store_path: str | Path) -> list[Path]:
    """Shards of ``store_path`` on disk, by rank (SQLite's ``-journal`` files are not shards)."""
    store = Path(store_path)
    if not store.parent.is_dir():
        return []
    found = []
    for p in store.parent.iterdir():
        if p.name.startswith(store.name + ".rank"):
            m = _SHARD.search(p.name[len(store.name):])
            if m and p.name == f"{store.name}.rank{m.group(1)}":
                found.append((int(m.group(1)), p))
    return [p for _, p in sorted(found)]


def done_video_ids(store_path: str | Path) -> set[str]:
    """Ids of the videos already extracted: in the store and in its shards."""
    from strg.data.proposals import ProposalStore

    done: set[str] = set()
    for path in [Path(store_path), *find_shards(store_path)]:
        if path.is_file():
            with ProposalStore(path, mode="r") as store:
                done.update(store.keys())
    return done


def merge_shards(store_path: str | Path) -> list[str]:
    """Copy every shard of ``store_path`` into it (created if missing), then delete the shard.

    One transaction per shard, deleted only after its commit: a merge killed midway leaves the
    shard, and merging again rewrites the same records (``put`` replaces). Returns the merged ids.
    """
    from strg.data.proposals import ProposalStore

    merged: list[str] = []
    shards = find_shards(store_path)
    if not shards:
        return merged
    with ProposalStore(store_path, mode="a") as store:
        for shard in shards:
            with ProposalStore(shard, mode="r") as src, store.batch():
                for vid in src.keys():
                    rec = src.get(vid)
                    store.put(vid, frames=rec["frames"], boxes=rec["boxes"], scores=rec["scores"],
                              num_boxes=rec["num_boxes"], frame_size=rec["frame_size"], fps=rec["fps"])
                    merged.append(vid)
            os.remove(shard)
    return merged


def init_from_torchrun() -> tuple[int, int, int]:
    """(rank, world size, local rank): joins torchrun's process group (Gloo) when there is one."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, 0
    if not dist.is_initialized():
        dist.init_process_group(backend="gloo", timeout=BARRIER_TIMEOUT)
    return dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0"))


def extract_proposals_sharded(
    videos: Sequence[VideoEntry],
    store_path: str | Path,
    proposer: Callable,
    *,
    rank: int = 0,
    world_size: int = 1,
    **options,
) -> ExtractResult:
    """:func:`~strg.proposals.extract.extract_proposals` over ``world_size`` processes (module docstring).

    Every rank calls it with the same ``videos``; with ``world_size`` > 1 the default process
    group must be initialised (:func:`init_from_torchrun`). ``options`` go to
    ``extract_proposals``. Returns on rank 0 the result of all ranks together (``written``,
    ``failed``, ``frames``; ``skipped``: the videos done before this run), on other ranks their own.
    """
    ids = None
    if rank == 0:
        done = done_video_ids(store_path)
        ids = ([v.video_id for v in videos if v.video_id not in done], sorted(done & {v.video_id for v in videos}))
    if world_size > 1:
        box = [ids]
        dist.broadcast_object_list(box, src=0)
        ids = box[0]
    todo, skipped = ids
    by_id = {v.video_id: v for v in videos}
    mine = [by_id[i] for i in todo[rank::world_size]]
    target = store_path if world_size == 1 else shard_path(store_path, rank)
    if world_size > 1 and not mine:  # nothing to do here: no empty shard on disk
        result = ExtractResult()
    else:
        result = extract_proposals(mine, target, proposer, **options)
    result.skipped = list(skipped)
    if world_size > 1:
        parts = [None] * world_size
        dist.all_gather_object(parts, (result.written, result.failed, result.frames, result.seconds))
        if rank == 0:
            result = ExtractResult(skipped=list(skipped))
            for written, failed, frames, seconds in parts:
                result.written += written
                result.failed.update(failed)
                result.frames += frames
                result.seconds = max(result.seconds, seconds)
        dist.barrier()  # every shard is complete
    if rank == 0:
        merge_shards(store_path)  # also shards an earlier, interrupted run left
    if world_size > 1:
        dist.barrier()  # the store is whole when any rank returns
    return result


def rank_device(preference: str | None, local_rank: int) -> torch.device:
    """The detector's device of a rank: ``preference``, or ``cuda:LOCAL_RANK`` when there is a GPU.
    A GPU this machine does not have is a ConfigError naming ``--device``."""
    device = choose_device(preference or "auto", local_rank, what="--device")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    return device
