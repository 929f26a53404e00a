"""PNG decoders on the embedded benchmark's Cityscapes-like train images (256x512 RGB): milliseconds per image
on one thread, and the speed-up of two threads decoding side by side (whether the decoder lets go of the GIL,
which the labeller's forward streams need). torchvision.io (what hiast uses), Pillow, and pyspng (libspng)
where it is installed (`pip install pyspng`; not a hiast dependency). Run from a checkout with data/:

    python benchmarks/scripts/png_decoders.py
"""
import glob
import io
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision.io import ImageReadMode, decode_image

torch.set_num_threads(1)
files = sorted(glob.glob("data/synthetic/cityscapes/leftImg8bit/train/*/*.png"))[:400]
if not files:
    raise SystemExit("no data/synthetic/cityscapes/leftImg8bit/train/*/*.png: generate the benchmark first")
encoded = [Path(f).read_bytes() for f in files]
tensors = [torch.frombuffer(bytearray(data), dtype=torch.uint8) for data in encoded]
decoders = {
    "torchvision.io.decode_image": (tensors, lambda t: decode_image(t, mode=ImageReadMode.RGB).permute(1, 2, 0).numpy()),
    "Pillow": (encoded, lambda d: np.asarray(Image.open(io.BytesIO(d)).convert("RGB"))),
}
try:
    import pyspng
    decoders["pyspng"] = (encoded, lambda d: pyspng.load(d, "RGB"))
except ImportError:
    print("pyspng not installed: left out")
reference = [decoders["torchvision.io.decode_image"][1](t) for t in tensors]
for name, (inputs, decode) in decoders.items():
    assert all(np.array_equal(decode(x), r) for x, r in zip(inputs[:20], reference[:20])), name
print(f"{len(files)} images, mean file {np.mean([len(d) for d in encoded]) / 1e3:.0f} kB; the same pixels from each")
for repeat in range(2):
    for name, (inputs, decode) in decoders.items():
        begin = time.perf_counter()
        for x in inputs:
            decode(x)
        one = time.perf_counter() - begin
        with ThreadPoolExecutor(2) as pool:
            begin = time.perf_counter()
            list(pool.map(decode, inputs))
            two = time.perf_counter() - begin
        print(f"{name}: {one / len(inputs) * 1e3:.2f} ms an image on one thread; two threads side by side "
              f"{one / two:.2f}x one", flush=True)
