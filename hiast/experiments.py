"""Variants of a scenario (seeds, ablations) and the tables that compare them.

A run named `<scenario>@<variant>[+<variant>...]` is the scenario file with each named variant's overrides
merged in, in order (config key `variants`, see config/experiments.yaml); its results go under
`results/<that name>/` like any scenario's. A variant mapping may hold `every_round`, merged into each round.
Variants named `seed<N>` only change the seed: the tables average over them (mean ± std).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from hiast.config import ConfigError, merge
from hiast.imageio import atomic_path

SEPARATOR, JOINER = "@", "+"
SEED_VARIANT = re.compile(r"^seed(\d+)$")
METRICS = ("mIoU-19", "mIoU-16", "mIoU-13", "mIoU-9")


def split_name(name: str) -> tuple[str, list[str]]:
    """`base@a+b` -> ("base", ["a", "b"])."""
    base, _, rest = name.partition(SEPARATOR)
    return base, [v for v in rest.split(JOINER) if v] if rest else []


def apply_variants(raw: dict, variants: list[str], defined: dict | None, where: str = "variants") -> dict:
    """The scenario mapping with each variant's overrides merged in (`every_round` into every round)."""
    out = dict(raw)
    for variant in variants:
        match = SEED_VARIANT.match(variant)
        if match and variant not in (defined or {}):
            out["seed"] = int(match.group(1))
            continue
        if not defined or variant not in defined:
            known = sorted(defined or {})
            raise ConfigError(f"{where}.{variant}: no such variant; defined: {known} (and seed<N>)")
        overrides = dict(defined[variant] or {})
        every_round = overrides.pop("every_round", None)
        out = merge(out, overrides)
        if every_round:
            rounds = out.get("rounds") or [{}, {}, {}]
            out["rounds"] = [merge(r or {}, every_round) for r in rounds]
    return out


def group_of(name: str) -> str:
    """The run's name without its seed variants: the rows of the tables."""
    base, variants = split_name(name)
    rest = [v for v in variants if not SEED_VARIANT.match(v)]
    return base + (SEPARATOR + JOINER.join(rest) if rest else "")


def seed_table(summaries: list[Path], oracles: dict[str, Path] | None = None, reported: str = "student") -> pd.DataFrame:
    """One row per group (run name without seeds) and stage: mean and std over seeds of each metric, the
    number of seeds, and, where an oracle eval exists for the group's scenario, the oracle and the share of
    the warm-up -> oracle gap closed by each stage."""
    frames = []
    for path in summaries:
        table = pd.read_csv(path)
        name = str(table.scenario.iloc[0])
        table = table[table.model.isin([reported, "warmup"])]
        frames.append(table.assign(group=group_of(name), run=name))
    data = pd.concat(frames, ignore_index=True)
    metrics = [m for m in METRICS if m in data.columns and data[m].notna().any()]
    rows = []
    for (group, stage), part in data.groupby(["group", "stage"], sort=False):
        row = {"group": group, "stage": stage, "seeds": part.run.nunique()}
        for metric in metrics:
            values = part[metric].dropna().to_numpy(dtype=float)
            row[f"{metric} mean"] = values.mean() if values.size else np.nan
            row[f"{metric} std"] = values.std(ddof=1) if values.size > 1 else np.nan
        rows.append(row)
    out = pd.DataFrame(rows)
    for group, path in (oracles or {}).items():
        oracle = pd.read_csv(path)
        for metric in metrics:
            if metric in oracle.columns:
                value = float(oracle[metric].iloc[0])
                selected = out.group == group
                out.loc[selected, f"{metric} oracle"] = value
                warm = out[selected & (out.stage == "warmup")][f"{metric} mean"]
                if len(warm):
                    gap = value - float(warm.iloc[0])
                    out.loc[selected, f"{metric} gap closed"] = (out.loc[selected, f"{metric} mean"]
                                                                 - float(warm.iloc[0])) / gap
    return out


def markdown(table: pd.DataFrame) -> str:
    """The seed table as markdown: `mean ± std (n)` per metric, oracle and gap closed where known."""
    metrics = [m for m in METRICS if f"{m} mean" in table.columns]
    header = ["run", "stage", *metrics, "seeds"]
    has_oracle = any(f"{m} oracle" in table.columns for m in metrics)
    if has_oracle:
        header += ["oracle", "gap closed"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for _, row in table.iterrows():
        cells = [row.group, row.stage]
        for metric in metrics:
            mean, std = row[f"{metric} mean"], row[f"{metric} std"]
            cells.append("–" if pd.isna(mean) else f"{mean:.1f}" + ("" if pd.isna(std) else f" ± {std:.1f}"))
        cells.append(str(int(row.seeds)))
        if has_oracle:
            first = next((m for m in metrics if f"{m} oracle" in table.columns and not pd.isna(row.get(f"{m} oracle"))),
                         None)
            cells.append("–" if first is None else f"{row[f'{first} oracle']:.1f}")
            gap = None if first is None else row.get(f"{first} gap closed")
            cells.append("–" if gap is None or pd.isna(gap) else f"{100 * gap:.0f}%")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_seed_table(summaries: list[Path], output: Path, oracles: dict[str, Path] | None = None) -> str:
    table = seed_table(summaries, oracles)
    text = ("# Runs over seeds (the last round's student; mean ± sample std over seeds; gap closed = "
            "(stage - warm-up) / (oracle - warm-up) on the first metric)\n\n" + markdown(table))
    with atomic_path(output) as tmp:
        tmp.write_text(text)
    with atomic_path(Path(output).with_suffix(".csv")) as tmp:
        table.to_csv(tmp, index=False, float_format="%.4f")
    return text


def resolve_run(scenario_dir: str | Path, name: str, smoke: dict | None = None, variants: dict | None = None):
    """(raw mapping, Scenario) of a run `<scenario>[@<variant>+...]`: the scenario file, its variants, then the
    smoke preset (so that a variant cannot escape it), validated; the run's name is the whole name."""
    from hiast import workflow
    from hiast.config import build, load_yaml, to_dict
    from hiast.scenario import Scenario
    base, names = split_name(name)
    path = Path(scenario_dir) / f"{base}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in Path(scenario_dir).glob("*.yaml"))
        raise ConfigError(f"scenarios: no scenario file {path}; known scenarios: {known}")
    raw = apply_variants(load_yaml(path), names, variants, where=f"{name}: variants")
    raw = workflow.apply_smoke(raw, smoke)
    raw["name"] = name
    scenario = build(Scenario, raw, where=f"{path} ({name})")
    return to_dict(scenario), scenario


def shared_warmups(resolved: dict[str, dict]) -> dict[str, str]:
    """run -> the earlier run whose warm-up is the same (same data, model, seed and warm-up settings): the
    ablation variants of a seed train one warm-up and copy it."""
    from hiast import workflow
    import json
    first: dict[str, str] = {}
    shared = {}
    for name, raw in resolved.items():
        key = json.loads(workflow.stage_json(raw, "warmup"))
        key.pop("name", None)
        key = json.dumps(key, sort_keys=True)
        if key in first:
            shared[name] = first[key]
        else:
            first[key] = name
    return shared


def shared_manifests(resolved: dict[str, dict]) -> dict[tuple[str, str], str]:
    """(run, side) -> the earlier run whose manifest of that side scans the same root the same way."""
    first: dict[tuple, str] = {}
    shared = {}
    for name, raw in resolved.items():
        for side in ("source", "target"):
            data = raw[side]
            key = (side, data["dataset"], str(data["root"]), data["train_split"], data.get("val_split"))
            # the source and target manifests of one root are the same file too
            key = key[1:]
            if key in first:
                shared[(name, side)] = first[key]
            else:
                first[key] = (name, side)
    return shared
