"""The IAS step's parts, and the element-wise choices the selection could use, on one instance of model-like
outputs (`speed.instance_arrays`: 2 images at 768x1536 unless given), 1 torch thread; mean of N calls after 5.

    python benchmarks/scripts/ias_select_parts.py [HEIGHT WIDTH] [N=30]
"""
import sys
import time

import numpy as np
import torch

from hiast import pseudo, speed

torch.set_num_threads(1)
height, width = (int(sys.argv[1]), int(sys.argv[2])) if len(sys.argv) > 2 else (768, 1536)
calls = int(sys.argv[3]) if len(sys.argv) > 3 else 30
conf, pred = speed.instance_arrays(height, width, 2, seed=0)
conf_t, pred_t = torch.from_numpy(conf), torch.from_numpy(pred)
thresholds = torch.full((19,), 0.9, dtype=torch.float64)
keep = conf_t >= 0.9
keep_np = keep.numpy()


def timed(name: str, fn) -> None:
    for _ in range(5):
        fn()
    begin = time.perf_counter()
    for _ in range(calls):
        fn()
    print(f"{name}: {(time.perf_counter() - begin) / calls * 1e3:.2f} ms", flush=True)


assert torch.equal(pred_t | (keep.view(torch.uint8) - 1), torch.where(keep, pred_t, 255))
print(f"one instance of 2 images at {height}x{width}, {keep.float().mean():.1%} of the pixels over 0.9")
timed("IASState.step (the whole step)", lambda: pseudo.IASState(19, 0.5, 0.9, 8.0).step(conf_t, pred_t))
timed("ias_update (histogram selection)", lambda: pseudo.ias_update(thresholds, conf_t, pred_t, 0.5, 0.9, 8.0))
timed("select", lambda: pseudo.select(conf_t, pred_t, thresholds))
timed("torch.where(keep, pred, 255)", lambda: torch.where(keep, pred_t, 255))
timed("np.where(keep, pred, 255)", lambda: np.where(keep_np, pred, np.uint8(255)))
timed("pred | (keep - 1) (uint8)", lambda: pred_t | (keep.view(torch.uint8) - 1))
timed("pred + pred (uint8, for scale)", lambda: pred_t + pred_t)

# the histogram key (pseudo._ClassHistogram): the plain expression against the in-place one that hiast uses
values, keys = pseudo._prepare(conf_t, pred_t, 19)
int_type, shift, top = pseudo._CODE[values.dtype]
bins = top + 1


def key_plain():
    return keys.to(int_type) * bins + (top - ((1 - values).view(int_type) >> shift))


def key_in_place():
    shifted = (1 - values).view(int_type)
    shifted >>= shift
    return keys.to(int_type, copy=True).mul_(bins).add_(top).sub_(shifted)


assert torch.equal(key_plain(), key_in_place())
assert torch.equal(key_in_place(), pseudo._ClassHistogram(values, keys, 19).key)   # the twin is hiast's own
timed("histogram key, plain expression", key_plain)
timed("histogram key, in place", key_in_place)
