import math

import numpy as np
import pytest
import torch

from hiast import metrics


def test_confusion_matrix_hand_case():
    labels = torch.tensor([[0, 0, 1], [2, 255, 1]])
    preds = torch.tensor([[0, 1, 1], [2, 0, 0]])
    expected = [[1, 1, 0],   # gt 0: one right, one predicted 1
                [1, 1, 0],   # gt 1: one right, one predicted 0
                [0, 0, 1]]   # gt 2: right; the ignore pixel is skipped
    assert metrics.confusion_matrix(labels, preds, 3).tolist() == expected


def test_iou_and_miou_hand_case():
    confusion = np.array([[1, 1, 0], [1, 1, 0], [0, 0, 1]])
    # class 0: TP 1, FP 1, FN 1 -> 1/3; class 1 the same; class 2: 1/1
    assert metrics.iou(confusion) == pytest.approx([1 / 3, 1 / 3, 1.0])
    assert metrics.miou(confusion) == pytest.approx((1 / 3 + 1 / 3 + 1) / 3)
    assert metrics.miou(confusion, [0, 2]) == pytest.approx((1 / 3 + 1) / 2)


def test_empty_class_is_left_out_of_the_mean():
    confusion = np.array([[2, 0, 0], [0, 0, 0], [0, 0, 2]])
    values = metrics.iou(confusion)
    assert values[0] == 1.0 and math.isnan(values[1]) and values[2] == 1.0
    assert metrics.miou(confusion) == 1.0
    assert math.isnan(metrics.miou(np.zeros((2, 2))))


def test_predicted_but_absent_class_has_zero_iou():
    confusion = np.array([[1, 1], [0, 0]])  # class 1 predicted once, never in the labels
    assert metrics.iou(confusion).tolist() == [0.5, 0.0]


def test_official_synthia_rescaling_agrees_when_absent_classes_score_zero():
    rng = np.random.default_rng(0)
    confusion = rng.integers(1, 50, (19, 19))
    confusion[[9, 14, 16], [9, 14, 16]] = 0  # IoU 0 for terrain, truck, train
    ours16 = metrics.miou(confusion, [c for c in range(19) if c not in (9, 14, 16)])
    assert metrics.official_synthia_miou(confusion, 16) == pytest.approx(ours16)
    keep13 = [c for c in range(19) if c not in (3, 4, 5, 9, 14, 16)]
    assert metrics.official_synthia_miou(confusion, 13) == pytest.approx(metrics.miou(confusion, keep13))
    with pytest.raises(ValueError):
        metrics.official_synthia_miou(confusion, 9)
