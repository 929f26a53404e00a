"""Dataset readers for GTA5, Cityscapes, SYNTHIA RAND_CITYSCAPES and Oxford RobotCar in their official layouts.

A reader scans a root into a manifest: a pandas table (one row per image; columns in MANIFEST_COLUMNS),
written as CSV, that later stages read. Scanning checks everything up front and raises one
`DatasetError` listing every bad file: missing or empty root, images without labels and labels without
images, unreadable or truncated files, label values outside the dataset's id space. A label whose size
differs from its image is kept (it is resized with nearest neighbour when loaded, as the original code
does) and counted in the log. Nothing is skipped silently.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import pandas as pd
import torch
from PIL import Image

from hiast import classes
from hiast.imageio import ImageReadError, atomic_path, read_png_unchanged, read_rgb

log = logging.getLogger(__name__)

DATASETS = ("gta5", "synthia", "cityscapes", "oxford")
LABEL_SPACES = ("cityscapes19", "oxford9")
MANIFEST_COLUMNS = ["image_id", "image", "label", "split", "height", "width", "label_height",
                    "label_width", "dataset"]
# The roots of the original project's layout, relative to the data folder.
DEFAULT_ROOTS = {
    "gta5": "GTA5",
    "synthia": "SYNTHIA_RAND_CITYSCAPES",
    "cityscapes": "cityscapes",
    "oxford": "oxford_robotcar",
}
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
MAX_LISTED = 20  # files named in one error message before "... and N more"


class DatasetError(ValueError):
    """A dataset root that cannot be used as it is; the message names every offending file."""


def _format_problems(title: str, problems: list[str]) -> str:
    lines = [title] + [f"  - {p}" for p in problems[:MAX_LISTED]]
    if len(problems) > MAX_LISTED:
        lines.append(f"  ... and {len(problems) - MAX_LISTED} more")
    return "\n".join(lines)


# --- label decoding --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class LabelFormat:
    """How one kind of label file is decoded: raw id space and the map to train ids."""
    name: str
    num_raw_ids: int                 # raw values 0..num_raw_ids-1 are in the id space
    to_trainid: dict[int, int]       # raw id -> Cityscapes train id (or Oxford 9-class id)
    extra_valid: tuple[int, ...] = ()  # raw values outside 0..num_raw_ids-1 that are still valid
    space: str = "cityscapes19"      # the label space of the mapped ids


LABEL_FORMATS = {
    # GTA5 palettised PNG and Cityscapes *_labelIds.png: Cityscapes label ids 0..33.
    "labelids": LabelFormat("Cityscapes label ids", classes.CITYSCAPES_NUM_LABEL_IDS,
                            classes.CITYSCAPES_LABELID_TO_TRAINID),
    # Cityscapes *_labelTrainIds.png: train ids 0..18 and 255.
    "trainids": LabelFormat("Cityscapes train ids", 19, {i: i for i in range(19)},
                            extra_valid=(classes.IGNORE,)),
    # SYNTHIA RAND_CITYSCAPES GT/LABELS: 16-bit, class id 0..22 in channel 0.
    "synthia": LabelFormat("SYNTHIA class ids", classes.SYNTHIA_NUM_IDS, classes.SYNTHIA_ID_TO_TRAINID),
    # Oxford RobotCar anno/: raw ids in channel 0, mapped to the 9 classes.
    "oxford": LabelFormat("Oxford RobotCar raw ids", classes.OXFORD_NUM_RAW_IDS,
                          classes.OXFORD_RAWID_TO_TRAINID, extra_valid=(classes.IGNORE,), space="oxford9"),
}


def label_format_of(dataset: str, label_path: str) -> str:
    if dataset == "cityscapes":
        return "trainids" if label_path.endswith("_labelTrainIds.png") else "labelids"
    return {"gta5": "labelids", "synthia": "synthia", "oxford": "oxford"}[dataset]


def invalid_values(raw: np.ndarray, fmt: LabelFormat) -> np.ndarray:
    """The distinct raw values outside the format's id space (empty when the label is valid)."""
    counts = np.bincount(raw.reshape(-1).astype(np.int64))
    present = np.flatnonzero(counts)
    ok = (present < fmt.num_raw_ids) | np.isin(present, fmt.extra_valid)
    return present[~ok]


def decode_label(raw: np.ndarray, fmt_key: str, label_space: str = "cityscapes19",
                 path: str = "<array>") -> np.ndarray:
    """Raw label ids [H, W] -> train ids uint8 in `label_space` (255 = ignore); unknown ids raise."""
    fmt = LABEL_FORMATS[fmt_key]
    bad = invalid_values(raw, fmt)
    if bad.size:
        raise DatasetError(f"{path}: label values {bad.tolist()[:10]} are outside the {fmt.name} id space "
                           f"(expected 0..{fmt.num_raw_ids - 1}"
                           + (f" or {list(fmt.extra_valid)}" if fmt.extra_valid else "") + ")")
    train = classes.map_labels(raw, fmt.to_trainid)
    if fmt.space == label_space:
        return train
    if fmt.space == "cityscapes19" and label_space == "oxford9":
        return classes.map_labels(train, classes.CITYSCAPES_TRAINID_TO_OXFORD)
    raise DatasetError(f"{path}: {fmt.name} labels cannot be mapped to the {label_space} label space")


def read_label(path: str, dataset: str, label_space: str = "cityscapes19") -> np.ndarray:
    """Read one label file of `dataset` and return train ids [H, W] uint8 in `label_space`."""
    raw = read_png_unchanged(path)[..., 0]
    return decode_label(raw, label_format_of(dataset, path), label_space, path)


def resize_nearest(labels: np.ndarray, height: int, width: int) -> np.ndarray:
    if labels.shape == (height, width):
        return labels
    return np.array(Image.fromarray(labels).resize((width, height), Image.NEAREST))


# --- scanning --------------------------------------------------------------------------------------------

def _require_dir(path: Path, what: str) -> None:
    if not path.is_dir():
        raise DatasetError(f"{path}: {what} folder does not exist")


def _list_files(folder: Path, suffixes: Iterable[str] = IMAGE_SUFFIXES, recursive: bool = False) -> list[Path]:
    pattern = "**/*" if recursive else "*"
    return sorted(p for p in folder.glob(pattern)
                  if p.is_file() and p.suffix.lower() in suffixes and not p.name.startswith("."))


def _pair(images: dict[str, Path], labels: dict[str, Path], root: Path, split: str) -> list[tuple[str, Path, Path]]:
    """Pair images and labels by key; orphans on either side are errors that name the files."""
    problems = [f"image without label: {images[k]}" for k in sorted(images.keys() - labels.keys())]
    problems += [f"label without image: {labels[k]}" for k in sorted(labels.keys() - images.keys())]
    if problems:
        raise DatasetError(_format_problems(f"{root} ({split}): images and labels do not match", problems))
    return [(k, images[k], labels[k]) for k in sorted(images)]


def _rows(pairs, split: str, dataset: str) -> list[dict]:
    return [{"image_id": key, "image": str(img), "label": "" if lbl is None else str(lbl), "split": split,
             "dataset": dataset} for key, img, lbl in pairs]


def scan_gta5(root: Path, splits: Iterable[str] = ("train",)) -> list[dict]:
    """GTA5: images/NNNNN.png and labels/NNNNN.png (palettised, indices = Cityscapes label ids)."""
    _require_dir(root / "images", "GTA5 images")
    _require_dir(root / "labels", "GTA5 labels")
    images = {p.stem: p for p in _list_files(root / "images")}
    labels = {p.stem: p for p in _list_files(root / "labels", (".png",))}
    return _rows(_pair(images, labels, root, "train"), "train", "gta5")


def scan_synthia(root: Path, splits: Iterable[str] = ("train",)) -> list[dict]:
    """SYNTHIA RAND_CITYSCAPES: RAND_CITYSCAPES/RGB/*.png and RAND_CITYSCAPES/GT/LABELS/*.png (16-bit)."""
    base = root / "RAND_CITYSCAPES" if (root / "RAND_CITYSCAPES").is_dir() else root
    _require_dir(base / "RGB", "SYNTHIA RGB")
    _require_dir(base / "GT" / "LABELS", "SYNTHIA GT/LABELS")
    images = {p.stem: p for p in _list_files(base / "RGB")}
    labels = {p.stem: p for p in _list_files(base / "GT" / "LABELS", (".png",))}
    return _rows(_pair(images, labels, base, "train"), "train", "synthia")


_CS_IMAGE = re.compile(r"^(.+)_leftImg8bit\.png$")
_CS_LABEL = re.compile(r"^(.+)_gtFine_label(Ids|TrainIds)\.png$")


def scan_cityscapes(root: Path, splits: Iterable[str] = ("train", "val")) -> list[dict]:
    """Cityscapes: leftImg8bit/<split>/<city>/*_leftImg8bit.png with gtFine/<split>/<city>/*_gtFine_label*.png.

    `*_gtFine_labelTrainIds.png` is used where present, else `*_gtFine_labelIds.png` (as downloaded).
    """
    rows = []
    for split in splits:
        image_dir, label_dir = root / "leftImg8bit" / split, root / "gtFine" / split
        _require_dir(image_dir, f"Cityscapes leftImg8bit/{split}")
        _require_dir(label_dir, f"Cityscapes gtFine/{split}")
        images = {}
        for p in _list_files(image_dir, (".png",), recursive=True):
            m = _CS_IMAGE.match(p.name)
            if m:
                images[m.group(1)] = p
        labels: dict[str, Path] = {}
        for p in _list_files(label_dir, (".png",), recursive=True):
            m = _CS_LABEL.match(p.name)
            if m and (m.group(2) == "TrainIds" or m.group(1) not in labels):
                labels[m.group(1)] = p
        rows += _rows(_pair(images, labels, root, split), split, "cityscapes")
    return rows


def scan_oxford(root: Path, splits: Iterable[str] = ("train", "val")) -> list[dict]:
    """Oxford RobotCar (adapt-seg split): train/*.png unlabelled, val/*.png labelled by anno/<same name>.png."""
    rows = []
    for split in splits:
        _require_dir(root / split, f"Oxford RobotCar {split}")
        images = {p.stem: p for p in _list_files(root / split)}
        if split == "train":
            rows += _rows([(k, images[k], None) for k in sorted(images)], split, "oxford")
        else:
            _require_dir(root / "anno", "Oxford RobotCar anno")
            labels = {p.stem: p for p in _list_files(root / "anno", (".png",))}
            rows += _rows(_pair(images, labels, root, split), split, "oxford")
    return rows


SCANNERS: dict[str, Callable[..., list[dict]]] = {
    "gta5": scan_gta5, "synthia": scan_synthia, "cityscapes": scan_cityscapes, "oxford": scan_oxford,
}


# --- verification ----------------------------------------------------------------------------------------

def _verify_row(row: dict) -> tuple[dict, str | None]:
    """Decode the image and the label fully; returns the sizes and a problem string (or None)."""
    out = dict(row)
    try:
        image = read_rgb(row["image"])
        out["height"], out["width"] = image.shape[:2]
    except ImageReadError as err:
        return out, str(err)
    if not row["label"]:
        out["label_height"], out["label_width"] = out["height"], out["width"]
        return out, None
    try:
        raw = read_png_unchanged(row["label"])[..., 0]
    except ImageReadError as err:
        return out, str(err)
    out["label_height"], out["label_width"] = raw.shape
    fmt = LABEL_FORMATS[label_format_of(row["dataset"], row["label"])]
    bad = invalid_values(raw, fmt)
    if bad.size:
        return out, (f"{row['label']}: label values {bad.tolist()[:10]} outside the {fmt.name} id space "
                     f"(expected 0..{fmt.num_raw_ids - 1}" + (f" or {list(fmt.extra_valid)}" if fmt.extra_valid
                                                              else "") + ")")
    return out, None


def build_manifest(dataset: str, root: str | os.PathLike, splits: Iterable[str] | None = None,
                   workers: int = 2, progress: bool = False) -> pd.DataFrame:
    """Scan and verify a dataset root; return the manifest (raises DatasetError naming every bad file)."""
    if dataset not in SCANNERS:
        raise DatasetError(f"unknown dataset {dataset!r}; expected one of {list(SCANNERS)}")
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: {dataset} root does not exist")
    if not any(root.iterdir()):
        raise DatasetError(f"{root}: {dataset} root is empty")
    scanner = SCANNERS[dataset]
    rows = scanner(root, tuple(splits)) if splits is not None else scanner(root)
    by_split = pd.Series([r["split"] for r in rows], dtype=object).value_counts().to_dict() if rows else {}
    wanted = tuple(splits) if splits is not None else tuple(by_split) or ("train",)
    empty = [s for s in wanted if not by_split.get(s)]
    if empty:
        raise DatasetError(f"{root}: no {dataset} images found for split(s) {empty}")
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        results = pool.map(_verify_row, rows)
        if progress:
            from hiast.engine import progress as progress_bar
            results = progress_bar(results, f"verify {dataset}", total=len(rows))
        results = list(results)
    problems = [p for _, p in results if p]
    if problems:
        raise DatasetError(_format_problems(f"{root}: {len(problems)} bad {dataset} file(s)", problems))
    table = pd.DataFrame([r for r, _ in results], columns=MANIFEST_COLUMNS)
    mismatched = table[(table.label != "") & ((table.height != table.label_height)
                                             | (table.width != table.label_width))]
    if len(mismatched):
        log.warning("%s: %d label(s) differ in size from their image and will be resized with nearest "
                    "neighbour, e.g. %s", root, len(mismatched), mismatched.label.iloc[0])
    log.info("%s: %d images (%s)", root, len(table), ", ".join(f"{k}: {v}" for k, v in by_split.items()))
    return table


def size_mismatches(manifest: pd.DataFrame) -> int:
    labelled = manifest[manifest.label != ""]
    return int(((labelled.height != labelled.label_height) | (labelled.width != labelled.label_width)).sum())


def write_manifest(manifest: pd.DataFrame, path: str | os.PathLike) -> None:
    with atomic_path(path) as tmp:
        manifest.to_csv(tmp, index=False)


def read_manifest(path: str | os.PathLike) -> pd.DataFrame:
    try:
        table = pd.read_csv(path, dtype={"image_id": str, "image": str, "label": str, "split": str,
                                         "dataset": str}, keep_default_na=False)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise DatasetError(f"{path}: not a readable manifest ({err})") from err
    missing = [c for c in MANIFEST_COLUMNS if c not in table.columns]
    if missing:
        raise DatasetError(f"{path}: manifest lacks column(s) {missing}; expected {MANIFEST_COLUMNS}")
    return table


def manifest_fingerprint(manifest: pd.DataFrame) -> str:
    """A short hash of the manifest's ordered image ids and files: what a pseudo-label file was made for."""
    digest = hashlib.sha256()
    for image_id, image in zip(manifest.image_id, manifest.image):
        digest.update(f"{image_id}\t{Path(image).name}\n".encode())
    return digest.hexdigest()[:16]


# --- loading ---------------------------------------------------------------------------------------------

class SegmentationDataset(torch.utils.data.Dataset):
    """Images (and labels, where the manifest has them) of one manifest split, as tensors.

    Each item is a dict: `image` uint8 [3, H, W], `label` uint8 [H, W] (all 255 when unlabelled; train ids
    in `label_space`), `index`, `image_id`. `transform(image, label)` (tv_tensors) is applied if given.
    """

    def __init__(self, manifest: pd.DataFrame, label_space: str = "cityscapes19", transform=None,
                 size: tuple[int, int] | None = None):
        if label_space not in LABEL_SPACES:
            raise DatasetError(f"unknown label space {label_space!r}; expected one of {LABEL_SPACES}")
        self.manifest = manifest.reset_index(drop=True)
        self.label_space = label_space
        self.transform = transform
        self.size = size  # (H, W) every image is resized to first, if set (the scenario's base size)

    def __len__(self) -> int:
        return len(self.manifest)

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        row = self.manifest.iloc[index]
        image = read_rgb(row.image)
        height, width = image.shape[:2]
        if row.label:
            labels = resize_nearest(read_label(row.label, row.dataset, self.label_space), height, width)
        else:
            labels = np.full((height, width), classes.IGNORE, dtype=np.uint8)
        if self.size is not None and (height, width) != tuple(self.size):
            image = self._to_base_size(image)
            labels = resize_nearest(labels, *self.size)
        return image, labels

    def load_image(self, index: int) -> np.ndarray:
        """The image of `load` alone, for readers that must not touch (or pay for) the labels."""
        image = read_rgb(self.manifest.image.iloc[index])
        if self.size is not None and image.shape[:2] != tuple(self.size):
            image = self._to_base_size(image)
        return image

    def _to_base_size(self, image: np.ndarray) -> np.ndarray:
        return np.array(Image.fromarray(image).resize(self.size[::-1], Image.BILINEAR))

    def __getitem__(self, index: int) -> dict:
        from torchvision import tv_tensors
        image, labels = self.load(index)
        image_t = tv_tensors.Image(torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1))
        label_t = tv_tensors.Mask(torch.from_numpy(np.ascontiguousarray(labels)))
        if self.transform is not None:
            image_t, label_t = self.transform(image_t, label_t)
        return {"image": image_t, "label": label_t, "index": index,
                "image_id": self.manifest.image_id.iloc[index]}


class ImagesOnly(torch.utils.data.Dataset):
    """The images of a SegmentationDataset (no transform) as {"image": uint8 [3, H, W], "index"}: for the
    target-side stages, which never read (or pay for decoding) the target's labels."""

    def __init__(self, dataset: SegmentationDataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict:
        image = self.dataset.load_image(index)
        # no contiguous copy: a decoded image is an [H, W, 3] view of a [3, H, W] buffer, whose layout the
        # permute gives back (the batch is then stacked by plain copies, not by transposing ones)
        return {"image": torch.from_numpy(image).permute(2, 0, 1), "index": index}

