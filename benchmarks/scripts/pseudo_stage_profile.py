"""Where the pseudo-labelling stage's own time goes: cProfile of round 1 of synthetic GTA5 -> CS (the default
run's warm-up) at THREADS torch threads, after a warm run; cumulative seconds of the stage's parts. Run from a
checkout with the default run's data/ and results/:

    python benchmarks/scripts/pseudo_stage_profile.py 2
"""
import cProfile
import pstats
import re
import sys
import time
from pathlib import Path

import torch

from hiast import stages
from hiast.allocator import keep_freed_memory
from hiast.scenario import load_scenario

keep_freed_memory()
torch.set_num_threads(int(sys.argv[1]))
scenario = load_scenario("config/scenarios/synthetic_gta5_to_cityscapes.yaml")
results = Path("results/synthetic_gta5_to_cityscapes")
output = Path("/tmp/pseudo_stage_profile.h5")


def stage():
    stages.pseudo_labels(scenario, 1, results / "warmup/model.pt", results / "manifests/target.csv", output,
                         torch.device("cpu"))


stage()                                                   # warm-up
profiler = cProfile.Profile()
begin = time.perf_counter()
profiler.runcall(stage)
print(f"stage under the profiler: {time.perf_counter() - begin:.2f} s at {torch.get_num_threads()} thread(s)")
parts = {"infer (forward, upsample, softmax, max)": "stages.py:.*\\(infer\\)", "PNG decoding": "decode_image",
         "IAS step": "pseudo.py:.*\\(step\\)", "HDF5 writes": "h5io.py:.*\\(write\\)",
         "model loading": "labelling_model"}
stats = pstats.Stats(profiler)
for name, pattern in parts.items():
    seconds = max((v[3] for k, v in stats.stats.items() if re.search(pattern, f"{k[0]}:{k[1]}({k[2]})")), default=0.0)
    print(f"{name}: {seconds:.2f} s")
