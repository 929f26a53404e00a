"""Is the embedded benchmark learnable, and is its domain gap real?

For one scenario, with the scenario's own model and source-only warm-up budget:
- source-only: train on the source train split, evaluate on held-out source images and on target val;
- oracle: the same model and budget trained on the target's train labels, evaluated on target val.
The issue's bar: source held-out mIoU >= 50 and target-val mIoU of the source-only model <= 70% of the oracle's.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np

from hiast import engine, metrics, prepare
from hiast.classes import METRIC_CLASSES
from hiast.imageio import atomic_path
from hiast.scenario import Scenario
from hiast.stages import new_model
from hiast.supervised import train_supervised

log = logging.getLogger(__name__)


def _fit(scenario: Scenario, rows, device, seed: int, desc: str, side: str):
    engine.seed_everything(seed)
    model = new_model(scenario)
    data = prepare.dataset(scenario, rows)
    losses = train_supervised(model, data, scenario.crop_view(side), scenario.warmup.source_only, device, seed=seed,
                              desc=desc)
    return model, losses


def _score(scenario: Scenario, model, rows, device, metric: str) -> tuple[float, list[float]]:
    confusion = engine.evaluate(model, prepare.dataset(scenario, rows), scenario.num_classes, device,
                                batch_size=scenario.evaluation.batch_size,
                                input_size=scenario.sized(scenario.evaluation.input_scale))
    return 100 * metrics.miou(confusion, METRIC_CLASSES[metric]), (100 * metrics.iou(confusion)).tolist()


def run(scenario: Scenario, output: Path, device_name: str = "auto", seed: int | None = None) -> dict:
    seed = scenario.seed if seed is None else seed
    device = engine.device_of(device_name)
    metric = scenario.metrics[0]
    source = prepare.scan(scenario.source)
    target = prepare.scan(scenario.target)
    source_train = prepare.split_rows(source, scenario.source, "train", seed)
    source_holdout = prepare.split_rows(source, scenario.source, "holdout", seed)
    target_train = prepare.split_rows(target, scenario.target, "train", seed)
    if (target_train.label == "").all():
        target_train = prepare.with_hidden_labels(target_train, Path(scenario.target.root) / "anno_train")
    target_val = prepare.split_rows(target, scenario.target, "val", seed)

    started = time.time()
    source_model, source_losses = _fit(scenario, source_train, device, seed, "source-only", "source")
    source_time = time.time() - started
    holdout_miou, holdout_iou = _score(scenario, source_model, source_holdout, device, metric)
    target_miou, target_iou = _score(scenario, source_model, target_val, device, metric)
    log.info("%s: source-only: held-out source %s %.1f, target val %.1f", scenario.name, metric, holdout_miou,
             target_miou)
    started = time.time()
    oracle_model, oracle_losses = _fit(scenario, target_train, device, seed, "oracle", "target")
    oracle_time = time.time() - started
    oracle_miou, oracle_iou = _score(scenario, oracle_model, target_val, device, metric)
    result = {
        "scenario": scenario.name, "metric": metric, "seed": seed,
        "backbone": scenario.model.backbone, "iterations": scenario.warmup.source_only.iterations,
        "batch_size": scenario.warmup.source_only.batch_size,
        "images": {"source_train": len(source_train), "source_holdout": len(source_holdout),
                   "target_train": len(target_train), "target_val": len(target_val)},
        "source_holdout_miou": holdout_miou, "source_only_target_miou": target_miou, "oracle_target_miou": oracle_miou,
        "ratio_to_oracle": target_miou / oracle_miou if oracle_miou > 0 else float("nan"),
        "per_class": {"source_holdout": holdout_iou, "source_only_target": target_iou, "oracle_target": oracle_iou},
        "final_loss": {"source_only": float(np.mean(source_losses[-50:])), "oracle": float(np.mean(oracle_losses[-50:]))},
        "train_seconds": {"source_only": source_time, "oracle": oracle_time},
    }
    result["passes"] = bool(holdout_miou >= 50 and result["ratio_to_oracle"] <= 0.7)
    output.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(output) as tmp:
        tmp.write_text(json.dumps(result, indent=2))
    log.info("%s: source held-out %s %.1f, source-only on target %.1f, oracle %.1f (ratio %.2f)",
             scenario.name, metric, holdout_miou, target_miou, oracle_miou, result["ratio_to_oracle"])
    return result
