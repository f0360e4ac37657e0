"""Forward + backward time of the I3D baseline and of Joint GCN at the paper configuration.

    python benchmarks/bench_model.py                     # CPU, batch 1, 32x224x224, 50 boxes/frame
    python benchmarks/bench_model.py --device cuda --batch 8 --dtype bfloat16

Both models are timed in the same run, interleaved, and the graph part (reduction conv, RoIAlign,
graph building, GCN, head) is also timed on its own on a cached backbone output (and, as
``graph_head``, without the reduction conv before the head), so that its cost relative to the
backbone does not drown in the noise of two large totals; it is timed with the default RoIAlign
(``graph_part``: ``roi_impl="auto"``, the sparse product on the CPU and the dense matrix product
elsewhere), with each form alone (``graph_part_sparse``, ``graph_part_matmul``, but ``sparse`` only
on the CPU) and with torchvision's kernel (``graph_part_tv_roi_align``). The paper: +3% FLOPs and
"barely any" time difference; strg's goal: the graph head costs at most 5% of the backbone's time.
Both shares are printed: the graph head alone, and the graph part (the head and the reduction conv
before it, that is all Joint GCN adds to the I3D); and the graph part's share in inference (forward
only, eval mode), the setting of the paper's FLOP count. Prints a table and one JSON line: medians,
and minimums (on a shared machine other jobs only ever add time, so the fastest of several runs is
the least disturbed); the runs go in a new random order each repeat (the graph part timed right
after the backbone every time took 20 ms longer than the same computation timed elsewhere).
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import time

import torch

from strg.models import build_model


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time(fn, device, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--frames", type=int, default=32)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--boxes", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    parser.add_argument("--compile", action="store_true", help="also time the torch.compile'd graph head")
    parser.add_argument("--profile", action="store_true",
                        help="then print a torch.profiler table of one graph-part step")
    args = parser.parse_args()
    device = torch.device(args.device)
    repeats = 2 if args.quick else args.repeats
    dtype = getattr(torch, args.dtype)
    autocast = torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32)
    torch.manual_seed(0)

    b, t, k, s = args.batch, args.frames, args.boxes, args.size
    clips = torch.randn(b, 3, t, s, s, device=device)
    xy = torch.rand(b, t, k, 2, device=device) * s * 0.7
    boxes = torch.cat([xy, xy + torch.rand(b, t, k, 2, device=device) * s * 0.3 + 8], dim=-1)
    mask = torch.ones(b, t, k, dtype=torch.bool, device=device)
    target = torch.randint(0, 157, (b,), device=device)

    models = {name: build_model(name, num_classes=157).to(device).train() for name in ("i3d_r50", "joint_gcn_r50")}
    joint = models["joint_gcn_r50"]

    def step(model):
        def run():
            if model.graph_head is not None:
                model.graph_head.roi_impl = "auto"  # the default (graph_part_* runs switch it)
            with autocast:
                loss = torch.nn.functional.cross_entropy(model(clips, boxes, mask), target)
            loss.backward()
            model.zero_grad(set_to_none=True)
        return run

    with torch.no_grad(), autocast:
        cached = joint.backbone(clips).detach()

    compiled_head = torch.compile(joint.graph_head) if args.compile else None

    with torch.no_grad(), autocast:
        cached_reduced = joint.reduce(cached).detach()

    def graph_part(head, impl="auto", reduce=True):
        def run():
            joint.graph_head.roi_impl = impl
            if reduce:
                feats = cached.detach().requires_grad_(True)  # a new leaf on the same memory (no copy to time)
            else:  # the graph head alone, on the reduction's output
                feats = cached_reduced.detach().requires_grad_(True)
            with autocast:
                x = joint.reduce(feats) if reduce else feats  # (B, d, T', H', W')
                video = x.mean(dim=(2, 3, 4))
                out = joint.forward_head(torch.cat([video, head(x, boxes, mask)], dim=1))
                loss = torch.nn.functional.cross_entropy(out, target)
            loss.backward()
            joint.zero_grad(set_to_none=True)
        return run

    def backbone_only():
        with autocast:
            out = joint.backbone(clips)
        out.float().mean().backward()
        joint.zero_grad(set_to_none=True)

    def inference(graph: bool):  # forward only, eval mode: the setting of the paper's FLOP count
        def run():
            joint.eval()
            joint.graph_head.roi_impl = "auto"
            with torch.inference_mode(), autocast:
                if graph:
                    x = joint.reduce(cached)
                    joint.forward_head(torch.cat([x.mean(dim=(2, 3, 4)), joint.graph_head(x, boxes, mask)], dim=1))
                else:
                    joint.backbone(clips)
            joint.train()
        return run

    runs = {"i3d_r50": step(models["i3d_r50"]), "joint_gcn_r50": step(joint), "backbone": backbone_only,
            "graph_part": graph_part(joint.graph_head), "graph_head": graph_part(joint.graph_head, reduce=False),
            "graph_part_matmul": graph_part(joint.graph_head, "matmul"),
            "graph_part_tv_roi_align": graph_part(joint.graph_head, "roi_align"),
            "backbone_inference": inference(False), "graph_part_inference": inference(True)}
    if device.type == "cpu":
        runs["graph_part_sparse"] = graph_part(joint.graph_head, "sparse")
    if compiled_head is not None:
        runs["graph_part_compiled"] = graph_part(compiled_head)
    for fn in runs.values():  # warm-up (and compilation)
        fn()
        fn()
    results: dict[str, list[float]] = {key: [] for key in runs}
    keys = list(runs)
    for r in range(repeats):  # interleaved, so drifts in machine load hit all alike; in a new
        random.Random(r).shuffle(keys)  # order each repeat, so no run always follows the same one
        for key in keys:
            results[key] += _time(runs[key], device, 1)
    med = {key: statistics.median(v) for key, v in results.items()}
    best = {key: min(v) for key, v in results.items()}  # the least disturbed run (other jobs only add time)
    compiled_share = med["graph_part_compiled"] / med["backbone"] if "graph_part_compiled" in med else None
    if device.type == "cuda":
        machine = torch.cuda.get_device_name(device)
    else:
        machine = f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads"
    print(f"forward+backward, batch {b}, {t}x{s}x{s}, {k} boxes/frame, {args.dtype}, {machine}")
    for key, value in med.items():
        print(f"  {key:24s} {value * 1000:10.1f} ms (median of {repeats}), {best[key] * 1000:10.1f} ms (min)")
    ratio = med["joint_gcn_r50"] / med["i3d_r50"]
    head_share = med["graph_part"] / med["backbone"]
    head_share_min = best["graph_part"] / best["backbone"]
    print(f"  joint / i3d time ratio        {ratio:.3f}")
    print(f"  graph part / backbone time    {100 * head_share:.1f}% (medians), {100 * head_share_min:.1f}% (mins)")
    print(f"  graph head / backbone time    {100 * med['graph_head'] / med['backbone']:.1f}% (medians), "
          f"{100 * best['graph_head'] / best['backbone']:.1f}% (mins): without the reduction conv")
    inference_share = med["graph_part_inference"] / med["backbone_inference"]
    print(f"  forward only (eval mode): graph part / backbone {100 * inference_share:.1f}% (medians), "
          f"{100 * best['graph_part_inference'] / best['backbone_inference']:.1f}% (mins)")
    if "graph_part_compiled" in med:
        print(f"  compiled graph part / backbone {100 * med['graph_part_compiled'] / med['backbone']:.1f}%")
    print(json.dumps({"bench": "model", "device": machine, "batch": b, "frames": t, "size": s, "boxes": k,
                      "dtype": args.dtype, **{f"{k}_ms": round(v * 1000, 2) for k, v in med.items()},
                      **{f"{k}_min_ms": round(v * 1000, 2) for k, v in best.items()},
                      "ratio_joint_over_i3d": round(ratio, 4), "graph_share_of_backbone": round(head_share, 4),
                      "graph_share_of_backbone_min": round(head_share_min, 4),
                      "head_share_of_backbone": round(med["graph_head"] / med["backbone"], 4),
                      "head_share_of_backbone_min": round(best["graph_head"] / best["backbone"], 4),
                      "inference_graph_share_of_backbone": round(inference_share, 4),
                      "compiled_graph_share_of_backbone": compiled_share and round(compiled_share, 4)}))

    if args.profile:  # where the graph part's time goes, by operator and input shape
        with torch.profiler.profile(record_shapes=True) as prof:
            runs["graph_part"]()
            _sync(device)
        print(prof.key_averages(group_by_input_shape=True).table(
            sort_by="self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total", row_limit=20,
            max_name_column_width=40, max_shapes_column_width=70))


if __name__ == "__main__":
    main()
