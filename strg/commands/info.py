"""``strg info VARIANT``: parameters and GMACs of a model variant, counted on meta tensors."""

from __future__ import annotations

import argparse
import json

from strg.errors import ConfigError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("variant", nargs="?", help="model variant, e.g. joint_gcn_r50 (omit with --list)")
    parser.add_argument("--list", action="store_true", help="list the variant names and exit")
    parser.add_argument("--frames", type=int, default=32, help="input frames T (default 32)")
    parser.add_argument("--size", type=int, default=224, help="input height = width (default 224)")
    parser.add_argument("--boxes-per-frame", type=int, default=50, help="K, proposals per frame (default 50)")
    parser.add_argument("--classes", type=int, default=157, help="number of classes (default 157)")
    parser.add_argument("--pool2-kernel", type=int, default=3, choices=(2, 3), help="pool2 temporal kernel")
    parser.add_argument("--sim-per-layer", action="store_true", help="a similarity graph per GCN layer")
    parser.add_argument("--box-geometry", action="store_true",
                        help="region nodes also embed their box geometry and motion "
                             "(not in the paper; strg/models/geometry.py)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def run(args: argparse.Namespace) -> int:
    from strg.models import list_models, parse_name
    from strg.models.complexity import count_complexity

    if args.list or args.variant is None:
        print("\n".join(list_models()))
        return 0
    try:
        _, head_name, _ = parse_name(args.variant)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    if args.box_geometry and head_name == "i3d":
        raise ConfigError(f"--box-geometry: {args.variant} has no region nodes; use a region variant")
    settings = {"frames": args.frames, "size": args.size, "boxes_per_frame": args.boxes_per_frame,
                "num_classes": args.classes,
                "pool2_kernel": args.pool2_kernel, "sim_per_layer": args.sim_per_layer}
    c = count_complexity(args.variant, **settings, **({"box_geometry": True} if args.box_geometry else {}))
    extra = None
    if args.box_geometry:  # what the geometry embedding adds to the paper's model
        plain = count_complexity(args.variant, **settings)
        extra = {"params": c.params - plain.params, "gmac": c.gmac - plain.gmac}
    if args.json:
        print(json.dumps({**c.as_dict(), **({"box_geometry": extra} if extra else {})}))
        return 0
    head = c.gmac - c.gmac_backbone
    print(f"{c.variant}  input {c.frames}x{c.size}x{c.size}, {c.boxes_per_frame} boxes/frame, {c.num_classes} classes")
    print(f"  parameters  backbone {c.params_backbone / 1e6:8.2f} M   total {c.params / 1e6:8.2f} M")
    share = 100 * head / c.gmac_backbone
    print(f"  GMACs       backbone {c.gmac_backbone:8.2f}     total {c.gmac:8.2f}   (head +{head:.2f}, {share:+.1f}%)")
    if extra:
        print(f"  box geometry (not in the paper): +{extra['params'] / 1e3:.1f} K parameters, "
              f"+{extra['gmac']:.3f} GMACs")
    return 0
