"""What the Snakefile needs from Python: resolved scenarios and each stage's own slice of the config.

A stage's slice is what its rule passes in `params` (as JSON) and its `hiast` command reads back: the
scenario's common part plus only the stage's section (round r's `pseudo`, say). Snakemake reruns a job
whose params changed, so editing round 2 reruns round 2's jobs and, through their outputs, round 3's,
while the warm-up and round 1 keep their files.
"""

from __future__ import annotations

import json
from pathlib import Path

from hiast.config import ConfigError, build, load_yaml, merge, to_dict
from hiast.scenario import Scenario

COMMON = ("name", "seed", "label_space", "base_size", "device", "gpus", "synthetic", "model")
STAGES = ("manifest", "warmup", "pseudo", "bank", "train", "eval", "oracle")
EVERY_ROUND = "every_round"  # smoke-preset key merged into each round


def apply_smoke(raw: dict, smoke: dict | None) -> dict:
    """The smoke preset: shrink any scenario (real ones included) to a CPU-sized run on data in the real
    formats: `data_root` replaces the leading `data/` of every dataset root (the embedded benchmark's roots
    mirror the real layouts), `every_round` merges into each round, everything else merges as is."""
    if not smoke:
        return raw
    smoke = dict(smoke)
    data_root = smoke.pop("data_root", None)
    every_round = smoke.pop(EVERY_ROUND, None)
    out = merge(raw, smoke)
    if data_root:
        for side in ("source", "target"):
            section = dict(out.get(side) or {})
            root = str(section.get("root", ""))
            for prefix in ("data/synthetic/", "data/"):
                if root.startswith(prefix) and not root.startswith(str(data_root).rstrip("/") + "/"):
                    section["root"] = str(Path(data_root) / root[len(prefix):])
                    break
            out[side] = section
        if not out.get("synthetic"):
            out["synthetic"] = True
    if every_round:
        rounds = out.get("rounds")
        count = len(rounds) if rounds is not None else len(Scenario().rounds)
        rounds = list(rounds) if rounds is not None else [{} for _ in range(count)]
        out["rounds"] = [merge(r or {}, every_round) for r in rounds]
    return out


def resolve(scenario_dir: str | Path, name: str, smoke: dict | None = None) -> tuple[dict, Scenario]:
    """(raw mapping, validated Scenario) of config/scenarios/<name>.yaml with the smoke preset applied."""
    path = Path(scenario_dir) / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in Path(scenario_dir).glob("*.yaml"))
        raise ConfigError(f"scenarios: no scenario file {path}; known scenarios: {known}")
    raw = apply_smoke(load_yaml(path), smoke)
    raw.setdefault("name", name)
    scenario = build(Scenario, raw, where=str(path))
    return to_dict(scenario), scenario


# Options added after results existed, whose default gives the earlier results bit for bit (an execution-only
# option, or a method option whose default is the earlier behaviour): left out of a stage's params while at
# their default, so that upgrading does not make Snakemake rerun finished stages for "params changed".
# A non-default value is passed (and reruns the stage, as any params change does).
LATER_DEFAULTS = {"train": {"overlap": True, "bn_statistics": "student", "fused_objective": False},
                  "pseudo": {"bn_statistics": "as_saved"},
                  "adversarial": {"discriminator_precision": "fp32"}}      # warmup.adversarial


def _without_later_defaults(part: str, values):
    defaults = LATER_DEFAULTS.get(part, {})
    if not isinstance(values, dict) or not defaults:
        return values
    return {k: v for k, v in values.items() if not (k in defaults and v == defaults[k])}


def stage_slice(resolved: dict, stage: str, round_number: int | None = None) -> dict:
    """The part of a resolved scenario (as data) that one stage reads."""
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}")
    out = {key: resolved[key] for key in COMMON}
    if stage == "manifest":
        return {"source": resolved["source"], "target": resolved["target"], "synthetic": resolved["synthetic"]}
    out["source"], out["target"] = resolved["source"], resolved["target"]
    if stage == "warmup":
        warmup = dict(resolved["warmup"])
        if "adversarial" in warmup:
            warmup["adversarial"] = _without_later_defaults("adversarial", warmup["adversarial"])
        out["warmup"] = warmup
    elif stage == "eval":
        out["metrics"], out["evaluation"] = resolved["metrics"], resolved["evaluation"]
    elif stage == "oracle":   # the warm-up's model and source-only budget, trained and evaluated on the target
        out["warmup"] = {"source_only": resolved["warmup"]["source_only"]}
        out["metrics"], out["evaluation"] = resolved["metrics"], resolved["evaluation"]
    else:
        rounds = resolved["rounds"]
        if round_number is None or not 1 <= round_number <= len(rounds):
            raise ValueError(f"round {round_number} outside 1..{len(rounds)}")
        part = {"pseudo": ["pseudo"], "bank": ["bank"], "train": ["train", "bank"]}[stage]
        # Other rounds are left at their defaults, so they cannot touch this stage's params.
        out["rounds"] = [{} for _ in range(len(rounds))]
        out["rounds"][round_number - 1] = {key: _without_later_defaults(key, rounds[round_number - 1][key])
                                           for key in part}
    return out


def stage_json(resolved: dict, stage: str, round_number: int | None = None) -> str:
    return json.dumps(stage_slice(resolved, stage, round_number), sort_keys=True, separators=(",", ":"))


def scenario_from_json(text: str) -> Scenario:
    """The Scenario a stage command rebuilds from its rule's params (unset parts take defaults)."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise ConfigError(f"--config: not valid JSON ({err})") from err
    return build(Scenario, data, where="--config")


def generate_args(synthetic: dict) -> str:
    """Command-line options of `hiast generate` from config.yaml's `synthetic` section."""
    args = [f"--{key} {synthetic[key]}" for key in ("seed", "height", "width", "workers", "gap") if key in synthetic]
    args += [f"--count {name}={count}" for name, count in sorted((synthetic.get("counts") or {}).items())]
    return " ".join(args)


def splits_of(data: dict) -> str:
    return " ".join([data["train_split"]] + ([data["val_split"]] if data.get("val_split") else []))


# Rules whose work belongs on a GPU node; the others (manifests, bank, tables) stay where Snakemake runs.
GPU_RULES = ("warmup", "pseudo_labels", "self_train", "eval")


# Set by profiles/slurm when Snakemake reads it (see the profile): the run is meant for SLURM.
PROFILE_ENV = "HIAST_PROFILE"


def launcher_prefix(config: dict, rule: str, folder: str) -> str:
    """The start of a GPU-heavy rule's shell command: empty locally; `python -m hiast.launch ... --` with the
    rule's SLURM resources when config `launcher` is "slurm" (submitit sends the command to the cluster).

    Under profiles/slurm the config must say `launcher: slurm`: a `--configfile` on the command line
    replaces the profile's `configfiles` list, config/slurm.yaml included, and the run would silently stay
    on this machine, so that is an error naming the fix."""
    import os
    launcher = config.get("launcher", "local")
    if os.environ.get(PROFILE_ENV) == "slurm" and launcher != "slurm":
        raise ConfigError(
            f"the slurm profile is in use but the config says launcher: {launcher}, so rule {rule} would run "
            "here: a --configfile given on the command line replaces the profile's configfiles, "
            "config/slurm.yaml included; list it too, e.g. --configfile config/slurm.yaml config/smoke.yaml")
    if launcher != "slurm" or rule not in GPU_RULES:
        return ""
    import shlex
    import sys
    settings = json.dumps(config.get("slurm") or {}, sort_keys=True)
    return (f"{shlex.quote(sys.executable)} -m hiast.launch --rule {rule} --folder {shlex.quote(folder)} "
            f"--config-json {shlex.quote(settings)} -- ")
