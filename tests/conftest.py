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
