"""`hiast` command line: one subcommand per pipeline stage (Snakemake rules call these)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path


def _cmd_generate(args: argparse.Namespace) -> None:
    from hiast import synthetic
    counts = dict(synthetic.DEFAULT_COUNTS)
    for item in args.count or []:
        name, _, value = item.partition("=")
        if name not in counts or not value.isdigit():
            raise SystemExit(f"--count {item!r}: expected NAME=N with NAME in {sorted(counts)}")
        counts[name] = int(value)
    summary = synthetic.generate_benchmark(args.root, seed=args.seed, height=args.height, width=args.width,
                                           counts=counts, workers=args.workers)
    print(f"wrote the synthetic benchmark under {args.root}: {summary.get('counts', summary)}")


def _cmd_manifest(args: argparse.Namespace) -> None:
    from hiast import datasets
    table = datasets.build_manifest(args.dataset, args.root, splits=args.splits, workers=args.workers,
                                    progress=True)
    datasets.write_manifest(table, args.output)
    print(f"{args.output}: {len(table)} images ({table.split.value_counts().to_dict()}), "
          f"{datasets.size_mismatches(table)} label(s) resized to their image size")


def _cmd_bench_learnability(args: argparse.Namespace) -> None:
    from hiast import learnability
    from hiast.scenario import load_scenario
    scenario = load_scenario(args.scenario)
    result = learnability.run(scenario, args.output, device_name=args.device, seed=args.seed)
    print(f"{args.output}: source held-out {result['metric']} {result['source_holdout_miou']:.1f}, "
          f"source-only on target val {result['source_only_target_miou']:.1f}, oracle "
          f"{result['oracle_target_miou']:.1f}, ratio {result['ratio_to_oracle']:.2f} "
          f"({'meets' if result['passes'] else 'misses'} the >=50 / <=0.70 bar)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hiast",
        description="HIAST unsupervised domain adaptation for semantic segmentation. Each subcommand is one "
                    "stage of the Snakemake pipeline (workflow/Snakefile); it reads the files named by its "
                    "options and writes its outputs atomically (temporary name, then rename).")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    gen = sub.add_parser("generate", help="write the embedded synthetic benchmark (four dataset roots)",
                         description="Reads nothing. Writes GTA5/, SYNTHIA_RAND_CITYSCAPES/, cityscapes/ and "
                                     "oxford_robotcar/ under ROOT in the real datasets' on-disk formats, "
                                     "then ROOT/.complete.")
    gen.add_argument("--root", default="data/synthetic", help="output folder (default: data/synthetic)")
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--height", type=int, default=256)
    gen.add_argument("--width", type=int, default=512)
    gen.add_argument("--workers", type=int, default=2)
    gen.add_argument("--count", action="append", metavar="NAME=N",
                     help="images per dataset split, e.g. gta5=600 (repeatable)")
    gen.set_defaults(func=_cmd_generate)

    man = sub.add_parser("manifest", help="scan and verify a dataset root into a manifest CSV",
                         description="Reads every image and label under ROOT (decoding them fully, so that "
                                     "truncated files and unknown label values are found now). Writes the "
                                     "manifest CSV (columns image_id, image, label, split, height, width, "
                                     "label_height, label_width, dataset).")
    man.add_argument("dataset", choices=["gta5", "synthia", "cityscapes", "oxford"])
    man.add_argument("root", help="dataset root in its official layout")
    man.add_argument("output", help="manifest CSV to write")
    man.add_argument("--splits", nargs="+", help="splits to scan (default: all of the dataset's)")
    man.add_argument("--workers", type=int, default=2)
    man.set_defaults(func=_cmd_manifest)

    bench = sub.add_parser("bench", help="benchmarks (method results, speed); see BENCHMARKS.md")
    bench_sub = bench.add_subparsers(dest="bench", required=True, metavar="BENCHMARK")
    learn = bench_sub.add_parser(
        "learnability", help="source-only vs oracle on a scenario (is the task learnable, is the gap real)",
        description="Reads the scenario's source and target roots. Trains the scenario's model with its "
                    "source-only warm-up budget on the source, then on the target's labels (the oracle); "
                    "writes a JSON with held-out source mIoU, target-val mIoU of both, and their ratio.")
    learn.add_argument("--scenario", required=True, help="config/scenarios/<name>.yaml")
    learn.add_argument("--output", required=True, type=Path, help="JSON to write")
    learn.add_argument("--device", default="auto")
    learn.add_argument("--seed", type=int, default=None, help="default: the scenario's seed")
    learn.set_defaults(func=_cmd_bench_learnability)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    from hiast.config import ConfigError
    from hiast.datasets import DatasetError
    from hiast.model import CheckpointError
    try:
        args.func(args)
    except (DatasetError, ConfigError, CheckpointError) as err:
        print(f"hiast {args.command}: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
