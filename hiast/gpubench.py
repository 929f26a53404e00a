"""The cluster benchmark (`hiast bench gpu`): one call, a few minutes, on one GPU.

- the card's measured matrix-multiply rate (fp32 with TF32 off, TF32, bf16), TFLOP/s;
- DeepLabV2 ResNet-101 training at 512x1024, batch 2: fp32 and bf16 autocast + channels_last; images/s, peak
  memory, and achieved FLOP/s (counted with torch's FlopCounterMode) over the matmul rate of the arithmetic
  the convolutions run in (TF32 for "fp32" where cuDNN allows it, as torch does by default);
- pseudo-labelling at 768x1536 (instances of 2 images): forward images/s, and the IAS step on the device
  (threshold update, selection, statistics) as a share of the forward pass (the bar: at most 5%).
Random weights: speed does not depend on them (no ImageNet download needed on the node).

Every size is a parameter so that the same code runs, at toy sizes, on a CPU (the test suite's check that
the script works before a GPU is lent); only CUDA runs give figures worth recording.
"""

from __future__ import annotations

import time

import torch

from hiast import pseudo
from hiast.model import build_model
from hiast.speed import instance_arrays, machine

IAS_SHARE_BAR = 0.05  # the bar: the IAS step costs at most 5% of the forward on a GPU


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn, repeats: int, device: torch.device) -> float:
    """Seconds per call of `fn`, after one untimed call, with the device's queue drained around the loop."""
    fn()
    _sync(device)
    begin = time.perf_counter()
    for _ in range(repeats):
        fn()
    _sync(device)
    return (time.perf_counter() - begin) / repeats


def matmul_tflops(dtype: torch.dtype, tf32: bool = False, n: int = 8192, repeats: int = 20,
                  device: str | torch.device = "cuda") -> float:
    device = torch.device(device)
    previous = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = tf32
    try:
        a = torch.randn(n, n, device=device, dtype=dtype)
        b = torch.randn(n, n, device=device, dtype=dtype)
        seconds = _timed(lambda: a @ b, repeats, device)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = previous
    return 2 * n ** 3 / seconds / 1e12


def train_step_flops(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> int:
    """FLOPs of one training step's forward and backward (cross-entropy on logits upsampled to `y`), as
    torch's FlopCounterMode counts them (convolutions and matrix products); gradients are cleared after."""
    from torch.utils.flop_counter import FlopCounterMode
    with FlopCounterMode(display=False) as counter:
        loss = torch.nn.functional.cross_entropy(
            torch.nn.functional.interpolate(model(x), size=y.shape[-2:], mode="bilinear"), y, ignore_index=255)
        loss.backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def _peak_memory_gib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2 ** 30 if device.type == "cuda" else None


def train_speed(precision: str, channels_last: bool, iterations: int = 20, batch: int = 2,
                size: tuple[int, int] = (512, 1024), backbone: str = "resnet101",
                device: str | torch.device = "cuda") -> dict:
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    model = build_model(backbone, 19, precision=precision, channels_last=channels_last).to(device).train()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-4, momentum=0.9)
    x = torch.randn(batch, 3, *size, device=device)  # the model makes it channels_last itself where it is
    y = torch.randint(0, 19, (batch, *size), device=device)

    def step():
        logits = torch.nn.functional.interpolate(model(x), size=y.shape[-2:], mode="bilinear")
        loss = torch.nn.functional.cross_entropy(logits, y, ignore_index=255)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(2):  # warm-up on top of _timed's one call (cuDNN's algorithm choice, the allocator)
        step()
    seconds = _timed(step, iterations, device)
    flops = train_step_flops(model, x, y)
    return {"precision": precision, "channels_last": channels_last, "batch": batch, "size": list(size),
            "backbone": backbone, "images_per_s": batch / seconds, "step_s": seconds,
            "peak_memory_gib": _peak_memory_gib(device), "flops_per_step": flops,
            "tflops_achieved": flops / seconds / 1e12}


def pseudo_speed(precision: str, channels_last: bool, instances: int = 10, size: tuple[int, int] = (768, 1536),
                 backbone: str = "resnet101", device: str | torch.device = "cuda") -> dict:
    """The pseudo-labelling stage's forward (`stages.infer`: normalise, resize, model, upsample, softmax, max)
    on instances of 2 uint8 images against the IAS step on the same device; the step is fed model-like
    confidences (a random model's outputs are near-uniform)."""
    from hiast.stages import infer
    device = torch.device(device)
    model = build_model(backbone, 19, precision=precision, channels_last=channels_last).to(device).eval()
    images = torch.randint(0, 256, (2, 3, *size), dtype=torch.uint8, device=device)
    forward_s = _timed(lambda: infer(model, None, None, size, device, images), instances, device)
    state = pseudo.IASState(19, 0.5, 0.9, 8.0)
    conf, pred = instance_arrays(*size)
    conf, pred = torch.from_numpy(conf).to(device), torch.from_numpy(pred).to(device)
    ias_s = _timed(lambda: state.step(conf, pred), instances, device)
    step = state.step(conf, pred)
    return {"precision": precision, "channels_last": channels_last, "size": list(size), "backbone": backbone,
            "forward_images_per_s": 2 / forward_s, "forward_s_per_instance": forward_s, "ias_step_s": ias_s,
            "ias_labels_device": str(step.labels.device), "ias_share_of_forward": ias_s / forward_s,
            "ias_share_bar_met": ias_s / forward_s <= IAS_SHARE_BAR}


def _cudnn_conv_fp32_precision() -> str:
    """"tf32" or "ieee": torch >= 2.9 says it per operator kind (cudnn.conv.fp32_precision), older ones with
    one flag (cudnn.allow_tf32). Only read here, never set, so the two APIs are never mixed."""
    conv = getattr(torch.backends.cudnn, "conv", None)
    precision = getattr(conv, "fp32_precision", None)
    if precision in ("tf32", "ieee"):
        return precision
    return "tf32" if torch.backends.cudnn.allow_tf32 else "ieee"


def run(device: str | torch.device = "cuda", train_size: tuple[int, int] = (512, 1024),
        pseudo_size: tuple[int, int] = (768, 1536), iterations: int = 20, instances: int = 10,
        matmul_n: int = 8192, backbone: str = "resnet101") -> dict:
    """The whole cluster benchmark (defaults: the issue's sizes) -> one JSON-ready dict."""
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("hiast bench gpu: no CUDA device here; run it on a GPU node")
    begin = time.perf_counter()
    # The arithmetic torch's defaults give "fp32" convolutions: TF32 where cuDNN allows it (the default).
    conv_precision = _cudnn_conv_fp32_precision()
    conv_tf32 = device.type == "cuda" and conv_precision == "tf32"
    result = {"machine": machine(), "device": str(device),
              "settings": {"cudnn_conv_fp32_precision": conv_precision,
                           "cudnn_benchmark": torch.backends.cudnn.benchmark, "iterations": iterations,
                           "instances": instances, "matmul_n": matmul_n},
              "matmul_tflops": {"fp32": matmul_tflops(torch.float32, n=matmul_n, device=device),
                                "tf32": matmul_tflops(torch.float32, tf32=True, n=matmul_n, device=device),
                                "bf16": matmul_tflops(torch.bfloat16, n=matmul_n, device=device)}}
    result["train"] = [train_speed("fp32", False, iterations, size=train_size, backbone=backbone, device=device),
                       train_speed("bf16", True, iterations, size=train_size, backbone=backbone, device=device)]
    for entry in result["train"]:
        rate = "bf16" if entry["precision"] == "bf16" else "tf32" if conv_tf32 else "fp32"
        entry["matmul_rate_compared"] = rate
        entry["ratio_to_matmul_rate"] = entry["tflops_achieved"] / result["matmul_tflops"][rate]
    result["pseudo"] = [pseudo_speed("fp32", False, instances, pseudo_size, backbone, device),
                        pseudo_speed("bf16", True, instances, pseudo_size, backbone, device)]
    result["wall_s"] = time.perf_counter() - begin
    return result
