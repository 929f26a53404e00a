"""What one IAS step (`pseudo.IASState.step`) asks of a device, counted on a CPU.

On a GPU the step's pixels are few for the card (2.4 M at 768x1536), so its time is set by how many operators
it launches and how often the host waits for the device, not by its arithmetic. Both are counted here, for one
step after a warm one, by intercepting what torch dispatches:
- aten operators (each one a kernel launch on a GPU, but for views);
- the ones that make the host wait for a CUDA device: nonzero (its output size), bincount (CUDA's reads the
  input's max), `_local_scalar_dense` (item, float(), int(), bool());
- host <-> device copies the step asks for (`Tensor.cpu`, `.tolist`, `.item`, and `.to` / `as_tensor` with a
  device): on a CPU they are free, on a GPU each is a synchronising copy.
Then the step's wall time on this CPU at a tiny size (where only the per-operator cost is left) and at the
embedded benchmark's and the real inference size, median of 30 / 30 / 5 runs, 1 thread.

    python benchmarks/scripts/ias_device_work.py [cpu|gpu-path]

`gpu-path` runs the code path a CUDA device takes (`pseudo._sync_free` forced true) on this CPU; the numbers
it prints are those a GPU would dispatch. Without it, the CPU path.
"""

import collections
import statistics
import sys
import time

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

from hiast import pseudo
from hiast.speed import instance_arrays

WAITS = {"aten.nonzero.default", "aten.bincount.default", "aten._local_scalar_dense.default"}
COPY_METHODS = {"cpu", "tolist", "item"}   # device -> host (.numpy() follows a .cpu())


class Dispatched(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops[str(func)] += 1
        return func(*args, **(kwargs or {}))


class Copies(TorchFunctionMode):
    def __init__(self):
        super().__init__()
        self.copies = collections.Counter()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", str(func))
        if name in COPY_METHODS:
            self.copies[name] += 1
        elif name in ("to", "as_tensor") and ("device" in kwargs or any(isinstance(a, (torch.device, str))
                                                                       for a in args[1:])):
            self.copies[f"{name}(device)"] += 1
        return func(*args, **kwargs)


def main(path: str) -> None:
    if path == "gpu-path":
        if not hasattr(pseudo, "_sync_free"):
            raise SystemExit("this hiast has no separate GPU path (pseudo._sync_free)")
        pseudo._sync_free = lambda tensor: True
    torch.set_num_threads(1)
    for height, width, repeats in ((8, 16, 30), (192, 384, 30), (768, 1536, 5)):
        conf, pred = (torch.from_numpy(a) for a in instance_arrays(height, width))
        state = pseudo.IASState(19, 0.5, 0.9, 8.0)
        state.step(conf, pred)
        if height == 192:
            with Copies() as copies, Dispatched() as dispatched:
                state.step(conf, pred)
            ops = dispatched.ops
            waits = sum(n for op, n in ops.items() if op in WAITS)
            print(f"{path}: one step at {height}x{width}: {sum(ops.values())} aten operators, {waits} that wait "
                  f"for the device ({ {op: n for op, n in ops.items() if op in WAITS} }), host/device copies "
                  f"{sum(copies.copies.values())} {dict(copies.copies)}")
        times = []
        for _ in range(repeats):
            begin = time.perf_counter()
            state.step(conf, pred)
            times.append(time.perf_counter() - begin)
        print(f"{path}: step at 2x{height}x{width}: {statistics.median(times) * 1e3:.3f} ms (median of {repeats})")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "cpu")
