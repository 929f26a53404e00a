"""AdaBN: BatchNorm statistics re-estimated on target images, weights untouched."""

import numpy as np
import pytest
import torch

from hiast import engine


def _batches():
    # two batches of uint8 images: constant 0 and 255 in channel 0 (batch 1), 51 and 102 (batch 2)
    first = torch.zeros(2, 3, 4, 4, dtype=torch.uint8)
    first[1] = 255
    second = torch.full((2, 3, 4, 4), 51, dtype=torch.uint8)
    second[1] = 102
    return [first, second]


def test_recalibrate_bn_averages_the_batch_statistics():
    model = torch.nn.Sequential(torch.nn.BatchNorm2d(3, momentum=0.1))
    with torch.no_grad():
        model[0].weight.fill_(2.0)
        model[0].running_mean.fill_(7.0)
    seen = engine.recalibrate_bn(model, _batches(), torch.device("cpu"))
    assert seen == 4
    # by hand, per channel: each batch holds 16 pixels of value u and 16 of value v (after normalising);
    # mean (u + v) / 2, unbiased variance 32/31 * ((u - v) / 2)^2; the running values average the two batches
    expected_mean, expected_var = [], []
    for batch in _batches():
        x = engine.to_input(batch, torch.device("cpu"))
        u, v = x[0, :, 0, 0].numpy(), x[1, :, 0, 0].numpy()
        expected_mean.append((u + v) / 2)
        expected_var.append(32 / 31 * ((u - v) / 2) ** 2)
    np.testing.assert_allclose(model[0].running_mean.numpy(), np.mean(expected_mean, 0), rtol=1e-5)
    np.testing.assert_allclose(model[0].running_var.numpy(), np.mean(expected_var, 0), rtol=1e-5)
    assert torch.equal(model[0].weight, torch.full((3,), 2.0))   # weights untouched
    assert model[0].momentum == 0.1 and not model.training          # momentum restored, eval mode


def test_recalibrate_bn_without_images_fails():
    model = torch.nn.Sequential(torch.nn.BatchNorm2d(3))
    with pytest.raises(ValueError, match="no images"):
        engine.recalibrate_bn(model, [], torch.device("cpu"))


def test_adabn_table_of_a_tiny_run(tiny_run, tmp_path):
    """`hiast bench adabn`'s table: each model as saved and with target BN statistics, the scenario's metrics."""
    import pandas as pd
    from hiast import adabn
    from fixtures import DEVICE
    scenario, out, _ = tiny_run
    table = adabn.run(scenario, out / "target.csv", {"warmup": out / "warmup.pt", "round_1/student": out / "student.pt"},
                      tmp_path / "adabn.csv", DEVICE, images=4, batch_size=2)
    assert list(table.model) == ["warmup", "warmup+adabn", "round_1/student", "round_1/student+adabn"]
    assert table["mIoU-19"].between(0, 100).all()
    assert pd.read_csv(tmp_path / "adabn.csv").model.tolist() == list(table.model)


def test_target_batches_are_a_seeded_sample(monkeypatch):
    """The same seed gives the same crops; the batch sizes add up to the requested number of images."""
    from hiast import adabn

    class Tiny:
        def crop_view(self, side):
            return lambda image, label: (image, label)

    class Data:
        def __len__(self):
            return 10

        def __getitem__(self, i):
            return {"image": torch.full((3, 2, 2), i, dtype=torch.uint8)}

    monkeypatch.setattr(adabn.prepare, "dataset", lambda scenario, rows, transform=None: Data())
    first = list(adabn.target_batches(Tiny(), None, images=5, batch_size=2, seed=3))
    again = list(adabn.target_batches(Tiny(), None, images=5, batch_size=2, seed=3))
    assert [len(b) for b in first] == [2, 2, 1]
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    values = sorted(int(b[i, 0, 0, 0]) for b in first for i in range(len(b)))
    assert len(set(values)) == 5 and all(0 <= v < 10 for v in values)
