"""``gqnbench data``: make the embedded Shepard-Metzler set, inspect a data set, build the decoded cache.

    gqnbench data generate --scenes 1200 --seed 0 --out data/       # DeepMind-format TFRecords
    gqnbench data info data/ --sheet sheet.png                      # scenes per split + contact sheet
    gqnbench data cache data/ --image-size 32                       # decode once into .npy memmaps

``DIR`` is a root holding ``shepard_metzler_7_parts/{train,test}/`` (DeepMind's real files
or the generated ones).
"""

from __future__ import annotations

import argparse
import time

from gqnbench.commands.common import add_preset_arguments, preset_from_args


def _generate(args: argparse.Namespace) -> int:
    from gqnbench.data.generate import generate_dataset
    from gqnbench.data.info import dataset_info, format_info

    scenes = args.scenes if args.scenes is not None else preset_from_args(args).data.generate_scenes
    start = time.perf_counter()
    root = generate_dataset(
        args.out,
        scenes,
        seed=args.seed,
        val_fraction=args.val_fraction,
        scenes_per_file=args.scenes_per_file,
        workers=args.workers,
        overwrite=args.overwrite,
        progress=not args.quiet,
    )
    elapsed = time.perf_counter() - start
    print(format_info(dataset_info(root, fast=True)))  # just written and checked by the generator
    print(f"generated {scenes} scenes in {elapsed:.1f} s ({scenes / elapsed:.1f} scenes/s)")
    return 0


def _info(args: argparse.Namespace) -> int:
    from gqnbench.data.info import contact_sheet, dataset_info, format_info

    info = dataset_info(args.dir, fast=args.fast)
    print(format_info(info))
    if args.sheet:
        split = args.split if info.splits.get(args.split) else next(s for s, v in info.splits.items() if v)
        path = contact_sheet(args.dir, args.sheet, split=split, num_scenes=args.num_scenes)
        print(f"contact sheet ({args.num_scenes} {split} scenes x {info.views} views): {path}")
    return 0


def _cache(args: argparse.Namespace) -> int:
    from gqnbench.data.cache import open_scenes

    size = args.image_size if args.image_size is not None else preset_from_args(args).data.image_size
    for split in args.splits:
        start = time.perf_counter()
        scenes = open_scenes(
            args.dir, split, size, cache_dir=args.cache_dir, workers=args.workers, progress=not args.quiet
        )
        print(f"{split}: {len(scenes)} scenes at {size}x{size} ready in {time.perf_counter() - start:.1f} s: {scenes}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("data", help="generate, inspect and cache Shepard-Metzler data")
    sub = p.add_subparsers(dest="data_command", metavar="ACTION", required=True)

    g = sub.add_parser("generate", help="render the embedded Shepard-Metzler set as DeepMind-format TFRecords")
    g.add_argument(
        "--scenes", type=int, default=None, help="number of scenes (default: the preset's data.generate_scenes)"
    )
    g.add_argument("--seed", type=int, default=0, help="same seed, same bytes (default 0)")
    g.add_argument("--out", required=True, help="root folder; writes <out>/shepard_metzler_7_parts/{train,test}/")
    g.add_argument("--val-fraction", type=float, default=0.1, help="fraction of scenes in test/ (default 0.1)")
    g.add_argument("--scenes-per-file", type=int, default=100, help="scenes per TFRecord shard (default 100)")
    g.add_argument("--workers", type=int, default=None, help="rendering processes (default: all cores)")
    g.add_argument("--overwrite", action="store_true", help="replace an existing data set in --out")
    g.add_argument("--quiet", action="store_true", help="no progress bar")
    add_preset_arguments(g)
    g.set_defaults(func=_generate)

    i = sub.add_parser("info", help="scenes per split, frame size; optional contact sheet PNG")
    i.add_argument("dir", help="data set root (holds shepard_metzler_7_parts/)")
    i.add_argument("--sheet", default=None, metavar="PNG", help="write a contact sheet: a few scenes, all views")
    i.add_argument("--num-scenes", type=int, default=4, help="scenes on the contact sheet (default 4)")
    i.add_argument("--split", default="train", choices=("train", "test"), help="split shown on the sheet")
    i.add_argument("--fast", action="store_true", help="check only the record framing (default: decode every record)")
    i.set_defaults(func=_info)

    c = sub.add_parser("cache", help="decode a data set once into memory-mappable .npy files (validates every record)")
    c.add_argument("dir", help="data set root (holds shepard_metzler_7_parts/)")
    c.add_argument("--image-size", type=int, default=None, help="frame size in the cache (default: the preset's)")
    c.add_argument("--cache-dir", default=None, help="where the .npy files go (default <dataset>/.gqnbench-cache)")
    c.add_argument("--splits", nargs="+", default=["train", "test"], choices=("train", "test"))
    c.add_argument("--workers", type=int, default=None, help="decoding processes (default: all cores)")
    c.add_argument("--quiet", action="store_true", help="no progress bar")
    add_preset_arguments(c)
    c.set_defaults(func=_cache)
