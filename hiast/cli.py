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
                                           counts=counts, workers=args.workers, gap=args.gap)
    print(f"wrote the synthetic benchmark under {args.root}: {summary.get('counts', summary)}")


def _cmd_manifest(args: argparse.Namespace) -> None:
    from hiast import datasets
    if args.copy_from is not None:      # the same root scanned the same way for another run: reuse it
        table = datasets.read_manifest(args.copy_from)
        if set(table.dataset) != {args.dataset} or not set(table.split) <= set(args.splits or table.split):
            raise datasets.DatasetError(f"{args.copy_from}: a manifest of {sorted(set(table.dataset))} "
                                        f"{sorted(set(table.split))}, not of {args.dataset} {args.splits}")
    else:
        table = datasets.build_manifest(args.dataset, args.root, splits=args.splits, workers=args.workers,
                                        progress=True)
    datasets.write_manifest(table, args.output)
    print(f"{args.output}: {len(table)} images ({table.split.value_counts().to_dict()}), "
          f"{datasets.size_mismatches(table)} label(s) resized to their image size")


def _cmd_bench_ias(args: argparse.Namespace) -> None:
    import torch
    from hiast import speed
    torch.set_num_threads(args.threads)
    result = speed.ias_speed(args.height, args.width, args.repeats, device=args.device)
    speed.write_json(result, args.output)
    print(f"IAS step, one instance {result['shape']} on {result['device']} ({result['torch_threads']} threads): "
          f"ours {1000 * result['ours_s']:.1f} ms; official way {1000 * result['official_s']:.0f} ms "
          f"({result['speedup_vs_official']:.0f}x); plain numpy loop {1000 * result['numpy_loop_s']:.0f} ms "
          f"({result['speedup_vs_numpy_loop']:.1f}x). Same thresholds, labels and counts as the numpy loop: "
          f"{result['thresholds_equal_numpy_loop']}, {result['labels_equal_numpy_loop']}, "
          f"{result['counts_equal_numpy_loop']}; labels agreeing with the official (float16) way: "
          f"{100 * result['label_agreement_vs_official']:.3f}%")


def load_scenario_every_round(path: Path, settings: list[str]):
    """The scenario file with ["train.workers=1", ...] set in every round (values read as YAML)."""
    import yaml

    from hiast.config import ConfigError, build, load_yaml
    from hiast.scenario import Scenario
    from hiast.workflow import EVERY_ROUND, apply_smoke
    sections: dict[str, dict] = {}
    for setting in settings:
        key, sep, value = setting.partition("=")
        section, dot, name = key.strip().partition(".")
        if not sep or not dot or not name:
            raise ConfigError(f"--every-round {setting!r}: expected SECTION.KEY=VALUE, e.g. train.workers=1")
        sections.setdefault(section, {})[name] = yaml.safe_load(value)
    raw = apply_smoke(load_yaml(path), {EVERY_ROUND: sections} if sections else None)
    raw.setdefault("name", Path(path).stem)
    return build(Scenario, raw, where=str(path))


def _cmd_bench_stage(args: argparse.Namespace) -> None:
    import tempfile

    import torch
    from hiast import speed
    torch.set_num_threads(args.threads)
    scenario = load_scenario_every_round(args.scenario, args.every_round)
    with tempfile.TemporaryDirectory(prefix="hiast-bench-") as tmp:
        if args.bench == "pseudo":
            result = speed.pseudo_stage_speed(scenario, Path(tmp), args.model, args.max_images, args.device,
                                               args.repeats)
            summary = (f"pseudo-labelling {result['images']} images at {result['inference_size']}: stage "
                       f"{result['stage_images_per_s']:.1f} img/s, pure forward {result['forward_images_per_s']:.1f} "
                       f"img/s, ratio {result['ratio_stage_to_forward']:.2f} (median of the {result['repeats']} "
                       f"paired ratios {result['ratio_stage_to_forward_paired']:.2f}); CPU seconds: forward "
                       f"{result['cpu_s'][result['baseline_forward']]:.1f}, stage {result['cpu_s']['stage']:.1f} "
                       f"(ratio {result['ratio_forward_cpu_to_stage_cpu']:.2f}), utilisation of the "
                       f"{result['usable_cpus']} CPU(s) {result['cpu_utilisation'][result['baseline_forward']]:.0%} / "
                       f"{result['cpu_utilisation']['stage']:.0%}")
        else:
            result = speed.train_step_speed(scenario, Path(tmp), args.model, args.iterations, args.device,
                                            args.repeats)
            summary = (f"self-training iteration {1000 * result['iteration_s']:.0f} ms (serial "
                       f"{1000 * result['iteration_serial_s']:.0f}, overlapped {1000 * result['iteration_overlap_s']:.0f}), "
                       f"bare forward/backward {1000 * result['bare_fwd_bwd_s']:.0f} ms at {result['torch_threads']} "
                       f"thread(s), ratio {result['ratio']:.2f} (serial {result['ratio_serial']:.2f}, overlapped "
                       f"{result['ratio_overlap']:.2f}); on their own: "
                       f"loading {1000 * result['data_loading_s']:.0f} ms, teacher forward "
                       f"{1000 * result['teacher_forward_s']:.0f} ms, EMA {1000 * result['ema_s']:.1f} ms, "
                       f"full objective fwd/bwd {1000 * result['full_objective_fwd_bwd_s']:.0f} ms, the student's "
                       f"share of it {1000 * result['student_objective_s']:.0f} ms (taped "
                       f"{1000 * result['student_objective_taped_s']:.0f}, fused "
                       f"{1000 * result['student_objective_fused_s']:.0f}); steady state, the round's setup "
                       f"{result['round_setup_s']:.1f} s apart; two single-threaded processes together did "
                       + ", ".join(f"{v['throughput_of_two']:.2f}x one's {k} work"
                                   for k, v in result["core_scaling"].items())
                       + "; largest extra operators over "
                       "the bare step (ms): " + ", ".join(f"{r['op']} {r['ms']:+.1f}"
                                                           for r in result["profile_objective_minus_bare_ms"][:5]))
    speed.write_json(result, args.output)
    print(summary)


def _cmd_bench_shards(args: argparse.Namespace) -> None:
    import tempfile

    from hiast import speed
    with tempfile.TemporaryDirectory(prefix="hiast-bench-") as tmp:
        r = speed.shard_speed(args.scenario, Path(tmp), args.model, args.shards, args.threads, args.max_images)
    speed.write_json(r, args.output)
    print(f"pseudo-labelling {r['images']} images: one process ({r['threads_one_process']} threads) "
          f"{r['one_process_s']:.1f} s, one process ({r['threads_per_shard']} thread(s)) "
          f"{r['one_process_same_threads_s']:.1f} s; {r['shards']} shards {r['shard_inference_s']:.1f} s + IAS pass "
          f"{r['ias_pass_s']:.1f} s = {r['sharded_total_s']:.1f} s: speed-up {r['speedup_over_one_process']:.2f} "
          f"({r['speedup_over_one_process_same_threads']:.2f} at equal threads per process); labels and "
          f"thresholds byte-identical to one process at {r['threads_per_shard']} thread(s): "
          f"{r['identical_to_one_process_same_threads']}")


def _cmd_bench_runtime(args: argparse.Namespace) -> None:
    from hiast import speed
    from hiast.imageio import atomic_path
    text = speed.runtime_markdown(speed.rule_runtimes(args.results))
    if args.output is not None:
        with atomic_path(args.output) as tmp:
            tmp.write_text(text)
    print(text, end="")


def _cmd_bench_gpu(args: argparse.Namespace) -> None:
    import json

    from hiast import gpubench, speed
    result = gpubench.run()
    speed.write_json(result, args.output)
    print(json.dumps(result, indent=1))


def _cmd_bench_learnability(args: argparse.Namespace) -> None:
    from hiast import learnability
    from hiast.scenario import load_scenario
    scenario = load_scenario(args.scenario)
    result = learnability.run(scenario, args.output, device_name=args.device, seed=args.seed)
    print(f"{args.output}: source held-out {result['metric']} {result['source_holdout_miou']:.1f}, "
          f"source-only on target val {result['source_only_target_miou']:.1f}, oracle "
          f"{result['oracle_target_miou']:.1f}, ratio {result['ratio_to_oracle']:.2f} "
          f"({'meets' if result['passes'] else 'misses'} the >=50 / <=0.70 bar)")


def _cmd_bench_adabn(args: argparse.Namespace) -> None:
    import torch
    from hiast import adabn, engine
    from hiast.scenario import load_scenario
    torch.set_num_threads(args.threads)
    scenario = load_scenario(args.scenario, {"seed": args.seed} if args.seed is not None else None)
    models = {"warmup": args.run / "warmup" / "model.pt"}
    for r in range(1, len(scenario.rounds) + 1):
        for name, file in (("student", "model.pt"), ("teacher", "teacher.pt")):
            models[f"round_{r}/{name}"] = args.run / f"round_{r}" / file
    missing = [str(p) for p in models.values() if not p.is_file()]
    if missing:
        raise SystemExit(f"hiast bench adabn: {len(missing)} model(s) missing under {args.run}, e.g. {missing[0]}")
    table = adabn.run(scenario, args.run / "manifests" / "target.csv", models, args.output,
                      engine.device_of(args.device), images=args.images)
    print(table[["model", *scenario.metrics]].to_string(index=False, float_format="%.1f"))
    print(f"wrote {args.output}")


def _stage_setup(args: argparse.Namespace):
    """The scenario slice a rule passed, torch threads, and the device."""
    import torch
    from hiast import engine
    from hiast.workflow import scenario_from_json
    torch.set_num_threads(getattr(args, "threads", 1))
    if args.scenario is not None:
        from hiast.scenario import load_scenario
        scenario = load_scenario(args.scenario)
    else:
        scenario = scenario_from_json(args.config)
    device = engine.device_of(getattr(args, "device", "auto") if getattr(args, "device", "auto") != "auto"
                              else scenario.device)
    engine.check_precision(scenario.model.precision, device)
    return scenario, device


def _cmd_warmup(args):
    from hiast import stages
    scenario, device = _stage_setup(args)
    stages.warmup(scenario, args.source_manifest, args.target_manifest, args.output, args.state_dir, device,
                  copy_from=args.copy_from)
    print(f"wrote {args.output}")


def _cmd_oracle(args):
    from hiast import stages
    scenario, device = _stage_setup(args)
    table = stages.oracle(scenario, args.manifest, args.output, args.eval_output, args.state_dir, device)
    if table is not None:
        print(table[["model", *scenario.metrics]].to_string(index=False, float_format="%.2f"))
    print(f"wrote {args.output} and {args.eval_output}")


def _cmd_pseudo(args):
    from hiast import stages
    scenario, device = _stage_setup(args)
    if args.shard is not None:
        if args.from_shards:
            raise SystemExit("--shard and --from-shards exclude each other: infer one shard, or label from all")
        stages.pseudo_shard(scenario, args.round, args.model, args.manifest, args.shard, args.output, device)
    else:
        stages.pseudo_labels(scenario, args.round, args.model, args.manifest, args.output, device,
                             shard_paths=args.from_shards or None)
    print(f"wrote {args.output}")


def _cmd_bank(args):
    from hiast import stages
    scenario, _ = _stage_setup(args)
    stages.instance_bank(scenario, args.round, args.pseudo_labels, args.manifest, args.output)
    print(f"wrote {args.output}")


def _cmd_train(args):
    from hiast import stages
    scenario, device = _stage_setup(args)
    stages.self_train(scenario, args.round, args.init, args.pseudo_labels, args.bank, args.manifest,
                      args.output, args.teacher_output, args.state_dir, device, source_manifest=args.source_manifest)
    print(f"wrote {args.output} and {args.teacher_output}")


def _cmd_eval(args):
    from hiast import stages
    scenario, device = _stage_setup(args)
    models = {}
    for item in args.model:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise SystemExit(f"--model {item!r}: expected NAME=PATH")
        models[name] = Path(path)
    table = stages.evaluate(scenario, args.manifest, models, args.output, args.masks, device)
    print(table[["model", *scenario.metrics]].to_string(index=False, float_format="%.2f"))
    print(f"wrote {args.output}")


def _cmd_summary(args):
    from hiast import stages
    scenario, _ = _stage_setup(args)
    table = stages.summary(scenario, args.warmup, args.rounds, args.output)
    print(table[["stage", "model", *scenario.metrics]].to_string(index=False, float_format="%.2f"))


def _cmd_table(args):
    from hiast import stages
    print(stages.results_table(args.summaries, args.output, args.reported))
    print(f"results table: {args.output}")


def _cmd_experiments(args):
    from hiast import experiments
    oracles = {}
    for item in args.oracle or []:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise SystemExit(f"--oracle {item!r}: expected SCENARIO=EVAL_CSV")
        oracles[name] = Path(path)
    print(experiments.write_seed_table(args.summaries, args.output, oracles))
    print(f"experiments table: {args.output}")


def _add_stage_options(parser: argparse.ArgumentParser, threads: bool = True) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--config", help="the scenario slice as JSON (the rule's params; unset parts take "
                                         "defaults)")
    source.add_argument("--scenario", type=Path, help="a scenario file (config/scenarios/<name>.yaml) instead")
    if threads:
        parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
        parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 ... (default: the config's)")


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
    gen.add_argument("--gap", type=float, default=1.0,
                     help="domain-gap multiplier (0: one average style for all domains; 1: calibrated)")
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
    man.add_argument("--copy-from", type=Path, help="a manifest of the same root and splits made for another run: "
                                                    "check and reuse it instead of scanning again")
    man.set_defaults(func=_cmd_manifest)

    p = sub.add_parser("warmup", help="warm-up: source-only then adversarial training",
                       description="Reads the source and target manifests (and their images). Writes the "
                                   "warm-up weights (a plain state dict); resumable state under --state-dir.")
    _add_stage_options(p)
    p.add_argument("--source-manifest", required=True, type=Path)
    p.add_argument("--target-manifest", required=True, type=Path)
    p.add_argument("--output", required=True, type=Path)
    p.add_argument("--state-dir", required=True, type=Path)
    p.add_argument("--copy-from", type=Path, help="the same warm-up, already trained for another run: copy it")
    p.set_defaults(func=_cmd_warmup)

    p = sub.add_parser("oracle", help="the oracle: the warm-up's model and budget trained on target labels",
                       description="Reads the target manifest (train labels; the synthetic Oxford's hidden "
                                   "anno_train/). Writes the oracle's weights and its eval.csv on target val "
                                   "(model 'oracle'), the reference of the benchmark tables' 'gap closed'.")
    _add_stage_options(p)
    p.add_argument("--manifest", required=True, type=Path)
    p.add_argument("--output", required=True, type=Path)
    p.add_argument("--eval-output", required=True, type=Path)
    p.add_argument("--state-dir", required=True, type=Path)
    p.set_defaults(func=_cmd_oracle)

    p = sub.add_parser("pseudo", help="pseudo-labels of the target train split (IAS, CBST, CT or NT)",
                       description="Reads a model's weights and the target manifest. Writes pseudo_labels.h5: "
                                   "image_ids, labels [N,H,W] uint8 (255 = none), thresholds [N,C], attributes "
                                   "policy, alpha, beta, gamma, num_classes, class_mean_conf. Sharded (the "
                                   "round's pseudo.shards = K): K runs with --shard k each write the model "
                                   "outputs of every K-th instance (model_outputs_k.h5: conf float32, pred "
                                   "uint8), then one run with --from-shards reads them back for the sequential "
                                   "IAS pass; the labels are byte-identical to one process's (same device "
                                   "kind and CPU thread count).")
    _add_stage_options(p)
    p.add_argument("--round", required=True, type=int)
    p.add_argument("--model", required=True, type=Path)
    p.add_argument("--manifest", required=True, type=Path)
    p.add_argument("--output", required=True, type=Path)
    p.add_argument("--shard", type=int, help="infer only shard k (0-based) and write its model outputs")
    p.add_argument("--from-shards", nargs="+", type=Path, metavar="OUTPUTS",
                   help="label from the shards' model outputs (in shard order) instead of running the model")
    p.set_defaults(func=_cmd_pseudo)

    p = sub.add_parser("bank", help="hard-class instance bank (HPLA) from the pseudo-labels",
                       description="Reads pseudo_labels.h5 and the target images. Writes instance_bank.h5: "
                                   "hard_classes, class_mean_conf, sampling_prob, donors/<class>, donor regions.")
    _add_stage_options(p, threads=False)
    p.add_argument("--round", required=True, type=int)
    p.add_argument("--pseudo-labels", required=True, type=Path)
    p.add_argument("--manifest", required=True, type=Path)
    p.add_argument("--output", required=True, type=Path)
    p.set_defaults(func=_cmd_bank)

    p = sub.add_parser("train", help="one self-training round (student + EMA teacher)",
                       description="Reads the initial student weights, pseudo_labels.h5, instance_bank.h5 and "
                                   "the target images (and the source images with --source-manifest, read when "
                                   "train.source_weight > 0). Writes the student and teacher weights; resumable state "
                                   "under --state-dir (saved on SIGTERM / SIGUSR2 and every few hundred "
                                   "iterations).")
    _add_stage_options(p)
    p.add_argument("--round", required=True, type=int)
    p.add_argument("--init", required=True, type=Path)
    p.add_argument("--pseudo-labels", required=True, type=Path)
    p.add_argument("--bank", required=True, type=Path)
    p.add_argument("--manifest", required=True, type=Path)
    p.add_argument("--output", required=True, type=Path)
    p.add_argument("--teacher-output", required=True, type=Path)
    p.add_argument("--state-dir", required=True, type=Path)
    p.add_argument("--source-manifest", type=Path,
                   help="manifests/source.csv; needed when the round's train.source_weight > 0")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("eval", help="evaluate models on the target val split -> eval.csv",
                       description="Reads model weights and the target manifest. Writes eval.csv (a row per "
                                   "model; columns: model, the scenario's metrics, per-class IoU in percent) "
                                   "and a few colour masks under --masks.")
    _add_stage_options(p)
    p.add_argument("--manifest", required=True, type=Path)
    p.add_argument("--model", required=True, action="append", metavar="NAME=PATH")
    p.add_argument("--output", required=True, type=Path)
    p.add_argument("--masks", type=Path, default=None)
    p.set_defaults(func=_cmd_eval)

    p = sub.add_parser("summary", help="a scenario's summary.csv from its eval.csv files",
                       description="Reads warmup/eval.csv and round_<r>/eval.csv. Writes summary.csv: a row "
                                   "per stage and model, columns = the scenario's metrics and per-class IoU.")
    _add_stage_options(p, threads=False)
    p.add_argument("--warmup", required=True, type=Path)
    p.add_argument("--rounds", nargs="*", type=Path, default=[])
    p.add_argument("--output", required=True, type=Path)
    p.set_defaults(func=_cmd_summary)

    p = sub.add_parser("table", help="results/summary.md across scenarios",
                       description="Reads the scenarios' summary.csv. Writes a markdown table: rows = "
                                   "scenarios, columns = mIoU-19, mIoU-16, mIoU-13, mIoU-9.")
    p.add_argument("summaries", nargs="+", type=Path)
    p.add_argument("--output", required=True, type=Path)
    p.add_argument("--reported", default="student", help="the model reported per round (student or teacher)")
    p.set_defaults(func=_cmd_table)

    p = sub.add_parser("experiments", help="mean ± std over seeds of runs and their variants, with the oracles",
                       description="Reads runs' summary.csv (runs named <scenario>@<variant>+seed<N>) and the "
                                   "oracles' eval.csv. Writes a markdown table (and a .csv beside it): per run "
                                   "without its seeds and per stage, mean ± std of each metric, the oracle, and "
                                   "the share of the warm-up -> oracle gap closed.")
    p.add_argument("summaries", nargs="+", type=Path)
    p.add_argument("--oracle", action="append", metavar="SCENARIO=EVAL_CSV")
    p.add_argument("--output", required=True, type=Path)
    p.set_defaults(func=_cmd_experiments)

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
    adabn_p = bench_sub.add_parser(
        "adabn", help="each model of a run as saved and with BatchNorm statistics re-estimated on the target",
        description="Reads a run folder (results/<scenario>: the warm-up and every round's student and teacher, "
                    "manifests/target.csv) and the target images. Evaluates each model on target val as saved "
                    "and after AdaBN (running statistics re-estimated on --images target train crops, no label, "
                    "no training); writes one CSV (a row per model and variant).")
    adabn_p.add_argument("--scenario", required=True, type=Path, help="config/scenarios/<name>.yaml")
    adabn_p.add_argument("--run", required=True, type=Path, help="results/<scenario>[@<variant>]")
    adabn_p.add_argument("--seed", type=int, default=None, help="the run's seed (default: the scenario's)")
    adabn_p.add_argument("--images", type=int, default=400, help="target train images to estimate from")
    adabn_p.add_argument("--threads", type=int, default=2)
    adabn_p.add_argument("--device", default="auto")
    adabn_p.add_argument("--output", required=True, type=Path, help="CSV to write")
    adabn_p.set_defaults(func=_cmd_bench_adabn)
    ias = bench_sub.add_parser(
        "ias", help="the IAS step against the official way of computing it, same arrays, one run",
        description="Reads nothing (synthetic model outputs shaped like Cityscapes). Times one IAS step "
                    "(threshold update, selection, per-class statistics) for an instance of 2 images, ours "
                    "against the official code's way, alternating; prints both and the ratio.")
    ias.add_argument("--height", type=int, default=768)
    ias.add_argument("--width", type=int, default=1536)
    ias.add_argument("--repeats", type=int, default=5)
    ias.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    ias.add_argument("--device", default="cpu")
    ias.add_argument("--output", type=Path, help="JSON to write (optional)")
    ias.set_defaults(func=_cmd_bench_ias)
    for name, text in (("pseudo", "the whole pseudo-labelling stage against the model's pure forward"),
                       ("train", "a self-training iteration against a bare forward/backward, with its parts")):
        stage = bench_sub.add_parser(
            name, help=text,
            description=f"Reads the scenario's target root (and --model, else a fresh model). Measures {text}, "
                        f"in one run; writes nothing but the optional JSON (work files go to a temporary folder).")
        stage.add_argument("--scenario", required=True, type=Path, help="config/scenarios/<name>.yaml")
        stage.add_argument("--model", type=Path, help="weights to use (default: a freshly initialised model)")
        stage.add_argument("--threads", type=int, default=2, help="torch CPU threads")
        stage.add_argument("--device", default="cpu")
        stage.add_argument("--output", type=Path, help="JSON to write (optional)")
        if name == "pseudo":
            stage.add_argument("--max-images", type=int, default=0, help="use only the first N target images")
            stage.add_argument("--repeats", type=int, default=3,
                               help="alternate the forwards and the whole stage this many times; medians")
        else:
            stage.add_argument("--iterations", type=int, default=20)
            stage.add_argument("--repeats", type=int, default=3,
                               help="alternate the whole-iteration and bare timings this many times; medians")
        stage.add_argument("--every-round", action="append", default=[], metavar="SECTION.KEY=VALUE",
                           help="set a round option in every round, e.g. train.workers=1 (YAML value; "
                                "repeatable)")
        stage.set_defaults(func=_cmd_bench_stage)
    shards = bench_sub.add_parser(
        "shards", help="sharded pseudo-labelling (K processes, then the IAS pass) against one process",
        description="Reads the scenario's target root (and --model, else a fresh model). Runs `hiast pseudo` as "
                    "one process with --threads, as one process with the shards' thread count, and as --shards "
                    "inference processes side by side then the sequential IAS pass; prints the wall times, the "
                    "speed-up, and whether labels and thresholds are byte-identical. Work files go to a "
                    "temporary folder; writes nothing but the optional JSON.")
    shards.add_argument("--scenario", required=True, type=Path, help="config/scenarios/<name>.yaml")
    shards.add_argument("--model", type=Path, help="weights to use (default: a freshly initialised model)")
    shards.add_argument("--shards", type=int, default=2)
    shards.add_argument("--threads", type=int, default=2, help="torch CPU threads of the one-process run; "
                                                               "each shard gets threads // shards")
    shards.add_argument("--max-images", type=int, default=0, help="use only the first N target images")
    shards.add_argument("--output", type=Path, help="JSON to write (optional)")
    shards.set_defaults(func=_cmd_bench_shards)
    runtime = bench_sub.add_parser(
        "runtime", help="wall time and peak memory per rule of a finished run (Snakemake's benchmark files)",
        description="Reads RESULTS/benchmarks/*.tsv and RESULTS/<scenario>/benchmarks/*.tsv (written by the "
                    "rules' `benchmark:` directives). Prints a markdown table per scenario and rule with the "
                    "totals; writes it to --output if given.")
    runtime.add_argument("--results", type=Path, default=Path("results"))
    runtime.add_argument("--output", type=Path, help="markdown file to write (optional)")
    runtime.set_defaults(func=_cmd_bench_runtime)
    gpu = bench_sub.add_parser(
        "gpu", help="cluster GPU: matmul rate, R101 training fp32 vs bf16+channels_last, pseudo-labelling",
        description="Reads nothing (random weights and inputs). On one CUDA GPU, in a few minutes: the card's "
                    "matrix-multiply rate, DeepLabV2 ResNet-101 training at 512x1024 batch 2 in fp32 and bf16 "
                    "autocast with channels_last (images/s, peak memory, achieved FLOP/s over the matmul rate), "
                    "and pseudo-labelling at 768x1536 with the IAS step's share of the forward pass.")
    gpu.add_argument("--output", type=Path, help="JSON to write (optional)")
    gpu.set_defaults(func=_cmd_bench_gpu)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    from hiast.config import ConfigError
    from hiast.datasets import DatasetError
    from hiast.checkpoint import Diverged, Interrupted
    from hiast.h5io import H5FormatError
    from hiast.diskspace import DiskSpaceError
    from hiast.model import CheckpointError
    from hiast.allocator import keep_freed_memory
    try:
        keep_freed_memory()      # large CPU tensors reuse freed heap blocks instead of faulting in fresh pages
    except ValueError as err:
        print(f"hiast {args.command}: error: {err}", file=sys.stderr)
        return 2
    try:
        args.func(args)
    except (DatasetError, ConfigError, CheckpointError, H5FormatError, Diverged, DiskSpaceError) as err:
        print(f"hiast {args.command}: error: {err}", file=sys.stderr)
        return 2
    except Interrupted as err:
        print(f"hiast {args.command}: {err}; rerun the same command to resume", file=sys.stderr)
        return Interrupted.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
