"""Real SLURM (issue #4): the smoke pipeline through profiles/slurm, and a self-training job that is stopped
twice on the cluster and resumes each time.

.ci/slurm/up.sh brings up a single-node SLURM here (munge, MariaDB + slurmdbd for sacct, 2 fake GPUs), so
these tests run only as root on Linux with apt/dpkg, and are skipped elsewhere (or with HIAST_SLURM_TESTS=0,
or where a SLURM that up.sh did not write is configured). There is no CUDA: jobs get CUDA_VISIBLE_DEVICES
from the fake GPUs and torch falls back to the CPU. About 3 min on a 2-core machine, plus about 40 s to
install the packages the first time; SLURM is stopped again afterwards if these tests started it.
"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml

from hiast import workflow as hw

ROOT = Path(__file__).resolve().parents[1]
UP, DOWN = ROOT / ".ci" / "slurm" / "up.sh", ROOT / ".ci" / "slurm" / "down.sh"
SNAKEMAKE = [sys.executable, "-m", "snakemake"]
SCENARIO = "synthetic_gta5_to_cityscapes"
ACCOUNT = "hiast_ci"  # made by up.sh
GPU_JOBS = {"hiast-warmup": 1, "hiast-eval": 4, "hiast-pseudo_labels": 3, "hiast-self_train": 3}
LIGHT_LOGS = ["manifest_source", "manifest_target", "instance_bank_1", "instance_bank_2", "instance_bank_3",
              "summary"]
ENV = dict(os.environ, HIAST_NO_PROGRESS="1")
# Small jobs for a 2-CPU node with 2 fake GPUs (only keys of config/slurm.yaml), over the profile's files.
CI_CONFIG = {
    "threads": 1,
    "slurm": {"partition": "debug", "account": ACCOUNT, "poll_seconds": 1,
              "rules": {rule: {"gpus": 1, "cpus": 1, "mem_gb": 1, "time_min": 10}
                        for rule in ("warmup", "pseudo_labels", "self_train", "eval")}},
}


def why_no_slurm() -> str | None:
    if not sys.platform.startswith("linux"):
        return "needs Linux (.ci/slurm/up.sh starts SLURM daemons here)"
    if os.environ.get("HIAST_SLURM_TESTS") == "0":
        return "HIAST_SLURM_TESTS=0"
    if os.geteuid() != 0:
        return "needs root: .ci/slurm/up.sh installs SLURM and starts its daemons"
    if not (shutil.which("apt-get") and shutil.which("dpkg-query")):
        return "needs apt-get and dpkg (Debian/Ubuntu) to install SLURM"
    conf = Path("/etc/slurm/slurm.conf")
    if conf.is_file() and "written by .ci/slurm/up.sh" not in conf.read_text(errors="replace"):
        return f"{conf} was not written by .ci/slurm/up.sh: not touching a real SLURM installation"
    return None


needs_slurm = pytest.mark.skipif(why_no_slurm() is not None, reason=str(why_no_slurm()))


def slurmctld_running() -> bool:
    try:
        pid = Path("/run/slurmctld.pid").read_text().strip()
        return Path(f"/proc/{pid}/comm").read_text().strip() == "slurmctld"
    except OSError:
        return False


def cancel_jobs_in(work: Path) -> None:
    """Cancel whatever this project directory still has queued or running (after a failure)."""
    if not shutil.which("squeue"):
        return
    listing = subprocess.run(["squeue", "-h", "-o", "%i|%Z"], capture_output=True, text=True, check=False).stdout
    ids = [i for i, _, wd in (line.partition("|") for line in listing.splitlines()) if wd == str(work)]
    if ids:
        subprocess.run(["scancel", *ids], check=False)


def run_bounded(cmd, cwd, timeout, **kwargs):
    """Run cmd in its own session; on timeout kill the whole session (Snakemake ignores SIGTERM while it
    waits for jobs) and cancel the project's SLURM jobs."""
    proc = subprocess.Popen(cmd, cwd=cwd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True, **kwargs)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        cancel_jobs_in(Path(cwd))
        pytest.fail(f"{' '.join(map(str, cmd[:4]))}... still running after {timeout}s:\n{out[-4000:]}")
    return proc.returncode, out


def sacct_rows(*args) -> list[dict]:
    fields = ["JobID", "JobName", "State", "AllocTRES", "Account", "WorkDir"]
    out = subprocess.run(["sacct", "-n", "-P", "-o", ",".join(fields), *args], capture_output=True, text=True,
                         check=True).stdout
    return [dict(zip(fields, line.split("|"))) for line in out.splitlines() if line]


def new_project(tmp_path_factory, name) -> Path:
    work = tmp_path_factory.mktemp(name).resolve()
    shutil.copytree(ROOT / "config", work / "config")
    (work / "config" / "slurm_ci.yaml").write_text(yaml.safe_dump(CI_CONFIG))
    return work


@pytest.fixture(scope="module")
def slurm():
    """A running single-node SLURM; stopped afterwards if this module started it."""
    was_running = slurmctld_running()
    result = subprocess.run(["bash", str(UP)], capture_output=True, text=True, timeout=600, check=False,
                            env=dict(os.environ, HIAST_SLURM_GPUS="2", HIAST_SLURM_ACCOUNTING="1",
                                     HIAST_SLURM_ACCOUNT=ACCOUNT))
    if result.returncode != 0:
        pytest.fail(f".ci/slurm/up.sh failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    yield
    if not was_running:
        subprocess.run(["bash", str(DOWN)], capture_output=True, timeout=300, check=False)


@pytest.fixture(scope="module")
def slurm_project(slurm, tmp_path_factory):
    """The smoke pipeline of one synthetic scenario, run with profiles/slurm; (project dir, Snakemake output)."""
    work = new_project(tmp_path_factory, "slurm_project")
    since = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(time.time() - 2))
    # the contract outputs as targets (first: the options after them take several values); --configfile
    # replaces the profile's configfiles, so config/slurm.yaml is listed again (docs/slurm.md)
    code, out = run_bounded(SNAKEMAKE + ["results/smoke/summary.md", f"results/smoke/{SCENARIO}/summary.csv",
                                         "-s", str(ROOT / "workflow" / "Snakefile"), "--profile",
                                         str(ROOT / "profiles" / "slurm"), "--configfile", "config/slurm.yaml",
                                         "config/smoke.yaml", "config/slurm_ci.yaml",
                                         "--config", f"scenarios=[{SCENARIO}]"], cwd=work, timeout=480)
    assert code == 0, f"snakemake --profile profiles/slurm failed:\n{out[-6000:]}"
    return work, since, out


@needs_slurm
def test_smoke_pipeline_sends_gpu_rules_to_slurm(slurm_project):
    work, since, _ = slurm_project
    results = work / "results" / "smoke" / SCENARIO
    for path in ["warmup/model.pt", "warmup/eval.csv", "summary.csv"] + [
            f"round_{r}/{f}" for r in (1, 2, 3) for f in ("pseudo_labels.h5", "instance_bank.h5", "model.pt",
                                                        "teacher.pt", "eval.csv")]:
        assert (results / path).is_file(), path
    assert SCENARIO in (work / "results" / "smoke" / "summary.md").read_text()

    # Every job this project put on the cluster (sacct: slurmdbd has them 1-4 s after they end)
    deadline = time.time() + 30
    while True:
        jobs = [row for row in sacct_rows("-X", "-S", since) if row["WorkDir"] == str(work)]
        if sum(GPU_JOBS.values()) <= len(jobs) and all(row["State"] == "COMPLETED" for row in jobs) \
                or time.time() > deadline:
            break
        time.sleep(1)
    # only the GPU-heavy rules, each once (light rules are not among them), on a GPU, with the account
    assert Counter(row["JobName"] for row in jobs) == GPU_JOBS, jobs
    for row in jobs:
        assert row["State"] == "COMPLETED" and "gres/gpu=1" in row["AllocTRES"] and row["Account"] == ACCOUNT, row

    # each GPU rule's log names its job, whose submitit folder holds the job's logs and result
    logs = results / "logs"
    ids = set()
    for log in ["warmup", "eval_warmup"] + [f"{rule}_{r}" for rule in ("pseudo_labels", "self_train", "eval_round")
                                            for r in (1, 2, 3)]:
        match = re.search(r"submitted as job (\d+) \(slurm\)", (logs / f"{log}.log").read_text())
        assert match, log
        ids.add(match.group(1))
        assert (logs / "submitit" / match.group(1) / f"{match.group(1)}_0_result.pkl").is_file(), log
    assert ids == {row["JobID"] for row in jobs}
    # the light rules ran here: their logs are the commands' own output, no launcher in them
    for log in LIGHT_LOGS:
        assert "hiast.launch" not in (logs / f"{log}.log").read_text(), log
    assert "hiast.launch" not in (work / "results" / "smoke" / "logs" / "results_table.log").read_text()


@needs_slurm
def test_slurm_results_equal_a_local_run(slurm_project, tmp_path_factory):
    """The same smoke pipeline run here, with the same seed and thread count (1), gives the same numbers:
    the cluster run's summary.csv is byte-identical to the local one's."""
    work, _, _ = slurm_project
    local = new_project(tmp_path_factory, "local_project")
    (local / "config" / "local_ci.yaml").write_text(yaml.safe_dump({"threads": 1}))
    code, out = run_bounded(SNAKEMAKE + [f"results/smoke/{SCENARIO}/summary.csv", "-s",
                                         str(ROOT / "workflow" / "Snakefile"), "--cores", "2", "--configfile",
                                         "config/smoke.yaml", "config/local_ci.yaml",
                                         "--config", f"scenarios=[{SCENARIO}]"], cwd=local, timeout=480)
    assert code == 0, f"local snakemake failed:\n{out[-6000:]}"
    remote = (work / "results" / "smoke" / SCENARIO / "summary.csv").read_bytes()
    assert (local / "results" / "smoke" / SCENARIO / "summary.csv").read_bytes() == remote


@needs_slurm
def test_training_job_saves_requeues_and_resumes(slurm_project):
    """Self-training round 1 (200 smoke iterations, no periodic state) through the launcher, stopped twice:
    SIGUSR2 as SLURM sends it before a time limit (submitit checkpoints and requeues the job itself), then
    `scontrol requeue` as an admin or a preemption does (SIGTERM, SLURM requeues). It resumes each time
    from the state saved on the signal, and the launcher reports success once."""
    work, _, _ = slurm_project
    smoke = yaml.safe_load((work / "config" / "smoke.yaml").read_text())["smoke"]
    cfg = json.loads(hw.stage_json(hw.resolve(work / "config" / "scenarios", SCENARIO, smoke)[0], "train", 1))
    iterations = 200
    cfg["rounds"][0]["train"].update(iterations=iterations, checkpoint_every=0, log_every=5)
    res = Path("results/smoke") / SCENARIO
    out = Path("preempted")
    py = sys.executable
    command = [py, "-m", "hiast.launch", "--rule", "self_train", "--folder", str(out / "submitit"),
               "--config-json", json.dumps(CI_CONFIG["slurm"]), "--",
               py, "-m", "hiast", "train", "--config", json.dumps(cfg), "--round", "1",
               "--init", str(res / "warmup/model.pt"), "--pseudo-labels", str(res / "round_1/pseudo_labels.h5"),
               "--bank", str(res / "round_1/instance_bank.h5"), "--manifest", str(res / "manifests/target.csv"),
               "--output", str(out / "model.pt"), "--teacher-output", str(out / "teacher.pt"),
               "--state-dir", str(out / "state"), "--threads", "1"]
    (work / out).mkdir()
    launch_log = work / out / "launch.log"
    with open(launch_log, "w") as log:
        launcher = subprocess.Popen(command, cwd=work, env=ENV, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True)
    try:
        def wait_for(pattern, path, count=1, timeout=120):
            deadline = time.time() + timeout
            while time.time() < deadline:
                hits = re.findall(pattern, path.read_text(errors="replace")) if path.is_file() else []
                if len(hits) >= count:
                    return hits
                assert launcher.poll() is None, f"launcher exited early:\n{launch_log.read_text()[-4000:]}"
                time.sleep(0.1)
            pytest.fail(f"no {pattern!r} in {path} after {timeout}s:\n{launch_log.read_text()[-3000:]}")

        job = wait_for(r"submitted as job (\d+)", launch_log)[0]
        err = work / out / "submitit" / job / f"{job}_0_log.err"
        progress = rf" it (\d+)/{iterations} "
        seen = int(wait_for(progress, err, count=4)[-1])
        subprocess.run(["scancel", "--signal=USR2", job], check=True)  # what --signal=USR2@90 sends
        first = int(wait_for(r"resuming at iteration (\d+)", err)[0])
        lines = len(re.findall(progress, err.read_text()))
        seen_again = int(wait_for(progress, err, count=lines + 3)[-1])
        subprocess.run(["scontrol", "requeue", job], check=True)  # SIGTERM, then SLURM requeues
        second = int(wait_for(r"resuming at iteration (\d+)", err, count=2)[1])
        code = launcher.wait(timeout=180)
    finally:
        if launcher.poll() is None:
            os.killpg(launcher.pid, signal.SIGKILL)
            cancel_jobs_in(work)
    text = err.read_text()
    assert code == 0, launch_log.read_text()[-4000:]
    assert (work / out / "model.pt").is_file() and (work / out / "teacher.pt").is_file()
    assert seen <= first < seen_again <= second < iterations, (seen, first, seen_again, second)
    assert "received SIGUSR2" in text and "received SIGTERM" in text and f" it {iterations}/{iterations} " in text
    stdout = (work / out / "submitit" / job / f"{job}_0_log.out").read_text()
    assert f"Requeued job {job}" in stdout and "Job completed successfully" in stdout  # submitit's own requeue
    # one job id throughout: two requeued runs, then the completed one
    deadline = time.time() + 30
    while True:
        states = [row["State"] for row in sacct_rows("-X", "-D", "-j", job)]
        if states[-1:] == ["COMPLETED"] or time.time() > deadline:
            break
        time.sleep(1)
    assert states == ["REQUEUED", "REQUEUED", "COMPLETED"], states


def test_slurm_profile_refuses_to_run_gpu_rules_here_without_its_config(tmp_path):
    """`--configfile X` drops the profile's configfiles (config/slurm.yaml with them): the run stops before
    any job, saying what to add, instead of quietly training on the login node."""
    shutil.copytree(ROOT / "config", tmp_path / "config")
    code, out = run_bounded(SNAKEMAKE + ["-s", str(ROOT / "workflow" / "Snakefile"), "--profile",
                                         str(ROOT / "profiles" / "slurm"), "-n", "--configfile", "config/smoke.yaml",
                                         "--config", f"scenarios=[{SCENARIO}]"], cwd=tmp_path, timeout=180)
    assert code != 0 and "--configfile config/slurm.yaml config/smoke.yaml" in out, out[-3000:]
    assert not (tmp_path / "results").exists()
