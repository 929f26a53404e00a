#!/bin/bash
# Wall and CPU seconds of the round-1 pseudo-labelling stage of synthetic GTA5 -> CS (the default run's warm-up)
# with the code of two commits, alternated N times in fresh processes (after one warm run), at THREADS torch
# threads. Run from a checkout with the default run's data/ and results/ and its .venv:
#
#     bash benchmarks/scripts/pseudo_stage_commits.sh BEFORE AFTER THREADS N
#
# Each commit is checked out in a temporary worktree (its data/ a link to this checkout's); the stage runs with
# that worktree's hiast and this checkout's Python environment. Prints one line per pair: wall s, CPU s.
set -euo pipefail
before=$1 after=$2 threads=$3 n=$4
here=$(pwd)
python=$here/.venv/bin/python
work=$(mktemp -d)
trap 'git -C "$here" worktree remove --force "$work/before" >/dev/null 2>&1 || true;
      git -C "$here" worktree remove --force "$work/after" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
for side in before after; do
  git -C "$here" worktree add -q --detach "$work/$side" "${!side}"
  ln -s "$here/data" "$work/$side/data"
done
export HIAST_NO_PROGRESS=1
once() {  # once SIDE: one stage in a fresh process, with SIDE's hiast; prints "wall cpu"
  (cd "$work/$1" && "$python" - "$threads" "$here/results/synthetic_gta5_to_cityscapes" "$work/$1.h5" <<'PY' 2>/dev/null | tail -1
import os, sys, time
from pathlib import Path
sys.path.insert(0, os.getcwd())                      # this worktree's hiast, not the installed one
import torch
from hiast import stages
from hiast.allocator import keep_freed_memory
from hiast.scenario import load_scenario
keep_freed_memory()                                   # as the hiast command does
torch.set_num_threads(int(sys.argv[1]))
results = Path(sys.argv[2])
scenario = load_scenario("config/scenarios/synthetic_gta5_to_cityscapes.yaml")
begin, cpu = time.perf_counter(), time.process_time()
stages.pseudo_labels(scenario, 1, results / "warmup/model.pt", results / "manifests/target.csv", Path(sys.argv[3]),
                     torch.device("cpu"))
print(f"{time.perf_counter() - begin:.3f} {time.process_time() - cpu:.3f}")
PY
  )
}
once after >/dev/null
echo "threads $threads; wall s, CPU s: before ($before) | after ($after)"
for _ in $(seq "$n"); do
  echo "$(once before) | $(once after)"
done
