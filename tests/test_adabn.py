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
