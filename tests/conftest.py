import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))  # tests import their fixture writers as a module


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    """Tests are bit-reproducible only at a fixed thread count (CPU convolutions split their work by thread),
    so it is set for the whole session, module fixtures included; 1 also keeps 2-core CI machines responsive."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def tiny_benchmark(tmp_path_factory):
    """A tiny embedded benchmark (64x128 images) shared by the end-to-end tests."""
    from hiast import synthetic
    root = tmp_path_factory.mktemp("bench") / "synthetic"
    counts = {"gta5": 8, "synthia": 6, "cityscapes_train": 8, "cityscapes_val": 4, "oxford_train": 6,
              "oxford_val": 4}
    synthetic.generate_benchmark(root, seed=0, height=64, width=128, counts=counts, workers=1)
    return root


@pytest.fixture(scope="session")
def tiny_run(tiny_benchmark, tmp_path_factory):
    """One tiny round (warm-up -> pseudo-labels -> bank -> self-training -> evaluation), shared by the tests
    that check its files, resume it, interrupt it or vary one stage."""
    from hiast import datasets, stages
    from fixtures import DEVICE, tiny_scenario
    out = tmp_path_factory.mktemp("run")
    scenario = tiny_scenario(tiny_benchmark)
    for side, name in (("source", "gta5"), ("target", "cityscapes")):
        data = getattr(scenario, side)
        splits = [data.train_split] + ([data.val_split] if data.val_split else [])
        datasets.write_manifest(datasets.build_manifest(name, data.root, splits=splits), out / f"{side}.csv")
    stages.warmup(scenario, out / "source.csv", out / "target.csv", out / "warmup.pt", out / "wstate", DEVICE)
    stages.pseudo_labels(scenario, 1, out / "warmup.pt", out / "target.csv", out / "pl.h5", DEVICE)
    stages.instance_bank(scenario, 1, out / "pl.h5", out / "target.csv", out / "bank.h5")
    stages.self_train(scenario, 1, out / "warmup.pt", out / "pl.h5", out / "bank.h5", out / "target.csv",
                      out / "student.pt", out / "teacher.pt", out / "tstate", DEVICE)
    table = stages.evaluate(scenario, out / "target.csv", {"student": out / "student.pt",
                                                          "teacher": out / "teacher.pt"}, out / "eval.csv",
                            out / "masks", DEVICE)
    return scenario, out, table
