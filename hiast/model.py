"""DeepLab-V2 (dilated ResNet trunk + summed ASPP-V2 head), BN freezing, optimiser groups and checkpoints.

Layout follows the official HIAST model so that its checkpoints load:
- `backbone.*`: a torchvision ResNet trunk (conv1, bn1, relu, maxpool, layer1..layer4, no fc), output stride 8
  (layer3/layer4 strides removed, dilations 2/4; the first block of each dilated layer keeps the previous
  dilation, as torchvision's `replace_stride_with_dilation` and the official `_nostride_dilate` both do);
- `aspp.conv2d_list.{0..3}.*`: four parallel 3x3 convs (dilation = padding = 6/12/18/24), outputs summed.
`forward` returns logits at feature resolution [B, C, ceil(H/8), ceil(W/8)]; the caller upsamples.

Official checkpoints use `seg_model.` (and `module.` under DDP) prefixes and carry an unused 1x1
"representation" conv; `load_weights` strips the prefixes and drops those keys, nothing else silently.
"""

from __future__ import annotations

import logging
import os
import pickle
import re
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn as nn
import torchvision.models as tvm

log = logging.getLogger(__name__)

BACKBONES = ("resnet101", "resnet50", "resnet18", "resnet18_full")
DEFAULT_ASPP_DILATIONS = (6, 12, 18, 24)
OUTPUT_STRIDE = 8
PRECISIONS = ("fp32", "bf16")  # bf16: autocast (CPUs with AVX512-BF16/AMX, GPUs from Ampere on)

# backbone name -> (torchvision builder, ImageNet weights, keeps layer4, Bottleneck blocks)
_SPECS = {
    "resnet101": (tvm.resnet101, tvm.ResNet101_Weights.IMAGENET1K_V1, True, True),
    "resnet50": (tvm.resnet50, tvm.ResNet50_Weights.IMAGENET1K_V1, True, True),
    "resnet18": (tvm.resnet18, tvm.ResNet18_Weights.IMAGENET1K_V1, False, False),
    "resnet18_full": (tvm.resnet18, tvm.ResNet18_Weights.IMAGENET1K_V1, True, False),
}

# Wrapper keys under which a checkpoint file may hold the state dict, tried in this order.
WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "seg_model", "student")
# Key prefixes stripped by normalize_keys (repeatedly, in any order).
STRIP_PREFIXES = ("module.", "seg_model.")
# Checkpoint keys known to be unused by this model (after normalisation): the official 1x1 "representation"
# conv (never used by the losses) and an ImageNet classifier left in a trunk checkpoint.
_UNUSED_KEY = re.compile(r"^(representation|rep)\.|^backbone\.fc\.")
_MAX_LINES = 20


class CheckpointError(RuntimeError):
    """A checkpoint file cannot be read safely or does not fit the model."""


# --------------------------------------------------------------------------------------------- model


def _dilate_layer(layer: nn.Sequential, dilation: int, previous_dilation: int) -> None:
    """Remove the stride of a ResNet layer (BasicBlock or Bottleneck) and dilate its 3x3 convs.

    The strided 3x3 conv of the first block gets `previous_dilation`, every other 3x3 conv `dilation`;
    the strided 1x1 downsample conv just loses its stride (torchvision's `replace_stride_with_dilation`).
    """
    for module in layer.modules():
        if not isinstance(module, nn.Conv2d):
            continue
        strided = module.stride != (1, 1)
        if strided:
            module.stride = (1, 1)
        if module.kernel_size == (3, 3):
            d = previous_dilation if strided else dilation
            module.dilation = (d, d)
            module.padding = (d, d)


class ResNetTrunk(nn.Module):
    """conv1, bn1, relu, maxpool, layer1..layer3 and (optionally) layer4 of a torchvision ResNet."""

    def __init__(self, resnet: tvm.ResNet, keep_layer4: bool = True):
        super().__init__()
        self.conv1, self.bn1, self.relu, self.maxpool = resnet.conv1, resnet.bn1, resnet.relu, resnet.maxpool
        self.layer1, self.layer2, self.layer3 = resnet.layer1, resnet.layer2, resnet.layer3
        last = resnet.layer3
        if keep_layer4:
            self.layer4 = resnet.layer4
            last = resnet.layer4
        block = last[-1]
        self.out_channels = (block.bn3 if hasattr(block, "bn3") else block.bn2).num_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer3(self.layer2(self.layer1(x)))
        if hasattr(self, "layer4"):
            x = self.layer4(x)
        return x


def make_trunk(name: str, pretrained: bool = False) -> ResNetTrunk:
    """The output-stride-8 trunk for backbone `name`; ImageNet weights from torchvision if `pretrained`."""
    if name not in _SPECS:
        raise ValueError(f"backbone: expected one of {BACKBONES}, got {name!r}")
    builder, weights, keep_layer4, bottleneck = _SPECS[name]
    weights = weights if pretrained else None
    if bottleneck:
        resnet = builder(weights=weights, replace_stride_with_dilation=[False, True, True])
    else:
        # BasicBlock refuses dilation at construction time: build plainly, then patch strides/dilations.
        resnet = builder(weights=weights)
        _dilate_layer(resnet.layer3, dilation=2, previous_dilation=1)
        if keep_layer4:
            _dilate_layer(resnet.layer4, dilation=4, previous_dilation=2)
    return ResNetTrunk(resnet, keep_layer4)


class ASPPV2(nn.Module):
    """DeepLab-V2 ASPP: parallel 3x3 convs (padding = dilation) to the class logits, summed."""

    def __init__(self, in_channels: int, num_classes: int, dilations=DEFAULT_ASPP_DILATIONS):
        super().__init__()
        if not dilations:
            raise ValueError("aspp_dilations: at least one dilation is needed")
        self.conv2d_list = nn.ModuleList(
            nn.Conv2d(in_channels, num_classes, kernel_size=3, padding=int(d), dilation=int(d), bias=True)
            for d in dilations)
        for conv in self.conv2d_list:
            nn.init.normal_(conv.weight, 0.0, 0.01)
            nn.init.zeros_(conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv2d_list[0](x)
        for conv in self.conv2d_list[1:]:
            out = out + conv(x)
        return out


class DeepLabV2(nn.Module):
    """Dilated ResNet trunk (`backbone`) + ASPP-V2 (`aspp`); forward gives logits at 1/8 resolution."""

    output_stride = OUTPUT_STRIDE

    def __init__(self, backbone: str = "resnet101", num_classes: int = 19,
                 aspp_dilations=DEFAULT_ASPP_DILATIONS, pretrained: bool = False, precision: str = "fp32",
                 channels_last: bool = False):
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes: expected >= 1, got {num_classes}")
        if precision not in PRECISIONS:
            raise ValueError(f"precision: expected one of {PRECISIONS}, got {precision!r}")
        # Compute settings, not weights: they stay out of the state dict, so checkpoints load either way.
        self.precision = precision
        self.channels_last = channels_last
        self.backbone_name = backbone
        self.num_classes = num_classes
        self.aspp_dilations = tuple(int(d) for d in aspp_dilations)
        self.backbone = make_trunk(backbone, pretrained)
        self.aspp = ASPPV2(self.backbone.out_channels, num_classes, self.aspp_dilations)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Trunk features [B, F, H/8, W/8] (F = 2048 for resnet50/101, 512 resnet18_full, 256 resnet18)."""
        return self.backbone(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """float32 logits; with precision "bf16" the network runs under bfloat16 autocast (the logits, and so
        every loss and softmax downstream, are float32 again)."""
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16"):
            logits = self.aspp(self.backbone(x))
        return logits.float()

    def extra_repr(self) -> str:
        return (f"backbone={self.backbone_name!r}, num_classes={self.num_classes}, aspp={self.aspp_dilations}, "
                f"precision={self.precision!r}, channels_last={self.channels_last}")


def freeze_bn_affine(model: nn.Module) -> nn.Module:
    """The official "frozen BN": BN weight/bias get requires_grad=False; running stats still update in train()."""
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            for p in (module.weight, module.bias):
                if p is not None:
                    p.requires_grad_(False)
    return model


def freeze_bn_statistics(model: nn.Module) -> nn.Module:
    """Every BatchNorm layer in eval mode: it normalises with its running statistics and no longer updates
    them, while the rest of the model may train (a later `model.train()` undoes this)."""
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()
    return model


def build_model(backbone: str = "resnet101", num_classes: int = 19, pretrained: bool = False,
                aspp_dilations=DEFAULT_ASPP_DILATIONS, freeze_bn: bool = True, precision: str = "fp32",
                channels_last: bool = False) -> DeepLabV2:
    """DeepLab-V2 with `backbone` in BACKBONES. `pretrained` loads torchvision ImageNet weights into the trunk
    (needs the hub or the file under TORCH_HOME); the ASPP is always freshly initialised (N(0, 0.01), bias 0)."""
    model = DeepLabV2(backbone, num_classes, aspp_dilations, pretrained=pretrained, precision=precision,
                      channels_last=channels_last)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    if freeze_bn:
        freeze_bn_affine(model)
    return model


def _unwrap_parallel(model: nn.Module) -> nn.Module:
    if isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
        return model.module
    return model


def param_groups(model: nn.Module, lr: float, head_lr_mult: float = 10.0) -> list[dict]:
    """Optimiser groups: trainable trunk parameters at `lr`, everything else trainable (the ASPP head) at
    lr * head_lr_mult (the official 10x). Frozen parameters are left out; empty groups are dropped."""
    backbone, head = [], []
    for name, param in _unwrap_parallel(model).named_parameters():
        if not param.requires_grad:
            continue
        (backbone if name.startswith("backbone.") else head).append(param)
    groups = [{"params": backbone, "lr": lr, "name": "backbone"},
              {"params": head, "lr": lr * head_lr_mult, "name": "head"}]
    return [g for g in groups if g["params"]]


# ---------------------------------------------------------------------------------------- checkpoints


def _is_state_dict(obj) -> bool:
    return isinstance(obj, Mapping) and len(obj) > 0 and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())


def _extract_state(obj, source: str, depth: int = 0) -> dict[str, torch.Tensor]:
    if _is_state_dict(obj):
        return dict(obj)
    if isinstance(obj, Mapping) and depth < 3:
        for key in WRAPPER_KEYS:
            if key in obj and isinstance(obj[key], Mapping):
                return _extract_state(obj[key], source, depth + 1)
    if isinstance(obj, Mapping):
        found = ", ".join(f"{k!r}: {type(v).__name__}" for k, v in list(obj.items())[:10])
        raise CheckpointError(f"{source}: no state dict of tensors found (expected one at the top level or under "
                              f"one of {WRAPPER_KEYS}); top-level entries: {{{found}}}")
    raise CheckpointError(f"{source}: expected a state dict (a mapping of names to tensors), "
                          f"found {type(obj).__name__}")


def load_checkpoint_state(path) -> dict[str, torch.Tensor]:
    """The state dict in the checkpoint file `path` (on CPU), unwrapped from a wrapper dict if needed.

    Loading is weights_only: a file holding pickled objects other than tensors and plain containers is
    refused with CheckpointError rather than executed."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(
            f"{path}: not a plain state dict: loading is weights_only (tensors and plain containers only) and "
            f"the file holds other pickled objects; re-save it as torch.save(model.state_dict()) "
            f"[{first}]") from e
    except Exception as e:  # corrupt/truncated archives, not a torch file, ...
        raise CheckpointError(f"{path}: cannot read checkpoint: {type(e).__name__}: {e}") from e
    return _extract_state(obj, str(path))


def normalize_keys(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Strip leading `module.` / `seg_model.` prefixes (DDP and the official segmentor wrapper)."""
    out = {}
    for key, value in state.items():
        changed = True
        while changed:
            changed = False
            for prefix in STRIP_PREFIXES:
                if key.startswith(prefix):
                    key, changed = key[len(prefix):], True
        if key in out:
            raise CheckpointError(f"duplicate key after stripping prefixes: {key!r}")
        out[key] = value
    return out


class LoadReport(NamedTuple):
    ignored: list[str]      # known-unused checkpoint keys that were dropped
    missing: list[str]      # model keys absent from the checkpoint (only when tolerated)
    unexpected: list[str]   # checkpoint keys the model lacks (only with strict=False)


def _shape(t) -> str:
    return str(list(t.shape))


def _guess_backbone(keys) -> str | None:
    """Which supported backbone a normalised state dict's trunk keys look like, if any."""
    layer3 = {int(m.group(1)) for k in keys if (m := re.match(r"backbone\.layer3\.(\d+)\.", k))}
    if not layer3:
        return None
    bottleneck = any(re.match(r"backbone\.layer\d\.\d+\.conv3\.", k) for k in keys)
    has_layer4 = any(k.startswith("backbone.layer4.") for k in keys)
    blocks = max(layer3) + 1
    if bottleneck:
        return {23: "resnet101", 6: "resnet50"}.get(blocks, f"a Bottleneck ResNet with {blocks} layer3 blocks")
    if blocks == 2:
        return "resnet18_full" if has_layer4 else "resnet18"
    return f"a BasicBlock ResNet with {blocks} layer3 blocks"


def _hint(model: nn.Module, state: Mapping[str, torch.Tensor]) -> str:
    hints = []
    if not any(k.startswith(("backbone.", "aspp.")) for k in state):
        first = ", ".join(list(state)[:5])
        return (f"hint: the keys do not look like a DeepLabV2 state dict (expected backbone.* and aspp.*; "
                f"first keys: {first})")
    backbone = getattr(model, "backbone_name", None)
    guess = _guess_backbone(state)
    if guess is not None and backbone is not None and guess != backbone:
        hints.append(f"wrong backbone? the model is {backbone}, the checkpoint looks like {guess}")
    head = state.get("aspp.conv2d_list.0.weight")
    classes = getattr(model, "num_classes", None)
    if head is not None and classes is not None and head.shape[0] != classes:
        hints.append(f"wrong num_classes? the model has {classes} classes, the checkpoint {head.shape[0]}")
    n_branches = len({k.split(".")[2] for k in state if k.startswith("aspp.conv2d_list.")})
    n_model = len(getattr(getattr(model, "aspp", None), "conv2d_list", []))
    if n_branches and n_model and n_branches != n_model:
        hints.append(f"wrong aspp_dilations? the model has {n_model} ASPP branches, the checkpoint {n_branches}")
    if not hints:
        hints.append("wrong backbone or num_classes?")
    return "hint: " + "; ".join(hints)


def load_weights(model: nn.Module, state_or_path, strict: bool = True) -> LoadReport:
    """Load a state dict (or a checkpoint file) into `model` after normalising its keys.

    Known-unused keys (the official `representation`/`rep` conv, a trunk classifier `backbone.fc.*`) are
    dropped and logged. Missing BN `num_batches_tracked` buffers are tolerated (older files). Any other
    missing or unexpected key (strict=True) or any shape mismatch (always) raises CheckpointError listing
    the keys with model vs checkpoint shapes."""
    if isinstance(state_or_path, (str, os.PathLike)):
        source = str(state_or_path)
        raw = load_checkpoint_state(state_or_path)
    else:
        source = "state dict"
        raw = _extract_state(state_or_path, source)
    target = _unwrap_parallel(model)
    state = normalize_keys(raw)
    ignored = [k for k in state if _UNUSED_KEY.search(k)]
    for k in ignored:
        del state[k]
    if ignored:
        log.info("%s: ignoring %d known-unused keys: %s", source, len(ignored), ", ".join(ignored))

    expected = target.state_dict()
    mismatched = [k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
    missing = [k for k in expected if k not in state]
    tolerated = [k for k in missing if k.endswith("num_batches_tracked")]
    missing = [k for k in missing if k not in tolerated]
    unexpected = [k for k in state if k not in expected]

    problems = [f"{k}: model {_shape(expected[k])} vs checkpoint {_shape(state[k])}" for k in mismatched]
    if strict:
        problems += [f"{k}: model {_shape(expected[k])} vs checkpoint (missing)" for k in missing]
        problems += [f"{k}: model (absent) vs checkpoint {_shape(state[k])}" for k in unexpected]
    if problems:
        counts = f"{len(mismatched)} shape mismatches"
        if strict:
            counts += f", {len(missing)} missing, {len(unexpected)} unexpected keys"
        what = (f"{getattr(target, 'backbone_name', type(target).__name__)}, "
                f"{getattr(target, 'num_classes', '?')} classes")
        lines = problems[:_MAX_LINES]
        if len(problems) > _MAX_LINES:
            lines.append(f"... and {len(problems) - _MAX_LINES} more")
        raise CheckpointError(f"{source}: checkpoint does not fit the model ({what}): {counts}\n  "
                              + "\n  ".join(lines) + "\n" + _hint(target, state))
    if not strict and (missing or unexpected):
        log.warning("%s: loaded non-strictly; %d missing keys (%s), %d unexpected keys (%s)", source,
                    len(missing), ", ".join(missing[:_MAX_LINES]), len(unexpected),
                    ", ".join(unexpected[:_MAX_LINES]))
    for k in unexpected:
        del state[k]
    target.load_state_dict(state, strict=False)
    return LoadReport(ignored, missing + tolerated, unexpected)


def save_weights(model_or_state, path) -> Path:
    """Save a plain state dict of CPU tensors atomically (temp file in the same folder, then os.replace)."""
    if isinstance(model_or_state, nn.Module):
        state = _unwrap_parallel(model_or_state).state_dict()
    else:
        state = normalize_keys(model_or_state)
    state = {k: v.detach().cpu() for k, v in state.items()}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        with open(tmp, "xb") as f:  # respects the umask, unlike mkstemp's 0600
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path
