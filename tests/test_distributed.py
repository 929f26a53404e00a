"""Several processes (torch.distributed, gloo on CPU): one global batch split over the ranks, DDP-averaged
gradients, identical weights on every rank, states written by rank 0 only, a stop on one rank stops all."""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from hiast import distributed
from hiast.sampling import IterationBatchSampler


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _train(rank: int, world_size: int, port: int, folder: str, stop_rank: int) -> None:
    import signal
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    from hiast.checkpoint import Interrupted
    from hiast.model import build_model
    from hiast.scenario import SupervisedStage
    from hiast.supervised import train_supervised
    from test_adversarial import FakeSegData, SignalAt

    context, device = distributed.setup(torch.device("cpu"))
    torch.manual_seed(0)
    model = build_model("resnet18", 19)
    data = FakeSegData(8, 0)
    if rank == stop_rank:
        data = SignalAt(data, 5, signal.SIGUSR2)     # only this rank is signalled, during iteration 2
    cfg = SupervisedStage(iterations=4, batch_size=4, lr=1e-3, checkpoint_every=0)
    outcome = "finished"
    try:
        train_supervised(model, data, lambda i, l: (i, l), cfg, device, seed=1, context=context,
                         state_path=os.path.join(folder, "state.pt"))
    except Interrupted:
        outcome = "interrupted"
    torch.save({"state": model.state_dict(), "outcome": outcome}, os.path.join(folder, f"rank{rank}.pt"))
    distributed.shutdown(context)


def run_ranks(tmp_path, stop_rank: int = -1):
    mp.spawn(_train, args=(2, free_port(), str(tmp_path), stop_rank), nprocs=2, join=True)
    return [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]


def test_two_ranks_train_identical_weights_and_keep_the_global_batch(tmp_path):
    ranks = run_ranks(tmp_path)
    assert [r["outcome"] for r in ranks] == ["finished", "finished"]
    a, b = ranks[0]["state"], ranks[1]["state"]
    assert all(torch.equal(a[k], b[k]) for k in a if not k.endswith("running_mean") and
               not k.endswith("running_var") and not k.endswith("num_batches_tracked"))
    # each rank drew its half of every global batch of 4: disjoint slots, together the single-process batch
    whole = IterationBatchSampler(8, 4, seed=1).batch(2)
    halves = [IterationBatchSampler(8, 4, seed=1, rank=r, world_size=2).batch(2) for r in range(2)]
    assert sorted(halves[0] + halves[1]) == sorted(whole) and len(halves[0]) == len(halves[1]) == 2


def test_a_signal_on_one_rank_stops_every_rank_and_rank_0_saves(tmp_path):
    ranks = run_ranks(tmp_path, stop_rank=1)
    assert [r["outcome"] for r in ranks] == ["interrupted", "interrupted"]
    assert torch.load(tmp_path / "state.pt", weights_only=True)["iteration"] == 3


def test_context_from_environment():
    assert distributed.from_env({}) == distributed.SINGLE
    assert distributed.from_env({"RANK": "1", "WORLD_SIZE": "4", "LOCAL_RANK": "1"}).rank == 1
    slurm = distributed.from_env({"SLURM_PROCID": "3", "SLURM_NTASKS": "4", "SLURM_LOCALID": "1"})
    assert (slurm.rank, slurm.world_size, slurm.local_rank, slurm.is_main) == (3, 4, 1, False)
    with pytest.raises(ValueError):
        IterationBatchSampler(8, 6, seed=0, rank=0, world_size=4)   # an indivisible global batch


def test_spawn_runs_the_ranks_and_forwards_a_stop_signal(tmp_path):
    """`python -m hiast.spawn --nproc 2 -- cmd`: each rank sees its RANK/WORLD_SIZE; a SIGUSR2 sent to the
    spawner reaches both ranks, which exit 75 as a training stage does after saving; the spawner says 75."""
    import signal
    import subprocess
    import sys
    import time

    from hiast import spawn
    rank_script = tmp_path / "rank.py"
    rank_script.write_text(
        "import os, signal, sys\n"
        "out, rank = sys.argv[1], os.environ['RANK']\n"
        "signal.signal(signal.SIGUSR2, lambda *a: (open(f'{out}/stopped{rank}', 'w').close(), sys.exit(75)))\n"
        "open(f\"{out}/rank{rank}of{os.environ['WORLD_SIZE']}\", 'w').close()\n"
        "if len(sys.argv) > 2:\n"
        "    signal.pause()\n")
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir(), second.mkdir()
    command = [sys.executable, "-m", "hiast.spawn", "--nproc", "2", "--", sys.executable, str(rank_script)]
    assert subprocess.run(command + [str(first)], timeout=60).returncode == 0
    assert sorted(p.name for p in first.iterdir()) == ["rank0of2", "rank1of2"]
    child = subprocess.Popen(command + [str(second), "wait"])
    deadline = time.monotonic() + 60
    while not all((second / f"rank{r}of2").exists() for r in range(2)):   # both ranks are running
        assert time.monotonic() < deadline and child.poll() is None, "the ranks did not start"
        time.sleep(0.05)
    child.send_signal(signal.SIGUSR2)
    assert child.wait(timeout=60) == spawn.INTERRUPTED
    assert (second / "stopped0").is_file() and (second / "stopped1").is_file()
    assert spawn.exit_status([0, 0]) == 0 and spawn.exit_status([0, 3]) == 3 and spawn.exit_status([75, -15]) == 75
