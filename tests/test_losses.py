import math

import pytest
import torch

from hiast import losses

# 1 image, 2 classes, 1x2 pixels: pixel a logits (0, 0) -> p = (1/2, 1/2); pixel b (log 3, 0) -> p = (3/4, 1/4)
LOGITS = torch.tensor([[[[0.0, math.log(3.0)]], [[0.0, 0.0]]]], dtype=torch.float64)
A = torch.tensor([[[True, False]]])
B = torch.tensor([[[False, True]]])
BOTH = A | B
H_B = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))


def test_entropy_hand_values():
    # pixel a: -(1/2 log 1/2) * 2 = log 2, divided by C*N = 2*1
    assert losses.entropy(LOGITS, A).item() == pytest.approx(math.log(2) / 2)
    assert losses.entropy(LOGITS, B).item() == pytest.approx(H_B / 2)
    # both pixels: (log 2 + H_b) / (2*2)
    assert losses.entropy(LOGITS, BOTH).item() == pytest.approx((math.log(2) + H_B) / 4)


def test_kld_uniform_hand_values():
    # pixel a: -(1/2)(log 1/2 + log 1/2) = log 2, / 2; pixel b: -(1/2)(log 3/4 + log 1/4), / 2
    kld_b = -0.5 * (math.log(0.75) + math.log(0.25))
    assert losses.kld_uniform(LOGITS, A).item() == pytest.approx(math.log(2) / 2)
    assert losses.kld_uniform(LOGITS, B).item() == pytest.approx(kld_b / 2)
    assert losses.kld_uniform(LOGITS, BOTH).item() == pytest.approx((math.log(2) + kld_b) / 4)


def test_soft_ce_hand_values():
    q = torch.tensor([[[[0.5, 1.0]], [[0.5, 0.0]]]], dtype=torch.float64)
    # pixel b, q = (1, 0): -log 3/4 / 2; pixel a, q = (1/2, 1/2): log 2 / 2
    assert losses.soft_ce(LOGITS, q, B).item() == pytest.approx(-math.log(0.75) / 2)
    assert losses.soft_ce(LOGITS, q, BOTH).item() == pytest.approx((math.log(2) - math.log(0.75)) / 4)


def test_pseudo_ce_hand_values():
    # labels (0, 255): only pixel a, -log 1/2 = log 2
    assert losses.pseudo_ce(LOGITS, torch.tensor([[[0, 255]]])).item() == pytest.approx(math.log(2))
    # labels (1, 0): (-log 1/2 - log 3/4) / 2
    value = losses.pseudo_ce(LOGITS, torch.tensor([[[1, 0]]], dtype=torch.uint8)).item()
    assert value == pytest.approx((math.log(2) - math.log(0.75)) / 2)


@pytest.mark.parametrize("name", ["kld", "entropy", "soft_ce", "ce"])
def test_empty_region_is_zero_with_gradient(name):
    logits = torch.randn(2, 3, 4, 5, requires_grad=True)
    empty = torch.zeros(2, 4, 5, dtype=torch.bool)
    loss = {"kld": lambda: losses.kld_uniform(logits, empty),
            "entropy": lambda: losses.entropy(logits, empty),
            "soft_ce": lambda: losses.soft_ce(logits, torch.full_like(logits, 1 / 3).detach(), empty),
            "ce": lambda: losses.pseudo_ce(logits, torch.full((2, 4, 5), 255))}[name]()
    assert loss.item() == 0.0 and loss.requires_grad and loss.grad_fn is not None
    loss.backward()
    assert logits.grad is not None and torch.count_nonzero(logits.grad) == 0


def naive(logits, mask, kind, target=None):
    batch, num_classes, height, width = logits.shape
    p = logits.softmax(1)
    total, count = 0.0, 0
    for b in range(batch):
        for y in range(height):
            for x in range(width):
                if not mask[b, y, x]:
                    continue
                count += 1
                for c in range(num_classes):
                    pc = p[b, c, y, x].item()
                    if kind == "kld":
                        total += -math.log(pc) / num_classes
                    elif kind == "entropy":
                        total += -pc * math.log(pc)
                    else:
                        total += -target[b, c, y, x].item() * math.log(pc)
    return total / (num_classes * count) if count else 0.0


def test_losses_match_naive_loop_and_mask_selects_region():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 4, 3, 5, generator=gen, dtype=torch.float64) * 3
    target = torch.randn(2, 4, 3, 5, generator=gen, dtype=torch.float64).softmax(1)
    mask = torch.rand(2, 3, 5, generator=gen) > 0.5
    assert losses.kld_uniform(logits, mask).item() == pytest.approx(naive(logits, mask, "kld"), rel=1e-12)
    assert losses.entropy(logits, mask).item() == pytest.approx(naive(logits, mask, "entropy"), rel=1e-12)
    assert losses.soft_ce(logits, target, mask).item() == pytest.approx(naive(logits, mask, "soft", target),
                                                                        rel=1e-12)
    # pixels outside the region do not matter, even non-finite ones
    changed = logits.clone()
    changed.permute(0, 2, 3, 1)[~mask] = torch.nan  # every class logit of every pixel outside the region
    assert losses.entropy(changed, mask).item() == pytest.approx(losses.entropy(logits, mask).item(), rel=1e-12)
    # pseudo CE equals torch's mean CE with ignore_index
    labels = torch.randint(0, 4, (2, 3, 5), generator=gen)
    labels[~mask] = 255
    expected = torch.nn.functional.cross_entropy(logits, labels, ignore_index=255)
    assert losses.pseudo_ce(logits, labels).item() == pytest.approx(expected.item(), rel=1e-12)


def test_gradients_flow_only_from_region():
    logits = torch.randn(1, 3, 2, 2, requires_grad=True)
    mask = torch.tensor([[[True, False], [False, False]]])
    losses.entropy(logits, mask).backward()
    grad = logits.grad.abs().sum(1)[0]
    assert grad[0, 0] > 0 and grad[0, 1] == 0 and grad[1, 0] == 0 and grad[1, 1] == 0


def test_shared_log_softmax_gives_the_same_losses():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 4, 6)
    labels = torch.randint(0, 5, (2, 4, 6))
    labels[0, 0] = 255
    mask = labels != 255
    q = torch.softmax(torch.randn(2, 5, 4, 6), 1)
    log_p = torch.log_softmax(logits, 1)
    torch.testing.assert_close(losses.pseudo_ce(logits, labels, log_p), losses.pseudo_ce(logits, labels))
    assert torch.equal(losses.kld_uniform(logits, mask, log_p), losses.kld_uniform(logits, mask))
    assert torch.equal(losses.entropy(logits, ~mask, log_p), losses.entropy(logits, ~mask))
    assert torch.equal(losses.soft_ce(logits, q, ~mask, log_p), losses.soft_ce(logits, q, ~mask))


# --- the fused objective (train.fused_objective) ----------------------------------------------------------

def taped_objective(logits, labels, q, region, weights):
    """The four terms through autograd, as selftrain.student_losses adds them by default."""
    w_ce, w_kld, w_ent, w_cons = weights
    confident = labels != 255
    total = logits.sum() * 0.0
    terms = {}
    for name, weight, fn in [("ce", w_ce, lambda: losses.pseudo_ce(logits, labels)),
                             ("kld", w_kld, lambda: losses.kld_uniform(logits, confident)),
                             ("entropy", w_ent, lambda: losses.entropy(logits, ~confident)),
                             ("consistency", w_cons, lambda: losses.soft_ce(logits, q, region))]:
        if weight:
            terms[name] = fn()
            total = total + weight * terms[name]
    return total, terms


def test_fused_objective_hand_values_and_gradient():
    # labels (0, 255): pixel a is pseudo-labelled (CE, KLD), pixel b is not (entropy, consistency to q_b = (1, 0))
    labels = torch.tensor([[[0, 255]]])
    q = torch.tensor([[[[0.5, 1.0]], [[0.5, 0.0]]]], dtype=torch.float64)
    logits = LOGITS.clone().requires_grad_()
    total, terms = losses.fused_objective(logits, labels, q, labels == 255, 1.0, 0.1, 1.0, 0.5)
    expected = {"ce": math.log(2), "kld": math.log(2) / 2, "entropy": H_B / 2, "consistency": -math.log(0.75) / 2}
    assert {k: v.item() for k, v in terms.items()} == pytest.approx(expected, rel=1e-12)
    assert total.item() == pytest.approx(expected["ce"] + 0.1 * expected["kld"] + expected["entropy"]
                                         + 0.5 * expected["consistency"], rel=1e-12)
    total.backward()
    # pixel a: CE (p - onehot) / N_L = (-1/2, 1/2); KLD (p - 1/C) = 0.
    # pixel b: entropy -p (log p + H) / (C N_U) and consistency (p - q) / (C N_R), N_U = N_R = 1, C = 2
    p_b = torch.tensor([0.75, 0.25], dtype=torch.float64)
    entropy_b = -p_b * (torch.log(p_b) + H_B) / 2
    consistency_b = (p_b - torch.tensor([1.0, 0.0], dtype=torch.float64)) / 2
    grad = logits.grad[0, :, 0]
    torch.testing.assert_close(grad[:, 0], torch.tensor([-0.5, 0.5], dtype=torch.float64), rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(grad[:, 1], entropy_b + 0.5 * consistency_b, rtol=1e-12, atol=1e-15)


def test_fused_objective_gradcheck():
    gen = torch.Generator().manual_seed(1)
    logits = (torch.randn(2, 4, 3, 5, generator=gen, dtype=torch.float64) * 2).requires_grad_()
    labels = torch.randint(0, 4, (2, 3, 5), generator=gen)
    labels[torch.rand(2, 3, 5, generator=gen) < 0.4] = 255
    q = torch.randn(2, 4, 3, 5, generator=gen, dtype=torch.float64).softmax(1)
    region = torch.rand(2, 3, 5, generator=gen) < 0.7
    assert torch.autograd.gradcheck(
        lambda z: losses.fused_objective(z, labels, q, region, 1.0, 0.1, 1.0, 0.5)[0], (logits,))


@pytest.mark.parametrize("weights", [(1.0, 0.1, 1.0, 0.5), (1.0, 0.0, 0.0, 0.0), (0.0, 0.0, 1.0, 0.0),
                                     (0.0, 0.3, 0.0, 0.0), (0.0, 0.0, 0.0, 2.0), (1.0, 0.1, 1.0, 0.0)])
@pytest.mark.parametrize("region", ["ignored", "confident", "all"])
def test_fused_objective_equals_the_taped_terms(weights, region):
    """Value, terms and gradient as autograd's sum of the four functions, for each weight left at zero."""
    from hiast.selftrain import region_mask
    gen = torch.Generator().manual_seed(2)
    base = torch.randn(3, 6, 8, 10, generator=gen, dtype=torch.float64) * 3
    labels = torch.randint(0, 6, (3, 8, 10), generator=gen)
    labels[torch.rand(3, 8, 10, generator=gen) < 0.5] = 255
    q = torch.randn(3, 6, 8, 10, generator=gen, dtype=torch.float64).softmax(1)
    mask = region_mask(labels, region)
    results = []
    for fn in (taped_objective, lambda *a: losses.fused_objective(*a[:4], *a[4])):
        logits = base.clone().requires_grad_()
        total, terms = fn(logits, labels, q, mask, weights)
        total.backward()
        results.append((total.detach(), {k: v.detach() for k, v in terms.items()}, logits.grad))
    (total_t, terms_t, grad_t), (total_f, terms_f, grad_f) = results
    torch.testing.assert_close(total_f, total_t, rtol=1e-12, atol=1e-14)
    assert terms_f.keys() == terms_t.keys()
    for key in terms_t:
        torch.testing.assert_close(terms_f[key], terms_t[key], rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(grad_f, grad_t, rtol=1e-10, atol=1e-15)


def test_fused_objective_empty_regions_and_non_finite_logits():
    logits = torch.randn(2, 3, 4, 5, requires_grad=True)
    unlabelled = torch.full((2, 4, 5), 255)
    total, terms = losses.fused_objective(logits, unlabelled, None, None, 1.0, 0.1, 0.0, 0.5)
    assert terms.keys() == {"ce", "kld"}           # no teacher: no consistency term
    assert total.item() == 0.0 and terms["ce"].item() == 0.0 and terms["kld"].item() == 0.0
    total.backward()
    assert torch.count_nonzero(logits.grad) == 0
    broken = logits.detach().clone()
    broken[1, 2, 3, 4] = torch.inf                 # outside every region: still a non-finite total (divergence)
    assert not torch.isfinite(losses.fused_objective(broken, unlabelled, None, None, 1.0, 0.1, 0.0, 0.0)[0])
    with pytest.raises(ValueError, match="labels shape"):
        losses.fused_objective(logits, unlabelled[:, :3], None, None, 1.0, 0.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="target shape"):
        losses.fused_objective(logits, unlabelled, logits.detach()[:, :2], unlabelled == 255, 1.0, 0.0, 0.0, 1.0)
