"""Classes, colour palettes, label-id maps and metric class subsets.

All values follow the reference (shared/reference/hiast-method.md §6): the 19 Cityscapes train ids, the
GTA5 / Cityscapes label-id map, the SYNTHIA RAND_CITYSCAPES map, the Oxford RobotCar 9-class map and the
Cityscapes -> 9-class merge used for Cityscapes -> Oxford RobotCar.
"""

from __future__ import annotations

import numpy as np

IGNORE = 255

# --- Cityscapes 19 train classes ------------------------------------------------------------------------
CITYSCAPES_CLASSES: tuple[str, ...] = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
    "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle",
    "bicycle",
)
# Official Cityscapes colours (cityscapesScripts labels.py), indexed by train id.
CITYSCAPES_PALETTE: np.ndarray = np.array([
    (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153), (153, 153, 153),
    (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152), (70, 130, 180), (220, 20, 60),
    (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100), (0, 80, 100), (0, 0, 230), (119, 11, 32),
], dtype=np.uint8)

# Cityscapes label id (the value in *_gtFine_labelIds.png and in GTA5 labels) -> train id.
CITYSCAPES_LABELID_TO_TRAINID: dict[int, int] = {
    7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11, 25: 12, 26: 13,
    27: 14, 28: 15, 31: 16, 32: 17, 33: 18,
}
# Label ids 0..33 exist in Cityscapes (labels.py); everything else is outside the id space.
CITYSCAPES_NUM_LABEL_IDS = 34
# Colours of all 34 Cityscapes label ids (the palette of GTA5's palettised label PNGs).
CITYSCAPES_LABELID_PALETTE: np.ndarray = np.array([
    (0, 0, 0), (0, 0, 0), (0, 0, 0), (0, 0, 0), (0, 0, 0), (111, 74, 0), (81, 0, 81), (128, 64, 128),
    (244, 35, 232), (250, 170, 160), (230, 150, 140), (70, 70, 70), (102, 102, 156), (190, 153, 153),
    (180, 165, 180), (150, 100, 100), (150, 120, 90), (153, 153, 153), (153, 153, 153), (250, 170, 30),
    (220, 220, 0), (107, 142, 35), (152, 251, 152), (70, 130, 180), (220, 20, 60), (255, 0, 0),
    (0, 0, 142), (0, 0, 70), (0, 60, 100), (0, 0, 90), (0, 0, 110), (0, 80, 100), (0, 0, 230),
    (119, 11, 32),
], dtype=np.uint8)

# --- SYNTHIA RAND_CITYSCAPES ------------------------------------------------------------------------------
SYNTHIA_ID_TO_TRAINID: dict[int, int] = {
    3: 0, 4: 1, 2: 2, 21: 3, 5: 4, 7: 5, 15: 6, 9: 7, 6: 8, 16: 9, 1: 10, 10: 11, 17: 12, 8: 13, 18: 14,
    19: 15, 20: 16, 12: 17, 11: 18,
}
SYNTHIA_NUM_IDS = 23  # 0 void .. 22 lanemarking
# Train ids absent from SYNTHIA's 16-class protocol: terrain, truck, train. Never "hard" (HPLA).
SYNTHIA_ABSENT_TRAINIDS: tuple[int, ...] = (9, 14, 16)

# --- Oxford RobotCar (9 classes) --------------------------------------------------------------------------
OXFORD_CLASSES: tuple[str, ...] = (
    "sky", "person", "two-wheel", "automobile", "sign", "light", "building", "sidewalk", "road",
)
OXFORD_RAWID_TO_TRAINID: dict[int, int] = {
    1: 0, 2: 1, 3: 2, 4: 3, 5: 4, 6: 5, 7: 6, 10: 7, 11: 8, 12: 8, 13: 8, 14: 8, 17: 8,
}
# The published annotation uses small raw ids (0..17 seen in the adapt-seg loaders); we accept 0..19 and
# treat 255 as void, anything else is outside the id space.
OXFORD_NUM_RAW_IDS = 20
# Cityscapes train id -> Oxford 9-class id (used when Cityscapes is the source of Cityscapes -> Oxford).
CITYSCAPES_TRAINID_TO_OXFORD: dict[int, int] = {
    0: 8, 1: 7, 2: 6, 3: IGNORE, 4: IGNORE, 5: IGNORE, 6: 5, 7: 4, 8: IGNORE, 9: IGNORE, 10: 0, 11: 1,
    12: 1, 13: 3, 14: 3, 15: 3, 16: IGNORE, 17: 2, 18: 2,
}
OXFORD_PALETTE: np.ndarray = CITYSCAPES_PALETTE[[10, 11, 18, 13, 7, 6, 2, 1, 0]]

# --- Metric subsets -------------------------------------------------------------------------------------
SYNTHIA_16 = tuple(c for c in range(19) if c not in SYNTHIA_ABSENT_TRAINIDS)
SYNTHIA_13 = tuple(c for c in SYNTHIA_16 if c not in (3, 4, 5))
METRIC_CLASSES: dict[str, tuple[int, ...]] = {
    "mIoU-19": tuple(range(19)),
    "mIoU-16": SYNTHIA_16,
    "mIoU-13": SYNTHIA_13,
    "mIoU-9": tuple(range(9)),
}
# Label spaces: which class names a model trained in that space predicts, and its palette.
LABEL_SPACES: dict[str, tuple[tuple[str, ...], np.ndarray]] = {
    "cityscapes19": (CITYSCAPES_CLASSES, CITYSCAPES_PALETTE),
    "oxford9": (OXFORD_CLASSES, OXFORD_PALETTE),
}


def lookup_table(mapping: dict[int, int], size: int = 256, default: int = IGNORE) -> np.ndarray:
    """A uint8 look-up table of `size` entries: lut[raw] = mapping.get(raw, default)."""
    lut = np.full(size, default, dtype=np.uint8)
    for raw, train in mapping.items():
        lut[raw] = train
    return lut


def map_labels(raw: np.ndarray, mapping: dict[int, int]) -> np.ndarray:
    """Map raw label ids to train ids (uint8, 255 = ignore) through a look-up table."""
    size = max(256, int(raw.max()) + 1) if raw.size else 256
    return lookup_table(mapping, size)[raw]


def colorize(labels: np.ndarray, palette: np.ndarray = CITYSCAPES_PALETTE) -> np.ndarray:
    """Train-id mask [H, W] -> RGB image [H, W, 3]; ignore (255) is black."""
    full = np.zeros((256, 3), dtype=np.uint8)
    full[: len(palette)] = palette
    return full[labels]
