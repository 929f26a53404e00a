"""Milliseconds per batch of the round-1 self-training loader of synthetic GTA5 -> CS (1 thread, a warm pass
first). Run from a checkout with the default run's results/; PYTHONPATH=<other checkout> measures that code."""
import time

import torch

from pathlib import Path
from hiast import h5io, prepare, stages
from hiast.scenario import load_scenario
from hiast.selftrain import PseudoLabelledTarget
from hiast.supervised import iteration_loader
torch.set_num_threads(1)
R = Path("results/synthetic_gta5_to_cityscapes")
sc = load_scenario("config/scenarios/synthetic_gta5_to_cityscapes.yaml")
rows = stages.target_train(sc, R / "manifests/target.csv")
rnd = sc.rounds[0]
data = PseudoLabelledTarget(prepare.dataset(sc, rows), h5io.read_pseudo_labels(R / "round_1/pseudo_labels.h5"),
                            h5io.read_instance_bank(R / "round_1/instance_bank.h5"), rnd.bank, sc.scale,
                            weak_view=sc.crop_view("target"), strong=rnd.train.strong_view)
N = 40
def run():
    for b in iteration_loader(data, 4, 1, 0, N, 0):
        pass
run()
t = time.perf_counter(); run(); print("ms/batch", (time.perf_counter() - t) / N * 1000)
