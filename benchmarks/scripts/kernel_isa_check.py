"""Do the CPU's kernels change the numbers? A few source-only iterations of synthetic GTA5 -> CS from seed 0
(1 thread, as the default run), printing the last losses and a hash of the weights. Run from a checkout with
the default run's data/ and results/ (the source manifest), once as it is and once per oneDNN instruction-set
cap, e.g.:

    for isa in "" AVX512_CORE_BF16 AVX512_CORE AVX2; do ONEDNN_MAX_CPU_ISA=$isa python benchmarks/scripts/kernel_isa_check.py 15; done

The same hash means the same kernels' rounding; an ISA the CPU lacks is ignored by oneDNN (same as no cap).
"""
import dataclasses
import hashlib
import os
import sys
from pathlib import Path

import torch

from hiast import engine, prepare, stages
from hiast.datasets import read_manifest
from hiast.scenario import load_scenario
from hiast.speed import machine
from hiast.supervised import train_supervised

iterations = int(sys.argv[1]) if len(sys.argv) > 1 else 15
torch.set_num_threads(1)
scenario = load_scenario("config/scenarios/synthetic_gta5_to_cityscapes.yaml")
engine.seed_everything(scenario.seed)
model = stages.new_model(scenario)
rows = prepare.split_rows(read_manifest(Path("results/synthetic_gta5_to_cityscapes/manifests/source.csv")),
                          scenario.source, "train", scenario.seed)
cfg = dataclasses.replace(scenario.warmup.source_only, iterations=iterations, checkpoint_every=0, log_every=0)
losses = train_supervised(model, prepare.dataset(scenario, rows), scenario.crop_view("source"), cfg,
                          torch.device("cpu"), seed=scenario.seed)
weights = b"".join(t.detach().float().numpy().tobytes() for t in model.state_dict().values() if t.is_floating_point())
print(f"ONEDNN_MAX_CPU_ISA={os.environ.get('ONEDNN_MAX_CPU_ISA', '')!r} cpu={machine()['cpu_flags']} "
      f"losses {[round(x, 4) for x in losses[-3:]]} weights {hashlib.sha256(weights).hexdigest()[:16]}")
