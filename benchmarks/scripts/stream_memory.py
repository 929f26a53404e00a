"""Peak resident memory one labeller forward adds (instance of 2 images, no_grad, + upsample, softmax, max): what
each of stages.forward_streams' streams holds.

    python benchmarks/scripts/stream_memory.py resnet101 768 1536 bf16   # or: resnet18 192 384 bf16
"""
import resource, sys, time, torch
from hiast.model import build_model
from hiast import engine
from hiast.allocator import keep_freed_memory
keep_freed_memory()
backbone, h, w, precision = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
model = build_model(backbone, 19, precision=precision, channels_last=precision == "bf16").eval()
x = torch.randint(0, 255, (2, 3, h, w), dtype=torch.uint8)
def rss(): return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
before = rss()
with torch.no_grad():
    t = time.perf_counter()
    probs = engine.upsample(model(engine.to_input(x, torch.device("cpu"))), (h, w)).softmax(1)
    conf, pred = probs.max(1)
print(f"{backbone} {h}x{w} {precision}: peak RSS {before:.0f} -> {rss():.0f} MiB (+{rss() - before:.0f}) in {time.perf_counter() - t:.1f} s")
