"""Wall time of the round-1 pseudo-labelling stage of synthetic GTA5 -> CS (the default run's warm-up) at THREADS
torch threads, images decoded in the loop or ahead by the background thread (at nice 19, and at nice 0),
alternated twice after a warm run. Run from a checkout with the default run's data/ and results/:

    python benchmarks/scripts/pseudo_decoding_ahead.py 1      # and 2
"""
import sys
import time
from pathlib import Path

import torch

from hiast import engine, stages
from hiast.allocator import keep_freed_memory
from hiast.scenario import load_scenario

keep_freed_memory()                       # as the hiast command does
torch.set_num_threads(int(sys.argv[1]))
scenario = load_scenario("config/scenarios/synthetic_gta5_to_cityscapes.yaml")
results = Path("results/synthetic_gta5_to_cityscapes")
output = Path(sys.argv[2] if len(sys.argv) > 2 else "/tmp/pseudo_decoding_ahead.h5")
variants = {"in the loop": (False, engine.LOADER_NICE), "ahead, nice 19": (True, engine.LOADER_NICE),
            "ahead, nice 0": (True, 0)}


def stage_seconds(ahead: bool, nice: int) -> float:
    engine.spare_core, engine.LOADER_NICE = (lambda: ahead), nice
    begin = time.perf_counter()
    stages.pseudo_labels(scenario, 1, results / "warmup/model.pt", results / "manifests/target.csv", output,
                         torch.device("cpu"))
    return time.perf_counter() - begin


stage_seconds(False, engine.LOADER_NICE)  # warm-up
seconds: dict[str, list[float]] = {}
for _ in range(2):
    for name, (ahead, nice) in variants.items():
        seconds.setdefault(name, []).append(round(stage_seconds(ahead, nice), 2))
print(f"{torch.get_num_threads()} thread(s):", seconds)
