"""Reading and writing images and label maps in the real datasets' on-disk formats.

Decoding goes through torchvision.io (libpng / libjpeg): it reads 16-bit PNGs (SYNTHIA labels) exactly and
returns the palette indices of palettised PNGs (GTA5 labels). Pillow is used only to write palettised PNGs;
pypng writes the 16-bit three-channel PNGs that neither Pillow nor torchvision can write.

Every reader raises `ImageReadError` naming the file when it is missing, unreadable or truncated.
Every writer writes to a temporary name in the same folder, then renames, so that a killed writer never
leaves a half-written file under the final name.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision.io import ImageReadMode, decode_image, decode_png

from hiast.classes import CITYSCAPES_LABELID_PALETTE

# torchvision 0.29 announces that its decoders move to TorchCodec; they still work and are exact, and
# the pinned version keeps them, so the notice would only repeat once per decoded file.
warnings.filterwarnings("ignore", message="The image decoding and encoding capabilities of TorchVision",
                        category=DeprecationWarning)


class ImageReadError(RuntimeError):
    """An image or label file that cannot be decoded (missing, corrupt or truncated)."""


def _read_bytes(path: str | os.PathLike) -> torch.Tensor:
    try:
        data = Path(path).read_bytes()
    except OSError as err:
        raise ImageReadError(f"{path}: cannot read file ({err.strerror or err})") from err
    if not data:
        raise ImageReadError(f"{path}: file is empty")
    return torch.frombuffer(bytearray(data), dtype=torch.uint8)


def read_rgb(path: str | os.PathLike) -> np.ndarray:
    """An RGB image as uint8 [H, W, 3] (PNG or JPEG)."""
    data = _read_bytes(path)
    try:
        image = decode_image(data, mode=ImageReadMode.RGB)
    except (RuntimeError, ValueError) as err:
        raise ImageReadError(f"{path}: not a readable image, corrupt or truncated ({err})") from err
    return image.permute(1, 2, 0).numpy()


def read_png_unchanged(path: str | os.PathLike) -> np.ndarray:
    """A PNG exactly as stored: [H, W, C] uint8 or uint16; palettised PNGs give their indices (C = 1)."""
    data = _read_bytes(path)
    if bytes(data[:8].tolist()) != b"\x89PNG\r\n\x1a\n":
        raise ImageReadError(f"{path}: not a PNG file (label maps must be PNG)")
    try:
        array = decode_png(data, mode=ImageReadMode.UNCHANGED)
    except (RuntimeError, ValueError) as err:
        raise ImageReadError(f"{path}: corrupt or truncated PNG ({err})") from err
    if array.dtype == torch.uint16:  # numpy has no view of torch.uint16 before a cast
        return array.permute(1, 2, 0).to(torch.int32).numpy().astype(np.uint16)
    return array.permute(1, 2, 0).numpy()


def read_label_channel0(path: str | os.PathLike) -> np.ndarray:
    """Channel 0 of a label PNG (class ids), [H, W], as stored (uint8 or uint16)."""
    return read_png_unchanged(path)[..., 0]


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """(height, width) from the file header, without decoding the pixels."""
    try:
        with Image.open(path) as image:
            width, height = image.size
    except (OSError, SyntaxError, ValueError) as err:
        raise ImageReadError(f"{path}: not a readable image ({err})") from err
    return height, width


# --- writers ------------------------------------------------------------------------------------------------

def atomic_path(path: str | os.PathLike):
    """Context manager yielding a temporary path next to `path`; renamed onto `path` on success."""
    return _AtomicPath(Path(path))


class _AtomicPath:
    def __init__(self, path: Path):
        self.path = path

    def __enter__(self) -> Path:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
        os.close(fd)
        self.tmp = Path(tmp)
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            os.replace(self.tmp, self.path)
        else:
            self.tmp.unlink(missing_ok=True)


def _save_pil(image: Image.Image, path: str | os.PathLike, **kwargs) -> None:
    fmt = "JPEG" if Path(path).suffix.lower() in (".jpg", ".jpeg") else "PNG"
    with atomic_path(path) as tmp:
        image.save(tmp, format=fmt, **kwargs)


def write_rgb(path: str | os.PathLike, image: np.ndarray) -> None:
    """uint8 [H, W, 3] -> RGB PNG (or JPEG by suffix)."""
    _save_pil(Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8), mode="RGB"), path)


def write_gray(path: str | os.PathLike, labels: np.ndarray) -> None:
    """uint8 [H, W] -> 8-bit greyscale PNG (Cityscapes *_labelIds.png / *_labelTrainIds.png)."""
    _save_pil(Image.fromarray(np.ascontiguousarray(labels, dtype=np.uint8), mode="L"), path)


def write_palettised(path: str | os.PathLike, indices: np.ndarray,
                     palette: np.ndarray = CITYSCAPES_LABELID_PALETTE) -> None:
    """uint8 [H, W] indices -> palettised PNG (GTA5 labels: indices are Cityscapes label ids)."""
    image = Image.fromarray(np.ascontiguousarray(indices, dtype=np.uint8), mode="P")
    flat = np.zeros((256, 3), dtype=np.uint8)
    flat[: len(palette)] = palette
    image.putpalette(flat.reshape(-1).tolist())
    _save_pil(image, path)


def write_png16(path: str | os.PathLike, array: np.ndarray) -> None:
    """uint16 [H, W, 3] -> 16-bit RGB PNG (SYNTHIA GT/LABELS: class id in channel 0)."""
    height, width, channels = array.shape
    if channels != 3:
        raise ValueError(f"{path}: 16-bit label PNGs have 3 channels, got {channels}")
    import png  # here, not at the top: only the writers of SYNTHIA-style labels need pypng (a GPU node may lack it)
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        writer = png.Writer(width=width, height=height, bitdepth=16, greyscale=False)
        writer.write_array(handle, np.ascontiguousarray(array, dtype=np.uint16).reshape(-1))


def write_rgba(path: str | os.PathLike, array: np.ndarray) -> None:
    """uint8 [H, W, 4] -> RGBA PNG (Oxford RobotCar anno/: class id in channel 0)."""
    _save_pil(Image.fromarray(np.ascontiguousarray(array, dtype=np.uint8), mode="RGBA"), path)
