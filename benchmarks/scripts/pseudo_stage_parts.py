"""What each part of the round-1 pseudo-labelling stage of synthetic GTA5 -> CS costs, per image, at 1 torch
thread, each part timed alone over the 400 train images (twice): loading the labeller, PNG decoding, the forward
(`stages.infer`), the IAS step and the HDF5 writes. Run from a checkout with the default run's data/ and
results/ (with another commit's hiast: from a worktree of it, `data` linked):

    python benchmarks/scripts/pseudo_stage_parts.py
"""
import inspect
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.getcwd())              # the hiast of the current folder
import numpy as np  # noqa: E402
import torch  # noqa: E402

from hiast import h5io, prepare, pseudo, stages  # noqa: E402
from hiast.datasets import ImagesOnly  # noqa: E402
from hiast.scenario import load_scenario  # noqa: E402

torch.set_num_threads(1)
scenario = load_scenario("config/scenarios/synthetic_gta5_to_cityscapes.yaml")
results = Path(os.environ.get("HIAST_RESULTS", "results")) / "synthetic_gta5_to_cityscapes"
cfg, rows, order, size = stages._labelling_setup(scenario, 1, results / "manifests/target.csv")
data = prepare.dataset(scenario, rows)
images = ImagesOnly(data)
n = len(rows)
attrs = {"policy": "IAS", "alpha": cfg.alpha, "beta": cfg.beta, "gamma": cfg.gamma, "manifest_fingerprint": "-"}
quick_load = "initialise" in inspect.signature(stages.load_model).parameters


def seconds(work):
    begin = time.perf_counter()
    out = work()
    return time.perf_counter() - begin, out


def load(initialise=True):
    path = results / "warmup/model.pt"
    return stages.load_model(scenario, path) if initialise else stages.load_model(scenario, path, initialise=False)


for repeat in range(2):
    load_s, model = seconds(load)
    line = f"load the labeller {load_s:.3f} s"
    if quick_load:
        line += f" ({seconds(lambda: load(False))[0]:.3f} s on the meta device)"
    model.eval()
    decode_s, batches = seconds(lambda: [torch.stack([images[int(i)]["image"] for i in g]) for g in order])
    forward_s, outputs = seconds(lambda: [stages.infer(model, data, None, size, torch.device("cpu"), x)
                                          for x in batches])
    state = pseudo.IASState(scenario.num_classes, cfg.alpha, cfg.beta, cfg.gamma, init=cfg.initial_threshold,
                            momentum=cfg.class_conf_momentum)
    ias_s, steps = seconds(lambda: [state.step(conf, pred) for conf, pred in outputs])

    def write():
        with tempfile.TemporaryDirectory() as folder, \
                h5io.PseudoLabelWriter(Path(folder) / "p.h5", list(rows.image_id), *size, scenario.num_classes,
                                       attrs) as writer:
            for group, step in zip(order, steps):
                labels, thresholds = step.labels.numpy(), step.thresholds.astype(np.float32)
                for k, index in enumerate(group):
                    writer.write(int(index), labels[k], thresholds, step.pixel_counts[k])
            writer.set_attrs(class_mean_conf=state.class_mean_conf)
    write_s, _ = seconds(write)
    print(f"{line}; per image: PNG decoding {decode_s / n * 1e3:.2f} ms, forward {forward_s / n * 1e3:.2f} ms, "
          f"IAS step {ias_s / n * 1e3:.2f} ms, HDF5 writes {write_s / n * 1e3:.2f} ms", flush=True)
