"""The pipeline's stages, each one function from input files to output files (the CLI calls these).

Stages write every output atomically (temporary name, then rename), so a killed stage leaves nothing a
rerun would trust. Training stages keep their resumable state under a `state` folder beside their output.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from hiast import bank as hpla
from hiast import diskspace, distributed, engine, h5io, prepare, pseudo
from hiast.classes import IGNORE
from hiast.datasets import ImagesOnly, manifest_fingerprint, read_manifest, resize_nearest
from hiast.evaluation import evaluate_models, write_table
from hiast.model import build_model, load_weights, save_weights
from hiast.scenario import Scenario

log = logging.getLogger(__name__)


def new_model(scenario: Scenario, pretrained: bool | None = None) -> torch.nn.Module:
    m = scenario.model
    return build_model(m.backbone, scenario.num_classes, pretrained=m.pretrained if pretrained is None else pretrained,
                       aspp_dilations=m.aspp_dilations, freeze_bn=m.freeze_bn, precision=m.precision,
                       channels_last=m.channels_last)


def load_model(scenario: Scenario, path: str | Path, initialise: bool = True) -> torch.nn.Module:
    """The scenario's model with the weights of `path`, on the CPU. With `initialise=False` (for the stages
    that only infer) it is built on the meta device instead of drawing the random initial weights that the
    file then overwrites (the embedded model loads in 0.06 s this way against 0.19 s), and nothing is drawn
    from torch's global generator. BatchNorm counters an older file lacks start at 0."""
    if initialise:
        model = new_model(scenario, pretrained=False)
        load_weights(model, path)
        return model
    with torch.device("meta"):
        model = new_model(scenario, pretrained=False)
    persistent = model.state_dict().keys()
    if any(name not in persistent for name, _ in model.named_buffers()):   # not in the file: built as usual
        return load_model(scenario, path)
    model = model.to_empty(device="cpu")
    report = load_weights(model, path)
    with torch.no_grad():
        for name in report.missing:       # strict: only the tolerated num_batches_tracked can be missing
            model.get_buffer(name).zero_()
    return model


def target_train(scenario: Scenario, manifest_path: str | Path) -> pd.DataFrame:
    return prepare.split_rows(read_manifest(manifest_path), scenario.target, "train", scenario.seed)


# --- warm-up -----------------------------------------------------------------------------------------------

def warmup(scenario: Scenario, source_manifest: Path, target_manifest: Path, output: Path, state_dir: Path,
           device: torch.device, copy_from: Path | None = None) -> None:
    """Source-only training then adversarial warm-up (or import `warmup.checkpoint`, or `copy_from`: the same
    warm-up already trained for another run) -> output weights."""
    from hiast.adversarial import train_adversarial
    from hiast.supervised import train_supervised
    cfg = scenario.warmup
    source = copy_from if copy_from is not None else cfg.checkpoint
    if source is not None:
        model = load_model(scenario, source)     # checked against the model: a mismatch lists the keys
        save_weights(model, output)
        log.info("imported the warm-up weights %s -> %s", source, output)
        return
    context, device = distributed.setup(device)
    engine.seed_everything(scenario.seed)
    model = new_model(scenario)
    # the weights, the resumable state (model + Adam's two moments) and its temporary copy while it is saved
    diskspace.require_free_space(output, diskspace.training_bytes(model, 7), "warm-up")
    source_rows = prepare.split_rows(read_manifest(source_manifest), scenario.source, "train", scenario.seed)
    source = prepare.dataset(scenario, source_rows)
    state_dir = Path(state_dir)
    train_supervised(model, source, scenario.crop_view("source"), cfg.source_only, device, seed=scenario.seed,
                     desc="source-only", state_path=state_dir / "source_only.pt",
                     keep_final_state=cfg.adversarial.iterations > 0, context=context)
    if not context.is_main:
        return    # the adversarial warm-up runs in one process (rank 0); the source-only part used them all
    if cfg.adversarial.iterations:
        target = prepare.dataset(scenario, target_train(scenario, target_manifest),
                                 transform=scenario.crop_view("target"))
        source_aug = prepare.dataset(scenario, source_rows, transform=scenario.crop_view("source"))
        train_adversarial(model, source_aug, target, cfg.adversarial, device, seed=scenario.seed + 1,
                          desc="adversarial", state_path=state_dir / "adversarial.pt")
    save_weights(model, output)
    _drop_state(state_dir)


def oracle(scenario: Scenario, target_manifest: Path, output: Path, eval_output: Path, state_dir: Path,
           device: torch.device) -> pd.DataFrame | None:
    """The oracle beside the results: the scenario's model and source-only budget trained on the target's
    train labels (for the synthetic Oxford, its hidden `anno_train/`), evaluated on target val -> weights and
    eval.csv (one row, model "oracle")."""
    from hiast.supervised import train_supervised
    rows = target_train(scenario, target_manifest)
    if (rows.label.fillna("") == "").all():
        rows = prepare.with_hidden_labels(rows, Path(scenario.target.root) / "anno_train")
    context, device = distributed.setup(device)
    engine.seed_everything(scenario.seed)
    model = new_model(scenario)
    diskspace.require_free_space(output, diskspace.training_bytes(model, 7), "oracle")
    train_supervised(model, prepare.dataset(scenario, rows), scenario.crop_view("target"), scenario.warmup.source_only,
                     device, seed=scenario.seed, desc="oracle", state_path=Path(state_dir) / "oracle.pt",
                     context=context)
    if not context.is_main:
        return None
    save_weights(model, output)
    table = evaluate(scenario, target_manifest, {"oracle": output}, eval_output, None, device)
    _drop_state(state_dir)
    return table


def _drop_state(state_dir: Path) -> None:
    """The outputs are complete: the resumable state is no longer needed (it is as large as a model)."""
    state_dir = Path(state_dir)
    if state_dir.is_dir():
        for path in state_dir.glob("*.pt"):
            path.unlink()
        if not any(state_dir.iterdir()):
            state_dir.rmdir()


# --- pseudo-labels -----------------------------------------------------------------------------------------

@torch.no_grad()
def infer(model: torch.nn.Module, data, indices, input_size, device, images=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(max softmax prob float32, argmax uint8) at the inference size for the images `indices` of `data`
    (or for `images`, uint8 [n, 3, H, W], already loaded)."""
    if images is None:
        images = torch.stack([data[int(i)]["image"].as_subclass(torch.Tensor) for i in indices])
    x = engine.to_input(images, device)
    x = torch.nn.functional.interpolate(x, size=input_size, mode="bilinear", align_corners=False)
    probs = engine.upsample(model(x), input_size).softmax(1)
    conf, pred = probs.max(1)
    return conf, pred.to(torch.uint8)


def _instance_images(data, groups, workers: int, device: torch.device):
    """uint8 image batches, one per instance, decoded ahead of the model by `workers` loader processes, or
    with none: by a background thread at a low priority where torch's threads leave a CPU free, and where
    forward streams run side by side, not here (None) but by each stream for the instance it labels. Why:
    decoding is ~7% of the stage at 1 thread and hides on the free CPU; beside forwards that use every CPU
    a decoding thread only takes time from them, and a stream that decodes its own images never waits for
    them and finds them in its core's cache (BENCHMARKS.md, "The pseudo-labelling stage")."""
    if workers == 0 and forward_streams(device) > 1:
        return None
    loader = torch.utils.data.DataLoader(ImagesOnly(data), batch_sampler=[[int(i) for i in g] for g in groups],
                                         num_workers=workers, collate_fn=engine.collate)
    batches = (batch["image"] for batch in loader)
    if workers == 0 and engine.spare_core():
        return engine.prefetched(batches, nice=engine.LOADER_NICE)
    return batches


def forward_streams(device: torch.device) -> int:
    """How many labeller forwards run side by side: on a CPU one per torch thread, each on one thread (the
    labels are then the same at any thread count, and on 2 cores the stage was faster than one forward on 2
    threads: BENCHMARKS.md, "The pseudo-labelling stage"); on a GPU one. Memory: each stream holds one
    instance's activations (measured peak: +0.75-1.0 GiB for ResNet-101 at 768x1536, 2 images, in bf16, +1.2 GiB
    in fp32; +28 MiB for the embedded model at 192x384)."""
    return torch.get_num_threads() if device.type == "cpu" else 1


def inferred(model: torch.nn.Module, data, groups, batches, size, device: torch.device):
    """`infer` over the instances `groups` with their image `batches` (None: each instance's images are
    decoded where it is inferred): (group, conf, pred) per instance, in order, from `forward_streams(device)`
    streams. Close it (or run it to its end) to restore torch's thread count."""
    images_only = ImagesOnly(data)

    def labelled(pair):
        group, images = pair
        if images is None:
            images = torch.stack([images_only[int(i)]["image"] for i in group])
        return (group, *infer(model, data, group, size, device, images))

    streams = forward_streams(device)
    pairs = zip(groups, itertools.repeat(None) if batches is None else batches)
    yield from map(labelled, pairs) if streams == 1 else engine.mapped_in_streams(labelled, pairs, streams)


def _labelling_setup(scenario: Scenario, round_number: int, manifest_path: Path):
    cfg = scenario.rounds[round_number - 1].pseudo
    rows = target_train(scenario, manifest_path)
    order = pseudo.instance_order(len(rows), cfg.instance_size, scenario.seed + round_number)
    return cfg, rows, order, scenario.sized(cfg.input_scale)


def labelling_model(scenario: Scenario, round_number: int, model_path: Path, rows: pd.DataFrame,
                    device: torch.device) -> torch.nn.Module:
    """The round's labeller in eval mode; with `pseudo.bn_statistics: target` its BatchNorm statistics are
    first re-estimated on target train crops (AdaBN)."""
    model = load_model(scenario, model_path, initialise=False)
    if scenario.rounds[round_number - 1].pseudo.bn_statistics == "target":
        _adapt_bn(model, scenario, rows, device, f"labeller of round {round_number}")
    return model.to(device).eval()


def _adapt_bn(model: torch.nn.Module, scenario: Scenario, rows: pd.DataFrame, device: torch.device, what: str) -> None:
    from hiast import adabn
    seen = adabn.adapt(model, scenario, rows, device, scenario.seed)
    log.info("%s: BatchNorm statistics re-estimated on %d target train crops", what, seen)


def pseudo_shard(scenario: Scenario, round_number: int, model_path: Path, manifest_path: Path, shard: int,
                 output: Path, device: torch.device) -> None:
    """Inference for shard `shard` of the round's `pseudo.shards`: the instances shard, shard + K, ... of the
    fixed instance order -> model_outputs_<shard>.h5, which the sequential pass (`pseudo_labels` with
    `shard_paths`) turns into the same labels as one process."""
    cfg, rows, order, size = _labelling_setup(scenario, round_number, manifest_path)
    if not 0 <= shard < cfg.shards:
        raise ValueError(f"shard {shard} outside 0..{cfg.shards - 1} (rounds[{round_number - 1}].pseudo.shards)")
    groups = order[shard::cfg.shards]
    data = prepare.dataset(scenario, rows)
    model = labelling_model(scenario, round_number, model_path, rows, device)
    attrs = {"manifest_fingerprint": manifest_fingerprint(rows), "model_fingerprint": h5io.file_fingerprint(model_path),
             "shard": shard, "shards": cfg.shards, "num_classes": scenario.num_classes, "round": round_number}
    image_index = [int(i) for group in groups for i in group]
    diskspace.require_free_space(output, diskspace.model_output_bytes(len(image_index), *size),
                                 f"pseudo-label inference shard {shard}")
    with h5io.model_outputs_writer(output, image_index, size[0], size[1], attrs) as write:
        position = 0
        outputs = inferred(model, data, groups, _instance_images(data, groups, cfg.workers, device), size, device)
        with contextlib.closing(outputs):
            for group, conf, pred in engine.progress(outputs, f"pseudo-label inference round {round_number} "
                                                     f"shard {shard}", total=len(groups)):
                for k in range(len(group)):
                    write(position, conf[k].cpu().numpy(), pred[k].cpu().numpy())
                    position += 1


def pseudo_labels(scenario: Scenario, round_number: int, model_path: Path, manifest_path: Path, output: Path,
                  device: torch.device, shard_paths: list[Path] | None = None) -> None:
    """Label the target train split with round `round_number`'s policy -> pseudo_labels.h5. The model runs
    here, or (with `shard_paths`, one model_outputs file per shard) its stored outputs are read back."""
    cfg, rows, order, size = _labelling_setup(scenario, round_number, manifest_path)
    num_classes = scenario.num_classes
    fingerprint = manifest_fingerprint(rows)
    diskspace.require_free_space(output, diskspace.pseudo_label_bytes(len(rows), *size, num_classes),
                                 f"pseudo-labels round {round_number}")
    if shard_paths:
        read = _stored_outputs(shard_paths, cfg.shards, fingerprint, h5io.file_fingerprint(model_path), device)

        def stream():
            for group in order:
                yield (group, *read(group))
    else:
        data = prepare.dataset(scenario, rows)
        model = labelling_model(scenario, round_number, model_path, rows, device)

        def stream():  # closing it closes `inferred` too (yield from), which restores torch's threads
            yield from inferred(model, data, order, _instance_images(data, order, cfg.workers, device), size, device)
    if cfg.policy == "CBST":
        init = cbst_pass(stream(), len(order), num_classes, cfg)
    elif cfg.policy == "CT":
        init = pseudo.ct_thresholds(num_classes, cfg.ct_threshold)
    elif cfg.policy == "NT":
        init = pseudo.nt_thresholds(num_classes)
    else:
        init = cfg.initial_threshold
    state = pseudo.IASState(num_classes, cfg.alpha, cfg.beta, cfg.gamma, init=init,
                            momentum=cfg.class_conf_momentum, adaptive=cfg.policy == "IAS")
    trajectory = []
    attrs = {"policy": cfg.policy, "alpha": cfg.alpha, "beta": cfg.beta, "gamma": cfg.gamma,
             "num_classes": num_classes, "manifest_fingerprint": fingerprint,
             "instance_size": cfg.instance_size, "round": round_number, "model": str(model_path)}
    width = max(len(group) for group in order)
    with h5io.PseudoLabelWriter(output, list(rows.image_id), size[0], size[1], num_classes, attrs) as writer, \
            contextlib.closing(stream()) as instances:
        for group, conf, pred in engine.progress(instances, f"pseudo-labels round {round_number}", total=len(order)):
            step = state.step(conf, pred)
            trajectory.append(step.thresholds.astype(np.float32))
            labels = step.labels.cpu().numpy()
            for k, index in enumerate(group):
                writer.write(int(index), labels[k], trajectory[-1], step.pixel_counts[k])
        writer.set_extra("threshold_trajectory", np.stack(trajectory))
        writer.set_extra("instance_order", np.array([list(g) + [-1] * (width - len(g)) for g in order], dtype=np.int64))
        writer.set_attrs(class_mean_conf=state.class_mean_conf)


def _stored_outputs(shard_paths, shards: int, fingerprint: str, model_fingerprint: str, device):
    """A function group -> (conf, pred) on `device` that reads the shards' stored model outputs."""
    if len(shard_paths) != shards:
        raise ValueError(f"{len(shard_paths)} shard files given, the round's pseudo.shards is {shards}")
    stored = [h5io.read_model_outputs(p, fingerprint, model_fingerprint) for p in shard_paths]
    owner = {}
    for k, outputs in enumerate(stored):
        if outputs.attrs["shard"] != k or outputs.attrs["shards"] != shards:
            raise ValueError(f"{outputs.path}: shard {outputs.attrs['shard']} of {outputs.attrs['shards']}, "
                             f"expected shard {k} of {shards} at this position")
        owner.update({int(i): outputs for i in outputs.image_index})

    def outputs(group):
        pairs = [owner[int(i)].get(int(i)) for i in group]
        conf = torch.from_numpy(np.stack([c for c, _ in pairs])).to(device)
        pred = torch.from_numpy(np.stack([p for _, p in pairs])).to(device)
        return conf, pred
    return outputs


def cbst_pass(stream, instances: int, num_classes, cfg) -> np.ndarray:
    """CBST's global thresholds: a first pass over every `sample_interval`-th pixel of every instance."""
    conf_all, pred_all = [], []
    for _, conf, pred in engine.progress(stream, "CBST statistics", total=instances):
        conf_all.append(conf.reshape(-1)[:: cfg.cbst_sample_interval].cpu())
        pred_all.append(pred.reshape(-1)[:: cfg.cbst_sample_interval].cpu())
    return np.asarray(pseudo.cbst_thresholds(torch.cat(conf_all), torch.cat(pred_all), num_classes, cfg.cbst_p),
                      dtype=np.float64)


# --- instance bank -----------------------------------------------------------------------------------------

def instance_bank(scenario: Scenario, round_number: int, pseudo_path: Path, manifest_path: Path,
                  output: Path) -> None:
    """Hard classes, donors and their hard-class regions (at the base size) -> instance_bank.h5."""
    cfg = scenario.rounds[round_number - 1].bank
    rows = target_train(scenario, manifest_path)
    fingerprint = manifest_fingerprint(rows)
    labels_file = h5io.read_pseudo_labels(pseudo_path, expected_fingerprint=fingerprint, expected_count=len(rows))
    mean_conf = np.asarray(labels_file.class_mean_conf, dtype=np.float64)
    k = cfg.num_hard if cfg.enabled else 0
    hard, probs = hpla.hard_classes(mean_conf, k, excluded=scenario.excluded_hard_classes)
    counts = labels_file.pixel_counts
    donors = hpla.donor_table(counts, hard, cfg.drop_smallest)
    data = prepare.dataset(scenario, rows)
    regions = {}
    donor_images = sorted({int(i) for image_index, _ in donors.values() for i in image_index})
    hard_list = [int(c) for c in hard]
    # donor regions: RGB + label bytes of their hard pixels at the base size, twice for the bounding boxes
    upscale = scenario.base_size[0] * scenario.base_size[1] / (labels_file.height * labels_file.width)
    hard_pixels = int(counts[np.ix_(donor_images, hard_list)].sum()) if donor_images else 0
    diskspace.require_free_space(output, int(hard_pixels * upscale * 4 * 2) + (1 << 20),
                                 f"instance bank round {round_number}")
    for index in engine.progress(donor_images, "bank regions"):
        image = data.load_image(index)
        labels = resize_nearest(labels_file.labels(index), *image.shape[:2])
        keep = np.isin(labels, hard_list)
        rows_any, cols_any = np.flatnonzero(keep.any(1)), np.flatnonzero(keep.any(0))
        if rows_any.size == 0:  # the class vanished in the resize to the base size: store an empty box
            regions[index] = (np.zeros(4, np.int32), np.zeros((0, 0, 3), np.uint8), np.zeros((0, 0), np.uint8))
            continue
        top, bottom, left, right = rows_any[0], rows_any[-1] + 1, cols_any[0], cols_any[-1] + 1
        crop_labels = np.where(keep, labels, IGNORE)[top:bottom, left:right].astype(np.uint8)
        regions[index] = (np.array([top, left, bottom, right], np.int32), image[top:bottom, left:right],
                          crop_labels)
    attrs = {"paste": cfg.paste, "max_donors": cfg.max_donors, "drop_smallest": cfg.drop_smallest,
             "manifest_fingerprint": fingerprint, "pseudo_label_fingerprint": h5io.file_fingerprint(pseudo_path),
             "height": scenario.base_size[0], "width": scenario.base_size[1], "round": round_number}
    h5io.write_instance_bank(output, hard, mean_conf, probs, donors, regions, attrs)
    log.info("round %d: hard classes %s, %d donor images", round_number, hard_list, len(donor_images))


# --- self-training -----------------------------------------------------------------------------------------

def self_train(scenario: Scenario, round_number: int, init: Path, pseudo_path: Path, bank_path: Path,
               manifest_path: Path, output: Path, teacher_output: Path, state_dir: Path,
               device: torch.device, source_manifest: Path | None = None) -> None:
    from hiast.selftrain import PseudoLabelledTarget, train_round
    from hiast.supervised import Augmented
    rnd = scenario.rounds[round_number - 1]
    source = None
    if rnd.train.source_weight:
        if source_manifest is None:
            raise ValueError(f"rounds[{round_number - 1}].train.source_weight = {rnd.train.source_weight} needs the "
                             f"source manifest (--source-manifest)")
        source_rows = prepare.split_rows(read_manifest(source_manifest), scenario.source, "train", scenario.seed)
        source = Augmented(prepare.dataset(scenario, source_rows), scenario.crop_view("source"))
    rows = target_train(scenario, manifest_path)
    fingerprint = manifest_fingerprint(rows)
    labels_file = h5io.read_pseudo_labels(pseudo_path, expected_fingerprint=fingerprint, expected_count=len(rows))
    bank = h5io.read_instance_bank(bank_path, expected_fingerprint=fingerprint,
                                   expected_pseudo_label_fingerprint=h5io.file_fingerprint(pseudo_path))
    data = PseudoLabelledTarget(prepare.dataset(scenario, rows), labels_file, bank, rnd.bank, scenario.scale,
                                weak_view=scenario.crop_view("target"),
                                strong=rnd.train.strong_view)
    context, device = distributed.setup(device)
    student = load_model(scenario, init)
    if rnd.train.bn_statistics == "target":    # then frozen by train_round; a resumed state overwrites them
        _adapt_bn(student, scenario, rows, device, f"student of round {round_number}")
    # student and teacher, the resumable state (both + Adam's two moments) and its temporary copy
    diskspace.require_free_space(output, diskspace.training_bytes(student, 10), f"self-training round {round_number}")
    teacher, _ = train_round(student, data, rnd.train, device, seed=scenario.seed * 1000 + round_number,
                             state_path=Path(state_dir) / "self_train.pt", desc=f"self-training round {round_number}",
                             context=context, source=source)
    if not context.is_main:
        return
    save_weights(teacher, teacher_output)
    save_weights(student, output)
    _drop_state(state_dir)


# --- evaluation and tables ---------------------------------------------------------------------------------

def evaluate(scenario: Scenario, manifest_path: Path, models: dict[str, Path], output: Path,
             mask_dir: Path | None, device: torch.device) -> pd.DataFrame:
    val_rows = prepare.split_rows(read_manifest(manifest_path), scenario.target, "val", scenario.seed)
    diskspace.require_free_space(output, (1 << 20) * (1 + len(models) * scenario.evaluation.save_masks), "evaluation")
    loaded = {name: load_model(scenario, path, initialise=False) for name, path in models.items()}
    table = evaluate_models(scenario, loaded, val_rows, device, mask_dir)
    write_table(table, output)
    return table


def summary(scenario: Scenario, warmup_eval: Path, round_evals: list[Path], output: Path) -> pd.DataFrame:
    """results/<scenario>/summary.csv: one row per stage (warm-up, round 1..R) and model."""
    frames = [pd.read_csv(warmup_eval).assign(stage="warmup")]
    for r, path in enumerate(round_evals, start=1):
        frames.append(pd.read_csv(path).assign(stage=f"round_{r}"))
    table = pd.concat(frames, ignore_index=True)
    table.insert(0, "scenario", scenario.name)
    columns = ["scenario", "stage", "model", *scenario.metrics]
    table = table[columns + [c for c in table.columns if c not in columns]]
    write_table(table, output)
    return table


METRIC_ORDER = ("mIoU-19", "mIoU-16", "mIoU-13", "mIoU-9")


def results_table(summaries: list[Path], output: Path, reported: str = "student") -> str:
    """results/summary.md: scenarios x (mIoU-19, mIoU-16, mIoU-13, mIoU-9) for the last round's `reported`
    model, the warm-up, and, apart and marked, the best evaluated model chosen with target-val labels (what
    the official code reports as "best"; an upper bound, not an unsupervised result)."""
    final_rows, warm_rows, best_rows = [], [], []
    for path in summaries:
        table = pd.read_csv(path)
        name = table.scenario.iloc[0]
        last_stage = [s for s in table.stage.unique() if s.startswith("round_")][-1:] or ["warmup"]
        final = table[(table.stage == last_stage[0]) & (table.model.isin([reported, "warmup"]))].iloc[0]
        warm = table[table.stage == "warmup"].iloc[0]
        final_rows.append([name] + [_fmt(final.get(m)) for m in METRIC_ORDER])
        warm_rows.append([name] + [_fmt(warm.get(m)) for m in METRIC_ORDER])
        best = best_on_target_val(table)
        best_rows.append([name] + [_fmt(best.get(m)) for m in METRIC_ORDER] + [f"{best.stage} {best.model}"])
    header = ["| scenario | mIoU-19 | mIoU-16 | mIoU-13 | mIoU-9 |", "|---|---|---|---|---|"]
    lines = [f"# Results ({reported} of the last round; no checkpoint selected on target labels)", "", *header]
    lines += ["| " + " | ".join(row) + " |" for row in final_rows]
    lines += ["", "## Warm-up", "", *header]
    lines += ["| " + " | ".join(row) + " |" for row in warm_rows]
    lines += ["", "## Best evaluated model, SELECTED ON TARGET-VAL LABELS (as the official code's \"best\"; "
              "not an unsupervised result)", "",
              "| scenario | mIoU-19 | mIoU-16 | mIoU-13 | mIoU-9 | selected |", "|---|---|---|---|---|---|"]
    lines += ["| " + " | ".join(row) + " |" for row in best_rows]
    text = "\n".join(lines) + "\n"
    from hiast.imageio import atomic_path
    with atomic_path(output) as tmp:
        tmp.write_text(text)
    return text


def best_on_target_val(table: pd.DataFrame) -> pd.Series:
    """The summary row with the highest value of the scenario's first metric (ties: the earliest row)."""
    metric = next(m for m in METRIC_ORDER if m in table.columns and table[m].notna().any())
    return table.loc[table[metric].idxmax()]


def _fmt(value) -> str:
    return "–" if value is None or (isinstance(value, float) and np.isnan(value)) else f"{float(value):.1f}"


__all__ = ["warmup", "pseudo_labels", "instance_bank", "self_train", "evaluate", "summary", "results_table"]
