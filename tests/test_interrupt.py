"""SIGKILL at a chosen point of a stage leaves no output a rerun would trust, and the rerun finishes with the
uninterrupted run's outputs (CPU, deterministic at one thread).

The stage runs in a child process with a hook at the chosen point: the hook prints a line and blocks; the test
reads the line and kills the child with SIGKILL, so the kill lands exactly there (no timing guesses).
"""

import subprocess
import sys
from pathlib import Path

import h5py
import pytest
import torch

from hiast import stages
from fixtures import DEVICE

TESTS = Path(__file__).parent

DRIVER = r"""
import sys
sys.path.insert(0, {tests!r})
import torch
torch.set_num_threads(1)
from pathlib import Path
from fixtures import tiny_scenario, DEVICE
from hiast import checkpoint, h5io, stages

root, out = Path({root!r}), Path({out!r})
scenario = tiny_scenario(root)
calls = [0]

def block(*_):
    print("KILL-ME", flush=True)
    sys.stdin.read()          # never returns: the parent kills us here

def after(n, original):
    def hooked(*args, **kwargs):
        result = original(*args, **kwargs)
        calls[0] += 1
        if calls[0] == n:
            block()
        return result
    return hooked

{hook}
{stage}
print("FINISHED", flush=True)
"""

CASES = {
    # after 3 of 8 images are in the pseudo-label file's temporary copy
    "pseudo": ("h5io.PseudoLabelWriter.write = after(3, h5io.PseudoLabelWriter.write)",
               "stages.pseudo_labels(scenario, 1, out / 'warmup.pt', out / 'target.csv', out / 'killed.h5', DEVICE)",
               "killed.h5"),
    # the bank's temporary file is complete and synced, not yet renamed
    "bank": ("h5io._fsync = after(1, h5io._fsync)",
             "stages.instance_bank(scenario, 1, out / 'pl.h5', out / 'target.csv', out / 'killed_bank.h5')",
             "killed_bank.h5"),
    # self-training: killed right after the state of iteration 2 (of 4) was saved
    "train": ("checkpoint.snapshot = after(1, checkpoint.snapshot)",
              "stages.self_train(scenario, 1, out / 'warmup.pt', out / 'pl.h5', out / 'bank.h5', out / 'target.csv',"
              " out / 'killed_student.pt', out / 'killed_teacher.pt', out / 'killed_state', DEVICE)",
              "killed_student.pt"),
}


def run_and_kill(tiny_benchmark, out, hook, stage):
    code = DRIVER.format(tests=str(TESTS), root=str(tiny_benchmark), out=str(out), hook=hook, stage=stage)
    child = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, text=True)
    try:
        for line in child.stdout:
            if line.strip() in ("KILL-ME", "FINISHED"):
                break
        assert line.strip() == "KILL-ME", "the stage finished before reaching the kill point"
        child.kill()
    finally:
        child.wait(timeout=60)
    assert child.returncode == -9


def datasets(handle: h5py.File) -> dict:
    """Every dataset of a file, by path, as bytes."""
    found = {}
    handle.visititems(lambda name, obj: found.__setitem__(name, obj[()].tobytes())
                      if isinstance(obj, h5py.Dataset) else None)
    return found


@pytest.mark.parametrize("case", sorted(CASES))
def test_sigkill_leaves_no_trusted_output_and_the_rerun_matches(tiny_run, tiny_benchmark, case):
    scenario, out, _ = tiny_run
    hook, stage, output = CASES[case]
    run_and_kill(tiny_benchmark, out, hook, stage)
    assert not (out / output).exists()       # only a temporary name (or nothing) is left behind
    # the same stage, rerun (as Snakemake would after the failure), gives the uninterrupted outputs
    if case == "pseudo":
        stages.pseudo_labels(scenario, 1, out / "warmup.pt", out / "target.csv", out / output, DEVICE)
        with h5py.File(out / "pl.h5") as one, h5py.File(out / output) as two:
            for name in ("labels", "thresholds", "pixel_counts"):
                assert one[name][()].tobytes() == two[name][()].tobytes(), name
    elif case == "bank":
        stages.instance_bank(scenario, 1, out / "pl.h5", out / "target.csv", out / output)
        with h5py.File(out / "bank.h5") as one, h5py.File(out / output) as two:
            assert datasets(one) == datasets(two) and len(datasets(one)) > 3
    else:
        assert (out / "killed_state" / "self_train.pt").is_file()      # resumes from iteration 2
        stages.self_train(scenario, 1, out / "warmup.pt", out / "pl.h5", out / "bank.h5", out / "target.csv",
                          out / output, out / "killed_teacher.pt", out / "killed_state", DEVICE)
        reference = torch.load(out / "student.pt", weights_only=True)
        resumed = torch.load(out / output, weights_only=True)
        assert reference.keys() == resumed.keys()
        assert all(torch.equal(reference[k], resumed[k]) for k in reference)


@pytest.mark.parametrize("signame", ["SIGTERM", "SIGUSR2"])
def test_source_only_training_stopped_by_a_signal_resumes_to_identical_weights(tmp_path, signame):
    """The warm-up's supervised loop: the signal arrives mid-run, the full state is saved, the rerun ends with
    exactly the uninterrupted weights (and BN statistics) and loss history."""
    import signal

    from hiast.checkpoint import Interrupted
    from hiast.model import build_model
    from hiast.scenario import SupervisedStage
    from hiast.supervised import train_supervised
    from test_adversarial import FakeSegData, SignalAt

    cfg = SupervisedStage(iterations=4, batch_size=2, lr=1e-3, schedule="cosine", checkpoint_every=0)

    def identity(image, label):
        return image, label

    def fresh(seed=0):
        torch.manual_seed(seed)
        return build_model("resnet18", 19)

    whole = fresh()
    losses = train_supervised(whole, FakeSegData(4, 0), identity, cfg, DEVICE, seed=1)
    state = tmp_path / "state.pt"
    with pytest.raises(Interrupted, match="iteration 2"):
        train_supervised(fresh(), SignalAt(FakeSegData(4, 0), 3, getattr(signal, signame)), identity, cfg, DEVICE,
                         seed=1, state_path=state)
    resumed = fresh(seed=5)       # different initial weights: everything must come from the state
    resumed_losses = train_supervised(resumed, FakeSegData(4, 0), identity, cfg, DEVICE, seed=1, state_path=state)
    assert resumed_losses == losses
    for (name, a), b in zip(whole.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name


def test_source_only_divergence_names_the_iteration_and_keeps_the_last_good_state(tmp_path):
    from hiast.checkpoint import Diverged
    from hiast.model import build_model
    from hiast.scenario import SupervisedStage
    from hiast.supervised import train_supervised
    from test_adversarial import FakeSegData

    class NanFrom(torch.utils.data.Dataset):
        """Float images that turn NaN from the `start`-th item loaded on (a corrupted input stream)."""

        def __init__(self, start):
            self.data, self.start, self.loaded = FakeSegData(4, 0), start, 0

        def __len__(self):
            return len(self.data)

        def __getitem__(self, i):
            self.loaded += 1
            item = dict(self.data[i])
            item["image"] = item["image"].float() * (float("nan") if self.loaded > self.start else 1.0)
            return item

    cfg = SupervisedStage(iterations=6, batch_size=2, lr=1e-3, checkpoint_every=2)
    state = tmp_path / "state.pt"
    torch.manual_seed(0)
    with pytest.raises(Diverged, match=r"iteration 3 \(ce=nan\)"):
        train_supervised(build_model("resnet18", 19), NanFrom(6), lambda i, l: (i, l), cfg, DEVICE, seed=1,
                         state_path=state)
    saved = torch.load(state, weights_only=True)
    assert saved["iteration"] == 2 and all(torch.isfinite(v).all() for v in saved["model"].values()
                                           if v.is_floating_point())


def test_self_training_divergence_names_the_loss_terms(tiny_run, monkeypatch):
    import dataclasses

    from hiast import h5io, selftrain
    from hiast.checkpoint import Diverged
    scenario, out, _ = tiny_run
    rows = stages.target_train(scenario, out / "target.csv")
    cfg = scenario.rounds[0]
    data = selftrain.PseudoLabelledTarget(stages.prepare.dataset(scenario, rows),
                                          h5io.read_pseudo_labels(out / "pl.h5"),
                                          h5io.read_instance_bank(out / "bank.h5"), cfg.bank, scenario.scale)
    real = selftrain.student_losses
    calls = [0]

    def poisoned(logits, *args):      # the third iteration's logits blow up
        calls[0] += 1
        return real(logits * (float("inf") if calls[0] == 3 else 1.0), *args)

    monkeypatch.setattr(selftrain, "student_losses", poisoned)
    with pytest.raises(Diverged, match=r"iteration 2 \(terms: ce=.*entropy=nan.*last good state \(iteration 2\)"):
        selftrain.train_round(stages.load_model(scenario, out / "warmup.pt"), data,
                              dataclasses.replace(cfg.train, iterations=4, checkpoint_every=2), DEVICE, seed=3,
                              state_path=out / "diverged_state.pt")
    assert torch.load(out / "diverged_state.pt", weights_only=True)["iteration"] == 2
