"""Does the way the embedded benchmark's PNGs are encoded decide how fast they decode?

The first 60 Cityscapes-like train images of data/synthetic (written by the generator through Pillow), decoded
by torchvision.io as hiast does, against the same pixels re-encoded here with one PNG row filter for every row
(0 none, 1 sub, 2 up) at zlib levels 1 and 6. Best of 3 passes, ms per image, 1 thread; every re-encoding is
checked to decode to the same pixels. Run from a checkout with the default run's data/:

    python benchmarks/scripts/png_encodings.py
"""
import glob
import struct
import time
import zlib

import numpy as np
import torch
from torchvision.io import ImageReadMode, decode_image

from hiast import imageio

torch.set_num_threads(1)
files = sorted(glob.glob("data/synthetic/cityscapes/leftImg8bit/train/**/*.png", recursive=True))[:60]
if not files:
    raise SystemExit("no images under data/synthetic/cityscapes/leftImg8bit/train: run the default run first")


def chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def encode(image: np.ndarray, row_filter: int, level: int) -> bytes:
    height, width, _ = image.shape
    rows = image.reshape(height, width * 3).astype(np.int16)
    filtered = rows.copy()
    if row_filter == 1:
        filtered[:, 3:] = rows[:, 3:] - rows[:, :-3]
    elif row_filter == 2:
        filtered[1:] = rows[1:] - rows[:-1]
    data = np.concatenate([np.full((height, 1), row_filter, np.uint8), (filtered & 255).astype(np.uint8)], 1)
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(data.tobytes(), level))
            + chunk(b"IEND", b""))


def decode_ms(blobs) -> float:
    best = float("inf")
    for _ in range(3):
        begin = time.perf_counter()
        for blob in blobs:
            decode_image(blob, mode=ImageReadMode.RGB)
        best = min(best, time.perf_counter() - begin)
    return best / len(blobs) * 1e3


images = [imageio.read_rgb(path) for path in files]
original = [imageio._read_bytes(path) for path in files]
print(f"as written: {decode_ms(original):.2f} ms, {np.mean([len(b) for b in original]) / 1e3:.0f} kB "
      f"(raw {images[0].nbytes / 1e3:.0f} kB)")
for row_filter in (0, 1, 2):
    for level in (1, 6):
        blobs = [torch.frombuffer(bytearray(encode(image, row_filter, level)), dtype=torch.uint8) for image in images]
        assert all(np.array_equal(decode_image(b, mode=ImageReadMode.RGB).permute(1, 2, 0).numpy(), image)
                   for b, image in zip(blobs, images))
        print(f"filter {row_filter}, zlib level {level}: {decode_ms(blobs):.2f} ms, "
              f"{np.mean([len(b) for b in blobs]) / 1e3:.0f} kB")
