"""The cluster benchmark (`hiast bench gpu`): one call, a few minutes, on one GPU.

- the card's measured matrix-multiply rate (fp32 with TF32 off, TF32, bf16), TFLOP/s;
- DeepLabV2 ResNet-101 training at 512x1024, batch 2: fp32 and bf16 autocast + channels_last; images/s, peak
  memory, and achieved FLOP/s (counted with torch's FlopCounterMode) over the matching matmul rate;
- pseudo-labelling at 768x1536 (instances of 2 images): forward images/s, and the IAS step on the device
  (threshold update, selection, statistics) as a share of the forward pass (the bar: at most 5%).
Random weights: speed does not depend on them (no ImageNet download needed on the node).
"""

from __future__ import annotations

import time

import torch

from hiast import pseudo
from hiast.model import build_model
from hiast.speed import machine


def _timed(fn, repeats: int) -> float:
    fn()
    torch.cuda.synchronize()
    begin = time.perf_counter()
    for _ in range(repeats):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - begin) / repeats


def matmul_tflops(dtype: torch.dtype, tf32: bool = False, n: int = 8192, repeats: int = 20) -> float:
    previous = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = tf32
    try:
        a = torch.randn(n, n, device="cuda", dtype=dtype)
        b = torch.randn(n, n, device="cuda", dtype=dtype)
        seconds = _timed(lambda: a @ b, repeats)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = previous
    return 2 * n ** 3 / seconds / 1e12


def _train_step_flops(model, x, y) -> int:
    from torch.utils.flop_counter import FlopCounterMode
    with FlopCounterMode(display=False) as counter:
        loss = torch.nn.functional.cross_entropy(
            torch.nn.functional.interpolate(model(x), size=y.shape[-2:], mode="bilinear"), y, ignore_index=255)
        loss.backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def train_speed(precision: str, channels_last: bool, iterations: int = 20, batch: int = 2) -> dict:
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    model = build_model("resnet101", 19, precision=precision, channels_last=channels_last).cuda().train()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-4, momentum=0.9)
    x = torch.randn(batch, 3, 512, 1024, device="cuda")
    y = torch.randint(0, 19, (batch, 512, 1024), device="cuda")

    def step():
        logits = torch.nn.functional.interpolate(model(x), size=y.shape[-2:], mode="bilinear")
        loss = torch.nn.functional.cross_entropy(logits, y, ignore_index=255)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(3):
        step()
    seconds = _timed(step, iterations)
    flops = _train_step_flops(model, x, y)
    return {"precision": precision, "channels_last": channels_last, "batch": batch,
            "images_per_s": batch / seconds, "step_s": seconds,
            "peak_memory_gib": torch.cuda.max_memory_allocated() / 2 ** 30,
            "tflops_achieved": flops / seconds / 1e12}


@torch.no_grad()
def pseudo_speed(precision: str, channels_last: bool, instances: int = 10) -> dict:
    model = build_model("resnet101", 19, precision=precision, channels_last=channels_last).cuda().eval()
    x = torch.randn(2, 3, 768, 1536, device="cuda")
    outputs = {}

    def forward():
        probs = torch.nn.functional.interpolate(model(x), size=(768, 1536), mode="bilinear").softmax(1)
        outputs["conf"], pred = probs.max(1)
        outputs["pred"] = pred.to(torch.uint8)

    forward_s = _timed(forward, instances)
    state = pseudo.IASState(19, 0.5, 0.9, 8.0)
    # a realistic instance: the random model's outputs are near-uniform, so use model-like confidences
    from hiast.speed import instance_arrays
    conf, pred = instance_arrays(768, 1536)
    conf, pred = torch.from_numpy(conf).cuda(), torch.from_numpy(pred).cuda()
    ias_s = _timed(lambda: state.step(conf, pred), instances)
    return {"precision": precision, "channels_last": channels_last, "forward_images_per_s": 2 / forward_s,
            "forward_s_per_instance": forward_s, "ias_step_s": ias_s, "ias_share_of_forward": ias_s / forward_s}


def run() -> dict:
    if not torch.cuda.is_available():
        raise SystemExit("hiast bench gpu: no CUDA device here; run it on a GPU node")
    result = {"machine": machine(), "matmul_tflops": {
        "fp32": matmul_tflops(torch.float32), "tf32": matmul_tflops(torch.float32, tf32=True),
        "bf16": matmul_tflops(torch.bfloat16)}}
    result["train"] = [train_speed("fp32", False), train_speed("bf16", True)]
    for entry in result["train"]:
        peak = result["matmul_tflops"]["bf16" if entry["precision"] == "bf16" else "fp32"]
        entry["ratio_to_matmul_rate"] = entry["tflops_achieved"] / peak
    result["pseudo"] = [pseudo_speed("fp32", False), pseudo_speed("bf16", True)]
    return result
