"""Upsample + the four self-training losses + backward, taped (autograd) and fused (train.fused_objective),
alternated 5 times at 1 thread on the synthetic GTA5 -> CS shapes (batch 4, 19 classes, 16x32 logits
upsampled to 128x256, channels_last like the model's output). Prints the medians in ms.

HIAST_MALLOC=default python benchmarks/scripts/loss_step_speed.py   # glibc's own malloc settings
python benchmarks/scripts/loss_step_speed.py --profile             # + per-operator table by input shape
python benchmarks/scripts/loss_step_speed.py --operators           # + single operators on that shape in a
                                                                   #   tight loop, where freed memory is reused
"""
import statistics
import sys
import time

import torch

from hiast.allocator import keep_freed_memory
from hiast.scenario import SelfTrainConfig
from hiast.selftrain import student_losses

print("hiast allocator settings applied:", keep_freed_memory())
torch.set_num_threads(1)
gen = torch.Generator().manual_seed(0)
B, C, H, W = 4, 19, 128, 256
small = torch.randn(B, C, 16, 32, generator=gen).contiguous(memory_format=torch.channels_last).requires_grad_()
labels = torch.randint(0, C, (B, H, W), generator=gen)
labels[torch.rand(B, H, W, generator=gen) < 0.4] = 255
teacher = torch.randn(B, C, 16, 32, generator=gen).contiguous(memory_format=torch.channels_last)
teacher = torch.nn.functional.interpolate(teacher, size=(H, W), mode="bilinear").softmax(1)


def step(fused: bool) -> None:
    logits = torch.nn.functional.interpolate(small, size=(H, W), mode="bilinear")
    student_losses(logits, labels, teacher, SelfTrainConfig(fused_objective=fused)).total.backward()


def timed(fused: bool, n: int = 15) -> float:
    step(fused)
    begin = time.perf_counter()
    for _ in range(n):
        step(fused)
    return (time.perf_counter() - begin) / n * 1000


samples = {"taped": [], "fused": []}
for _ in range(5):
    samples["taped"].append(timed(False))
    samples["fused"].append(timed(True))
print({k: [round(v) for v in vs] for k, vs in samples.items()},
      "medians (ms):", {k: round(statistics.median(vs), 1) for k, vs in samples.items()})
if "--profile" in sys.argv:
    from torch.profiler import profile
    for fused in (False, True):
        with profile(record_shapes=True) as prof:
            for _ in range(5):
                step(fused)
        print("fused" if fused else "taped", "(5 steps)")
        print(prof.key_averages(group_by_input_shape=True).table(sort_by="self_cpu_time_total", row_limit=14))
if "--operators" in sys.argv:
    a, b = torch.rand(B, C, H, W), torch.rand(B, C, H, W)

    def per_call(fn, n: int = 50) -> float:
        fn()
        begin = time.perf_counter()
        for _ in range(n):
            fn()
        return round((time.perf_counter() - begin) / n * 1000, 2)
    for _ in range(2):
        print("ms per call:", {"mul": per_call(lambda: a * b), "exp": per_call(lambda: a.exp()),
                               "zeros_like": per_call(lambda: torch.zeros_like(a))})
