"""Clips/s of the whole data loader per worker: decode + sampling + transforms + boxes + collate.

Paper configuration (section 6.1): 32 frames every 4th frame of a 24 fps video, random short side
in [256, 320], random 224 crop, 50 proposals per frame from a proposals store. Sources: H.264 mp4
(PyAV, and TorchCodec when it is usable here) and JPEG frame folders, written on the fly at
Charades-like size (320 x 240, 24 fps, x264's default keyframe interval of 250 frames).

One worker = one process with one FFmpeg thread, so the number here is per DataLoader worker.
Divide what a training step consumes (clips/s of the GPU) by it to get the workers needed.

    python benchmarks/bench_loader.py --quick            # < 90 s
    python benchmarks/bench_loader.py --device cuda      # also copies batches to the GPU
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time

import numpy as np
import torch


def make_frames(n: int, h: int, w: int, seed: int) -> np.ndarray:
    """Moving gradients with mild noise: compresses like real footage, not like flat colour."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    t = np.arange(n, dtype=np.float32)[:, None, None]
    base = np.stack([(x + 3 * t) % 256, (y + 2 * t) % 256, ((x + y) / 2 + t) % 256], axis=-1)
    noise = rng.normal(0, 6, size=(1, h, w, 3)).astype(np.float32)
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def _short_side(frames: np.ndarray, short: int) -> np.ndarray:
    """Frames (N, H, W, 3) resized so that their short side is ``short`` (even sizes, for x264)."""
    n, h, w, _ = frames.shape
    scale = short / min(h, w)
    size = (2 * round(h * scale / 2), 2 * round(w * scale / 2))
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float()
    x = torch.nn.functional.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
    return x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()


def build_data(root: str, num_videos: int, seconds: float, fps: int = 24, h: int = 240, w: int = 320,
               reencode: bool = False) -> dict:
    """mp4 (x264's default 250-frame keyframe interval) and JPEG frames (quality 90) at h x w; with
    ``reencode`` also both at short side 320, the mp4 with a keyframe every 16 frames (``-g 16``)."""
    from strg.data.proposals import ProposalStore
    from strg.data.testing import write_frame_folder, write_video

    n = int(seconds * fps)
    with open(os.path.join(root, "classes.txt"), "w") as f:
        f.write("a\nb\n")
    rows = {"mp4": [], "jpg": []} | ({"mp4_320": [], "jpg_320": []} if reencode else {})
    rng = np.random.default_rng(0)
    with ProposalStore(os.path.join(root, "proposals.db"), mode="w") as store:
        for i in range(num_videos):
            frames = make_frames(n, h, w, seed=i)
            versions = [("", frames, 250)] + ([("_320", _short_side(frames, 320), 16)] if reencode else [])
            for suffix, f, gop in versions:
                write_video(os.path.join(root, f"mp4{suffix}", f"v{i}.mp4"), f, fps=fps, gop=gop)
                write_frame_folder(os.path.join(root, f"jpg{suffix}", f"v{i}"), f, pattern=f"v{i}-{{:06d}}.jpg",
                                   quality=90)  # fmt: skip
                rows[f"mp4{suffix}"].append(f"mp4{suffix}/v{i}.mp4,a")
                rows[f"jpg{suffix}"].append(f"jpg{suffix}/v{i},b")
            # proposals every 4th frame, 50 per frame, in pixels of the original size (the datasets
            # scale them to the size of the frames they decode)
            stored = np.arange(0, n, 4)
            xy = rng.uniform(0, [w - 40, h - 40], size=(len(stored), 50, 2))
            wh = rng.uniform(8, 40, size=(len(stored), 50, 2))
            boxes = np.concatenate([xy, xy + wh], -1).astype(np.float32)
            store.put(f"v{i}", frames=stored, boxes=boxes, scores=rng.uniform(size=(len(stored), 50)),
                      num_boxes=np.full(len(stored), 50), frame_size=(h, w), fps=fps)  # fmt: skip
    for name, lines in rows.items():
        with open(os.path.join(root, f"{name}.csv"), "w") as f:
            f.write("path,labels\n" + "\n".join(lines) + "\n")
    return {"frames_per_video": n}


def bench_source(root: str, source: str, backend: str, clips: int, device: torch.device, workers: int = 0) -> dict:
    from torch.utils.data import DataLoader

    from strg.data import build_dataset
    from strg.data.collate import make_collate

    ds = build_dataset(
        "manifest", split="train", training=True, manifest=os.path.join(root, f"{source}.csv"),
        classes_file=os.path.join(root, "classes.txt"), num_frames=32, stride=4, stride_unit="frames",
        crop_size=224, train_short_side=(256, 320), flip=True, proposals=os.path.join(root, "proposals.db"),
        max_boxes=50, decode_backend=backend, frames_fps=24,
    )  # fmt: skip
    indices = [i % len(ds) for i in range(clips)]
    from strg.data.decode import decodes_on_gpu

    on_gpu = source.startswith("mp4") and decodes_on_gpu(backend)  # frames decoded (and transformed) on the GPU
    loader = DataLoader(torch.utils.data.Subset(ds, indices), batch_size=8, num_workers=workers,
                        collate_fn=make_collate(50), pin_memory=device.type == "cuda" and not on_gpu)  # fmt: skip
    ds[0]  # warm-up: imports, first file opens
    done = 0
    t0 = time.perf_counter()  # worker start-up included: a conservative number
    for batch in loader:
        if device.type == "cuda":
            batch["clips"].to(device, non_blocking=True)
            batch["boxes"].to(device, non_blocking=True)
            torch.cuda.synchronize(device)
        done += batch["clips"].shape[0]
    elapsed = time.perf_counter() - t0
    # where the time goes: decoding alone, on the same clips
    from strg.data.decode import open_video

    t1 = time.perf_counter()
    for i in indices[: max(2, clips // 4)]:
        with open_video(ds.videos[i].path, backend=backend, fps=24) as src:
            start = np.random.randint(0, max(1, src.num_frames - 125))
            frames = src.get_frames(np.minimum(start + 4 * np.arange(32), src.num_frames - 1))
            if frames.is_cuda:
                torch.cuda.synchronize(frames.device)
    decode_ms = 1000 * (time.perf_counter() - t1) / max(2, clips // 4)
    return {
        "source": source, "backend": backend if source.startswith("mp4") else "pillow", "workers": workers,
        "clips": done,
        "clips_per_s": done / elapsed, "clips_per_s_per_worker": done / elapsed / max(1, workers),
        "ms_per_clip": 1000 * elapsed / done, "decode_ms_per_clip": decode_ms,
    }  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--quick", action="store_true", help="2 short videos, 24 clips per setting (< 90 s)")
    ap.add_argument("--clips", type=int, default=None, help="clips per source and setting (default 24 quick, 96 full)")
    ap.add_argument("--workers", default="0", help="comma-separated DataLoader worker counts; 0 = in the main process")
    ap.add_argument("--backends", default=None,
                    help="mp4 decoders to time, comma-separated (pyav, torchcodec, torchcodec-cuda; "
                         "default pyav and torchcodec when it loads); GPU decoding runs in the main process")
    ap.add_argument("--source-size", default="240x320", help="HxW of the test videos (Charades' originals: 480x640)")
    ap.add_argument("--reencode", action="store_true",
                    help="also the videos re-encoded at short side 320 with a keyframe every 16 frames, "
                         "and JPEG frames at short side 320")
    args = ap.parse_args()
    torch.set_num_threads(1)  # one worker = one core
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device here")
    from strg.data.decode import torchcodec_available

    clips = args.clips or (24 if args.quick else 96)
    worker_counts = [int(w) for w in args.workers.split(",")]
    with tempfile.TemporaryDirectory(prefix="strg_bench_loader_") as root:
        t = time.perf_counter()
        h, w = (int(x) for x in args.source_size.split("x"))
        info = build_data(root, num_videos=2 if args.quick else 4, seconds=10 if args.quick else 30, h=h, w=w,
                          reencode=args.reencode)
        print(f"wrote test media in {time.perf_counter() - t:.1f} s ({info['frames_per_video']} frames per video)")
        runs = [("mp4", "pyav"), ("jpg", "pyav")]
        if torchcodec_available():
            runs.insert(1, ("mp4", "torchcodec"))
        if args.backends:  # e.g. pyav,torchcodec,torchcodec-cuda
            runs = [("mp4", b) for b in args.backends.split(",")] + [("jpg", "pyav")]
        if args.reencode:
            runs += [("mp4_320", "pyav"), ("jpg_320", "pyav")]
        gpu = {"torchcodec-cuda", "auto-cuda"}  # decoding on the GPU happens in the main process
        results = [bench_source(root, s, b, clips * max(1, w), device, w) for s, b in runs
                   for w in (worker_counts if b not in gpu else [0])]
    print(f"\nloader throughput per worker: 32 frames x 224 crop, 50 boxes/frame, batch 8, device {args.device}")
    print("(workers 0 = in the main process; decode ms = decoding alone, in the main process)")
    print(f"{'source':8} {'decoder':15} {'workers':>7} {'clips/s':>8} {'per worker':>10} {'decode ms':>10}")
    for r in results:
        print(f"{r['source']:8} {r['backend']:15} {r['workers']:7d} {r['clips_per_s']:8.2f} "
              f"{r['clips_per_s_per_worker']:10.2f} {r['decode_ms_per_clip']:10.1f}")  # fmt: skip
    print(json.dumps({
        "bench": "loader", "device": args.device, "quick": args.quick, "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(), "results": results,
    }))  # fmt: skip


if __name__ == "__main__":
    main()
