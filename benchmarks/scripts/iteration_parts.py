"""The overlapped self-training loop of round 1 (synthetic GTA5 -> CS, the default run's results/, 1 thread)
with a timer per part of the main thread: waiting for the next batch, the student's forward, waiting for the
teacher's forward (running beside it in a thread), the losses, backward, the optimiser step, EMA. ms per
iteration over 40 iterations after 5.

python benchmarks/scripts/iteration_parts.py WORKERS taped|fused none|niceloader
  none: loading (the prefetch thread, or the WORKERS loader processes) at the training thread's priority;
  niceloader: at nice 19, as train.overlap does since 2026-11-29.
"""
import copy
import dataclasses
import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from hiast import engine, h5io, prepare, stages
from hiast.allocator import keep_freed_memory
from hiast.scenario import load_scenario
from hiast.selftrain import PseudoLabelledTarget, ema_update, student_losses, teacher_softmax
from hiast.supervised import IterationBatchSampler, SeededItems, make_optimizer

workers, objective, mode = int(sys.argv[1]), sys.argv[2], sys.argv[3]
keep_freed_memory()
torch.set_num_threads(1)
R = Path("results/synthetic_gta5_to_cityscapes")
sc = load_scenario("config/scenarios/synthetic_gta5_to_cityscapes.yaml")
rows = stages.target_train(sc, R / "manifests/target.csv")
rnd = sc.rounds[0]
cfg = dataclasses.replace(rnd.train, fused_objective=objective == "fused", workers=workers)
data = PseudoLabelledTarget(prepare.dataset(sc, rows), h5io.read_pseudo_labels(R / "round_1/pseudo_labels.h5"),
                            h5io.read_instance_bank(R / "round_1/instance_bank.h5"), rnd.bank, sc.scale,
                            weak_view=sc.crop_view("target"), strong=rnd.train.strong_view)


def loader_priority(*_):
    if mode == "niceloader":
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)


student = stages.load_model(sc, R / "warmup/model.pt").train()
teacher = copy.deepcopy(student).eval()
optimizer = make_optimizer(student, cfg)
dev = torch.device("cpu")
N, SKIP = 40, 5
batches = torch.utils.data.DataLoader(
    SeededItems(data), batch_sampler=IterationBatchSampler(len(data), 4, 1, start=0, stop=N + SKIP),
    num_workers=workers, collate_fn=engine.collate, worker_init_fn=loader_priority if workers else None)


def in_thread():
    loader_priority()
    yield from batches


loader = engine.prefetched(in_thread())
pool = ThreadPoolExecutor(1)
parts = ["wait_loader", "forward", "wait_teacher", "loss", "backward", "step", "ema"]
for it in range(N + SKIP):
    if it == SKIP:
        totals = dict.fromkeys(parts, 0.0)
        begin = time.perf_counter()
    marks = [time.perf_counter()]
    batch = next(loader)
    marks.append(time.perf_counter())
    labels = batch["label"].long()
    future = pool.submit(teacher_softmax, teacher, batch["weak"], labels.shape[-2:], dev)
    logits = engine.upsample(student(engine.to_input(batch["strong"], dev)), labels.shape[-2:])
    marks.append(time.perf_counter())
    probs = future.result()
    marks.append(time.perf_counter())
    loss = student_losses(logits, labels, probs, cfg)
    marks.append(time.perf_counter())
    optimizer.zero_grad(set_to_none=True)
    loss.total.backward()
    marks.append(time.perf_counter())
    optimizer.step()
    marks.append(time.perf_counter())
    ema_update(teacher, student, cfg.ema_momentum)
    marks.append(time.perf_counter())
    if it >= SKIP:
        for name, a, b in zip(parts, marks, marks[1:]):
            totals[name] += b - a
totals["total"] = time.perf_counter() - begin
print(sys.argv[1:], {k: round(v / N * 1000, 1) for k, v in totals.items()})
loader.close()
