"""Speed benchmarks (`hiast bench ias`, `hiast bench shards`): figures and ratios measured in one run.

Each benchmark times the candidate and its reference on the same inputs in the same process, alternating
them, and reports medians and the ratio, so that the noise of a shared machine hits both alike.
"""

from __future__ import annotations

import json
import logging
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from hiast import pseudo
from hiast.imageio import atomic_path

log = logging.getLogger(__name__)

# Cityscapes train-id pixel shares (approximate), so that the per-class sizes look like a real instance.
CITYSCAPES_SHARES = np.array([32.6, 5.4, 20.2, 0.6, 0.8, 1.1, 0.2, 0.5, 14.1, 1.0, 3.6, 1.1, 0.1, 6.2, 0.2,
                              0.2, 0.2, 0.1, 0.4])


def instance_arrays(height: int = 768, width: int = 1536, images: int = 2, seed: int = 0,
                    num_classes: int = 19) -> tuple[np.ndarray, np.ndarray]:
    """(conf float32, pred uint8) [images, height, width] shaped like a segmentation model's output on
    street scenes: Cityscapes class shares, confidences crowding below 1 (a beta tail) and 15% exactly 1."""
    if not 1 <= num_classes <= len(CITYSCAPES_SHARES):
        raise ValueError(f"num_classes: expected 1..{len(CITYSCAPES_SHARES)}, got {num_classes}")
    rng = np.random.default_rng(seed)
    shares = CITYSCAPES_SHARES[:num_classes] / CITYSCAPES_SHARES[:num_classes].sum()
    pred = rng.choice(num_classes, size=(images, height, width), p=shares).astype(np.uint8)
    conf = 1 - rng.beta(0.35, 3.0, size=pred.shape) * (1 - 1 / num_classes)
    conf[rng.random(pred.shape) < 0.15] = 1.0
    return conf.astype(np.float32), pred


def official_ias_step(thresholds: np.ndarray, conf: np.ndarray, pred: np.ndarray, alpha: float, beta: float,
                      gamma: float, mean_conf: np.ndarray, momentum: float = 0.99):
    """One IAS step the way the official HIAST code computes it (`IASPseudoGenerator.run` and
    `select_and_save_confident_label`, reference §1.1), rewritten here for timing: per class a Python list
    holding the previous threshold and the class's confidences as float16 scalars, np.quantile over it,
    float32 instance thresholds; per image the thresholds mapped to the pixels with np.apply_along_axis over
    the rows (a Python lookup per pixel); per class the pixel counts with Python's sum and the mean
    confidence with np.mean. Returns (thresholds, labels, mean_conf, pixel_counts [images, C])."""
    num_classes = len(thresholds)
    lists = {c: [thresholds[c]] for c in range(num_classes)}
    for c in range(num_classes):
        lists[c].extend(conf[pred == c].astype(np.float16))
    instance = np.ones(num_classes, dtype=np.float32)
    for c in range(num_classes):
        instance[c] = np.quantile(lists[c], 1 - alpha * thresholds[c] ** gamma)
    new = beta * thresholds + (1 - beta) * instance
    new[new >= 1] = 0.999
    labels, counts = [], np.zeros((len(pred), num_classes), dtype=np.int64)
    for k, (image_conf, image_pred) in enumerate(zip(conf, pred)):
        pixel_thresholds = np.apply_along_axis(lambda row: [new[e] for e in row], 1, image_pred)
        image_labels = image_pred.copy()
        image_labels[image_conf < pixel_thresholds] = 255
        for c in range(num_classes):
            counts[k, c] = int(sum(sum(image_labels == c)))
        labels.append(image_labels)
    labels = np.stack(labels)
    mean_conf = mean_conf.copy()
    for c in range(num_classes):
        kept = labels == c
        if kept.any():
            value = np.mean(conf[kept])
            mean_conf[c] = value if mean_conf[c] == 0 else momentum * mean_conf[c] + (1 - momentum) * value
    return new, labels, mean_conf, counts


def numpy_loop_ias_step(thresholds: np.ndarray, conf: np.ndarray, pred: np.ndarray, alpha: float, beta: float,
                        gamma: float, mean_conf: np.ndarray, momentum: float = 0.99):
    """A second, stronger reference: the same step written plainly with vectorised numpy (a loop over the
    classes with np.quantile on arrays, a fancy-indexed threshold map, np.bincount statistics)."""
    num_classes = len(thresholds)
    flat_conf, flat_pred = conf.reshape(-1).astype(np.float64), pred.reshape(-1)
    new = thresholds.copy()
    for c in range(num_classes):
        values = np.concatenate([[thresholds[c]], flat_conf[flat_pred == c]])
        new[c] = beta * thresholds[c] + (1 - beta) * np.quantile(values, 1 - alpha * thresholds[c] ** gamma)
    new[new >= 1] = 0.999
    labels = np.where(conf >= new[pred], pred, 255).astype(np.uint8)
    image = np.repeat(np.arange(len(pred)), labels[0].size) * 256
    counts = np.bincount(image + labels.reshape(-1), minlength=256 * len(pred)).reshape(len(pred), 256)
    flat_labels = labels.reshape(-1)
    sums = np.bincount(flat_labels, weights=flat_conf, minlength=256)[:num_classes]
    total = counts[:, :num_classes].sum(0)
    mean_conf = mean_conf.copy()
    batch = np.divide(sums, total, out=np.zeros(num_classes), where=total > 0)
    mean_conf = np.where(total > 0, np.where(mean_conf == 0, batch, momentum * mean_conf + (1 - momentum) * batch),
                         mean_conf)
    return new, labels, mean_conf, counts[:, :num_classes]


def _median_time(fn, repeats: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def ias_speed(height: int = 768, width: int = 1536, repeats: int = 5, seed: int = 0,
              device: str = "cpu") -> dict:
    """The IAS step (threshold update, selection, per-class statistics) for one instance of 2 images:
    `hiast.pseudo.IASState.step` against the official code's way and a plain vectorised-numpy loop, on the
    same arrays; medians of `repeats` warm runs (the official way, which takes most of a second, of two)."""
    conf, pred = instance_arrays(height, width, seed=seed)
    num_classes, alpha, beta, gamma = 19, 0.5, 0.9, 8.0
    start = np.full(num_classes, 0.9)
    conf_t, pred_t = torch.from_numpy(conf).to(device), torch.from_numpy(pred).to(device)
    times = {"ours": [], "numpy_loop": [], "official": []}
    results = {}
    runs = {"ours": lambda: _synced(pseudo.IASState(num_classes, alpha, beta, gamma).step, conf_t, pred_t),
            "numpy_loop": lambda: numpy_loop_ias_step(start, conf, pred, alpha, beta, gamma, np.zeros(num_classes)),
            "official": lambda: official_ias_step(start, conf, pred, alpha, beta, gamma, np.zeros(num_classes))}
    # each in a block of consecutive runs after one untimed run (warm caches for all three alike); the
    # official way, which takes most of a second, runs twice
    for name, fn in runs.items():
        results[name] = fn()
        for _ in range(repeats if name != "official" else 2):
            begin = time.perf_counter()
            results[name] = fn()
            times[name].append(time.perf_counter() - begin)
    ours, loop, official = (statistics.median(times[n]) for n in ("ours", "numpy_loop", "official"))
    step = results["ours"]
    labels = step.labels.cpu().numpy()
    return {
        "benchmark": "ias_step", "pixels_per_instance": int(conf.size), "shape": list(conf.shape),
        "device": str(device), "torch_threads": torch.get_num_threads(), "repeats": repeats,
        "ours_s": ours, "official_s": official, "numpy_loop_s": loop,
        "speedup_vs_official": official / ours, "speedup_vs_numpy_loop": loop / ours,
        # the same thresholds as the numpy loop (float64 np.quantile), bit for bit
        "thresholds_equal_numpy_loop": bool(np.array_equal(step.thresholds, results["numpy_loop"][0])),
        "labels_equal_numpy_loop": bool(np.array_equal(labels, results["numpy_loop"][1])),
        "counts_equal_numpy_loop": bool(np.array_equal(step.pixel_counts, results["numpy_loop"][3])),
        # the official casts confidences to float16 before the quantile: its thresholds differ slightly
        "max_threshold_difference_vs_official": float(np.abs(step.thresholds - results["official"][0]).max()),
        "label_agreement_vs_official": float((labels == results["official"][1]).mean()),
        "machine": machine(),
    }


def _synced(fn, *args):
    out = fn(*args)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return out


# The instruction sets that decide which oneDNN kernels run bf16 / fp32 convolutions on a CPU: two CPUs that
# differ here round differently, so the same seed gives other numbers (BENCHMARKS.md, "The whole default run").
KERNEL_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")


def cpu_info(cpuinfo: str | None = None) -> dict:
    """{"cpu_model", "cpu_flags"} from /proc/cpuinfo (or its text): the first processor's model name and which
    of KERNEL_FLAGS it has; None where the file is missing (not Linux)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return {"cpu_model": None, "cpu_flags": None}
    fields: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        if not line.strip():
            if fields:
                break                      # the first processor's block is enough
            continue
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    flags = set(fields.get("flags", "").split())
    return {"cpu_model": fields.get("model name"), "cpu_flags": [f for f in KERNEL_FLAGS if f in flags]}


def machine() -> dict:
    import os
    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(), **cpu_info(), "torch": torch.__version__,
            "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None}


def write_json(result: dict, output: str | Path | None) -> None:
    if output is None:
        return
    with atomic_path(output) as tmp:
        tmp.write_text(json.dumps(result, indent=1))


# --- how much a second CPU core adds --------------------------------------------------------------------------

PROBE_WORKLOADS = ("matmul", "elementwise")


def _probe_work(kind: str, repeats: int) -> None:
    if kind == "matmul":                        # compute-bound, like the convolutions
        a = torch.ones(512, 512) / 512
        for _ in range(repeats):
            a @ a
    else:                                       # memory-bound, like the losses over upsampled logits
        x = torch.zeros(4, 19, 128, 256)
        for _ in range(repeats):
            torch.exp(x, out=x).mul_(0.0)


def _probe_process(kind: str, repeats: int, barrier, results) -> None:
    torch.set_num_threads(1)
    _probe_work(kind, max(1, repeats // 10))            # warm-up
    barrier.wait()
    begin = time.perf_counter()
    _probe_work(kind, repeats)
    results.put(time.perf_counter() - begin)


def core_scaling(repeats: dict[str, int] | None = None, rounds: int = 3) -> dict:
    """Throughput of two single-threaded processes running together, relative to one running alone, for a
    compute-bound and a memory-bound workload: 2.0 = two independent cores; on a VM whose two vCPUs share a
    physical core it is much less, and work moved to "the other core" (a loader process, the teacher's thread)
    then slows the student's step. Alternates alone / together `rounds` times; medians."""
    import multiprocessing
    repeats = repeats or {"matmul": 400, "elementwise": 150}
    ctx = multiprocessing.get_context("spawn")
    out = {}
    for kind in PROBE_WORKLOADS:
        alone, together = [], []
        for _ in range(rounds):
            for processes, samples in ((1, alone), (2, together)):
                barrier, results = ctx.Barrier(processes), ctx.Queue()
                workers = [ctx.Process(target=_probe_process, args=(kind, repeats[kind], barrier, results))
                           for _ in range(processes)]
                for w in workers:
                    w.start()
                times = [results.get(timeout=600) for _ in workers]
                for w in workers:
                    w.join()
                samples.append(max(times))
        alone_s, together_s = statistics.median(alone), statistics.median(together)
        out[kind] = {"alone_s": alone_s, "two_together_s": together_s, "throughput_of_two": 2 * alone_s / together_s}
    return out


# --- the pseudo-labelling stage against the model's pure forward ------------------------------------------

def _bench_setup(scenario, workdir: Path, model_path: Path | None):
    """Target manifest and a model file for a scenario (a fresh model if none is given)."""
    from hiast import datasets, stages
    workdir.mkdir(parents=True, exist_ok=True)
    manifest = workdir / "target.csv"
    data = scenario.target
    datasets.write_manifest(datasets.build_manifest(data.dataset, data.root,
                                                    splits=[data.train_split, data.val_split]), manifest)
    if model_path is None:
        from hiast.model import save_weights
        model_path = workdir / "model.pt"
        save_weights(stages.new_model(scenario, pretrained=False), model_path)
    return manifest, model_path


def pseudo_stage_speed(scenario, workdir: Path, model_path: Path | None = None, max_images: int = 0,
                       device: str = "cpu", repeats: int = 3) -> dict:
    """Throughput of the whole pseudo-labelling stage (decode, inference, IAS, HDF5 write) over the model's
    pure forward (+ softmax max) on the same instances already in memory, measured in one run. On a CPU at
    T > 1 threads the stage runs T single-threaded forwards side by side (`stages.forward_streams`); the pure
    forward is timed both ways (T streams, and one forward on T threads) and the faster is the baseline. The
    forwards and the stage alternate `repeats` times: the headline ratio is of the medians; the paired one is
    the median of each repeat's faster forward over its own stage, timed next to each other, so that a drift of
    a shared machine's speed across the run hits both sides of each ratio alike. The CPU
    seconds of each are reported too: where both keep every usable CPU busy, the stage's ratio is bounded by
    forward CPU / stage CPU (what its decoding, IAS step and writes add), not by how well they overlap."""
    import dataclasses

    from hiast import prepare, stages
    if repeats < 1:
        raise ValueError(f"repeats: expected >= 1, got {repeats}")
    if max_images:
        scenario = dataclasses.replace(scenario, target=dataclasses.replace(scenario.target, max_images=max_images))
    manifest, model_path = _bench_setup(scenario, workdir, model_path)
    dev = torch.device(device)
    cfg, rows, order, size = stages._labelling_setup(scenario, 1, manifest)
    data = prepare.dataset(scenario, rows)
    model = stages.load_model(scenario, model_path).to(dev).eval()
    batches = [torch.stack([data[int(i)]["image"].as_subclass(torch.Tensor) for i in group]) for group in order]

    def forward_intra_op():
        for images in batches:
            stages.infer(model, data, None, size, dev, images)
        _synced(lambda: None)

    def forward_streamed():
        for _ in stages.inferred(model, data, order, batches, size, dev):
            pass
        _synced(lambda: None)

    streams = stages.forward_streams(dev)
    forwards = {"intra_op": forward_intra_op, **({"streamed": forward_streamed} if streams > 1 else {})}
    for forward in forwards.values():
        forward()                                    # warm-up (allocator, oneDNN primitive caches)
    timings = {name: [] for name in (*forwards, "stage")}
    cpu_times = {name: [] for name in timings}
    for k in range(repeats):
        for name, forward in forwards.items():
            wall, cpu = wall_and_cpu(forward)
            timings[name].append(wall)
            cpu_times[name].append(cpu)
        wall, cpu = wall_and_cpu(lambda: stages.pseudo_labels(scenario, 1, model_path, manifest,
                                                               workdir / f"pseudo_labels_{k}.h5", dev))
        timings["stage"].append(wall)
        cpu_times["stage"].append(cpu)
    median = {name: statistics.median(seconds) for name, seconds in timings.items()}
    median_cpu = {name: statistics.median(seconds) for name, seconds in cpu_times.items()}
    fastest = min(forwards, key=median.get)
    forward = median[fastest]
    images = len(rows)
    cpus = usable_cpus()
    paired = [min(timings[name][k] for name in forwards) / timings["stage"][k] for k in range(repeats)]
    return {"benchmark": "pseudo_stage", "scenario": scenario.name, "images": images, "inference_size": list(size),
            "device": device, "torch_threads": torch.get_num_threads(), "forward_streams": streams,
            "repeats": repeats, "samples_s": timings, "cpu_samples_s": cpu_times,
            "ratio_stage_to_forward_paired": statistics.median(paired),
            "forward_images_per_s": images / forward,
            **{f"forward_{name}_images_per_s": images / median[name] for name in forwards},
            "stage_images_per_s": images / median["stage"], "ratio_stage_to_forward": forward / median["stage"],
            "ratio_stage_to_intra_op_forward": median["intra_op"] / median["stage"],
            # CPU seconds (all the process's threads and its reaped children): where every usable CPU is busy
            # in both (utilisation near 1) the ratio cannot pass forward CPU / stage CPU, whatever the overlap
            "baseline_forward": fastest, "usable_cpus": cpus,
            "cpu_s": {name: median_cpu[name] for name in timings},
            "cpu_utilisation": {name: median_cpu[name] / (median[name] * cpus) for name in timings},
            "ratio_forward_cpu_to_stage_cpu": median_cpu[fastest] / median_cpu["stage"], "machine": machine()}


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity mask where the platform has one)."""
    import os
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def wall_and_cpu(fn) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of fn(): the CPU time of every thread of this process, and of the child
    processes it waited for (loader workers), in the same interval."""
    import os
    children = os.times()
    cpu, begin = time.process_time(), time.perf_counter()
    fn()
    wall, cpu = time.perf_counter() - begin, time.process_time() - cpu
    after = os.times()
    children_cpu = (after.children_user - children.children_user) + (after.children_system - children.children_system)
    return wall, cpu + children_cpu


# --- a self-training iteration against a bare forward/backward -----------------------------------------------

def train_step_speed(scenario, workdir: Path, model_path: Path | None = None, iterations: int = 20,
                     device: str = "cpu", repeats: int = 3) -> dict:
    """One self-training iteration (loading with copy-paste and CCA, teacher forward, student forward/backward,
    EMA) over a bare student forward/backward on tensors already in memory, and where the difference goes."""
    import dataclasses

    from hiast import engine, h5io, prepare, stages
    from hiast.selftrain import PseudoLabelledTarget, ema_update, student_losses, train_round
    from hiast.supervised import iteration_loader, make_optimizer
    manifest, model_path = _bench_setup(scenario, workdir, model_path)
    dev = torch.device(device)
    rnd = scenario.rounds[0]
    cfg = dataclasses.replace(rnd.train, iterations=iterations, checkpoint_every=0, log_every=0)
    pl_path, bank_path = workdir / "pseudo_labels.h5", workdir / "instance_bank.h5"
    stages.pseudo_labels(scenario, 1, model_path, manifest, pl_path, dev)
    stages.instance_bank(scenario, 1, pl_path, manifest, bank_path)
    rows = stages.target_train(scenario, manifest)

    def target_data():
        return PseudoLabelledTarget(prepare.dataset(scenario, rows), h5io.read_pseudo_labels(pl_path),
                                    h5io.read_instance_bank(bank_path), rnd.bank, scenario.scale,
                                    strong=cfg.strong_view, weak_view=scenario.crop_view("target"))

    # the parts' inputs first, so that the measurements below can alternate
    batches = []
    begin = time.perf_counter()
    for batch in iteration_loader(target_data(), cfg.batch_size, 1, 0, iterations, cfg.workers):
        batches.append(batch)
    loading = (time.perf_counter() - begin) / iterations
    student = stages.load_model(scenario, model_path).to(dev).train()
    teacher = stages.load_model(scenario, model_path).to(dev).eval()
    optimizer = make_optimizer(student, cfg)
    strong = [engine.to_input(b["strong"], dev) for b in batches]
    weak = [engine.to_input(b["weak"], dev) for b in batches]
    labels = [b["label"].to(dev).long() for b in batches]

    def round_time(overlap: bool, count: int) -> float:
        fresh = stages.load_model(scenario, model_path)
        begin = time.perf_counter()
        train_round(fresh, target_data(), dataclasses.replace(cfg, overlap=overlap, iterations=count), dev, seed=1)
        return time.perf_counter() - begin

    setup_iterations = 5

    def whole_iteration(overlap: bool) -> float:
        """The whole iteration as the stage runs it, in the steady state: a round of `setup_iterations` + N
        iterations minus one of `setup_iterations`, over N. What that removes (the round's setup: reading the
        pseudo-labels and the bank, copying the teacher, starting loader processes; and the first batches,
        which nothing prefetched) is paid once per round of 300+ iterations: `round_setup_s` reports it."""
        return (round_time(overlap, setup_iterations + iterations) - round_time(overlap, setup_iterations)) \
            / iterations

    def timed(fn) -> float:
        fn(0)                                   # warm-up
        begin = time.perf_counter()
        for k in range(iterations):
            fn(k)
        _synced(lambda: None)
        return (time.perf_counter() - begin) / iterations

    def bare(k):
        logits = engine.upsample(student(strong[k]), labels[k].shape[-2:])
        loss = torch.nn.functional.cross_entropy(logits, labels[k], ignore_index=255)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def objective_step(k, probs, fused=cfg.fused_objective):
        """The student's step with the four losses, given the teacher's probabilities."""
        logits = engine.upsample(student(strong[k]), labels[k].shape[-2:])
        step = student_losses(logits, labels[k], probs, dataclasses.replace(cfg, fused_objective=fused))
        optimizer.zero_grad(set_to_none=True)
        step.total.backward()
        optimizer.step()

    @torch.no_grad()
    def teacher_probs_of(k):
        return engine.upsample(teacher(weak[k]), labels[k].shape[-2:]).softmax(1)

    def with_losses(k):
        objective_step(k, teacher_probs_of(k))

    @torch.no_grad()
    def teacher_forward(k):
        teacher(weak[k])

    teacher_probs = [teacher_probs_of(k) for k in range(iterations)]

    def student_objective(k, fused=cfg.fused_objective):
        """What the overlapped iteration leaves on the main thread: the student's step with the four losses."""
        objective_step(k, teacher_probs[k], fused)

    # a noisy machine: the four main timings alternate, `repeats` times, and the medians are reported
    train_round(stages.load_model(scenario, model_path), target_data(), dataclasses.replace(cfg, iterations=2), dev,
                seed=1)                                                   # warm-up
    samples: dict[str, list[float]] = {"serial": [], "overlap": [], "bare": [], "student_objective_taped": [],
                                       "student_objective_fused": []}
    for _ in range(repeats):
        samples["serial"].append(whole_iteration(False))
        samples["overlap"].append(whole_iteration(True))
        samples["bare"].append(timed(bare))
        samples["student_objective_taped"].append(timed(lambda k: student_objective(k, False)))
        samples["student_objective_fused"].append(timed(lambda k: student_objective(k, True)))
    median = {key: statistics.median(values) for key, values in samples.items()}
    median["student_objective"] = median[f"student_objective_{'fused' if cfg.fused_objective else 'taped'}"]
    whole = median["overlap" if cfg.overlap else "serial"]
    parts = {"round_setup_s": round_time(cfg.overlap, 1) - whole,
             "data_loading_s": loading, "teacher_forward_s": timed(teacher_forward),
             "ema_s": timed(lambda k: ema_update(teacher, student, cfg.ema_momentum)),
             "full_objective_fwd_bwd_s": timed(with_losses), "student_objective_s": median["student_objective"],
             "student_objective_taped_s": median["student_objective_taped"],
             "student_objective_fused_s": median["student_objective_fused"],
             "profile_objective_minus_bare_ms": _profile_difference(student_objective, bare, min(iterations, 5))}
    return {"benchmark": "train_step", "scenario": scenario.name, "batch_size": cfg.batch_size,
            "iterations": iterations, "repeats": repeats, "device": device, "torch_threads": torch.get_num_threads(),
            "workers": cfg.workers, "overlap": cfg.overlap, "fused_objective": cfg.fused_objective,
            "steady_state": f"(round of {setup_iterations} + N iterations - round of {setup_iterations}) / N",
            "iteration_s": whole, "bare_fwd_bwd_s": median["bare"],
            "ratio": whole / median["bare"], "iteration_serial_s": median["serial"],
            "iteration_overlap_s": median["overlap"], "ratio_serial": median["serial"] / median["bare"],
            "ratio_overlap": median["overlap"] / median["bare"],
            "samples_s": samples, **parts, "core_scaling": core_scaling(), "machine": machine()}


def _profile_difference(step, baseline, iterations: int, top: int = 12) -> list[dict]:
    """torch.profiler self CPU time per operator, per iteration, of `step` minus `baseline` (both called
    with k = 0..iterations-1): where the extra time of `step` goes, largest first."""
    from torch.profiler import ProfilerActivity, profile

    def per_op(fn) -> dict[str, float]:
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for k in range(iterations):
                fn(k)
        return {e.key: e.self_cpu_time_total / 1000 / iterations for e in prof.key_averages()}

    with_step, without = per_op(step), per_op(baseline)
    rows = [{"op": op, "ms": with_step.get(op, 0.0) - without.get(op, 0.0), "ms_in_step": with_step.get(op, 0.0)}
            for op in set(with_step) | set(without)]
    rows.sort(key=lambda r: -abs(r["ms"]))
    return [{k: (round(v, 2) if isinstance(v, float) else v) for k, v in r.items()} for r in rows[:top]]


# --- sharded pseudo-labelling against one process ------------------------------------------------------------

def _labels_and_thresholds(path: Path) -> tuple[bytes, bytes]:
    import h5py
    with h5py.File(path, "r") as f:
        return f["labels"][...].tobytes(), f["thresholds"][...].tobytes()


def shard_speed(scenario_path: Path, workdir: Path, model_path: Path | None = None, shards: int = 2,
                threads: int = 2, max_images: int = 0) -> dict:
    """The pseudo-labelling stage as one process against `shards` inference processes run side by side (one
    torch thread each, as the cluster runs one shard per GPU) followed by the sequential IAS pass over their
    stored outputs. Each variant is a real `hiast pseudo` command (start-up included). Reports wall times, the
    speed-up over one process with `threads` threads, and whether `labels` and `thresholds` are byte-identical
    to one process at the shards' thread count (CPU convolutions differ between thread counts)."""
    import os
    import subprocess
    import sys

    import yaml

    from hiast import stages
    from hiast.config import load_yaml
    from hiast.scenario import load_scenario
    data = load_yaml(scenario_path)
    if max_images:
        data.setdefault("target", {})["max_images"] = max_images
    data.setdefault("name", Path(scenario_path).stem)
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    plain, sharded = workdir / "plain.yaml", workdir / "sharded.yaml"
    plain.write_text(yaml.safe_dump(data))
    for rnd in data["rounds"]:
        rnd.setdefault("pseudo", {})["shards"] = shards
    sharded.write_text(yaml.safe_dump(data))
    scenario = load_scenario(plain)
    manifest, model_path = _bench_setup(scenario, workdir, model_path)
    threads_per_shard = max(1, threads // shards)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads_per_shard)}

    def command(config: Path, output: Path, n_threads: int, *extra: str) -> list[str]:
        return [sys.executable, "-m", "hiast", "pseudo", "--scenario", str(config), "--round", "1", "--model",
                str(model_path), "--manifest", str(manifest), "--output", str(output), "--device", "cpu",
                "--threads", str(n_threads), *extra]

    def timed_run(commands: list[list[str]]) -> float:
        begin = time.perf_counter()
        running = [subprocess.Popen(c, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for c in commands]
        for proc, cmd in zip(running, commands):
            _, err = proc.communicate()
            if proc.returncode != 0:
                raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{err.decode()[-2000:]}")
        return time.perf_counter() - begin

    one_process = timed_run([command(plain, workdir / "one_process.h5", threads)])
    reference = timed_run([command(plain, workdir / "one_process_same_threads.h5", threads_per_shard)])
    outputs = [workdir / f"model_outputs_{k}.h5" for k in range(shards)]
    inference = timed_run([command(sharded, outputs[k], threads_per_shard, "--shard", str(k))
                           for k in range(shards)])
    ias_pass = timed_run([command(sharded, workdir / "sharded.h5", threads_per_shard,
                                  "--from-shards", *map(str, outputs))])
    same_threads = _labels_and_thresholds(workdir / "one_process_same_threads.h5")
    from_shards = _labels_and_thresholds(workdir / "sharded.h5")
    two_threads = _labels_and_thresholds(workdir / "one_process.h5")
    return {"benchmark": "pseudo_shards", "scenario": scenario.name,
            "images": len(stages.target_train(scenario, manifest)),
            "shards": shards, "threads_one_process": threads, "threads_per_shard": threads_per_shard,
            "one_process_s": one_process, "one_process_same_threads_s": reference,
            "shard_inference_s": inference, "ias_pass_s": ias_pass, "sharded_total_s": inference + ias_pass,
            "speedup_over_one_process": one_process / (inference + ias_pass),
            "speedup_over_one_process_same_threads": reference / (inference + ias_pass),
            "identical_to_one_process_same_threads": same_threads == from_shards,
            "identical_to_one_process": two_threads == from_shards, "machine": machine()}


# --- the whole run, per rule (Snakemake's benchmark: files) ---------------------------------------------------

def rule_runtimes(results: str | Path) -> pd.DataFrame:
    """Every Snakemake `benchmark:` file under `results` (results/benchmarks/*.tsv for run-wide rules,
    results/<scenario>/benchmarks/*.tsv) as one table: scenario ("" for run-wide), rule (the file's stem),
    wall seconds, peak resident memory (MiB), CPU seconds. A file that does not parse is an error naming it."""
    results = Path(results)
    rows = []
    for path in sorted(results.glob("benchmarks/*.tsv")) + sorted(results.glob("*/benchmarks/*.tsv")):
        try:
            table = pd.read_csv(path, sep="\t")
            first = table.iloc[0]
            row = {"scenario": "" if path.parent.parent == results else path.parent.parent.name,
                   "rule": path.stem, "seconds": float(first["s"]),
                   "max_rss_mib": float(pd.to_numeric(first["max_rss"], errors="coerce")),
                   "cpu_seconds": float(pd.to_numeric(first.get("cpu_time", float("nan")), errors="coerce"))}
        except (KeyError, IndexError, ValueError, pd.errors.ParserError) as err:
            raise ValueError(f"{path}: not a Snakemake benchmark file (a tab-separated table with columns s, "
                             f"max_rss, cpu_time and one row): {err}") from err
        rows.append(row)
    if not rows:
        raise FileNotFoundError(f"{results}: no benchmarks/*.tsv files (run the pipeline first)")
    return pd.DataFrame(rows)


def runtime_markdown(table: pd.DataFrame) -> str:
    """Per rule: wall time and peak memory in each scenario; the sum of wall times per scenario and overall,
    and the largest peak memory."""
    lines = ["| scenario | rule | wall (s) | peak RSS (MiB) | CPU (s) |", "|---|---|---|---|---|"]
    for scenario, part in table.groupby("scenario", sort=True):
        for row in part.itertuples():
            lines.append(f"| {scenario or '(all)'} | {row.rule} | {row.seconds:.1f} | {row.max_rss_mib:.0f} | "
                         f"{row.cpu_seconds:.1f} |")
        lines.append(f"| {scenario or '(all)'} | **total** | **{part.seconds.sum():.1f}** | "
                     f"{part.max_rss_mib.max():.0f} | {part.cpu_seconds.sum():.1f} |")
    lines.append(f"| **all** | **total** | **{table.seconds.sum():.1f}** ({table.seconds.sum() / 60:.1f} min) | "
                 f"**{table.max_rss_mib.max():.0f}** | {table.cpu_seconds.sum():.1f} |")
    return "\n".join(lines) + "\n"
