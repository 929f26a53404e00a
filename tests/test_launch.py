"""The submitit launcher, with submitit's in-process "debug" cluster (the real-SLURM test is separate)."""

import json
import pickle
import sys

from hiast.launch import CommandJob, executor_for, main


def test_executor_takes_the_rule_resources(tmp_path):
    settings = {"cluster": "debug", "rules": {"self_train": {"gpus": 2, "cpus": 3, "mem_gb": 5, "time_min": 7}}}
    executor = executor_for("self_train", settings, tmp_path)
    assert executor.cluster == "debug"
    params = executor._executor.parameters
    assert (params["timeout_min"], params["gpus_per_node"], params["cpus_per_task"], params["mem_gb"]) == (7, 2, 3, 5.0)
    defaults = executor_for("eval", {"cluster": "debug"}, tmp_path)._executor.parameters
    assert (defaults["gpus_per_node"], defaults["timeout_min"]) == (1, 240)


def test_command_job_pickles_without_its_process():
    job = CommandJob(["true"], "/", {})
    job.process = object()
    clone = pickle.loads(pickle.dumps(job))
    assert clone.command == ["true"] and clone.process is None


def test_main_runs_the_command_and_returns_its_status(tmp_path, capsys):
    out = tmp_path / "ran.txt"
    settings = json.dumps({"cluster": "debug", "poll_seconds": 0.1})
    code = main(["--rule", "eval", "--folder", str(tmp_path / "sub"), "--config-json", settings, "--",
                 sys.executable, "-c", f"open({str(out)!r}, 'w').write('ok')"])
    assert code == 0 and out.read_text() == "ok"
    code = main(["--rule", "eval", "--folder", str(tmp_path / "sub2"), "--config-json", settings, "--",
                 sys.executable, "-c", "raise SystemExit(3)"])
    assert code == 1
    assert "failed" in capsys.readouterr().err
    assert main(["--rule", "eval", "--folder", "x"]) == 2  # no command
