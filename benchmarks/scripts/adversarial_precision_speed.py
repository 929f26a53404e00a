"""The adversarial warm-up's steady-state iteration on the real embedded data (synthetic GTA5 -> CS: the
scenario's source and target crops, loading included) with `discriminator_precision` fp32 (the default) and
bf16, alternated twice in one process at 1 torch thread (the default run's): each timing is a run of 25
iterations minus a run of 5, over 20, so the loaders' start-up is left out. Run from a checkout with the
default run's data/ and results/ (the manifests):

    python benchmarks/scripts/adversarial_precision_speed.py
"""
import dataclasses
import time
from pathlib import Path

import torch

from hiast import prepare, stages
from hiast.adversarial import train_adversarial
from hiast.datasets import read_manifest
from hiast.scenario import load_scenario

torch.set_num_threads(1)
scenario = load_scenario("config/scenarios/synthetic_gta5_to_cityscapes.yaml")
results = Path("results/synthetic_gta5_to_cityscapes")
source_rows = prepare.split_rows(read_manifest(results / "manifests/source.csv"), scenario.source, "train",
                                 scenario.seed)
source = prepare.dataset(scenario, source_rows, transform=scenario.crop_view("source"))
target = prepare.dataset(scenario, stages.target_train(scenario, results / "manifests/target.csv"),
                         transform=scenario.crop_view("target"))
model = stages.new_model(scenario)
base = dataclasses.replace(scenario.warmup.adversarial, log_every=0, checkpoint_every=0)


def run_seconds(precision: str, iterations: int) -> float:
    stage = dataclasses.replace(base, iterations=iterations, discriminator_precision=precision)
    begin = time.perf_counter()
    train_adversarial(model, source, target, stage, torch.device("cpu"), seed=1, desc=f"{precision} {iterations}")
    return time.perf_counter() - begin


run_seconds("fp32", 3)
run_seconds("bf16", 3)                       # warm-up of both (allocator, oneDNN primitives)
per_iteration = {"fp32": [], "bf16": []}
for repeat in range(2):
    for precision in per_iteration:
        per_iteration[precision].append((run_seconds(precision, 25) - run_seconds(precision, 5)) / 20)
for precision, seconds in per_iteration.items():
    print(f"{precision}: " + " / ".join(f"{1000 * s:.0f}" for s in seconds) + " ms an iteration", flush=True)
print("bf16 / fp32: " + " / ".join(f"{b / f:.2f}" for b, f in zip(per_iteration["bf16"], per_iteration["fp32"])))
