"""Can the graph heads learn the demo's relations when the nodes are clean? (docs/demo.md)

    python benchmarks/demo_oracle.py strg-demo/data/something-s0-n3000-f16-64px
    python benchmarks/demo_oracle.py DATA --nodes proposals --iters 1500
    python benchmarks/demo_oracle.py DATA --nodes proposals --features model --heads proposal_avgpool,joint_gcn

A diagnostic of the synthetic benchmark (``strg synth``), not of speed: it takes the model's own
graph head (:class:`strg.models.gcn.RegionGraphHead`, ``forward_nodes``: the GCN branches and
the mean over nodes) and gives it nodes whose features are only their box geometry (x1, y1, x2,
y2, width, height divided by the frame size, and the frame's time in [0, 1]) through a small
MLP, no appearance and no backbone:

* ``--nodes gt``: the Something-Else ground truth of the data (hand and objects, no identity);
* ``--nodes proposals``: the detector-like proposals the demo trains on (8 per frame, noisy,
  missed objects, false positives, no identity).

Each of Proposal + AvgPool, ST-GCN, Sim-GCN and Joint GCN trains the same way (Adam, lr 1e-3,
cosine schedule, batch 64) and is evaluated on the validation videos. ``--features model`` gives
the nodes the 16 numbers of the model's box-geometry option instead (strg/models/geometry.py:
corners, size, and the box delta to the matched box in the next and the previous frame; no time).
If the graph variants beat the average pool here, the graph code can learn the relations that
define the classes, and what the full model lacks are node features that carry them. Prints a table and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch
import torch.nn as nn

from strg.data.datasets import read_something_v2
from strg.data.something_else import parse_video_entry
from strg.models.gcn import RegionGraphHead
from strg.models.geometry import GEOMETRY_FEATURES, box_geometry

HEADS = (("proposal_avgpool", ()), ("st_gcn", ("st",)), ("sim_gcn", ("sim",)), ("joint_gcn", ("sim", "st")))


def load_nodes(root: str, nodes: str, max_boxes: int) -> dict:
    """Boxes of every video of a ``strg synth`` something dataset, per split.

    Returns ``{split: (boxes (Tensor[V, T, K, 4]) in pixels, mask (Tensor[V, T, K]), targets (Tensor[V]))}``
    and the frame size and class count under ``"size"``, ``"num_classes"``.
    """
    with open(os.path.join(root, "synth.json")) as f:
        manifest = json.load(f)
    settings = manifest["settings"]
    if settings["variant"] != "something":
        raise SystemExit(f"{root}: a {settings['variant']!r} dataset; this diagnostic reads the 'something' variant")
    frames, size = int(settings["frames"]), float(settings["size"])
    folder, stem = ("annotations", "bounding_box_smthsmth_part") if nodes == "gt" else ("detections", "proposals_part")
    entries = {}
    for part in (1, 2):
        path = os.path.join(root, folder, f"{stem}{part}.json")
        with open(path) as f:
            entries.update({vid: (path, v) for vid, v in json.load(f).items()})
    labels = os.path.join(root, "labels", "something-something-v2-labels.json")
    out = {"size": size}
    for split, name in (("train", "train"), ("val", "validation")):
        videos, classes = read_something_v2(os.path.join(root, "labels", f"something-something-v2-{name}.json"), labels,
                                            lambda vid: vid)
        boxes = torch.zeros(len(videos), frames, max_boxes, 4)
        mask = torch.zeros(len(videos), frames, max_boxes, dtype=torch.bool)
        for v, rec in enumerate(videos):
            path, entry = entries[rec.video_id]
            idx, b, _, num = parse_video_entry(rec.video_id, entry, where=path)
            for f, n, fb in zip(idx.tolist(), num.tolist(), b):
                n = min(n, max_boxes)
                if f < frames and n:
                    boxes[v, f, :n] = torch.from_numpy(fb[:n])
                    mask[v, f, :n] = True
        out[split] = (boxes, mask, torch.tensor([rec.label for rec in videos]))
        out["num_classes"] = len(classes)
    return out


def geometry(boxes: torch.Tensor, mask: torch.Tensor, size: float) -> torch.Tensor:
    """boxes (Tensor[V, T, K, 4]) -> node features (Tensor[V, T, K, 7]), zero for padded nodes."""
    v, t, k, _ = boxes.shape
    time_ = torch.linspace(0, 1, t).view(1, t, 1, 1).expand(v, t, k, 1)
    return torch.cat([boxes / size, (boxes[..., 2:] - boxes[..., :2]) / size, time_], -1) * mask[..., None]


class GeometryNet(nn.Module):
    """Node geometry -> MLP -> the model's graph head (``forward_nodes``) -> linear classifier."""

    def __init__(self, graphs: tuple[str, ...], num_classes: int, dim: int = 64, layers: int = 3, inputs: int = 7):
        super().__init__()
        self.embed = nn.Sequential(nn.Linear(inputs, dim), nn.ReLU(), nn.Linear(dim, dim))
        self.head = RegionGraphHead(dim, graphs=graphs, num_layers=layers)
        self.classifier = nn.Linear(dim, num_classes)

    def forward(self, x, boxes, mask):
        return self.classifier(self.head.forward_nodes(self.embed(x) * mask[..., None], boxes, mask))


def train_and_eval(data: dict, graphs: tuple[str, ...], *, iters: int, seed: int, batch: int = 64,
                   features: str = "corners") -> dict:
    torch.manual_seed(seed)
    (bt, mt, yt), (bv, mv, yv) = data["train"], data["val"]
    if features == "model":  # the model's box-geometry numbers (strg/models/geometry.py)
        size = (data["size"], data["size"])
        xt, xv = box_geometry(bt, mt, size), box_geometry(bv, mv, size)
    else:
        xt, xv = geometry(bt, mt, data["size"]), geometry(bv, mv, data["size"])
    net = GeometryNet(graphs, data["num_classes"], inputs=xt.shape[-1])
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, iters)
    gen = torch.Generator().manual_seed(seed)
    t0 = time.time()
    for _ in range(iters):
        i = torch.randint(0, len(yt), (batch,), generator=gen)
        loss = nn.functional.cross_entropy(net(xt[i], bt[i], mt[i]), yt[i])
        opt.zero_grad()
        loss.backward()
        opt.step()
        schedule.step()
    net.eval()
    with torch.no_grad():
        pred = net(xv, bv, mv).argmax(1)
    per_class = [round(100 * (pred[yv == c] == c).float().mean().item(), 1) if (yv == c).any() else None
                 for c in range(data["num_classes"])]
    return {"top1": round(100 * (pred == yv).float().mean().item(), 1), "per_class": per_class,
            "seconds": round(time.time() - t0, 1)}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", help="a `strg synth` dataset (variant something)")
    parser.add_argument("--nodes", choices=["gt", "proposals"], default="gt")
    parser.add_argument("--max-boxes", type=int, default=8, help="nodes per frame kept (the demo: 8)")
    parser.add_argument("--iters", type=int, default=1500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--features", choices=["corners", "model"], default="corners",
                        help=f"corners, size and time (7), or the model's box geometry ({GEOMETRY_FEATURES})")
    parser.add_argument("--heads", default=",".join(name for name, _ in HEADS), help="comma-separated heads to train")
    args = parser.parse_args(argv)
    data = load_nodes(args.data, args.nodes, args.max_boxes)
    print(f"geometry-only nodes ({args.nodes}), {len(data['train'][2])} training / {len(data['val'][2])} validation "
          f"videos, {args.iters} iterations, seed {args.seed}, {torch.get_num_threads()} threads")
    results = {}
    for name, graphs in HEADS:
        if name not in args.heads.split(","):
            continue
        results[name] = train_and_eval(data, graphs, iters=args.iters, seed=args.seed, features=args.features)
        print(f"  {name:18s} top-1 {results[name]['top1']:5.1f}  per class {results[name]['per_class']}  "
              f"({results[name]['seconds']} s)", flush=True)
    print(json.dumps({"bench": "demo_oracle", "nodes": args.nodes, "features": args.features, "iters": args.iters,
                      "seed": args.seed,
                      **{f"{k}_top1": v["top1"] for k, v in results.items()}}))
    return results


if __name__ == "__main__":
    main()
