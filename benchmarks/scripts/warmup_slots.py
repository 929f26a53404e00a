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
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from hiast import workflow
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


def run(slots: int, out: Path) -> tuple[float, float]:
    """Wall seconds of the three warm-ups with at most `slots` running at once, and their CPU seconds."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    begin = time.perf_counter()
    waiting = [command(name, out) for name in SCENARIOS]
    running: list[subprocess.Popen] = []
    while waiting or running:
        while waiting and len(running) < slots:
            running.append(subprocess.Popen(waiting.pop(0), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        pid, status = os.wait()
        if status:
            raise SystemExit(f"a warm-up failed (wait status {status}): {waiting}")
        running = [proc for proc in running if proc.pid != pid]
    wall = time.perf_counter() - begin
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def hashes(out: Path) -> dict[str, str]:
    return {name: hashlib.sha256((out / f"{name}.pt").read_bytes()).hexdigest()[:12] for name in SCENARIOS}


report = {"source_iterations": source_iterations, "adversarial_iterations": adversarial_iterations,
          "usable_cpus": len(os.sched_getaffinity(0)), "runs": []}
for r in range(rounds):
    for slots in (2, 3):
        with tempfile.TemporaryDirectory() as tmp:
            wall, cpu = run(slots, Path(tmp))
            entry = {"round": r, "slots": slots, "wall_s": round(wall, 2), "cpu_s": round(cpu, 2),
                     "cpu_utilisation": round(cpu / wall / report["usable_cpus"], 3), "weights": hashes(Path(tmp))}
        report["runs"].append(entry)
        print(json.dumps(entry), flush=True)
walls = {slots: sorted(e["wall_s"] for e in report["runs"] if e["slots"] == slots) for slots in (2, 3)}
same = all(e["weights"] == report["runs"][0]["weights"] for e in report["runs"])
print(json.dumps({"wall_s": walls, "ratio_3_to_2_per_round": [round(b["wall_s"] / a["wall_s"], 3) for a, b in
                  zip(report["runs"][0::2], report["runs"][1::2])], "same_weights": same}))
