# Input functions and helpers shared by the rules (kept apart from the rules, as the linter asks).


def launch(rule_name):
    """Prefix of a GPU-heavy rule's command: nothing locally, the submitit launcher on SLURM."""
    return lambda w: hw.launcher_prefix(config, rule_name, f"{RESULTS}/{w.scenario}/logs/submitit")


def synthetic_input(wildcards):
    """Synthetic scenarios wait for the embedded benchmark to be written."""
    return [SYNTHETIC_MARKER] if RESOLVED[wildcards.scenario]["synthetic"] else []


def labeller(w):
    """Round 1 is labelled by the warm-up model, round r by round r-1's EMA teacher."""
    r = int(w.round)
    return f"{RESULTS}/{w.scenario}/warmup/model.pt" if r == 1 else f"{RESULTS}/{w.scenario}/round_{r - 1}/teacher.pt"


def initial_student(w):
    """Round 1 starts from the warm-up model, round r from round r-1's student."""
    r = int(w.round)
    return f"{RESULTS}/{w.scenario}/warmup/model.pt" if r == 1 else f"{RESULTS}/{w.scenario}/round_{r - 1}/model.pt"


def round_source(w):
    """The source manifest, only for a round whose train.source_weight > 0 (the official rounds read none)."""
    if RESOLVED[w.scenario]["rounds"][int(w.round) - 1]["train"]["source_weight"]:
        return [f"{RESULTS}/{w.scenario}/manifests/source.csv"]
    return []


def source_option(w, input):
    return f"--source-manifest {input.source} " if input.source else ""


def shard_outputs(w):
    """With the round's pseudo.shards = K > 1: the K inference shards' model outputs, else nothing."""
    shards = RESOLVED[w.scenario]["rounds"][int(w.round) - 1]["pseudo"]["shards"]
    if shards <= 1:
        return []
    return [f"{RESULTS}/{w.scenario}/round_{w.round}/shards/model_outputs_{k}.h5" for k in range(shards)]


def shared_warmup(w):
    """An ablation variant's warm-up is the same as an earlier run's: that run's weights, copied."""
    source = SHARED_WARMUP.get(w.scenario)
    return [f"{RESULTS}/{source}/warmup/model.pt"] if source else []


def shared_manifest(w):
    """A run's manifest of one side scans the same root as an earlier run's: that manifest, copied."""
    source = SHARED_MANIFEST.get((w.scenario, w.side))
    return [f"{RESULTS}/{source[0]}/manifests/{source[1]}.csv"] if source else []


def spawn(w):
    """Training on several GPUs (the scenario's `gpus`): one rank per GPU through hiast.spawn."""
    gpus = RESOLVED[w.scenario]["gpus"]
    return f"{sys.executable} -m hiast.spawn --nproc {gpus} -- " if gpus > 1 else ""
