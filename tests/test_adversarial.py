"""Output-space adversarial warm-up: discriminator, D inputs, GAN losses, the two steps, training (CPU, tiny)."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from hiast import engine
from hiast.adversarial import (Discriminator, build_discriminator, discriminator_input, discriminator_step,
                               gan_loss, generator_step, judge, make_optimizers, mean_entropy, self_information,
                               train_adversarial)
from hiast.model import build_model
from hiast.scenario import AdversarialStage

C = 19


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One intra-op thread: on a shared 2-core machine, oversubscribed threads make these tests ~10x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class FakeSegData(torch.utils.data.Dataset):
    """Random uint8 images [3, 64, 128]; random train-id labels, or all 255 (unlabelled target)."""

    def __init__(self, n: int = 4, seed: int = 0, labelled: bool = True):
        g = torch.Generator().manual_seed(seed)
        self.images = torch.randint(0, 256, (n, 3, 64, 128), generator=g, dtype=torch.uint8)
        if labelled:
            self.labels = torch.randint(0, C, (n, 64, 128), generator=g, dtype=torch.uint8)
        else:
            self.labels = torch.full((n, 64, 128), 255, dtype=torch.uint8)

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return {"image": self.images[i], "label": self.labels[i]}


def _stage(**kw) -> AdversarialStage:
    base = dict(iterations=3, batch_size=2, lr=1e-4, discriminator_lr=1e-4, log_every=1)
    base.update(kw)
    return AdversarialStage(**base)


def _model(seed: int = 0):
    torch.manual_seed(seed)
    return build_model("resnet18", C, freeze_bn=True)


def _params(module):
    return {k: v.detach().clone() for k, v in module.named_parameters()}


def _same(a: dict, b: dict) -> bool:
    return all(torch.equal(a[k], b[k]) for k in a)


# ----------------------------------------------------------------------------------------- discriminator


def test_discriminator_output_shape_and_layout():
    d = Discriminator(C)
    out = d(torch.rand(1, C, 64, 128))
    assert out.shape == (1, 1, 2, 4)
    assert [m.out_channels for m in (d.conv1, d.conv2, d.conv3, d.conv4, d.classifier)] == [64, 128, 256, 512, 1]
    for m in (d.conv1, d.conv2, d.conv3, d.conv4, d.classifier):
        assert m.kernel_size == (4, 4) and m.stride == (2, 2) and m.padding == (1, 1)


def test_discriminator_refuses_too_small_input():
    with pytest.raises(ValueError, match="upsampled"):
        Discriminator(C)(torch.rand(1, C, 8, 16))  # 1/8-resolution logits of a 64x128 image


def test_build_discriminator_seeded_is_reproducible_and_keeps_global_rng():
    torch.manual_seed(123)
    state = torch.get_rng_state()
    a, b = build_discriminator(C, seed=5), build_discriminator(C, seed=5)
    assert _same(_params(a), _params(b))
    assert torch.equal(torch.get_rng_state(), state)
    assert not _same(_params(a), _params(build_discriminator(C, seed=6)))


# ------------------------------------------------------------------------------------------------ maps


def test_self_information_uniform_and_confident():
    uniform = torch.zeros(1, C, 2, 3)
    info = self_information(uniform)
    assert torch.allclose(info, torch.full_like(info, 1 / C))   # -(1/C) log(1/C) / log C
    assert torch.allclose(info.sum(1), torch.ones(1, 2, 3))     # normalised entropy 1
    confident = torch.zeros(1, C, 2, 3)
    confident[:, 4] = 50.0
    assert self_information(confident).sum(1).max() < 1e-12
    assert math.isclose(float(mean_entropy(uniform)), 1.0, rel_tol=1e-6)
    # two classes at 1/2 each: entropy log 2 / log C
    half = torch.full((1, C, 1, 1), -1e4)
    half[:, :2] = 0.0
    assert math.isclose(float(mean_entropy(half)), math.log(2) / math.log(C), rel_tol=1e-5)


def test_discriminator_input_upsamples_then_maps():
    logits = torch.randn(2, C, 8, 16)
    soft = discriminator_input(logits, (64, 128), "softmax")
    assert soft.shape == (2, C, 64, 128)
    assert torch.allclose(soft.sum(1), torch.ones(2, 64, 128), atol=1e-5)
    ent = discriminator_input(logits, (64, 128), "entropy")
    assert ent.shape == (2, C, 64, 128) and (ent >= 0).all() and (ent.sum(1) <= 1 + 1e-5).all()
    assert torch.allclose(ent, self_information(engine.upsample(logits, (64, 128))))
    with pytest.raises(ValueError):
        discriminator_input(logits, None, "logits")


def test_gan_loss_hand_values():
    half = torch.full((2, 1, 2, 4), 0.5)
    assert math.isclose(float(gan_loss(half, True, "lsgan")), 0.25)
    assert math.isclose(float(gan_loss(half, False, "lsgan")), 0.25)
    assert math.isclose(float(gan_loss(torch.ones(1, 1, 2, 2), True, "lsgan")), 0.0)
    zero = torch.zeros(1, 1, 2, 4)
    assert math.isclose(float(gan_loss(zero, True, "bce")), math.log(2), rel_tol=1e-6)
    assert math.isclose(float(gan_loss(zero, False, "bce")), math.log(2), rel_tol=1e-6)
    # a confident "source" score is cheap against the source label, dear against the target label
    high = torch.full((1, 1, 1, 1), 5.0)
    assert float(gan_loss(high, True, "bce")) < 0.01 < 5.0 < float(gan_loss(high, False, "bce"))
    with pytest.raises(ValueError):
        gan_loss(zero, True, "wgan")


# ----------------------------------------------------------------------------------------------- steps


def _batch(seed=0):
    src, tgt = FakeSegData(2, seed), FakeSegData(2, seed + 1, labelled=False)
    return (engine.to_input(src.images, torch.device("cpu")), src.labels,
            engine.to_input(tgt.images, torch.device("cpu")))


@pytest.mark.parametrize("kind", ["softmax", "entropy"])
def test_generator_step_updates_model_only(kind):
    stage = _stage(discriminator_input=kind, target_entropy_weight=0.1)
    model, d = _model().train(), build_discriminator(C, seed=0)
    seg_opt, _ = make_optimizers(model, d, stage)
    before_m, before_d = _params(model), _params(d)
    out = generator_step(model, d, seg_opt, *_batch(), stage)
    assert all(math.isfinite(v) for v in (out.seg, out.adv, out.entropy))
    assert 0.0 <= out.entropy <= 1.0
    assert not _same(before_m, _params(model))
    assert _same(before_d, _params(d))
    assert all(p.requires_grad and p.grad is None for p in d.parameters())  # unfrozen again, no grads
    assert out.source_input.shape == out.target_input.shape == (2, C, 64, 128)
    assert not out.source_input.requires_grad and not out.target_input.requires_grad


def test_discriminator_step_updates_discriminator_only():
    stage = _stage()
    model, d = _model().train(), build_discriminator(C, seed=0)
    seg_opt, d_opt = make_optimizers(model, d, stage)
    out = generator_step(model, d, seg_opt, *_batch(), stage)
    model.zero_grad(set_to_none=True)
    before_m, before_d = _params(model), _params(d)
    d_loss = discriminator_step(d, d_opt, out.source_input, out.target_input, stage)
    assert math.isfinite(d_loss)
    assert _same(before_m, _params(model))
    assert not _same(before_d, _params(d))
    assert all(p.grad is None for p in model.parameters())  # no gradient reaches the segmentation net


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_discriminator_step_learns_to_separate(precision):
    stage = _stage(gan_loss="bce", discriminator_lr=1e-3, discriminator_precision=precision)
    d = build_discriminator(C, seed=0)
    _, d_opt = make_optimizers(_model(), d, stage)
    src = torch.zeros(2, C, 32, 32)
    src[:, 0] = 1.0
    tgt = torch.full((2, C, 32, 32), 1 / C)
    losses = [discriminator_step(d, d_opt, src, tgt, stage) for _ in range(10)]
    assert losses[-1] < losses[0]
    with torch.no_grad():
        assert d(src).mean() > d(tgt).mean()
    # a bf16 D too keeps float32 weights and gradients (autocast computes in bf16, stores nothing in it)
    assert all(p.dtype == torch.float32 and p.grad.dtype == torch.float32 for p in d.parameters())


def test_judge_in_fp32_is_the_plain_forward_and_in_bf16_runs_the_convolutions_in_bfloat16():
    d = build_discriminator(C, seed=0)
    x = torch.softmax(torch.randn(2, C, 64, 64, generator=torch.Generator().manual_seed(1)), 1)
    with torch.no_grad():
        plain = d(x)
        assert torch.equal(judge(d, x), plain) and torch.equal(judge(d, x, "fp32"), plain)
        seen = []
        hook = d.conv1.register_forward_hook(lambda module, inputs, output: seen.append(output.dtype))
        try:
            scores = judge(d, x, "bf16")
        finally:
            hook.remove()
    assert seen == [torch.bfloat16] and scores.dtype == torch.float32 and scores.shape == plain.shape
    assert not torch.equal(scores, plain)                       # another rounding
    assert torch.allclose(scores, plain, rtol=0.05, atol=0.02)  # of the same scores
    assert all(p.dtype == torch.float32 for p in d.parameters())
    with pytest.raises(ValueError, match="discriminator_precision"):
        judge(d, x, "fp16")


# -------------------------------------------------------------------------------------------- training


def _run(stage, seed=0):
    model = _model()
    before = _params(model)
    hist = train_adversarial(model, FakeSegData(4, 0), FakeSegData(4, 1, labelled=False), stage,
                             torch.device("cpu"), seed=seed)
    return model, before, hist


@pytest.mark.parametrize("kind, loss", [("softmax", "lsgan"), ("softmax", "bce"), ("entropy", "lsgan"),
                                        ("entropy", "bce")])
def test_train_adversarial_runs(kind, loss):
    stage = _stage(discriminator_input=kind, gan_loss=loss, target_entropy_weight=0.05)
    model, before, hist = _run(stage)
    assert set(hist) == {"seg", "adv", "d_loss", "entropy"}
    for values in hist.values():
        assert len(values) == 3 and all(math.isfinite(v) for v in values)
    assert not _same(before, _params(model))


def test_train_adversarial_with_a_bf16_discriminator_is_deterministic_and_another_run():
    fp32 = _run(_stage(iterations=2), seed=3)
    bf16 = [_run(_stage(iterations=2, discriminator_precision="bf16"), seed=3) for _ in range(2)]
    assert _same(_params(bf16[0][0]), _params(bf16[1][0])) and bf16[0][2] == bf16[1][2]
    assert bf16[0][2]["seg"][0] == fp32[2]["seg"][0]            # the first source loss comes before D
    assert bf16[0][2]["adv"] != fp32[2]["adv"] and all(math.isfinite(v) for v in bf16[0][2]["d_loss"])


def test_train_adversarial_is_deterministic():
    stage = _stage(iterations=2)
    a, _, hist_a = _run(stage, seed=3)
    b, _, hist_b = _run(stage, seed=3)
    assert _same(_params(a), _params(b))
    assert hist_a == hist_b


def test_train_adversarial_keeps_a_given_discriminator_and_zero_iterations():
    d = build_discriminator(C, seed=0)
    before_d = _params(d)
    model = _model()
    train_adversarial(model, FakeSegData(2, 0), FakeSegData(2, 1, labelled=False), _stage(iterations=1),
                      torch.device("cpu"), discriminator=d)
    assert not _same(before_d, _params(d))
    before = _params(model)
    hist = train_adversarial(model, FakeSegData(2, 0), FakeSegData(2, 1), replace(_stage(), iterations=0),
                             torch.device("cpu"))
    assert hist == {"seg": [], "adv": [], "d_loss": [], "entropy": []}
    assert _same(before, _params(model))


class SignalAt(torch.utils.data.Dataset):
    """A dataset that sends `signum` to this process when its `at`-th item is loaded (like SLURM would)."""

    def __init__(self, dataset, at: int, signum):
        self.dataset, self.at, self.signum, self.loaded = dataset, at, signum, 0

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, i):
        import os
        self.loaded += 1
        if self.loaded == self.at:
            os.kill(os.getpid(), self.signum)
        return self.dataset[i]


@pytest.mark.parametrize("signame", ["SIGTERM", "SIGUSR2"])
def test_train_adversarial_stopped_by_a_signal_resumes_to_identical_weights(tmp_path, signame):
    import signal
    from hiast.checkpoint import Interrupted
    stage = _stage(iterations=4)
    d_uninterrupted = build_discriminator(C, seed=0)
    whole = _model()
    hist_whole = train_adversarial(whole, FakeSegData(4, 0), FakeSegData(4, 1, labelled=False), stage,
                                   torch.device("cpu"), seed=2, discriminator=d_uninterrupted)
    state = tmp_path / "adversarial.pt"
    # the signal arrives while batch 1 loads (items 3-4 of the source stream): iteration 1 ends, state at 2
    with pytest.raises(Interrupted, match="iteration 2"):
        train_adversarial(_model(), SignalAt(FakeSegData(4, 0), 3, getattr(signal, signame)),
                          FakeSegData(4, 1, labelled=False), stage, torch.device("cpu"), seed=2,
                          discriminator=build_discriminator(C, seed=0), state_path=state)
    assert torch.load(state, weights_only=True)["iteration"] == 2
    resumed, d_resumed = _model(seed=9), build_discriminator(C, seed=9)   # everything comes from the state
    hist_resumed = train_adversarial(resumed, FakeSegData(4, 0), FakeSegData(4, 1, labelled=False), stage,
                                     torch.device("cpu"), seed=2, discriminator=d_resumed, state_path=state)
    assert _same(_params(whole), _params(resumed))
    assert _same(_params(d_uninterrupted), _params(d_resumed))
    assert hist_whole == hist_resumed
    for a, b in zip(whole.buffers(), resumed.buffers()):   # BN running statistics too
        assert torch.equal(a, b)


def test_train_adversarial_stops_on_a_non_finite_loss(tmp_path):
    from hiast.checkpoint import Diverged
    bad = FakeSegData(4, 0)
    bad.images = bad.images.float() * float("nan")   # normalised NaN images give NaN logits and losses
    with pytest.raises(Diverged, match="iteration 0.*seg=nan"):
        train_adversarial(_model(), bad, FakeSegData(4, 1, labelled=False), _stage(), torch.device("cpu"),
                          state_path=tmp_path / "s.pt")
