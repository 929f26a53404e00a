"""A baseline for the results tables: the same weights with BatchNorm statistics re-estimated on target images.

AdaBN needs no label and no training; on a benchmark whose domain gap lies mostly in low-order image statistics
(colour, contrast), it closes much of the warm-up -> oracle gap by itself, and self-training has to beat it to
mean anything. For each model: target-val metrics as saved and after re-estimating the BN running statistics on
target train images (the round's weak training crop, a fixed sample).
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd
import torch

from hiast import engine, prepare, sampling
from hiast.datasets import read_manifest
from hiast.evaluation import evaluate_models
from hiast.imageio import atomic_path
from hiast.scenario import Scenario
from hiast.stages import load_model, target_train

log = logging.getLogger(__name__)


ADABN_IMAGES = 400        # target train crops the statistics are estimated from (bench default, stage options)
ADABN_BATCH = 4


def target_batches(scenario: Scenario, rows: pd.DataFrame, images: int, batch_size: int,
                   seed: int) -> list[torch.Tensor]:
    """`images` target train images (a seeded sample) through the target's training crop, in batches."""
    data = prepare.dataset(scenario, rows, transform=scenario.crop_view("target"))
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(data), generator=generator)[:images].tolist()
    with sampling.seeded(seed):     # the crops' randomness, leaving the caller's generator as it was
        crops = [data[i]["image"].as_subclass(torch.Tensor) for i in order]
    return [torch.stack(crops[start:start + batch_size]) for start in range(0, len(crops), batch_size)]


def adapt(model: torch.nn.Module, scenario: Scenario, rows: pd.DataFrame, device: torch.device, seed: int,
          images: int = ADABN_IMAGES, batch_size: int = ADABN_BATCH) -> int:
    """Re-estimate `model`'s BatchNorm statistics on target train crops (in place; left in eval mode)."""
    return engine.recalibrate_bn(model, target_batches(scenario, rows, images, batch_size, seed), device)


def run(scenario: Scenario, manifest_path: Path, models: dict[str, Path], output: Path, device: torch.device,
        images: int = ADABN_IMAGES, batch_size: int = ADABN_BATCH) -> pd.DataFrame:
    rows = target_train(scenario, manifest_path)
    val_rows = prepare.split_rows(read_manifest(manifest_path), scenario.target, "val", scenario.seed)
    tables = []
    for name, path in models.items():
        as_saved = load_model(scenario, path)
        adapted = load_model(scenario, path)
        seen = adapt(adapted, scenario, rows, device, scenario.seed, images, batch_size)
        log.info("%s: BN statistics re-estimated on %d target train images", name, seen)
        table = evaluate_models(scenario, {name: as_saved, f"{name}+adabn": adapted}, val_rows, device)
        tables.append(table)
    table = pd.concat(tables, ignore_index=True)
    output.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(output) as tmp:
        table.to_csv(tmp, index=False, float_format="%.4f")
    return table
