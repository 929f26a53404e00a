"""Several GPUs: one process per GPU with torch.distributed (NCCL on GPUs, gloo on CPU).

A training stage started by `torchrun --nproc_per_node G hiast train ...` (or as G SLURM tasks, see
hiast/launch.py) finds its rank here. Every rank draws its share of each global batch from the same
iteration-addressed sampler (items j with j % G == rank), so the configured global batch is kept; DDP
averages the gradients; rank 0 alone writes outputs and training states, the others wait at a barrier.
A stop signal on any rank stops every rank at the same iteration (the flags are all-reduced).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Context:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


SINGLE = Context()


def from_env(env: dict | None = None) -> Context:
    """Rank, world size and local rank from torchrun's variables, else SLURM's, else a single process."""
    env = os.environ if env is None else env
    for rank_key, size_key, local_key in (("RANK", "WORLD_SIZE", "LOCAL_RANK"),
                                          ("SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID")):
        if size_key in env and rank_key in env:
            return Context(int(env[rank_key]), int(env[size_key]), int(env.get(local_key, 0)))
    return SINGLE


def setup(device: torch.device) -> tuple[Context, torch.device]:
    """Join the process group when the environment names several processes; returns (context, this rank's
    device: cuda:<local rank> on GPUs)."""
    context = from_env()
    if not context.enabled:
        return context, device
    if device.type == "cuda":
        torch.cuda.set_device(context.local_rank)
        device = torch.device("cuda", context.local_rank)
    if not dist.is_initialized():
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", "29500")
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=context.rank,
                                world_size=context.world_size)
    return context, device


def wrap(model: torch.nn.Module, context: Context, device: torch.device) -> torch.nn.Module:
    """DistributedDataParallel around `model` when several processes train it, else the model itself."""
    if not context.enabled:
        return model
    ids = [device.index] if device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids, broadcast_buffers=True)


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model


def any_rank(flag: bool, context: Context, device: torch.device) -> bool:
    """True on every rank when `flag` is true on at least one (e.g. a stop signal reached one task)."""
    if not context.enabled:
        return flag
    value = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def barrier(context: Context) -> None:
    if context.enabled:
        dist.barrier()


def shutdown(context: Context) -> None:
    if context.enabled and dist.is_initialized():
        dist.destroy_process_group()
