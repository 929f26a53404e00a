"""CPU time of each part of the pseudo-labelling stage where it runs (not alone): round 1 of synthetic GTA5 -> CS
(the default run's warm-up) at THREADS torch threads, after a warm run, three times. Each part's CPU time is
summed over the threads that run it (`time.thread_time` around the stage's own functions: the forward, the
decoding of each image, the IAS step, the HDF5 writes and commit, the model's loading); "the rest" is the
process's CPU time (`speed.wall_and_cpu`) less those. Run from a checkout with the default run's data/ and
results/:

    python benchmarks/scripts/pseudo_stage_in_situ.py 2
"""
import collections
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch

from hiast import datasets, h5io, pseudo, speed, stages
from hiast.allocator import keep_freed_memory
from hiast.scenario import load_scenario

keep_freed_memory()
torch.set_num_threads(int(sys.argv[1]))
scenario = load_scenario("config/scenarios/synthetic_gta5_to_cityscapes.yaml")
results = Path("results/synthetic_gta5_to_cityscapes")
dev = torch.device("cpu")
spent = collections.defaultdict(float)
lock = threading.Lock()


def timed(owner, name, label):
    original = getattr(owner, name)
    def wrapper(*a, **k):
        begin = time.thread_time()
        try:
            return original(*a, **k)
        finally:
            with lock:
                spent[label] += time.thread_time() - begin
    setattr(owner, name, wrapper)


timed(stages, "infer", "forward (infer)")
timed(datasets.ImagesOnly, "__getitem__", "decoding (ImagesOnly)")
timed(pseudo.IASState, "step", "IAS step")
timed(h5io.PseudoLabelWriter, "write", "HDF5 writes")
timed(h5io.PseudoLabelWriter, "commit", "HDF5 commit")
timed(stages, "labelling_model", "model loading")


def stage():
    stages.pseudo_labels(scenario, 1, results / "warmup/model.pt", results / "manifests/target.csv", Path(tempfile.gettempdir()) / "pseudo_stage_in_situ.h5", dev)


stage()
for repeat in range(3):
    spent.clear()
    wall, cpu = speed.wall_and_cpu(stage)
    parts = sum(spent.values())
    print(f"stage wall {wall:.2f} s, CPU {cpu:.2f} s; per image (ms CPU): " +
          ", ".join(f"{k} {v / 400 * 1e3:.2f}" for k, v in spent.items()) + f", the rest {(cpu - parts) / 400 * 1e3:.2f}", flush=True)
