import numpy as np
import pytest
import torch

from hiast import bank


def test_hard_classes_hand_case():
    m = np.array([0.9, 0.5, 0.7, 0.2, 0.95])
    hard, probs = bank.hard_classes(m, 2)
    # ascending: class 3 (0.2), class 1 (0.5), class 2 (0.7), ...
    assert hard.tolist() == [3, 1]
    # (1 - 0.2)^2 = 0.64, (1 - 0.5)^2 = 0.25, sum 0.89
    expected = np.zeros(5)
    expected[3], expected[1] = 0.64 / 0.89, 0.25 / 0.89
    assert probs == pytest.approx(expected, abs=1e-12)
    assert probs.sum() == pytest.approx(1.0)


def test_hard_classes_excluded():
    m = np.array([0.9, 0.5, 0.7, 0.2, 0.95])
    hard, probs = bank.hard_classes(m, 2, excluded=[3])
    # class 3 is never hard -> classes 1 (0.5) and 2 (0.7): weights 0.25 and 0.09, sum 0.34
    assert hard.tolist() == [1, 2]
    assert probs == pytest.approx([0, 0.25 / 0.34, 0.09 / 0.34, 0, 0], abs=1e-12)
    # k beyond the eligible classes takes them all, hardest first, and stays finite
    hard, probs = bank.hard_classes(m, 10, excluded=(0, 3))
    assert hard.tolist() == [1, 2, 4] and np.isfinite(probs).all() and probs[[0, 3]].tolist() == [0, 0]


def test_hard_classes_edge_cases():
    m = np.array([0.5, 0.3, 0.5, 0.3, 0.0])
    hard, probs = bank.hard_classes(m, 0)
    assert hard.tolist() == [] and probs.tolist() == [0.0] * 5
    # class 4 (never pseudo-labelled, m = 0) is the hardest; ties broken by class id
    assert bank.hard_classes(m, 4)[0].tolist() == [4, 1, 3, 0]
    # all hard classes at m = 1: uniform over them
    hard, probs = bank.hard_classes(np.array([1.0, 1.0, 1.0]), 2)
    assert hard.tolist() == [0, 1] and probs.tolist() == [0.5, 0.5, 0.0]
    with pytest.raises(ValueError):
        bank.hard_classes(m, -1)


def test_donor_table_drop_smallest_rounding():
    counts = np.zeros((15, 3), dtype=np.int64)
    counts[:, 1] = np.arange(150, 0, -10)            # 15 images hold class 1: pixels 150, 140, ..., 10
    counts[[2, 4, 6, 8, 10], 2] = [50, 10, 40, 20, 30]  # 5 images hold class 2
    table = bank.donor_table(counts, [1, 2, 0])
    # class 1: n = 15 -> round(0.1 * 15) = round(1.5) = 2 dropped (the 10- and 20-pixel images 14 and 13)
    index, pixels = table[1]
    assert pixels.tolist() == list(range(30, 151, 10)) and index.tolist() == list(range(12, -1, -1))
    # class 2: n = 5 -> round(0.5) = 0 dropped (half to even); ascending by pixels
    index, pixels = table[2]
    assert pixels.tolist() == [10, 20, 30, 40, 50] and index.tolist() == [4, 8, 10, 6, 2]
    # class 0: held by no image -> empty
    assert table[0][0].size == 0 and table[0][1].size == 0
    assert round(0.1 * 25) == 2 and round(0.1 * 35) == 4  # 2.5 -> 2, 3.5 -> 4


def test_donor_table_ties_by_image_index():
    counts = np.array([[0, 5], [0, 3], [0, 5], [0, 3]])
    index, pixels = bank.donor_table(counts, [1], drop_smallest=0.0)[1]
    assert index.tolist() == [1, 3, 0, 2] and pixels.tolist() == [3, 3, 5, 5]


def test_sample_class_and_donor():
    rng = np.random.default_rng(0)
    probs = np.array([0.0, 0.75, 0.0, 0.25])
    draws = np.array([bank.sample_class(rng, probs) for _ in range(4000)])
    assert set(draws.tolist()) == {1, 3}
    assert abs((draws == 1).mean() - 0.75) < 0.03
    donors = (np.array([7, 9, 11]), np.array([10, 20, 30]))
    picked = [bank.sample_donor(rng, donors) for _ in range(300)]
    assert set(picked) == {7, 9, 11}
    # seeded: the same generator state gives the same draws
    assert bank.sample_class(np.random.default_rng(5), probs) == bank.sample_class(np.random.default_rng(5), probs)
    with pytest.raises(ValueError):
        bank.sample_donor(rng, (np.array([], dtype=np.int64), np.array([], dtype=np.int64)))
    with pytest.raises(ValueError):
        bank.sample_class(rng, np.zeros(3))


def test_paste_hand_case_torch_and_numpy():
    labels = torch.tensor([[0, 1, 2], [3, 1, 255]], dtype=torch.uint8)
    donor_labels = torch.tensor([[1, 5, 5], [2, 255, 1]], dtype=torch.uint8)
    image = torch.zeros(3, 2, 3, dtype=torch.uint8)
    donor_image = torch.arange(18, dtype=torch.uint8).reshape(3, 2, 3) + 100
    # classes {1, 2}: donor pixels (0,0) label 1, (1,0) label 2, (1,2) label 1 are pasted
    new_image, new_labels, mask = bank.paste(image, labels, donor_image, donor_labels, [1, 2])
    assert mask.tolist() == [[True, False, False], [True, False, True]]
    assert new_labels.tolist() == [[1, 1, 2], [2, 1, 1]]
    assert new_image[:, 0, 0].tolist() == [100, 106, 112] and new_image[:, 1, 2].tolist() == [105, 111, 117]
    assert new_image[:, 0, 1].tolist() == [0, 0, 0]
    assert image.sum() == 0 and labels.tolist() == [[0, 1, 2], [3, 1, 255]]  # inputs untouched
    # numpy, channels last [H, W, 3]
    n_image, n_labels, n_mask = bank.paste(image.permute(1, 2, 0).numpy(), labels.numpy(),
                                           donor_image.permute(1, 2, 0).numpy(), donor_labels.numpy(), [1, 2])
    assert n_mask.tolist() == mask.tolist() and n_labels.tolist() == new_labels.tolist()
    assert n_labels.dtype == np.uint8 and n_image.dtype == np.uint8
    assert np.array_equal(n_image, new_image.permute(1, 2, 0).numpy())
    # nothing to paste
    _, same, none = bank.paste(image, labels, donor_image, donor_labels, [7])
    assert not none.any() and same.tolist() == labels.tolist()
    with pytest.raises(ValueError):
        bank.paste(image, labels, donor_image[:, :1], donor_labels[:1], [1])
