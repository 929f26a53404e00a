"""Peak resident memory that one labeller forward adds (`stages.infer` on an instance of 2 images): what each
of `stages.forward_streams`' streams holds. A fresh process per case:

    python benchmarks/scripts/stream_memory.py resnet101 768 1536 bf16   # or: resnet18 192 384 bf16
"""
import resource
import sys
import time

import torch

from hiast.allocator import keep_freed_memory
from hiast.model import build_model
from hiast.stages import infer

keep_freed_memory()                       # as the hiast command does
backbone, height, width, precision = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
model = build_model(backbone, 19, precision=precision, channels_last=precision == "bf16").eval()
images = torch.randint(0, 256, (2, 3, height, width), dtype=torch.uint8)


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


before = peak_rss_mib()
begin = time.perf_counter()
infer(model, None, None, (height, width), torch.device("cpu"), images)
seconds = time.perf_counter() - begin
after = peak_rss_mib()
print(f"{backbone} {height}x{width} {precision}: peak RSS {before:.0f} -> {after:.0f} MiB (+{after - before:.0f}) "
      f"in {seconds:.1f} s")
