"""Run one pipeline command as a SLURM job through submitit, and wait for it (the slurm profile's launcher).

    python -m hiast.launch --rule self_train --folder results/x/logs/submitit --config-json '{...}' -- CMD...

The job runs CMD in a child process. On SLURM's time-limit / preemption signal (SIGUSR2, which submitit
asks SLURM to send 90 s before the end), submitit calls `checkpoint()`: the signal is passed on to the
child, whose training loop saves its complete state atomically and exits, and the job requeues itself;
the requeued job runs CMD again, which resumes from that state. The Snakemake rule's process waits here for
the final result and exits with CMD's exit status, so Snakemake sees the job as if it had run locally.
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


class CommandJob:
    """A submitit-checkpointable job that runs one command line."""

    def __init__(self, command: list[str], cwd: str, env: dict[str, str]):
        self.command, self.cwd, self.env = command, cwd, env
        self.process: subprocess.Popen | None = None

    def __call__(self) -> int:
        env = dict(os.environ, **self.env)
        self.process = subprocess.Popen(self.command, cwd=self.cwd, env=env)
        code = self.process.wait()
        if code != 0:
            raise RuntimeError(f"command exited with status {code}: {' '.join(self.command)}")
        return code

    def checkpoint(self, *args, **kwargs):
        """Called by submitit on SIGUSR2: let the child save its state, then requeue the same command."""
        import submitit
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGUSR2)
            try:
                self.process.wait(timeout=float(os.environ.get("HIAST_CHECKPOINT_WAIT", "60")))
            except subprocess.TimeoutExpired:
                self.process.kill()
        return submitit.helpers.DelayedSubmission(CommandJob(self.command, self.cwd, self.env))

    def __getstate__(self):
        return {"command": self.command, "cwd": self.cwd, "env": self.env, "process": None}


def executor_for(rule: str, settings: dict, folder: Path):
    """A submitit executor with the rule's resources (keys documented in profiles/slurm/config.yaml)."""
    import submitit
    executor = submitit.AutoExecutor(folder=str(folder / "%j"), cluster=settings.get("cluster"))
    resources = dict((settings.get("rules") or {}).get(rule) or {})
    partition = resources.pop("partition", None) or settings.get("partition")
    params = {
        "name": f"hiast-{rule}",
        "timeout_min": int(resources.get("time_min", 240)),
        "gpus_per_node": int(resources.get("gpus", 1)),
        "cpus_per_task": int(resources.get("cpus", 4)),
        "mem_gb": float(resources.get("mem_gb", 32)),
        "nodes": 1,
        "tasks_per_node": 1,
    }
    additional = {}
    if executor.cluster == "slurm":
        if partition:
            params["slurm_partition"] = partition
        if settings.get("account"):
            additional["account"] = settings["account"]
        if settings.get("qos"):
            additional["qos"] = settings["qos"]
        if additional:
            params["slurm_additional_parameters"] = additional
        params["slurm_max_num_timeout"] = int(settings.get("max_requeues", 3))
    executor.update_parameters(**params)
    return executor


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
    settings = json.loads(args.config_json)
    executor = executor_for(args.rule, settings, args.folder)
    env = {key: value for key, value in os.environ.items() if key.startswith(("HIAST_", "OMP_", "MKL_"))}
    job = executor.submit(CommandJob(command, os.getcwd(), env))
    print(f"hiast.launch: {args.rule} submitted as job {job.job_id} ({executor.cluster}); logs in "
          f"{args.folder / str(job.job_id)}", flush=True)
    poll = float(settings.get("poll_seconds", 5))
    status = 0
    try:
        while not job.done():
            time.sleep(poll)
        job.result()
    except Exception as err:  # the job failed: its own logs say why
        status = 1
        print(f"hiast.launch: job {job.job_id} failed: {err}", file=sys.stderr)
    for name, path in (("stdout", job.paths.stdout), ("stderr", job.paths.stderr)):
        if Path(path).is_file():
            text = Path(path).read_text(errors="replace")
            print(f"--- job {job.job_id} {name} ({path}), last lines ---\n" + "\n".join(text.splitlines()[-40:]))
    return status


if __name__ == "__main__":
    sys.exit(main())
