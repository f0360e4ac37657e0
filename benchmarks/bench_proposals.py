"""Proposal extraction speed: frames/s of the RPN proposer, and the whole-Charades estimate.

    python benchmarks/bench_proposals.py --device cpu --quick
    python benchmarks/bench_proposals.py --device cuda            # sizes 800, 600, 480; fp32 and amp

Random detector weights (speed does not depend on them). Frames are 480x640 (H x W), the size of
the Charades 480p videos; the detector resizes their short side to each ``--sizes`` value.
``--end-to-end`` also times `extract_proposals` on synthetic 24-fps H.264 videos (decoding in
workers + detector + store writes) at the first size. Prints a table and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import torch

from strg.proposals.rpn import build_rpn_proposer

# Charades: ~9,800 videos of ~30 s, proposals at the default 6 fps
CHARADES_FRAMES = 9_800 * 30 * 6


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_proposer(proposer, frames: torch.Tensor, *, iters: int, amp: bool) -> float:
    """frames/s of ``proposer`` on ``frames`` (uint8 Tensor[B, H, W, 3] on its device)."""
    device = frames.device
    ctx = torch.autocast("cuda", dtype=torch.float16) if amp else torch.autocast("cpu", enabled=False)
    with ctx:
        proposer(frames)  # warm-up (cuDNN autotuning, allocator)
        sync(device)
        start = time.perf_counter()
        for _ in range(iters):
            proposer(frames)
        sync(device)
    return iters * len(frames) / (time.perf_counter() - start)


def synthetic_video(n: int, seed: int):
    """uint8[n, 480, 640, 3]: moving gradients and blocks, which a codec compresses like real
    footage (random noise would make decoding unrealistically slow)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:480, 0:640]
    frames = np.empty((n, 480, 640, 3), dtype=np.uint8)
    for t in range(n):
        frames[t, ..., 0] = (x + 3 * t) % 256
        frames[t, ..., 1] = (y + 2 * t + seed * 40) % 256
        frames[t, ..., 2] = ((x // 40 + y // 40 + t // 6) % 2) * 200
    frames[:, 200:280, 100:200] = rng.integers(0, 256, size=(1, 80, 100, 3), dtype=np.uint8)
    return frames


def end_to_end(proposer, device: torch.device, *, batch: int, workers: int, video: str, videos: int,
               amp: bool) -> float:
    """frames/s of extract_proposals (decoding in workers + detector + store writes) over ``videos``
    copies of one synthetic 24-fps H.264 video, extracted at the default 6 fps."""
    from strg.proposals.extract import VideoEntry, extract_proposals

    entries = [VideoEntry(f"v{i}", video) for i in range(videos)]  # same file, separate decodes
    with tempfile.TemporaryDirectory() as tmp:
        result = extract_proposals(entries, os.path.join(tmp, "p.sqlite"), proposer, rate=6.0, batch_size=batch,
                                   num_workers=workers, device=device, amp=amp, progress=False)
    return result.frames_per_second


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--quick", action="store_true", help="few iterations (CI / sanity)")
    p.add_argument("--sizes", type=int, nargs="+", default=None, help="short sides (default 800 480; cuda 800 600 480)")
    p.add_argument("--detector", choices=("v1", "v2"), nargs="+", default=["v1"])
    p.add_argument("--batch-size", type=int, default=None, help="frames per call (default cpu 2, cuda 16)")
    p.add_argument("--amp", choices=("off", "on", "both"), default=None, help="fp16 autocast (cuda; default both)")
    p.add_argument("--end-to-end", action="store_true", help="also time extract_proposals with decoding")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--workers", type=int, nargs="+", default=None, help="end to end: decoding workers (4)")
    p.add_argument("--e2e-videos", type=int, default=None, help="end to end: videos (default: one per worker)")
    p.add_argument("--e2e-seconds", type=float, default=None, help="end to end: video length (10 s; quick 2 s)")
    args = p.parse_args(argv)

    device = torch.device(args.device)
    cuda = device.type == "cuda"
    if cuda and not torch.cuda.is_available():
        print("CUDA is not available", file=sys.stderr)
        return 1
    if args.threads:
        torch.set_num_threads(args.threads)
    sizes = args.sizes or ([800, 600, 480] if cuda else [800, 480])
    batch = args.batch_size or (16 if cuda else 2)
    amp_modes = {"off": [False], "on": [True], "both": [False, True]}[args.amp or ("both" if cuda else "off")]
    amp_modes = [a for a in amp_modes if cuda or not a]
    iters = (3 if cuda else 1) if args.quick else (20 if cuda else 3)

    torch.manual_seed(0)
    frames = torch.randint(0, 256, (batch, 480, 640, 3), dtype=torch.uint8, device=device)
    rows = []
    for detector in args.detector:
        for size in sizes:
            proposer = build_rpn_proposer(detector=detector, weights=None, top_k=50, min_size=size).to(device)
            for amp in amp_modes:
                fps = time_proposer(proposer, frames, iters=iters, amp=amp)
                rows.append({"detector": detector, "min_size": size, "batch": batch, "amp": amp,
                             "frames_per_s": round(fps, 2),
                             "charades_hours": round(CHARADES_FRAMES / fps / 3600, 1)})
                print(f"  {detector} short side {size} amp={amp}: {fps:.2f} frames/s", file=sys.stderr)
            del proposer
    if args.end_to_end:  # the default short side (first of --sizes), each amp mode and worker count
        from strg.data.testing import write_video

        proposer = build_rpn_proposer(detector=args.detector[0], weights=None, top_k=50, min_size=sizes[0]).to(device)
        time_proposer(proposer, frames, iters=1, amp=False)  # warm-up: the timed loop starts warm
        seconds = args.e2e_seconds or (2 if args.quick else 10)
        with tempfile.TemporaryDirectory() as tmp:
            video = write_video(os.path.join(tmp, "v.mp4"), synthetic_video(int(seconds * 24), 0), fps=24, gop=48)
            for workers in args.workers or [min(4, os.cpu_count() or 1)]:
                for amp in amp_modes:
                    e2e = end_to_end(proposer, device, batch=batch, workers=workers, video=video,
                                     videos=args.e2e_videos or max(workers, 1), amp=amp)
                    rows.append({"detector": args.detector[0], "min_size": sizes[0], "batch": batch, "amp": amp,
                                 "end_to_end": True, "workers": workers, "frames_per_s": round(e2e, 2),
                                 "charades_hours": round(CHARADES_FRAMES / e2e / 3600, 1)})
                    print(f"  end to end, {workers} decoding workers, amp={amp}: {e2e:.2f} frames/s", file=sys.stderr)

    name = torch.cuda.get_device_name(device) if cuda else f"cpu ({torch.get_num_threads()} threads)"
    print(f"\nproposal extraction on {name}, input 480x640 frames, batch {batch}, K=50")
    print(f"Charades at 6 fps: {CHARADES_FRAMES:,} frames (9,800 videos x 30 s x 6 fps)")
    print(f"{'detector':>8} {'short side':>10} {'amp':>5} {'end to end':>10} {'frames/s':>9} {'Charades (h)':>12}")
    for r in rows:
        e2e = f"{r['workers']} workers" if r.get("end_to_end") else "no"
        print(f"{r['detector']:>8} {r['min_size']:>10} {str(r['amp']):>5} {e2e:>10} "
              f"{r['frames_per_s']:>9.2f} {r['charades_hours']:>12.1f}")
    print(json.dumps({"benchmark": "proposals", "device": name, "torch": torch.__version__, "input_hw": [480, 640],
                      "charades_frames": CHARADES_FRAMES, "quick": args.quick, "results": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
