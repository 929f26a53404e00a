import numpy as np
import pytest
import torch

from hiast import losses
from hiast.scenario import BankConfig, SelfTrainConfig
from hiast.selftrain import PseudoLabelledTarget, ema_update, region_mask, student_losses


def test_ema_update_hand_case():
    student, teacher = torch.nn.BatchNorm1d(2), torch.nn.BatchNorm1d(2)
    with torch.no_grad():
        student.weight.fill_(1.0)
        teacher.weight.fill_(0.0)
        student.running_mean.fill_(5.0)
    ema_update(teacher, student, momentum=0.9)
    assert torch.allclose(teacher.weight, torch.full((2,), 0.1))  # 0.9 * 0 + 0.1 * 1
    assert torch.equal(teacher.running_mean, student.running_mean)  # buffers copied


def test_region_masks():
    labels = torch.tensor([[[0, 255], [3, 255]]])
    assert region_mask(labels, "ignored").tolist() == [[[False, True], [False, True]]]
    assert region_mask(labels, "confident").tolist() == [[[True, False], [True, False]]]
    assert region_mask(labels, "all").all()


def test_student_losses_sum_the_weighted_terms_and_switch_off():
    torch.manual_seed(0)
    logits = torch.randn(1, 4, 3, 3, requires_grad=True)
    labels = torch.tensor([[[0, 1, 255], [2, 255, 3], [255, 255, 0]]])
    teacher = torch.softmax(torch.randn(1, 4, 3, 3), 1)
    cfg = SelfTrainConfig()
    step = student_losses(logits, labels, teacher, cfg)
    confident = labels != 255
    expected = (losses.pseudo_ce(logits, labels) + 0.1 * losses.kld_uniform(logits, confident)
                + 1.0 * losses.entropy(logits, ~confident) + 0.5 * losses.soft_ce(logits, teacher, ~confident))
    assert step.total.item() == pytest.approx(expected.item())
    assert set(step.terms) == {"ce", "kld", "entropy", "consistency"}
    off = SelfTrainConfig(kld_weight=0.0, entropy_weight=0.0, consistency_weight=0.0)
    only_ce = student_losses(logits, labels, teacher, off)
    assert set(only_ce.terms) == {"ce"} and only_ce.total.item() == pytest.approx(losses.pseudo_ce(logits, labels).item())
    step.total.backward()
    assert torch.isfinite(logits.grad).all()


@pytest.mark.parametrize("changes", [{}, {"consistency_region": "all"}, {"kld_weight": 0.0, "entropy_weight": 0.0},
                                     {"teacher": None}])
def test_fused_objective_gives_the_taped_step(changes):
    """train.fused_objective: the same total, terms and gradient as the official way of adding the terms."""
    changes = dict(changes)
    gen = torch.Generator().manual_seed(3)
    base = torch.randn(2, 5, 6, 7, generator=gen, dtype=torch.float64) * 2
    labels = torch.randint(0, 5, (2, 6, 7), generator=gen)
    labels[torch.rand(2, 6, 7, generator=gen) < 0.5] = 255
    teacher = changes.pop("teacher", torch.softmax(torch.randn(2, 5, 6, 7, generator=gen, dtype=torch.float64), 1))
    steps, grads = [], []
    for fused in (False, True):
        logits = base.clone().requires_grad_()
        step = student_losses(logits, labels, teacher, SelfTrainConfig(fused_objective=fused, **changes))
        step.total.backward()
        steps.append(step)
        grads.append(logits.grad)
    assert steps[1].terms.keys() == steps[0].terms.keys()
    assert ("consistency" in steps[0].terms) == (teacher is not None)
    assert steps[1].terms == pytest.approx(steps[0].terms, rel=1e-12)
    assert steps[1].total.item() == pytest.approx(steps[0].total.item(), rel=1e-12)
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-10, atol=1e-15)


class FakeImages:
    def __init__(self, n, size=(16, 32)):
        self.n, self.size = n, size

    def __len__(self):
        return self.n

    def load_image(self, index):   # no `load`: the target's labels must never be read
        return np.full((*self.size, 3), index * 10, dtype=np.uint8)


class FakeLabels:
    def __init__(self, n, size=(16, 32)):
        self.n, self.size = n, size

    def __len__(self):
        return self.n

    def labels(self, index):
        return np.zeros(self.size, dtype=np.uint8)  # everything "road"


class FakeBank:
    """One hard class (6) held by image 1 in a 2x2 box at rows 4-5, cols 8-9; class 7 beside it."""
    hard_classes = np.array([6, 7])
    sampling_prob = np.array([0, 0, 0, 0, 0, 0, 1.0, 0, 0])
    donors = {6: (np.array([1]), np.array([3])), 7: (np.array([], dtype=np.int64), np.array([], dtype=np.int64))}

    def region(self, index):
        assert index == 1
        labels = np.array([[6, 6], [6, 7]], dtype=np.uint8)
        rgb = np.full((2, 2, 3), 200, dtype=np.uint8)
        return np.array([4, 8, 6, 10]), rgb, labels


@pytest.mark.parametrize("paste, expected", [("all_hard", {6: 3, 7: 1}), ("sampled", {6: 3})])
def test_copy_paste_pastes_the_hard_class_pixels_at_their_place(paste, expected):
    data = PseudoLabelledTarget(FakeImages(3), FakeLabels(3), FakeBank(), BankConfig(paste=paste), scale=1 / 32)
    image, labels = data.load(0)
    new_image, new_labels, pasted = data.copy_paste(image, labels, np.random.default_rng(0))
    counts = {c: int((new_labels == c).sum()) for c in (6, 7) if (new_labels == c).any()}
    assert counts == expected
    assert pasted.sum() == sum(expected.values())
    assert (new_image[pasted] == 200).all() and (new_image[~pasted] == 0).all()
    assert new_labels[4, 8] == 6 and (labels == 0).all()  # the input is not modified


def test_copy_paste_off_or_probability_zero():
    for cfg in (BankConfig(enabled=False), BankConfig(probability=0.0)):
        data = PseudoLabelledTarget(FakeImages(3), FakeLabels(3), FakeBank(), cfg, scale=1 / 32)
        image, labels = data.load(0)
        _, new_labels, pasted = data.copy_paste(image, labels, np.random.default_rng(0))
        assert not pasted.any() and (new_labels == 0).all()


def test_item_views_share_the_crop():
    data = PseudoLabelledTarget(FakeImages(3, (64, 128)), FakeLabels(3, (64, 128)), FakeBank(),
                                BankConfig(), scale=1 / 16)
    torch.manual_seed(0)
    item = data.item(0, np.random.default_rng(0))
    assert item["weak"].shape == item["strong"].shape == (3, 32, 64)
    assert item["label"].shape == item["pasted"].shape == (32, 64)
