"""The labeller's forward at the real datasets' size on a CPU under each HIAST_MALLOC mode (hiast.allocator):
DeepLabV2 ResNet-101 (the GTA5 -> Cityscapes scenario's model, fp32, random weights) on an instance of 2 random
1024x2048 images inferred at 768x1536, both ways the labeller runs it at T threads (one forward on T threads, and
T single-threaded forwards side by side in threads: `stages.forward_streams`). Each mode and way runs in a fresh
process, alternated `ROUNDS` times; each process times `PASSES` forwards after none (the first pass is included:
the labeller's first instance pays it too) and reports wall, user and system CPU seconds and peak resident
memory. Nothing is read from disk. MODE: a HIAST_MALLOC mode, or `reuse+thp` (the default settings with torch's
transparent-huge-page switch, THP_MEM_ALLOC_ENABLE=1); the first one given is the reference of the ratios.

    python benchmarks/scripts/malloc_large_tensors.py [THREADS=2] [ROUNDS=2] [PASSES=2] [MODE... (reuse heap)]
    python benchmarks/scripts/malloc_large_tensors.py 2 2 2 reuse reuse+thp     # huge pages instead
"""
import json
import os
import statistics
import subprocess
import sys

from hiast.allocator import MODES

CHILD = r"""
import json, os, resource, sys, threading, time
import torch
from hiast import allocator, stages
from hiast.scenario import load_scenario
applied = allocator.keep_freed_memory()       # as the hiast command does, with HIAST_MALLOC from the environment
way, threads, passes = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
torch.manual_seed(0)
model = stages.new_model(load_scenario("config/scenarios/gta5_to_cityscapes.yaml"), pretrained=False).eval()
images = torch.randint(0, 256, (2, 3, 1024, 2048), dtype=torch.uint8)
cpu = torch.device("cpu")

def one_forward():
    stages.infer(model, None, None, (768, 1536), cpu, images)

def streams():
    def stream():
        torch.set_num_threads(1)
        one_forward()
    workers = [threading.Thread(target=stream) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()

torch.set_num_threads(1 if way == "streams" else threads)
samples = []
for _ in range(passes):
    begin, times = time.perf_counter(), os.times()
    (streams if way == "streams" else one_forward)()
    end, after = time.perf_counter(), os.times()
    samples.append({"wall_s": end - begin, "user_s": after.user - times.user, "sys_s": after.system - times.system})
print(json.dumps({"applied": applied, "samples": samples,
                  "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def run(mode: str, way: str, threads: int, passes: int) -> dict:
    malloc, _, thp = mode.partition("+")
    env = {**os.environ, "HIAST_MALLOC": malloc, "THP_MEM_ALLOC_ENABLE": "1" if thp == "thp" else "0"}
    out = subprocess.run([sys.executable, "-c", CHILD, way, str(threads), str(passes)], env=env, check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    threads, rounds, passes = (int(a) for a in [*sys.argv[1:4], "2", "2", "2"][:3])
    modes = sys.argv[4:] or ["reuse", "heap"]
    known = (*MODES, "reuse+thp")
    if len(modes) < 2 or any(m not in known for m in modes):
        raise SystemExit(f"modes {modes}: expected two or more of {', '.join(known)}")
    reference, others = modes[0], modes[1:]
    results = {}
    for round_index in range(rounds):
        for way in ("one_forward", "streams"):
            for mode in modes:
                result = run(mode, way, threads, passes)
                results.setdefault((way, mode), []).append(result)
                walls = ", ".join(f"{s['wall_s']:.1f}" for s in result["samples"])
                cpu = ", ".join(f"{s['user_s']:.1f}/{s['sys_s']:.1f}" for s in result["samples"])
                print(f"round {round_index + 1} {way:11s} {mode:9s}: wall {walls} s; user/sys {cpu} s; "
                      f"peak RSS {result['peak_rss_mib']:.0f} MiB", flush=True)
    for way in ("one_forward", "streams"):
        median = {m: statistics.median(s["wall_s"] for r in results[(way, m)] for s in r["samples"]) for m in modes}
        rss = {m: max(r["peak_rss_mib"] for r in results[(way, m)]) for m in modes}
        for mode in others:
            print(f"{way}: median wall {reference} {median[reference]:.1f} s, {mode} {median[mode]:.1f} s: "
                  f"{median[mode] / median[reference]:.2f}x; peak RSS {rss[reference]:.0f} -> {rss[mode]:.0f} MiB "
                  f"({rss[mode] / rss[reference]:.2f}x)")


if __name__ == "__main__":
    main()
