"""Three 1-thread warm-ups on the 2 cores: two at a time then the third (the default profile's 2 job slots),
against all three at once (3 slots: the kernel time-slices them). Each warm-up is the default run's
`hiast warmup` command for one synthetic scenario, cut to SOURCE source-only and ADV adversarial iterations
(weights to a temporary folder). Prints each layout's wall time, the CPU seconds of the warm-ups and each
warm-up's weights hash (the same in both layouts: the thread count, not the schedule, sets the bytes).
Alternated ROUNDS times. Run from a checkout with the default run's data/ and manifests:

    python benchmarks/scripts/warmup_slots.py [SOURCE ADV ROUNDS]     # default 100 20 2
"""
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from hiast import speed, workflow
from hiast.experiments import resolve_run

SCENARIOS = ("synthetic_gta5_to_cityscapes", "synthetic_synthia_to_cityscapes", "synthetic_cityscapes_to_oxford")
source_iterations, adversarial_iterations, rounds = (int(a) for a in (sys.argv[1:] or ["100", "20", "2"]))


def command(name: str, out: Path) -> list[str]:
    raw, _ = resolve_run("config/scenarios", name)
    raw["warmup"]["source_only"].update(iterations=source_iterations, log_every=0, checkpoint_every=0)
    raw["warmup"]["adversarial"].update(iterations=adversarial_iterations, log_every=0, checkpoint_every=0)
    results = Path("results") / name
    return [sys.executable, "-m", "hiast", "warmup", "--config", workflow.stage_json(raw, "warmup"),
            "--source-manifest", str(results / "manifests/source.csv"),
            "--target-manifest", str(results / "manifests/target.csv"),
            "--output", str(out / f"{name}.pt"), "--state-dir", str(out / f"{name}_state"), "--threads", "1"]


def run(slots: int, out: Path) -> None:
    """The three warm-ups with at most `slots` running at once."""
    waiting = list(SCENARIOS)
    running: dict[int, str] = {}
    while waiting or running:
        while waiting and len(running) < slots:
            name = waiting.pop(0)
            proc = subprocess.Popen(command(name, out), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            running[proc.pid] = name
        pid, status = os.wait()
        name = running.pop(pid)
        if status:
            raise SystemExit(f"the warm-up of {name} failed (wait status {status})")


def hashes(out: Path) -> dict[str, str]:
    return {name: hashlib.sha256((out / f"{name}.pt").read_bytes()).hexdigest()[:12] for name in SCENARIOS}


cpus = speed.usable_cpus()
runs = []
for r in range(rounds):
    for slots in (2, 3):
        with tempfile.TemporaryDirectory() as tmp:
            wall, cpu = speed.wall_and_cpu(lambda: run(slots, Path(tmp)))
            entry = {"round": r, "slots": slots, "wall_s": round(wall, 2), "cpu_s": round(cpu, 2),
                     "cpu_utilisation": round(cpu / wall / cpus, 3), "weights": hashes(Path(tmp))}
        runs.append(entry)
        print(json.dumps(entry), flush=True)
walls = {slots: sorted(e["wall_s"] for e in runs if e["slots"] == slots) for slots in (2, 3)}
same = all(e["weights"] == runs[0]["weights"] for e in runs)
print(json.dumps({"source_iterations": source_iterations, "adversarial_iterations": adversarial_iterations,
                  "wall_s": walls, "ratio_3_to_2_per_round": [round(b["wall_s"] / a["wall_s"], 3)
                                                              for a, b in zip(runs[0::2], runs[1::2])],
                  "same_weights": same}))
