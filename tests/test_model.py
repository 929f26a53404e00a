"""DeepLab-V2 model, BN freezing, optimiser groups and checkpoint loading/saving (CPU, tiny inputs)."""

from __future__ import annotations

import os

import pytest
import torch
import torch.nn as nn

from hiast.model import (BACKBONES, CheckpointError, build_model, freeze_bn_affine, load_checkpoint_state,
                         load_weights, normalize_keys, param_groups, save_weights)


class NotATensor:  # module level so that torch.save can pickle it by reference
    def __init__(self):
        self.payload = [1, 2, 3]


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def _x(batch=1, h=64, w=128):
    return torch.randn(batch, 3, h, w)


def _bns(model):
    return [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]


@pytest.mark.parametrize("backbone, channels", [("resnet18", 256), ("resnet18_full", 512), ("resnet50", 2048)])
def test_output_is_logits_at_stride_8(backbone, channels):
    model = build_model(backbone, 5).eval()
    with torch.no_grad():
        feats = model.forward_features(_x(2))
        out = model(_x(2))
    assert feats.shape == (2, channels, 8, 16)
    assert out.shape == (2, 5, 8, 16)
    assert model.backbone.out_channels == channels


def test_resnet101_layout_matches_official_keys():
    model = build_model("resnet101", 19)
    state = model.state_dict()
    assert all(k.startswith(("backbone.", "aspp.conv2d_list.")) for k in state)
    assert not any(k.startswith("backbone.fc.") or "avgpool" in k for k in state)
    for key in ("backbone.conv1.weight", "backbone.bn1.running_mean", "backbone.layer1.0.conv1.weight",
                "backbone.layer3.22.conv3.weight", "backbone.layer4.2.bn3.bias"):
        assert key in state, key
    assert "backbone.layer3.23.conv1.weight" not in state
    for i in range(4):
        assert state[f"aspp.conv2d_list.{i}.weight"].shape == (19, 2048, 3, 3)
        assert state[f"aspp.conv2d_list.{i}.bias"].shape == (19,)
    assert len([k for k in state if k.startswith("aspp.")]) == 8
    # output stride 8: no stride left in layer3/4; dilation 2 in layer3, 4 in layer4 (first block: previous)
    convs = dict(model.backbone.named_modules())
    assert convs["layer3.0.conv2"].stride == (1, 1) and convs["layer3.0.downsample.0"].stride == (1, 1)
    assert convs["layer3.5.conv2"].dilation == (2, 2) and convs["layer3.5.conv2"].padding == (2, 2)
    assert convs["layer4.0.conv2"].dilation == (2, 2)
    assert convs["layer4.2.conv2"].dilation == (4, 4) and convs["layer4.2.conv2"].padding == (4, 4)


def test_unknown_backbone_is_refused():
    with pytest.raises(ValueError, match="resnet101"):
        build_model("vgg16", 19)


def test_aspp_is_the_sum_of_its_branches():
    model = build_model("resnet18", 7).eval()
    convs = model.aspp.conv2d_list
    assert [c.dilation[0] for c in convs] == [6, 12, 18, 24]
    assert [c.padding[0] for c in convs] == [6, 12, 18, 24]
    for conv in convs:  # DeepLab init: N(0, 0.01), zero bias
        assert torch.all(conv.bias == 0)
        assert 0.008 < conv.weight.std().item() < 0.012
        nn.init.normal_(conv.bias)  # non-zero biases so that the sum covers them too
    x = _x()
    with torch.no_grad():
        feats = model.forward_features(x)
        by_hand = convs[0](feats) + convs[1](feats) + convs[2](feats) + convs[3](feats)
        out = model(x)
    torch.testing.assert_close(out, by_hand)
    custom = build_model("resnet18", 3, aspp_dilations=(2, 4))
    assert [c.dilation[0] for c in custom.aspp.conv2d_list] == [2, 4]
    assert custom(_x()).shape == (1, 3, 8, 16)


def test_frozen_bn_affine_but_running_stats_update():
    model = build_model("resnet18", 4).train()
    bns = _bns(model)
    assert bns
    for bn in bns:
        assert not bn.weight.requires_grad and not bn.bias.requires_grad
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert all(c.weight.requires_grad for c in convs)
    before = bns[0].running_mean.clone()
    model(_x()).sum().backward()
    assert not torch.equal(bns[0].running_mean, before)
    assert bns[0].weight.grad is None and convs[0].weight.grad is not None

    trainable = build_model("resnet18", 4, freeze_bn=False)
    assert all(bn.weight.requires_grad for bn in _bns(trainable))
    freeze_bn_affine(trainable)
    assert not any(bn.weight.requires_grad or bn.bias.requires_grad for bn in _bns(trainable))


def test_param_groups_lrs_and_coverage():
    model = build_model("resnet18", 4)
    groups = param_groups(model, 3e-6)
    assert [g["lr"] for g in groups] == pytest.approx([3e-6, 3e-5])
    ids = [id(p) for g in groups for p in g["params"]]
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert len(ids) == len(set(ids)) and set(ids) == trainable
    assert {id(p) for p in groups[1]["params"]} == {id(p) for p in model.aspp.parameters()}
    assert all(p.requires_grad for g in groups for p in g["params"])
    assert param_groups(model, 1e-4, head_lr_mult=2.0)[1]["lr"] == pytest.approx(2e-4)
    torch.optim.Adam(groups, lr=3e-6)  # usable as is


def _official_style(state):
    """Keys as the official trainer saves them under DDP, plus the unused representation conv."""
    out = {f"module.seg_model.{k}": v.clone() for k, v in state.items()}
    out["module.seg_model.representation.0.weight"] = torch.randn(256, 256, 1, 1)
    out["module.seg_model.representation.0.bias"] = torch.randn(256)
    return out


def test_official_keys_load_and_give_identical_outputs(tmp_path):
    source = build_model("resnet18", 6).eval()
    for bn in _bns(source):  # non-trivial running stats so that buffers are checked too
        bn.running_mean.uniform_(-0.1, 0.1)
        bn.running_var.uniform_(0.5, 1.5)
    state = _official_style(source.state_dict())
    assert set(normalize_keys(state)) == set(source.state_dict()) | {"representation.0.weight",
                                                                      "representation.0.bias"}
    path = tmp_path / "official.pth"
    torch.save(state, path)
    target = build_model("resnet18", 6).eval()
    x = _x()
    with torch.no_grad():
        assert not torch.allclose(target(x), source(x))
        report = load_weights(target, path)
        torch.testing.assert_close(target(x), source(x), rtol=0, atol=0)
    assert sorted(report.ignored) == ["representation.0.bias", "representation.0.weight"]
    assert report.unexpected == []

    # a wrapper dict with metadata (also weights_only-loadable) is unwrapped
    wrapped = tmp_path / "wrapped.pth"
    torch.save({"epoch": 3, "iteration": 8000, "state_dict": state}, wrapped)
    assert set(load_checkpoint_state(wrapped)) == set(state)
    load_weights(build_model("resnet18", 6), wrapped)
    load_weights(build_model("resnet18", 6), {"model": source.state_dict()})


def test_class_count_mismatch_lists_aspp_keys_and_shapes(tmp_path):
    path = tmp_path / "nine.pth"
    torch.save(build_model("resnet18", 9).state_dict(), path)
    with pytest.raises(CheckpointError) as err:
        load_weights(build_model("resnet18", 19), path)
    msg = str(err.value)
    assert str(path) in msg
    for i in range(4):
        assert f"aspp.conv2d_list.{i}.weight: model [19, 256, 3, 3] vs checkpoint [9, 256, 3, 3]" in msg
        assert f"aspp.conv2d_list.{i}.bias: model [19] vs checkpoint [9]" in msg
    assert "num_classes" in msg and "backbone.conv1" not in msg


def test_backbone_mismatch_lists_keys():
    state = build_model("resnet50", 19).state_dict()
    with pytest.raises(CheckpointError) as err:
        load_weights(build_model("resnet18", 19), state)
    msg = str(err.value)
    assert "backbone.layer1.0.conv1.weight: model [64, 64, 3, 3] vs checkpoint [64, 64, 1, 1]" in msg
    assert "... and " in msg and " more" in msg
    assert len(msg.splitlines()) <= 25
    assert "wrong backbone" in msg and "resnet50" in msg


def test_unknown_extra_keys_are_not_dropped_silently():
    model = build_model("resnet18", 4)
    state = dict(model.state_dict())
    state["seg_model.discriminator.weight"] = torch.zeros(3)
    with pytest.raises(CheckpointError, match=r"discriminator\.weight: model \(absent\) vs checkpoint \[3\]"):
        load_weights(build_model("resnet18", 4), state)
    report = load_weights(build_model("resnet18", 4), state, strict=False)
    assert report.unexpected == ["discriminator.weight"]
    del state["aspp.conv2d_list.0.bias"]
    with pytest.raises(CheckpointError, match=r"aspp\.conv2d_list\.0\.bias: model \[4\] vs checkpoint \(missing\)"):
        load_weights(build_model("resnet18", 4), state)


def test_pickled_objects_are_refused(tmp_path):
    path = tmp_path / "object.pth"
    torch.save({"model": NotATensor()}, path)
    with pytest.raises(CheckpointError, match="weights_only") as err:
        load_checkpoint_state(path)
    assert str(path) in str(err.value) and "not a plain state dict" in str(err.value)
    with pytest.raises(CheckpointError, match="weights_only"):
        load_weights(build_model("resnet18", 4), path)
    missing = tmp_path / "nope.pth"
    with pytest.raises(CheckpointError, match="nope.pth"):
        load_checkpoint_state(missing)
    torch.save({"epoch": 3}, tmp_path / "nostate.pth")
    with pytest.raises(CheckpointError, match="no state dict"):
        load_checkpoint_state(tmp_path / "nostate.pth")


def test_save_weights_round_trip_is_atomic(tmp_path):
    model = build_model("resnet18", 4)
    path = tmp_path / "ckpt" / "model_last.pth"
    save_weights(model, path)
    save_weights(model, path)  # overwrite in place
    assert os.listdir(path.parent) == ["model_last.pth"]
    state = torch.load(path, map_location="cpu", weights_only=True)
    assert isinstance(state, dict) and all(isinstance(v, torch.Tensor) for v in state.values())
    assert set(state) == set(model.state_dict())
    for k, v in model.state_dict().items():
        assert torch.equal(state[k], v), k
    other = build_model("resnet18", 4)
    load_weights(other, path)
    for k, v in model.state_dict().items():
        assert torch.equal(other.state_dict()[k], v), k


def test_backbones_constant():
    assert BACKBONES == ("resnet101", "resnet50", "resnet18", "resnet18_full")


def test_channels_last_computes_the_same_logits_and_keeps_the_state_dict():
    plain = build_model("resnet18", 5).eval()
    fast = build_model("resnet18", 5, channels_last=True).eval()
    fast.load_state_dict(plain.state_dict())
    assert fast.backbone.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    x = _x(2)
    with torch.no_grad():
        torch.testing.assert_close(fast(x), plain(x), rtol=1e-4, atol=1e-5)
    assert list(fast.state_dict()) == list(plain.state_dict())


def test_bf16_autocast_gives_float32_logits_close_to_fp32_and_float32_gradients():
    plain = build_model("resnet18", 5).eval()
    half = build_model("resnet18", 5, precision="bf16").eval()
    half.load_state_dict(plain.state_dict())
    x = _x(2)
    with torch.no_grad():
        ref, out = plain(x), half(x)
    assert out.dtype == torch.float32
    assert not torch.equal(out, ref)   # it really ran in bfloat16 ...
    assert (out - ref).abs().max() <= 0.05 * ref.abs().max()   # ... within bf16's ~3 significant digits
    half.train()
    half(x).logsumexp(1).mean().backward()
    grads = [p.grad for p in half.parameters() if p.requires_grad]
    assert all(g is not None and g.dtype == torch.float32 and torch.isfinite(g).all() for g in grads)


def test_unknown_precision_is_refused():
    with pytest.raises(ValueError, match="precision"):
        build_model("resnet18", 5, precision="fp8")
