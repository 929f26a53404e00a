"""Figures of the Snakemake report (`snakemake --report report.html`), one PNG per plot kind and scenario.

Three layers:

* pure functions computing the tables from arrays and tables (`miou_by_round`, `warmup_vs_final`,
  `pseudo_label_counts`, `coverage_precision`, `threshold_table`);
* plotting functions drawing one figure from those tables and writing it as a PNG atomically
  (`plot_*`; matplotlib's Agg canvas, no pyplot state);
* one entry point per plot kind reading the pipeline's files (`*_figure`), called by the rules of
  workflow/rules/report.smk through `python -m hiast.report KIND ...`.

Every reader names the file it could not read (`ReportError`, or the `H5FormatError` / `DatasetError` /
`ImageReadError` of the module that reads it).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from hiast import classes, datasets, h5io
from hiast.imageio import ImageReadError, atomic_path, read_rgb

METRIC_PREFIX = "mIoU-"
KEY_COLUMNS = ("scenario", "stage", "model")
IGNORE = classes.IGNORE
DPI = 110
# Label spaces by their number of classes (a pseudo_labels.h5 stores only the count).
SPACE_OF_COUNT = {len(names): space for space, (names, _) in classes.LABEL_SPACES.items()}


class ReportError(ValueError):
    """A report input that is missing or not what the figure needs (the message names the file)."""


# --- reading ---------------------------------------------------------------------------------------------

def _require_file(path: str | os.PathLike, what: str) -> Path:
    path = Path(path)
    if not path.is_file():
        raise ReportError(f"{path}: {what} does not exist")
    return path


def read_summary(path: str | os.PathLike) -> pd.DataFrame:
    """results/<scenario>/summary.csv, checked: scenario, stage, model, >= 1 mIoU-* column, class columns."""
    path = _require_file(path, "summary table")
    try:
        table = pd.read_csv(path)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise ReportError(f"{path}: not a readable summary table ({err})") from err
    missing = [c for c in KEY_COLUMNS if c not in table.columns]
    if missing:
        raise ReportError(f"{path}: summary table lacks column(s) {missing}")
    if not metric_columns(table):
        raise ReportError(f"{path}: summary table has no {METRIC_PREFIX}* column")
    if "warmup" not in set(table.stage):
        raise ReportError(f"{path}: summary table has no warm-up row (stage 'warmup')")
    return table


def metric_columns(table: pd.DataFrame) -> list[str]:
    return [c for c in table.columns if str(c).startswith(METRIC_PREFIX)]


def class_columns(table: pd.DataFrame) -> list[str]:
    """The per-class IoU columns: everything after the key and metric columns."""
    skip = set(KEY_COLUMNS) | set(metric_columns(table))
    return [c for c in table.columns if c not in skip]


def stage_order(stages: Iterable[str]) -> list[str]:
    """warmup first, then round_1, round_2, ... in numeric order (round_10 after round_9)."""
    rounds = sorted({s for s in stages if re.fullmatch(r"round_\d+", s)}, key=lambda s: int(s.split("_")[1]))
    return (["warmup"] if "warmup" in set(stages) else []) + rounds


def stage_label(stage: str) -> str:
    return "warm-up" if stage == "warmup" else stage.replace("_", " ")


def label_space_of(num_classes: int, path: str | os.PathLike = "<array>") -> tuple[list[str], np.ndarray]:
    """(class names, palette) of the label space with `num_classes` classes."""
    if num_classes not in SPACE_OF_COUNT:
        raise ReportError(f"{path}: {num_classes} classes match no label space "
                          f"({ {len(n): s for s, (n, _) in classes.LABEL_SPACES.items()} })")
    names, palette = classes.LABEL_SPACES[SPACE_OF_COUNT[num_classes]]
    return list(names), palette


def _manifest(path: str | os.PathLike) -> pd.DataFrame:
    return datasets.read_manifest(_require_file(path, "manifest"))


def label_paths(manifest: pd.DataFrame, image_ids: Sequence[str], split: str) -> list[str | None]:
    """The target label file of each image id of `split` (None where there is none). Oxford's train split
    is unlabelled in its official layout; the synthetic benchmark keeps its labels in `<root>/anno_train/`
    (see `prepare.with_hidden_labels`), used here only to measure pseudo-label precision."""
    rows = manifest[manifest.split == split].drop_duplicates("image_id").set_index("image_id")
    out: list[str | None] = []
    for image_id in image_ids:
        if image_id not in rows.index:
            raise ReportError(f"image {image_id!r} is not in the manifest's {split!r} split")
        row = rows.loc[image_id]
        if row.label:
            out.append(row.label)
            continue
        hidden = Path(row.image).parent.parent / "anno_train" / f"{image_id}.png"
        out.append(str(hidden) if row.dataset == "oxford" and hidden.is_file() else None)
    return out


def read_target_label(path: str, dataset: str, label_space: str, size: tuple[int, int]) -> np.ndarray:
    """A target label map in train ids, resized with nearest neighbour to `size` (H, W)."""
    return datasets.resize_nearest(datasets.read_label(path, dataset, label_space), *size)


def read_image(path: str, size: tuple[int, int]) -> np.ndarray:
    from PIL import Image
    image = read_rgb(path)
    if image.shape[:2] != tuple(size):
        image = np.array(Image.fromarray(image).resize((size[1], size[0]), Image.BILINEAR))
    return image


# --- tables ----------------------------------------------------------------------------------------------

def miou_by_round(table: pd.DataFrame) -> pd.DataFrame:
    """mIoU per stage (rows: warmup, round_1, ...) and (model, metric) (columns, a MultiIndex)."""
    metrics = metric_columns(table)
    stages = stage_order(table.stage)
    wide = table.pivot_table(index="stage", columns="model", values=metrics, aggfunc="first", dropna=False)
    wide.columns = wide.columns.swaplevel(0, 1)
    return wide.reindex(stages).sort_index(axis=1)


def warmup_vs_final(table: pd.DataFrame, model: str = "student") -> tuple[pd.DataFrame, str]:
    """Per-class IoU of the warm-up and of `model` in the last round: (table indexed by class with columns
    warmup, final, change; the final stage's name)."""
    stages = stage_order(table.stage)
    final_stage = stages[-1]
    names = class_columns(table)
    warm = table[table.stage == "warmup"].iloc[0]
    last = table[table.stage == final_stage]
    if final_stage != "warmup":
        if model not in set(last.model):
            raise ReportError(f"no {model!r} row in {final_stage}; models there: {sorted(set(last.model))}")
        last = last[last.model == model]
    final = last.iloc[0]
    out = pd.DataFrame({"warmup": pd.to_numeric(warm[names], errors="coerce").to_numpy(float),
                        "final": pd.to_numeric(final[names], errors="coerce").to_numpy(float)}, index=names)
    out["change"] = out.final - out.warmup
    return out, final_stage


@dataclass
class PseudoLabelCounts:
    """Pixel counts per class c: `labelled` pseudo-labelled c; `checked` pseudo-labelled c where the target
    label is known (not ignore); `correct` those whose target label is c; `pixels` all pixels seen."""

    labelled: np.ndarray
    checked: np.ndarray
    correct: np.ndarray
    pixels: int = 0

    @classmethod
    def zeros(cls, num_classes: int) -> PseudoLabelCounts:
        return cls(*(np.zeros(num_classes, np.int64) for _ in range(3)), pixels=0)

    def __add__(self, other: PseudoLabelCounts) -> PseudoLabelCounts:
        return PseudoLabelCounts(self.labelled + other.labelled, self.checked + other.checked,
                                 self.correct + other.correct, self.pixels + other.pixels)


def pseudo_label_counts(pseudo: np.ndarray, target: np.ndarray | None, num_classes: int) -> PseudoLabelCounts:
    """Counts of one or more label maps ([H, W] or [N, H, W], 255 = no label / ignore); `target` None when
    the images have no target labels (then checked = correct = 0)."""
    pseudo = np.asarray(pseudo)
    flat = pseudo.reshape(-1)
    kept = flat != IGNORE
    labelled = np.bincount(flat[kept], minlength=num_classes)[:num_classes]
    checked = correct = np.zeros(num_classes, np.int64)
    if target is not None:
        target = np.asarray(target)
        if target.shape != pseudo.shape:
            raise ValueError(f"target labels have shape {target.shape}, pseudo-labels {pseudo.shape}")
        truth = target.reshape(-1)
        known = kept & (truth != IGNORE)
        checked = np.bincount(flat[known], minlength=num_classes)[:num_classes]
        correct = np.bincount(flat[known & (flat == truth)], minlength=num_classes)[:num_classes]
    return PseudoLabelCounts(labelled.astype(np.int64), checked.astype(np.int64), correct.astype(np.int64),
                             int(flat.size))


def coverage_precision(counts: PseudoLabelCounts, class_names: Sequence[str],
                       hard: Iterable[int] = ()) -> pd.DataFrame:
    """Per class: coverage (share of all pixels pseudo-labelled with the class), precision (share of its
    pseudo-labelled pixels with a known target label that the label confirms; NaN where none is known) and
    whether it is a hard class. Shares in [0, 1]."""
    hard = {int(c) for c in hard}
    with np.errstate(invalid="ignore", divide="ignore"):
        coverage = counts.labelled / counts.pixels if counts.pixels else np.full(len(class_names), np.nan)
        precision = np.where(counts.checked > 0, counts.correct / np.maximum(counts.checked, 1), np.nan)
    return pd.DataFrame({"class_id": np.arange(len(class_names)), "class": list(class_names),
                         "hard": [c in hard for c in range(len(class_names))],
                         "labelled_pixels": counts.labelled, "coverage": coverage,
                         "checked_pixels": counts.checked, "correct_pixels": counts.correct,
                         "precision": precision})


def threshold_table(trajectories: Sequence[np.ndarray], class_names: Sequence[str]) -> pd.DataFrame:
    """Long table of the IAS thresholds: round (1-based), instance (1-based, within its round), class,
    threshold; `trajectories[r - 1]` is round r's [K, C] threshold_trajectory."""
    frames = []
    for r, trajectory in enumerate(trajectories, start=1):
        trajectory = np.asarray(trajectory, dtype=np.float64)
        if trajectory.ndim != 2 or trajectory.shape[1] != len(class_names):
            raise ValueError(f"round {r}: threshold trajectory has shape {trajectory.shape}, "
                             f"expected (K, {len(class_names)})")
        k, c = trajectory.shape
        frames.append(pd.DataFrame({"round": r, "instance": np.repeat(np.arange(1, k + 1), c),
                                    "class": np.tile(np.asarray(class_names, dtype=object), k),
                                    "threshold": trajectory.reshape(-1)}))
    return pd.concat(frames, ignore_index=True) if frames else \
        pd.DataFrame(columns=["round", "instance", "class", "threshold"])


def example_indices(count: int, wanted: int) -> list[int]:
    """`wanted` indices spread evenly over 0..count-1 (all of them when there are fewer)."""
    if count <= 0 or wanted <= 0:
        return []
    return sorted({int(i) for i in np.linspace(0, count - 1, min(wanted, count)).round()})


# --- plotting --------------------------------------------------------------------------------------------

def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    fig = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def save_png(fig, path: str | os.PathLike) -> Path:
    """Write a figure as a PNG atomically (temporary name in the same folder, then rename)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI, bbox_inches="tight")
    return path


def _rgb(palette: np.ndarray, c: int) -> tuple[float, float, float]:
    return tuple(float(v) / 255 for v in palette[c])


# Line styles that, cycled with the palette's colours, keep the palette's near-identical dark blues
# (car, truck, bus, train) apart.
LINE_STYLES = ("-", "--", "-.", ":")


def plot_miou_by_round(wide: pd.DataFrame, path: str | os.PathLike, title: str = "") -> Path:
    """Lines of mIoU over warm-up, round 1..R: one colour per metric, one line style per model; the warm-up
    point starts every model's line."""
    stages = list(wide.index)
    x = np.arange(len(stages))
    models = sorted({m for m, _ in wide.columns if m != "warmup"}, key=lambda m: (m != "student", m))
    metrics = sorted({k for _, k in wide.columns}, key=lambda k: -int(k.split("-")[1]))
    fig = _figure(max(5.0, 1.2 * len(stages) + 2.5), 4.0)
    ax = fig.add_subplot()
    colours = [f"C{i}" for i in range(10)]
    values = []
    for i, metric in enumerate(metrics):
        warm = wide.loc["warmup", ("warmup", metric)] if ("warmup", metric) in wide.columns else np.nan
        for j, model in enumerate(models or ["warmup"]):
            y = wide[(model, metric)].to_numpy(float) if (model, metric) in wide.columns else np.full(len(x), np.nan)
            y = y.copy()
            y[0] = warm
            values.append(y)
            ax.plot(x, y, color=colours[i % 10], linestyle=LINE_STYLES[j % len(LINE_STYLES)],
                    marker="os^D"[j % 4], markersize=6 if j == 0 else 5,
                    label=f"{metric}, {model}" if models else metric)
        if np.isfinite(warm):
            ax.annotate(f"{warm:.1f}", (0, warm), textcoords="offset points", xytext=(-6, 6), ha="right",
                        fontsize=8, color=colours[i % 10])
        if models and (models[0], metric) in wide.columns:
            last = wide[(models[0], metric)].to_numpy(float)[-1]
            if np.isfinite(last) and len(x) > 1:
                ax.annotate(f"{last:.1f}", (x[-1], last), textcoords="offset points", xytext=(6, 6),
                            fontsize=8, color=colours[i % 10])
    ax.set_xticks(x, [stage_label(s) for s in stages])
    ax.set_xlim(-0.4, len(x) - 0.6)
    finite = np.concatenate(values) if values else np.array([])
    finite = finite[np.isfinite(finite)]
    if finite.size:
        span = max(finite.max() - finite.min(), 1.0)
        ax.set_ylim(max(0.0, finite.min() - 0.25 * span), min(100.0, finite.max() + 0.25 * span))
    ax.set_ylabel("mIoU on target val (%)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    ax.set_title(title or "mIoU by round", fontsize=10)
    return save_png(fig, path)


def plot_per_class(table: pd.DataFrame, path: str | os.PathLike, final_name: str, title: str = "") -> Path:
    """Horizontal bars per class: warm-up against the final model, with the change written beside them."""
    names = list(table.index)
    n = len(names)
    fig = _figure(7.0, 0.34 * n + 1.6)
    ax = fig.add_subplot()
    y = np.arange(n)
    h = 0.38
    warm, final = table.warmup.to_numpy(float), table.final.to_numpy(float)
    ax.barh(y - h / 2, np.nan_to_num(warm), h, color="0.65", label="warm-up")
    ax.barh(y + h / 2, np.nan_to_num(final), h, color="C0", label=final_name)
    top = np.nanmax(np.concatenate([warm, final, [1.0]]))
    for i in range(n):
        if np.isfinite(warm[i]) and np.isfinite(final[i]):
            change = final[i] - warm[i]
            text, colour = f"{change:+.1f}", ("C2" if change > 0 else "C3" if change < 0 else "0.3")
        else:
            text, colour = "n/a", "0.4"
        ax.text(max(np.nan_to_num(warm[i]), np.nan_to_num(final[i])) + 0.01 * top, y[i], text, va="center",
                fontsize=7, color=colour)
    ax.set_yticks(y, names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, top * 1.15)
    ax.set_xlabel("IoU on target val (%)")
    ax.grid(True, axis="x", alpha=0.3)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.6 / fig.get_figheight()), ncol=2,
              frameon=False)
    ax.set_title(title or "Per-class IoU", fontsize=10)
    return save_png(fig, path)


def constant_classes(table: pd.DataFrame) -> set[str]:
    """Classes whose threshold never moves within any round (e.g. never predicted, or a fixed policy)."""
    spread = table.groupby(["round", "class"]).threshold.agg(lambda t: np.nanmax(t) - np.nanmin(t)
                                                              if np.isfinite(t).any() else 0.0)
    moving = spread[spread > 1e-6].index.get_level_values("class")
    return set(table["class"]) - set(moving)


def plot_thresholds(table: pd.DataFrame, class_names: Sequence[str], palette: np.ndarray,
                    path: str | os.PathLike, title: str = "") -> Path:
    """One panel per round: each class's threshold over the round's instances, in its palette colour (with
    a line style cycle to keep similar colours apart); classes whose threshold never moves are drawn thin
    and faint, and marked "(constant)" in the legend, so that they do not hide the moving ones."""
    from matplotlib.ticker import MaxNLocator
    rounds = sorted(table["round"].unique()) or [1]
    fixed = constant_classes(table) if len(table) else set()
    everything_fixed = fixed >= set(class_names)
    cols = min(3, len(rounds))
    rows = -(-len(rounds) // cols)
    fig = _figure(4.2 * cols + 1.9, max(3.2 * rows + 0.6, 0.19 * len(class_names) + 0.8))
    axes = fig.subplots(rows, cols, squeeze=False, sharey=True)
    lines, labels = [], []
    for ax, r in zip(axes.flat, rounds):
        part = table[table["round"] == r]
        lines, labels = [], []
        for c, name in enumerate(class_names):
            series = part[part["class"] == name]
            faint = name in fixed and not everything_fixed
            (line,) = ax.plot(series.instance, series.threshold, color=_rgb(palette, c),
                              linestyle=LINE_STYLES[c % len(LINE_STYLES)], linewidth=0.8 if faint else 1.6,
                              alpha=0.45 if faint else 1.0, zorder=1 if faint else 2,
                              marker="." if len(series) < 12 and not faint else None, label=name)
            lines.append(line)
            labels.append(f"{name} (constant)" if faint else name)
        ax.set_title(f"round {r}", fontsize=9)
        ax.set_xlabel("instance", fontsize=8)
        ax.grid(True, alpha=0.3)
        ax.tick_params(labelsize=8)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    for ax in axes.flat[len(rounds):]:
        ax.set_visible(False)
    for ax in axes[:, 0]:
        ax.set_ylabel("confidence threshold", fontsize=8)
    fig.suptitle(title or "Thresholds over instances", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1 - 1.9 / fig.get_figwidth(), 1))
    fig.legend(lines, labels, loc="center left", bbox_to_anchor=(1 - 1.85 / fig.get_figwidth(), 0.5),
               fontsize=7.5, title="class", title_fontsize=8, handlelength=2.6, frameon=False)
    return save_png(fig, path)


def plot_pseudo_label_stats(table: pd.DataFrame, path: str | os.PathLike, title: str = "") -> Path:
    """Two panels over classes, one bar per round: coverage (log scale, % of all pixels) and precision
    (% where target labels exist); hard classes of each round are hatched."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch
    rounds = sorted(table["round"].unique())
    names = list(table[table["round"] == rounds[0]].sort_values("class_id")["class"])
    n, k = len(names), len(rounds)
    fig = _figure(max(8.0, 0.55 * n + 2.0), 7.0)
    ax_cov, ax_prec = fig.subplots(2, 1, sharex=True)
    width = 0.8 / k
    from matplotlib import colormaps
    cmap = colormaps["viridis"]
    colours = [cmap(0.15 + 0.7 * i / max(1, k - 1)) for i in range(k)]
    has_precision = table.precision.notna().any()
    handles = []
    for i, r in enumerate(rounds):
        part = table[table["round"] == r].sort_values("class_id")
        x = np.arange(n) - 0.4 + width * (i + 0.5)
        hatch = ["////" if h else "" for h in part.hard]
        coverage = 100 * part.coverage.to_numpy(float)
        total = np.nansum(coverage)
        bars = ax_cov.bar(x, np.where(coverage > 0, coverage, np.nan), width, color=colours[i],
                          edgecolor="black", linewidth=0.4)
        for bar, h in zip(bars, hatch):
            bar.set_hatch(h)
        precision = 100 * part.precision.to_numpy(float)
        bars = ax_prec.bar(x, precision, width, color=colours[i], edgecolor="black", linewidth=0.4)
        for bar, h in zip(bars, hatch):
            bar.set_hatch(h)
        handles.append(Patch(facecolor=colours[i], edgecolor="black", linewidth=0.4,
                             label=f"round {r} ({total:.1f}% of pixels labelled)"))
        # hard classes often have no pseudo-label at all, hence no bar to hatch: a marker below each
        hard_x = x[part.hard.to_numpy(bool)]
        for ax in (ax_cov, ax_prec):
            ax.scatter(hard_x, np.full(len(hard_x), 0.025), marker="^", s=22, color=colours[i],
                       edgecolors="black", linewidths=0.4, transform=ax.get_xaxis_transform(), zorder=3,
                       clip_on=False)
    handles.append(Line2D([], [], marker="^", linestyle="none", markerfacecolor="white", markeredgecolor="black",
                          markersize=6, label="hard class of that round (bars hatched)"))
    if (table.coverage.to_numpy(float) > 0).any():
        ax_cov.set_yscale("log")
    else:      # no pixel labelled in any round (e.g. a tiny warm-up): a log axis has nothing to show
        ax_cov.set_ylim(0, 1)
        ax_cov.text(0.5, 0.5, "no pixel pseudo-labelled in any round", ha="center", va="center",
                    transform=ax_cov.transAxes, fontsize=9, color="0.3")
    ax_cov.set_ylabel("coverage (% of all pixels)", fontsize=8)
    ax_cov.grid(True, axis="y", alpha=0.3, which="both")
    ax_cov.legend(handles=handles, fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.03),
                  ncol=min(len(handles), 4), frameon=False)
    ax_prec.set_ylabel("precision (%)", fontsize=8)
    ax_prec.set_ylim(0, 105)
    ax_prec.grid(True, axis="y", alpha=0.3)
    if not has_precision:
        ax_prec.text(0.5, 0.5, "no target train labels: precision not measured", ha="center", va="center",
                     transform=ax_prec.transAxes, fontsize=9, color="0.3")
    ax_prec.set_xticks(np.arange(n), names, rotation=40, ha="right", fontsize=8)
    ax_prec.set_xlim(-0.6, n - 0.4)
    for ax in (ax_cov, ax_prec):
        ax.tick_params(axis="y", labelsize=8)
        for pos in np.arange(n - 1) + 0.5:
            ax.axvline(pos, color="0.85", linewidth=0.6, zorder=0)
    ax_cov.tick_params(axis="x", labelbottom=False)
    fig.suptitle(title or "Pseudo-labels", fontsize=10)
    fig.tight_layout()
    fig.subplots_adjust(hspace=0.3)
    return save_png(fig, path)


@dataclass
class ExampleRow:
    """One row of the example grid: an image id and its panels, (column title, RGB image or None)."""

    image_id: str
    panels: list[tuple[str, np.ndarray | None]]
    notes: dict[int, str] | None = None  # column -> text under that panel


def plot_examples(sections: Sequence[tuple[str, list[ExampleRow]]], class_names: Sequence[str],
                  palette: np.ndarray, shown: Iterable[int], path: str | os.PathLike, title: str = "") -> Path:
    """A grid: one block of rows per section (its name above it), panel titles on each block's first row,
    the image id left of each row, a palette legend of the classes `shown` below."""
    from matplotlib.patches import Patch
    rows = [(name, i, row) for name, block in sections for i, row in enumerate(block)]
    cols = max((len(row.panels) for _, _, row in rows), default=1)
    shapes = [p.shape for _, _, row in rows for _, p in row.panels if p is not None]
    aspect = (shapes[0][0] / shapes[0][1]) if shapes else 0.5
    panel_w = 3.0
    fig = _figure(panel_w * cols + 0.6, max(1, len(rows)) * (panel_w * aspect + 0.6) + 1.5)
    if not rows:
        ax = fig.add_subplot()
        ax.axis("off")
        ax.text(0.5, 0.5, "no examples", ha="center", va="center")
    else:
        axes = fig.subplots(len(rows), cols, squeeze=False)
        for (section, i, row), ax_row in zip(rows, axes):
            for j, ax in enumerate(ax_row):
                ax.set_xticks([])
                ax.set_yticks([])
                if j >= len(row.panels):
                    ax.axis("off")
                    continue
                name, image = row.panels[j]
                if image is None:
                    ax.text(0.5, 0.5, "not available", ha="center", va="center", fontsize=8, color="0.4",
                            transform=ax.transAxes)
                    ax.set_box_aspect(aspect)
                else:
                    ax.imshow(image, interpolation="nearest")
                if row.notes and j in row.notes:
                    ax.set_xlabel(row.notes[j], fontsize=7)
                if i == 0:
                    ax.set_title(f"{section}\n{name}" if j == 0 else f"\n{name}", fontsize=8, loc="left"
                                 if j == 0 else "center")
                if j == 0:
                    ax.set_ylabel(row.image_id, fontsize=7)
    present = sorted({int(c) for c in shown if int(c) != IGNORE and int(c) < len(class_names)})
    handles = [Patch(facecolor=_rgb(palette, c), edgecolor="0.5", linewidth=0.4, label=class_names[c])
               for c in present]
    handles.append(Patch(facecolor="black", edgecolor="0.5", label="no label / ignore"))
    ncol = min(len(handles), 5)
    fig.legend(handles=handles, loc="lower center", ncol=ncol, fontsize=7, bbox_to_anchor=(0.5, 0.0),
               frameon=False)
    height = fig.get_figheight()
    fig.suptitle(title or "Examples", fontsize=10, y=1 - 0.08 / height, va="top")
    legend_height = 0.18 * -(-len(handles) // ncol) + 0.15  # inches
    fig.tight_layout(rect=(0, legend_height / height, 1, 1 - 0.35 / height))
    return save_png(fig, path)


# --- entry points (one per plot kind) ---------------------------------------------------------------------

def _scenario_title(table: pd.DataFrame, what: str) -> str:
    name = str(table.scenario.iloc[0]) if len(table) else ""
    return f"{name}: {what}" if name else what


def miou_figure(summary: str | os.PathLike, output: str | os.PathLike) -> Path:
    """miou_by_round.png from summary.csv."""
    table = read_summary(summary)
    return plot_miou_by_round(miou_by_round(table), output, _scenario_title(table, "mIoU on target val by round"))


def per_class_figure(summary: str | os.PathLike, output: str | os.PathLike, model: str = "student") -> Path:
    """per_class_iou.png from summary.csv: warm-up against the last round's `model`."""
    table = read_summary(summary)
    try:
        compared, final_stage = warmup_vs_final(table, model)
    except ReportError as err:
        raise ReportError(f"{summary}: {err}") from err
    final_name = "warm-up" if final_stage == "warmup" else f"{stage_label(final_stage)} {model}"
    return plot_per_class(compared, output, final_name,
                          _scenario_title(table, f"per-class IoU on target val, warm-up vs {final_name}"))


def _scenario_of(path: str | os.PathLike) -> str:
    """The scenario folder name of results/<scenario>/round_<r>/<file>."""
    return Path(path).absolute().parent.parent.name


def thresholds_figure(pseudo_labels: Sequence[str | os.PathLike], output: str | os.PathLike) -> Path:
    """thresholds.png from each round's pseudo_labels.h5 (in round order)."""
    trajectories, names, palette, policies = [], None, None, []
    for path in pseudo_labels:
        pl = h5io.read_pseudo_labels(path)
        try:
            if pl.threshold_trajectory is None:
                raise ReportError(f"{path}: no threshold_trajectory dataset")
            names, palette = label_space_of(pl.num_classes, path)
            trajectories.append(pl.threshold_trajectory)
            policies.append(pl.policy)
        finally:
            pl.close()
    if names is None:
        raise ReportError("thresholds: no pseudo_labels.h5 given")
    table = threshold_table(trajectories, names)
    policy = "/".join(dict.fromkeys(policies))
    return plot_thresholds(table, names, palette, output, f"{_scenario_of(pseudo_labels[0])}: {policy} thresholds "
                                                          f"per class over the instances of each round")


def pseudo_label_table(pseudo_labels: Sequence[str | os.PathLike], banks: Sequence[str | os.PathLike] | None,
                       manifest: str | os.PathLike, train_split: str = "train") -> pd.DataFrame:
    """Coverage and precision per class and round (round r: pseudo_labels[r - 1], hard classes from
    banks[r - 1]); each target label is read once, resized to the pseudo-label size, for all rounds."""
    if banks and len(banks) != len(pseudo_labels):
        raise ReportError(f"{len(pseudo_labels)} pseudo-label files but {len(banks)} instance banks")
    table = _manifest(manifest)
    files = [h5io.read_pseudo_labels(p) for p in pseudo_labels]
    try:
        first = files[0]
        names, _ = label_space_of(first.num_classes, pseudo_labels[0])
        space = SPACE_OF_COUNT[first.num_classes]
        for pl in files[1:]:
            if pl.image_ids != first.image_ids or (pl.height, pl.width) != (first.height, first.width):
                raise ReportError(f"{pl.path}: other images or size than {first.path}")
        paths = label_paths(table, first.image_ids, train_split)
        dataset = str(table.dataset.iloc[0])  # one dataset per manifest
        totals = [PseudoLabelCounts.zeros(first.num_classes) for _ in files]
        for i in range(len(first.image_ids)):
            target = None
            if paths[i] is not None:
                target = read_target_label(paths[i], dataset, space, (first.height, first.width))
            for r, pl in enumerate(files):
                totals[r] = totals[r] + pseudo_label_counts(pl.labels(i), target, first.num_classes)
    finally:
        for pl in files:
            pl.close()
    frames = []
    for r, counts in enumerate(totals, start=1):
        hard: Iterable[int] = ()
        if banks:
            bank = h5io.read_instance_bank(banks[r - 1])
            hard = bank.hard_classes.tolist()
            bank.close()
        frames.append(coverage_precision(counts, names, hard).assign(round=r))
    out = pd.concat(frames, ignore_index=True)
    return out[["round"] + [c for c in out.columns if c != "round"]]


def pseudo_label_figure(pseudo_labels: Sequence[str | os.PathLike], banks: Sequence[str | os.PathLike] | None,
                        manifest: str | os.PathLike, output: str | os.PathLike,
                        table_output: str | os.PathLike | None = None, train_split: str = "train") -> Path:
    """pseudo_labels.png (and, if asked, the table as CSV) from each round's pseudo_labels.h5 and
    instance_bank.h5 and the target manifest."""
    table = pseudo_label_table(pseudo_labels, banks, manifest, train_split)
    if table_output is not None:
        with atomic_path(table_output) as tmp:
            table.to_csv(tmp, index=False, float_format="%.6f")
    return plot_pseudo_label_stats(table, output, f"{_scenario_of(pseudo_labels[0])}: pseudo-label coverage "
                                                  f"and precision on the target train split")


def examples_figure(round_number: int, pseudo_labels: str | os.PathLike, manifest: str | os.PathLike,
                    masks: str | os.PathLike | None, output: str | os.PathLike, model: str = "student",
                    count: int = 3, train_split: str = "train", val_split: str = "val") -> Path:
    """examples_round_<r>.png: target train images with their ground truth and round r's pseudo-labels,
    then target val images with their ground truth and round r's `model` prediction (the evaluation's
    colour masks under `masks/<model>/`; none when the evaluation saved no masks)."""
    table = _manifest(manifest)
    pl = h5io.read_pseudo_labels(pseudo_labels)
    shown: set[int] = set()
    try:
        names, palette = label_space_of(pl.num_classes, pseudo_labels)
        space = SPACE_OF_COUNT[pl.num_classes]
        size = (pl.height, pl.width)
        picked = example_indices(len(pl), count)
        paths = label_paths(table, [pl.image_ids[i] for i in picked], train_split)
        train_rows = table[table.split == train_split].drop_duplicates("image_id").set_index("image_id")
        train_block = []
        for i, label_path in zip(picked, paths):
            image_id = pl.image_ids[i]
            row = train_rows.loc[image_id]
            pseudo = pl.labels(i)
            truth = read_target_label(label_path, row.dataset, space, size) if label_path else None
            shown.update(np.unique(pseudo).tolist())
            if truth is not None:
                shown.update(np.unique(truth).tolist())
            note = f"{100 * np.mean(pseudo != IGNORE):.1f}% of pixels labelled"
            if truth is not None:
                checked = (pseudo != IGNORE) & (truth != IGNORE)
                if checked.any():
                    note += f", {100 * np.mean(pseudo[checked] == truth[checked]):.1f}% correct"
            train_block.append(ExampleRow(image_id, [
                ("image", read_image(row.image, size)),
                ("ground truth", None if truth is None else classes.colorize(truth, palette)),
                (f"pseudo-label (round {round_number})", classes.colorize(pseudo, palette))], {2: note}))
    finally:
        pl.close()
    val_block = []
    mask_dir = Path(masks) / model if masks else None
    if mask_dir is not None and mask_dir.is_dir():
        val_rows = table[table.split == val_split].drop_duplicates("image_id").set_index("image_id")
        mask_files = sorted(mask_dir.glob("*.png"))
        for mask_path in [mask_files[i] for i in example_indices(len(mask_files), count)]:
            image_id = mask_path.stem
            if image_id not in val_rows.index:
                raise ReportError(f"{mask_path}: image {image_id!r} is not in the {val_split!r} split of {manifest}")
            row = val_rows.loc[image_id]
            prediction = read_rgb(mask_path)
            mask_size = prediction.shape[:2]
            truth = read_target_label(row.label, row.dataset, space, mask_size) if row.label else None
            if truth is not None:
                shown.update(np.unique(truth).tolist())
            shown.update(_palette_indices(prediction, palette))
            val_block.append(ExampleRow(image_id, [
                ("image", read_image(row.image, mask_size)),
                ("ground truth", None if truth is None else classes.colorize(truth, palette)),
                (f"prediction ({model}, round {round_number})", prediction)]))
    sections = [("target train (pseudo-labelled)", train_block)]
    if val_block:
        sections.append(("target val (evaluated)", val_block))
    return plot_examples(sections, names, palette, shown, output,
                         f"{_scenario_of(pseudo_labels)}: examples of round {round_number}")


def _palette_indices(image: np.ndarray, palette: np.ndarray) -> list[int]:
    """The classes whose palette colour appears in an RGB colour mask."""
    colours = np.unique(image.reshape(-1, 3), axis=0)
    return [c for c, colour in enumerate(palette) if (colours == colour).all(1).any()]


# --- command line: python -m hiast.report KIND ... ---------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m hiast.report",
                                     description="Figures of the Snakemake report, written as PNGs atomically.")
    sub = parser.add_subparsers(dest="kind", required=True, metavar="KIND")
    p = sub.add_parser("miou", help="mIoU by round from summary.csv")
    p.add_argument("--summary", required=True, type=Path)
    p.add_argument("--output", required=True, type=Path)
    p = sub.add_parser("per-class", help="per-class IoU, warm-up against the last round's model")
    p.add_argument("--summary", required=True, type=Path)
    p.add_argument("--model", default="student")
    p.add_argument("--output", required=True, type=Path)
    p = sub.add_parser("thresholds", help="threshold trajectories from each round's pseudo_labels.h5")
    p.add_argument("--pseudo-labels", required=True, nargs="+", type=Path, help="round 1..R, in order")
    p.add_argument("--output", required=True, type=Path)
    p = sub.add_parser("pseudo-labels", help="pseudo-label coverage and precision per class and round")
    p.add_argument("--pseudo-labels", required=True, nargs="+", type=Path, help="round 1..R, in order")
    p.add_argument("--banks", nargs="+", type=Path, help="round 1..R's instance_bank.h5 (hard classes)")
    p.add_argument("--manifest", required=True, type=Path, help="the target manifest")
    p.add_argument("--train-split", default="train")
    p.add_argument("--output", required=True, type=Path)
    p.add_argument("--table", type=Path, help="also write the table as CSV")
    p = sub.add_parser("examples", help="image / ground truth / pseudo-label / prediction grid of one round")
    p.add_argument("--round", required=True, type=int)
    p.add_argument("--pseudo-labels", required=True, type=Path)
    p.add_argument("--manifest", required=True, type=Path, help="the target manifest")
    p.add_argument("--masks", type=Path, help="the round's evaluation masks folder (holds <model>/*.png)")
    p.add_argument("--model", default="student")
    p.add_argument("--count", type=int, default=3, help="examples per block")
    p.add_argument("--train-split", default="train")
    p.add_argument("--val-split", default="val")
    p.add_argument("--output", required=True, type=Path)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.kind == "miou":
            out = miou_figure(args.summary, args.output)
        elif args.kind == "per-class":
            out = per_class_figure(args.summary, args.output, args.model)
        elif args.kind == "thresholds":
            out = thresholds_figure(args.pseudo_labels, args.output)
        elif args.kind == "pseudo-labels":
            out = pseudo_label_figure(args.pseudo_labels, args.banks, args.manifest, args.output, args.table,
                                      args.train_split)
        else:
            out = examples_figure(args.round, args.pseudo_labels, args.manifest, args.masks, args.output,
                                  args.model, args.count, args.train_split, args.val_split)
    except (ReportError, h5io.H5FormatError, datasets.DatasetError, ImageReadError) as err:
        print(f"hiast.report {args.kind}: error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
