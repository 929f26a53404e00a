"""Run one pipeline command as a SLURM job through submitit, and wait for it (the slurm profile's launcher).

    python -m hiast.launch --rule self_train --folder results/x/logs/submitit --config-json '{...}' -- CMD...

The job runs CMD in a child process; its output goes to the job's log files in FOLDER/<job id>/. The rule's
process (on the machine running Snakemake) waits for the job and exits 0 when CMD succeeded, 1 otherwise, so
Snakemake sees the job as if it had run locally. What stops a job midway, and what follows:

- time limit: SLURM sends SIGUSR2 90 s before it (`#SBATCH --signal=USR2@90`, set by submitit) to every
  process of the job, the training command included. submitit calls `CommandJob.checkpoint()`: the
  command saves its complete state and exits (75), and the job requeues itself (`scontrol requeue`, at
  most `max_requeues` times for time limits). The requeued job runs CMD again, which resumes from that
  state; the waiting rule notices nothing but the delay.
- preemption with requeue or `scontrol requeue`: SLURM sends SIGTERM; the command saves its state and
  exits 75. The job then leaves no result (see `CommandJob.__call__`), SLURM requeues it, and it resumes.
- `scancel`, node failure, a plain error: the job ends without a successful result; this process exits 1
  and Snakemake's `retries` (profiles/slurm) submits the rule again, which resumes from the saved state.
- Snakemake interrupted (Ctrl-C, SIGTERM to this process): the SLURM job is cancelled too.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

INTERRUPTED = 75  # hiast.checkpoint.Interrupted.exit_code: state saved on a signal, rerun to resume


def wait_exited(pid: int, timeout: float) -> bool:
    """Whether child `pid` exits within `timeout` s, leaving it to be reaped by its Popen (WNOWAIT): this
    runs inside a signal handler that may have interrupted that Popen's own wait(), which holds its lock."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
                return True
        except ChildProcessError:  # already reaped
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)


class CommandJob:
    """A submitit-checkpointable job that runs one command line."""

    def __init__(self, command: list[str], cwd: str, env: dict[str, str]):
        self.command, self.cwd, self.env = command, cwd, env
        self.process: subprocess.Popen | None = None

    def __call__(self) -> int:
        env = dict(os.environ, **self.env)
        self.process = subprocess.Popen(self.command, cwd=self.cwd, env=env)
        code = self.process.wait()
        if code == INTERRUPTED or -code in (signal.SIGTERM, signal.SIGUSR2):
            # The command stopped on SIGTERM/SIGUSR2, which SLURM sends to the whole job when it requeues,
            # preempts, cancels or times it out (75: it saved its state first; killed by the signal: it came
            # before the training loop, nothing to save). A result written now, even an error, would tell
            # the waiting launcher that the job is over while SLURM may be about to run it again, so leave
            # none: SystemExit passes submitit's `except Exception`. Whether the job comes back is SLURM's
            # call; if it does not, its final state (CANCELLED, TIMEOUT, FAILED) ends the wait.
            print(f"hiast.launch: the command stopped on a signal (exit status {code}); leaving no result "
                  "(if SLURM requeues the job, it resumes from the saved state)", file=sys.stderr, flush=True)
            raise SystemExit(INTERRUPTED)
        if code != 0:
            raise RuntimeError(f"command exited with status {code}: {' '.join(self.command)}")
        return code

    def checkpoint(self, *args, **kwargs):
        """Called by submitit on SIGUSR2 (time limit near, or preemption): let the command save its state
        and exit, then requeue the same command, which resumes from that state."""
        import submitit
        if self.process is not None and self.process.returncode is None:
            try:
                self.process.send_signal(signal.SIGUSR2)  # SLURM usually signalled it already: harmless
            except ProcessLookupError:
                pass
            if not wait_exited(self.process.pid, float(os.environ.get("HIAST_CHECKPOINT_WAIT", "60"))):
                self.process.kill()
        return submitit.helpers.DelayedSubmission(CommandJob(self.command, self.cwd, self.env))

    def __getstate__(self):
        return {"command": self.command, "cwd": self.cwd, "env": self.env, "process": None}


def executor_for(rule: str, settings: dict, folder: Path):
    """A submitit executor with the rule's resources. `settings` is the config's `slurm` section (see
    config/slurm.yaml): partition, account, qos, max_requeues, rules.<rule>.{gpus, cpus, mem_gb, time_min,
    partition}; `cluster` (tests only) picks another submitit executor, e.g. "debug"."""
    import submitit
    executor = submitit.AutoExecutor(folder=str(folder / "%j"), cluster=settings.get("cluster"),
                                     slurm_max_num_timeout=int(settings.get("max_requeues", 3)))
    resources = dict((settings.get("rules") or {}).get(rule) or {})
    gpus = int(resources.get("gpus", 1))
    params = {
        "name": f"hiast-{rule}",
        "timeout_min": int(resources.get("time_min", 240)),
        "gpus_per_node": gpus or None,  # gpus: 0 asks for no GPU at all (no --gpus-per-node)
        "cpus_per_task": int(resources.get("cpus", 4)),
        "mem_gb": float(resources.get("mem_gb", 32)),
        "nodes": 1,
        "tasks_per_node": 1,
    }
    if executor.cluster == "slurm":
        params["slurm_partition"] = resources.get("partition") or settings.get("partition")
        params["slurm_account"] = settings.get("account")
        params["slurm_qos"] = settings.get("qos")
        # requeueable even where the cluster's default is JobRequeue=0 (submitit requeues on SIGUSR2)
        params["slurm_additional_parameters"] = {"requeue": True}
    executor.update_parameters(**{key: value for key, value in params.items() if value is not None})
    return executor


class _Stop(Exception):
    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _raise_stop(signum, frame):
    raise _Stop(signum)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--" not in argv:
        print("hiast.launch: expected '-- COMMAND ...' after the options", file=sys.stderr)
        return 2
    split = argv.index("--")
    parser = argparse.ArgumentParser(prog="python -m hiast.launch")
    parser.add_argument("--rule", required=True)
    parser.add_argument("--folder", required=True, type=Path, help="submitit's folder (job logs, pickles)")
    parser.add_argument("--config-json", default="{}", help="the config's `slurm` section as JSON")
    args = parser.parse_args(argv[:split])
    command = argv[split + 1:]
    if not command:
        print("hiast.launch: no command after '--'", file=sys.stderr)
        return 2
    settings = json.loads(args.config_json)
    executor = executor_for(args.rule, settings, args.folder)
    env = {key: value for key, value in os.environ.items() if key.startswith(("HIAST_", "OMP_", "MKL_"))}
    try:
        job = executor.submit(CommandJob(command, os.getcwd(), env))
    except Exception as err:  # sbatch refused it: bad partition, account, resources...
        print(f"hiast.launch: could not submit {args.rule}: {err}", file=sys.stderr)
        return 1
    print(f"hiast.launch: {args.rule} submitted as job {job.job_id} ({executor.cluster}); logs in "
          f"{args.folder / str(job.job_id)}", flush=True)
    poll = float(settings.get("poll_seconds", 5))
    status = 0
    previous = {}
    try:
        # Snakemake stopping this process must not leave the job running on the cluster
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            try:
                previous[signum] = signal.signal(signum, _raise_stop)
            except ValueError:  # not the main thread (embedded use): leave the handlers alone
                break
        # done(): the result file appears, or sacct says the job ended (cancelled, failed, timed out);
        # submitit's own sacct calls thin out to one per 10 min on long jobs, so ask once a minute
        next_check = time.monotonic() + 60
        while True:
            force = time.monotonic() >= next_check
            if force:
                next_check = time.monotonic() + 60
            if job.done(force_check=force):
                break
            time.sleep(poll)
        job.result()
    except _Stop as stop:
        job.cancel(check=False)
        print(f"hiast.launch: {stop} received: cancelled job {job.job_id}", file=sys.stderr, flush=True)
        status = 128 + stop.signum
    except Exception as err:  # the job failed: its own logs say why
        status = 1
        print(f"hiast.launch: job {job.job_id} failed: {err}", file=sys.stderr)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    for name, path in (("stdout", job.paths.stdout), ("stderr", job.paths.stderr)):
        if Path(path).is_file():
            text = Path(path).read_text(errors="replace")
            print(f"--- job {job.job_id} {name} ({path}), last lines ---\n" + "\n".join(text.splitlines()[-40:]))
    return status


if __name__ == "__main__":
    sys.exit(main())
