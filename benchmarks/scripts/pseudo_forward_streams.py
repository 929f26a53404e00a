"""Wall time of the round-1 pseudo-labelling stage of synthetic GTA5 -> CS (the default run's warm-up) at THREADS
torch threads, with one forward on THREADS threads (as before 2026-12-01's change) against THREADS
single-threaded forwards side by side (`stages.forward_streams`, the default since), alternated twice after a
warm run; and whether the labels of the two equal those of one thread. Run from a checkout with the default
run's data/ and results/:

    python benchmarks/scripts/pseudo_forward_streams.py 2
"""
import sys
import time
from pathlib import Path

import h5py
import torch

from hiast import stages
from hiast.allocator import keep_freed_memory
from hiast.scenario import load_scenario

keep_freed_memory()                       # as the hiast command does
threads = int(sys.argv[1])
scenario = load_scenario("config/scenarios/synthetic_gta5_to_cityscapes.yaml")
results = Path("results/synthetic_gta5_to_cityscapes")
streams_of = stages.forward_streams
variants = {"one forward on all threads": lambda device: 1, "single-threaded streams": streams_of}


def stage_seconds(name: str, output: Path) -> float:
    stages.forward_streams = variants[name]
    begin = time.perf_counter()
    stages.pseudo_labels(scenario, 1, results / "warmup/model.pt", results / "manifests/target.csv", output,
                         torch.device("cpu"))
    return time.perf_counter() - begin


def labels(path: Path) -> bytes:
    with h5py.File(path) as f:
        return f["labels"][()].tobytes() + f["thresholds"][()].tobytes()


torch.set_num_threads(1)
stage_seconds("single-threaded streams", Path("/tmp/pseudo_streams_1thread.h5"))
torch.set_num_threads(threads)
stage_seconds("single-threaded streams", Path("/tmp/pseudo_streams_warm.h5"))  # warm-up
seconds: dict[str, list[float]] = {}
for _ in range(2):
    for k, name in enumerate(variants):
        seconds.setdefault(name, []).append(round(stage_seconds(name, Path(f"/tmp/pseudo_streams_{k}.h5")), 2))
print(f"{threads} thread(s):", seconds)
one_thread = labels(Path("/tmp/pseudo_streams_1thread.h5"))
print({name: labels(Path(f"/tmp/pseudo_streams_{k}.h5")) == one_thread for k, name in enumerate(variants)},
      "(labels and thresholds equal to 1 thread's)")
