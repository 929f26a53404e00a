"""Would decoding help at 2 threads if it ran only beside the IAS step and the writes, not beside the forward?
The round-1 pseudo-labelling loop of synthetic GTA5 -> CS (the default run's warm-up), written out here: images
decoded in the loop, or instance k+1 decoded in a thread from the end of instance k's forward until it is needed.
Wall seconds, alternated twice after a warm run. Run from a checkout with the default run's data/ and results/:

    python benchmarks/scripts/pseudo_decoding_during_ias.py 2
"""
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from hiast import engine, h5io, prepare, pseudo, stages
from hiast.allocator import keep_freed_memory
from hiast.datasets import ImagesOnly
from hiast.scenario import load_scenario

keep_freed_memory()
torch.set_num_threads(int(sys.argv[1]))
cpu = torch.device("cpu")
scenario = load_scenario("config/scenarios/synthetic_gta5_to_cityscapes.yaml")
results = Path("results/synthetic_gta5_to_cityscapes")
cfg, rows, order, size = stages._labelling_setup(scenario, 1, results / "manifests/target.csv")
data = prepare.dataset(scenario, rows)
model = stages.labelling_model(scenario, 1, results / "warmup/model.pt", rows, cpu)
attrs = {"policy": cfg.policy, "alpha": cfg.alpha, "beta": cfg.beta, "gamma": cfg.gamma, "manifest_fingerprint": "-"}


def seconds(during_ias: bool) -> float:
    images = (b["image"] for b in torch.utils.data.DataLoader(
        ImagesOnly(data), batch_sampler=[[int(i) for i in g] for g in order], collate_fn=engine.collate))
    state = pseudo.IASState(scenario.num_classes, cfg.alpha, cfg.beta, cfg.gamma, init=cfg.initial_threshold)
    begin = time.perf_counter()
    with ThreadPoolExecutor(1) as pool, h5io.PseudoLabelWriter(Path("/tmp/pseudo_decoding_during_ias.h5"),
                                                               list(rows.image_id), *size, scenario.num_classes,
                                                               attrs) as writer:
        pending = pool.submit(next, images) if during_ias else None
        for k, group in enumerate(order):
            batch = pending.result() if during_ias else next(images)
            conf, pred = stages.infer(model, data, group, size, cpu, batch)
            if during_ias and k + 1 < len(order):
                pending = pool.submit(next, images)      # decodes while the IAS step and the writes run
            step = state.step(conf, pred)
            labels = step.labels.cpu().numpy()
            for j, index in enumerate(group):
                writer.write(int(index), labels[j], step.thresholds.astype(np.float32), step.pixel_counts[j])
        writer.set_attrs(class_mean_conf=state.class_mean_conf)
    return round(time.perf_counter() - begin, 2)


seconds(False)                                           # warm-up
timings: dict[str, list[float]] = {}
for _ in range(2):
    for name, during_ias in (("in the loop", False), ("during the IAS step and writes", True)):
        timings.setdefault(name, []).append(seconds(during_ias))
print(f"{torch.get_num_threads()} thread(s):", timings)
