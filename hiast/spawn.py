"""`python -m hiast.spawn --nproc G -- COMMAND...`: run COMMAND as G ranks of one torch.distributed job.

Like torchrun --standalone, but signal-transparent: SIGTERM/SIGUSR2/SIGINT (SLURM's preemption and
time-limit signals, Ctrl-C) are forwarded to every rank, so that each one saves and stops at the same
iteration (hiast.distributed all-reduces the stop flag), and the spawner itself never dies of them. When one
rank fails, the others are stopped. The exit status is 75 when the ranks stopped on a signal (state saved),
else the first non-zero status, else 0. The ranks find each other through RANK, WORLD_SIZE, LOCAL_RANK,
MASTER_ADDR and MASTER_PORT (a free local port).
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time

INTERRUPTED = 75
FORWARDED = (signal.SIGTERM, signal.SIGUSR2, signal.SIGINT)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def rank_env(rank: int, world_size: int, port: int, base: dict | None = None) -> dict:
    env = dict(os.environ if base is None else base)
    env.update(RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
               MASTER_PORT=str(port))
    return env


def exit_status(codes: list[int]) -> int:
    """75 if any rank stopped on a signal and saved, else the first failure, else 0."""
    if any(code == INTERRUPTED or -code in FORWARDED for code in codes):
        return INTERRUPTED
    return next((code if code > 0 else 1 for code in codes if code != 0), 0)


def run(command: list[str], nproc: int) -> int:
    port = free_port()
    procs = [subprocess.Popen(command, env=rank_env(rank, nproc, port)) for rank in range(nproc)]

    def forward(signum, frame):
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signum)

    previous = {sig: signal.signal(sig, forward) for sig in FORWARDED}
    try:
        while any(proc.poll() is None for proc in procs):
            failed = [p for p in procs if p.returncode not in (None, 0, INTERRUPTED)]
            if failed:      # a crashed rank leaves the others waiting in a collective forever: stop them
                for proc in procs:
                    if proc.poll() is None:
                        proc.terminate()
            time.sleep(0.2)
        return exit_status([proc.returncode for proc in procs])
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hiast.spawn", description=__doc__.splitlines()[0])
    parser.add_argument("--nproc", type=int, required=True, help="ranks (one per GPU)")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND ...")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command or args.nproc < 1:
        parser.error("expected --nproc N >= 1 -- COMMAND ...")
    return run(command, args.nproc)


if __name__ == "__main__":
    sys.exit(main())
