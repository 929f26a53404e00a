"""HDF5 files passed between pipeline stages: pseudo labels (`pseudo_labels.h5`) and the hard-class
instance bank (`instance_bank.h5`).

Both layouts are contracts that outside checks rely on; the module docstrings of the writers below spell
them out. Both writers build the file under a temporary name in the destination folder
(`.<name>.<pid>.tmp`), write the `complete` attribute last, then `os.replace()` it onto the final name, so
that a killed or failed writer never leaves a file (or clobbers an older one) under the final name.

Both readers validate the whole layout up front and raise `H5FormatError` naming the file and what was
expected. They return small objects holding the metadata in memory and reading label maps / donor regions
lazily through an h5py handle that is opened on first use in the current process: the objects can be
pickled into DataLoader workers (the handle is not pickled) and a forked worker opens its own handle.

Compression: `labels` is chunked one image per chunk and compressed with gzip level 1 plus the shuffle
filter; the donor region buffers of the instance bank use the same filters.
"""

from __future__ import annotations

import hashlib
import numbers
import os
import zlib
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import h5py
import numpy as np

FORMAT_VERSION = 1
IGNORE_LABEL = 255
COMPRESSION = "gzip"
COMPRESSION_LEVEL = 1
REGION_CHUNK_PIXELS = 1 << 16
REGION_CACHE_BYTES = 256 << 20   # per process (each loader worker keeps its own)

PSEUDO_LABEL_REQUIRED_ATTRS = ("policy", "alpha", "beta", "gamma", "num_classes", "class_mean_conf",
                               "manifest_fingerprint", "format_version", "complete")
PSEUDO_LABEL_EXTRAS = ("pixel_counts", "threshold_trajectory", "instance_order")
BANK_REQUIRED_ATTRS = ("num_hard", "paste", "max_donors", "drop_smallest", "manifest_fingerprint",
                       "pseudo_label_fingerprint", "format_version", "complete", "height", "width")
_WRITER_OWNED_ATTRS = ("format_version", "complete")


class H5FormatError(ValueError):
    """An HDF5 file that is missing, unreadable, incomplete or not in the expected layout."""


# --- shared helpers --------------------------------------------------------------------------------------

def file_fingerprint(path: str | os.PathLike) -> str:
    """sha256 of the file's bytes, first 16 hex digits."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def _temp_path(path: Path) -> Path:
    return path.parent / f".{path.name}.{os.getpid()}.tmp"


def _fsync(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def _to_python(value: Any) -> Any:
    """An attribute value as plain Python (str, bool, int, float) or a numpy array."""
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, np.ndarray) and value.dtype.kind in "OSU":
        return [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in value.tolist()]
    return value


def _set_attr(obj: h5py.HLObject, key: str, value: Any, err=ValueError) -> None:
    if value is None:
        raise err(f"attribute {key!r} is None; HDF5 attributes cannot hold None")
    if isinstance(value, np.ndarray) and value.dtype.kind == "U":
        value = value.astype(object)
    try:
        obj.attrs[key] = value
    except (TypeError, ValueError) as exc:
        raise err(f"attribute {key!r}: cannot store {type(value).__name__} in HDF5 ({exc})") from exc


def _is_true(value: Any) -> bool:
    return isinstance(value, (bool, np.bool_, numbers.Integral)) and not isinstance(value, str) and value == 1


class _LazyH5:
    """Mixin: a read-only h5py handle on `self.path`, opened on first use in the current process.

    The handle is never pickled, and a handle inherited through fork is dropped and reopened.
    """

    path: Path
    _file: h5py.File | None
    _pid: int | None

    def _h5(self) -> h5py.File:
        if self._file is None or self._pid != os.getpid() or not self._file.id.valid:
            self._file = None
            try:
                handle = h5py.File(self.path, "r")
            except OSError as exc:
                raise H5FormatError(f"{self.path}: cannot reopen HDF5 file ({exc})") from exc
            if not _is_true(handle.attrs.get("complete", False)):
                handle.close()
                raise H5FormatError(f"{self.path}: file changed since it was validated and is no longer "
                                    f"complete")
            self._check_reopened(handle)
            self._file, self._pid = handle, os.getpid()
        return self._file

    def _check_reopened(self, handle: h5py.File) -> None:  # overridden
        pass

    def close(self) -> None:
        """Close this process's handle (it is reopened on the next read)."""
        if self._file is not None and self._pid == os.getpid():
            try:
                self._file.close()
            except Exception:  # noqa: BLE001 - closing at shutdown
                pass
        self._file, self._pid = None, None

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_file"], state["_pid"] = None, None
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001
            pass


class _Checker:
    """Validation helpers for one open file; every failure is an H5FormatError naming the file."""

    def __init__(self, path: Path, handle: h5py.File):
        self.path, self.f = path, handle

    def fail(self, message: str) -> H5FormatError:
        return H5FormatError(f"{self.path}: {message}")

    def dataset(self, name: str, dtype: str | None = None, ndim: int | None = None) -> h5py.Dataset:
        obj = self.f.get(name)
        if obj is None:
            raise self.fail(f"missing dataset {name!r}")
        if not isinstance(obj, h5py.Dataset):
            raise self.fail(f"{name!r} is a {type(obj).__name__}, expected a dataset")
        if dtype == "str":
            if h5py.check_string_dtype(obj.dtype) is None:
                raise self.fail(f"dataset {name!r} has dtype {obj.dtype}, expected variable-length strings")
        elif dtype is not None and obj.dtype != np.dtype(dtype):
            raise self.fail(f"dataset {name!r} has dtype {obj.dtype}, expected {dtype}")
        if ndim is not None and obj.ndim != ndim:
            raise self.fail(f"dataset {name!r} has shape {obj.shape}, expected {ndim} dimensions")
        return obj

    def attrs(self, obj: h5py.HLObject, required: Iterable[str], where: str = "") -> dict:
        missing = [k for k in required if k not in obj.attrs]
        if missing:
            raise self.fail(f"missing attribute(s) {missing}{where}")
        return {k: _to_python(v) for k, v in obj.attrs.items()}

    def common(self, attrs: dict) -> None:
        if not _is_true(attrs["complete"]):
            raise self.fail(f"attribute 'complete' is {attrs['complete']!r}: the writer did not finish; "
                            f"regenerate the file")
        if attrs["format_version"] != FORMAT_VERSION:
            raise self.fail(f"format_version is {attrs['format_version']!r}, expected {FORMAT_VERSION}")

    def int_attr(self, attrs: dict, key: str, minimum: int | None = None) -> int:
        value = attrs[key]
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise self.fail(f"attribute {key!r} is {value!r}, expected an integer")
        if minimum is not None and value < minimum:
            raise self.fail(f"attribute {key!r} is {value}, expected >= {minimum}")
        return int(value)

    def float_attr(self, attrs: dict, key: str) -> float:
        value = attrs[key]
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise self.fail(f"attribute {key!r} is {value!r}, expected a number")
        return float(value)

    def str_attr(self, attrs: dict, key: str) -> str:
        value = attrs[key]
        if not isinstance(value, str):
            raise self.fail(f"attribute {key!r} is {value!r}, expected a string")
        return value

    def fingerprint(self, attrs: dict, key: str, expected: str | None, what: str) -> None:
        if expected is not None and attrs[key] != expected:
            raise self.fail(f"made for {what} {attrs[key]}, this {what} is {expected}: regenerate it")


def _open_checked(path: str | os.PathLike) -> tuple[Path, h5py.File]:
    path = Path(path)
    if not path.exists():
        raise H5FormatError(f"{path}: file does not exist")
    try:
        handle = h5py.File(path, "r")
    except OSError as exc:
        raise H5FormatError(f"{path}: not a readable HDF5 file, corrupt or truncated ({exc})") from exc
    return path, handle


# --- pseudo labels ---------------------------------------------------------------------------------------

def write_label_chunk(dataset: h5py.Dataset, index: int, labels: np.ndarray) -> None:
    """`dataset[index] = labels` for a uint8 map [H, W], with the same result. Where `dataset` is uint8,
    chunked (1, H, W) and filtered by gzip alone (+ shuffle, a no-op on 1-byte values), the chunk is
    compressed here by zlib at the dataset's level and written as it is. zlib releases the GIL, where h5py's
    filter pipeline holds it and stalls the labeller's forward threads. Reading it back goes through the
    usual filters."""
    data = np.ascontiguousarray(labels, dtype=np.uint8)
    if dataset.dtype == np.uint8 and dataset.chunks == (1, *data.shape) and dataset.compression == "gzip" \
            and not dataset.fletcher32 and dataset.scaleoffset is None:
        dataset.id.write_direct_chunk((index,) + (0,) * data.ndim, zlib.compress(data, dataset.compression_opts))
    else:
        dataset[index] = data


class PseudoLabelWriter:
    """Writes `pseudo_labels.h5` one image at a time, in any index order.

    Layout: datasets `image_ids` [N] (UTF-8 strings), `labels` [N, H, W] uint8 (255 = no label; chunks
    (1, H, W), gzip 1 + shuffle), `thresholds` [N, C] float32; optional `pixel_counts` [N, C] int64,
    `threshold_trajectory` [K, C] float32, `instance_order` [K, S] int64 (-1 padded). Attributes `policy`,
    `alpha`, `beta`, `gamma`, `num_classes`, `class_mean_conf` [C], `manifest_fingerprint`,
    `format_version` (1), `complete` (written last), plus any extra attributes given.

        with PseudoLabelWriter(path, ids, H, W, C, attrs) as writer:
            writer.write(index, labels, thresholds, pixel_counts)
            writer.set_extra("threshold_trajectory", trajectory)
            writer.set_attrs(class_mean_conf=conf)

    On a clean exit every index must have been written exactly once (else ValueError naming the missing
    ones) and the required attributes set; the temporary file then replaces `path`. On any failure the
    temporary file is removed and an existing file at `path` is left untouched.
    """

    _REQUIRED_USER_ATTRS = ("policy", "alpha", "beta", "gamma", "class_mean_conf", "manifest_fingerprint")

    def __init__(self, path: str | os.PathLike, image_ids: Iterable[str], height: int, width: int,
                 num_classes: int, attrs: Mapping[str, Any] | None = None):
        self.path = Path(path)
        self.image_ids = [str(i) for i in image_ids]
        if len(set(self.image_ids)) != len(self.image_ids):
            seen, dups = set(), []
            for i in self.image_ids:
                (dups.append(i) if i in seen else seen.add(i))
            raise ValueError(f"{self.path}: duplicate image ids {dups[:5]}")
        for name, value in (("height", height), ("width", width), ("num_classes", num_classes)):
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
                raise ValueError(f"{self.path}: {name} must be a positive integer, got {value!r}")
        if num_classes > IGNORE_LABEL:
            raise ValueError(f"{self.path}: num_classes {num_classes} does not fit uint8 labels below 255")
        self.height, self.width, self.num_classes = int(height), int(width), int(num_classes)
        self._attrs = dict(attrs or {})
        for key in _WRITER_OWNED_ATTRS:
            if key in self._attrs:
                raise ValueError(f"{self.path}: attribute {key!r} is set by the writer")
        if "num_classes" in self._attrs and self._attrs.pop("num_classes") != self.num_classes:
            raise ValueError(f"{self.path}: attrs num_classes disagrees with num_classes={num_classes}")
        self.tmp = _temp_path(self.path)
        self._file: h5py.File | None = None
        n = len(self.image_ids)
        self._written = np.zeros(n, dtype=bool)
        self._counted = np.zeros(n, dtype=bool)
        # the small per-image rows are kept here and stored whole on commit: one h5py write of a [C] row
        # costs as much as compressing a label map (~0.2 ms), and the GIL is held meanwhile
        self._threshold_rows = np.full((n, self.num_classes), np.nan, dtype=np.float32)
        self._count_rows = np.full((n, self.num_classes), -1, dtype=np.int64)
        self._labels = None

    @property
    def num_images(self) -> int:
        return len(self.image_ids)

    # context manager
    def __enter__(self) -> "PseudoLabelWriter":
        self.open()
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is None:
            self.commit()
        else:
            self.abort()
        return False

    def open(self) -> None:
        """Create the temporary file (called by `with`)."""
        if self._file is not None:
            raise RuntimeError(f"{self.path}: writer already open")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        n, h, w, c = self.num_images, self.height, self.width, self.num_classes
        f = h5py.File(self.tmp, "w")
        self._file = f
        try:
            f.create_dataset("image_ids", data=np.array(self.image_ids, dtype=object),
                             dtype=h5py.string_dtype())
            self._labels = f.create_dataset("labels", shape=(n, h, w), dtype=np.uint8,
                                            chunks=(1, h, w) if n else None,
                                            compression=COMPRESSION if n else None,
                                            compression_opts=COMPRESSION_LEVEL if n else None,
                                            shuffle=bool(n), fillvalue=IGNORE_LABEL)
            f.create_dataset("thresholds", shape=(n, c), dtype=np.float32, fillvalue=np.nan)
            f.attrs["format_version"] = FORMAT_VERSION
            f.attrs["complete"] = False
            f.attrs["num_classes"] = c
            for key, value in self._attrs.items():
                self._set_one_attr(key, value)
        except BaseException:
            self.abort()
            raise

    def _require_open(self) -> h5py.File:
        if self._file is None:
            raise RuntimeError(f"{self.path}: writer is not open (use it as a context manager)")
        return self._file

    def _set_one_attr(self, key: str, value: Any) -> None:
        if key in _WRITER_OWNED_ATTRS:
            raise ValueError(f"{self.path}: attribute {key!r} is set by the writer")
        if key == "num_classes":
            if value != self.num_classes:
                raise ValueError(f"{self.path}: num_classes is fixed at {self.num_classes}, got {value!r}")
            return
        if key == "class_mean_conf":
            value = np.asarray(value, dtype=np.float64)
            if value.shape != (self.num_classes,):
                raise ValueError(f"{self.path}: class_mean_conf has shape {value.shape}, "
                                 f"expected ({self.num_classes},)")
        elif key in ("alpha", "beta", "gamma"):
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                raise ValueError(f"{self.path}: attribute {key!r} must be a number, got {value!r}")
            value = float(value)
        elif key in ("policy", "manifest_fingerprint") and not isinstance(value, str):
            raise ValueError(f"{self.path}: attribute {key!r} must be a string, got {value!r}")
        _set_attr(self._require_open(), key, value)

    def set_attrs(self, **attrs: Any) -> None:
        """Set or replace attributes (e.g. the final class_mean_conf)."""
        self._require_open()
        for key, value in attrs.items():
            self._set_one_attr(key, value)

    def write(self, index: int, labels, thresholds, pixel_counts=None) -> None:
        """Write image `index`'s label map [H, W] (train ids < C or 255), thresholds [C] and, optionally,
        its per-class pseudo-labelled pixel counts [C]."""
        f = self._require_open()
        n, c = self.num_images, self.num_classes
        if isinstance(index, bool) or not isinstance(index, numbers.Integral) or not 0 <= index < n:
            raise IndexError(f"{self.path}: index {index!r} out of range for {n} images")
        index = int(index)
        if self._written[index]:
            raise ValueError(f"{self.path}: image {index} ({self.image_ids[index]}) written twice")
        labels = np.asarray(labels)
        if labels.shape != (self.height, self.width):
            raise ValueError(f"{self.path}: labels of image {index} have shape {labels.shape}, "
                             f"expected ({self.height}, {self.width})")
        if labels.dtype.kind not in "ui":
            raise ValueError(f"{self.path}: labels of image {index} have dtype {labels.dtype}, "
                             f"expected integers")
        if labels.size:
            bad = (labels != IGNORE_LABEL) & ((labels < 0) | (labels >= c))
            if bad.any():
                raise ValueError(f"{self.path}: labels of image {index} hold value(s) "
                                 f"{np.unique(labels[bad])[:5].tolist()}: expected 0..{c - 1} or 255")
        thresholds = np.asarray(thresholds, dtype=np.float32)
        if thresholds.shape != (c,):
            raise ValueError(f"{self.path}: thresholds of image {index} have shape {thresholds.shape}, "
                             f"expected ({c},)")
        if pixel_counts is not None:
            counts = np.asarray(pixel_counts)
            if counts.shape != (c,) or counts.dtype.kind not in "ui" or (counts < 0).any():
                raise ValueError(f"{self.path}: pixel_counts of image {index} must be {c} non-negative "
                                 f"integers, got shape {counts.shape} dtype {counts.dtype}")
            if "pixel_counts" in f:       # per-image rows are stored only on commit: set_extra made it
                raise ValueError(f"{self.path}: pixel_counts were already set with set_extra")
            self._count_rows[index] = counts
            self._counted[index] = True
        write_label_chunk(self._labels, index, labels)
        self._threshold_rows[index] = thresholds
        self._written[index] = True

    def set_extra(self, name: str, array) -> None:
        """Store an optional dataset: `threshold_trajectory` [K, C] float32, `instance_order` [K, S] int64
        (-1 padded, each image at most once) or `pixel_counts` [N, C] int64 in one piece."""
        f = self._require_open()
        n, c = self.num_images, self.num_classes
        array = np.asarray(array)
        if name == "threshold_trajectory":
            if array.ndim != 2 or array.shape[1] != c or array.dtype.kind not in "fiu":
                raise ValueError(f"{self.path}: threshold_trajectory must be [K, {c}] numbers, "
                                 f"got shape {array.shape} dtype {array.dtype}")
            array = array.astype(np.float32)
        elif name == "instance_order":
            if array.ndim != 2 or array.dtype.kind not in "iu":
                raise ValueError(f"{self.path}: instance_order must be [K, S] integers, "
                                 f"got shape {array.shape} dtype {array.dtype}")
            array = array.astype(np.int64)
            _check_instance_order(array, n, lambda m: ValueError(f"{self.path}: {m}"))
        elif name == "pixel_counts":
            if array.shape != (n, c) or array.dtype.kind not in "iu" or (array < 0).any():
                raise ValueError(f"{self.path}: pixel_counts must be [{n}, {c}] non-negative integers, "
                                 f"got shape {array.shape} dtype {array.dtype}")
            if self._counted.any():
                raise ValueError(f"{self.path}: pixel_counts were already given per image to write()")
            array = array.astype(np.int64)
        else:
            raise ValueError(f"{self.path}: unknown extra dataset {name!r}; expected one of "
                             f"{list(PSEUDO_LABEL_EXTRAS)}")
        if name in f:
            del f[name]
        f.create_dataset(name, data=array)

    def commit(self) -> None:
        """Check completeness, mark complete, close and move onto the final path."""
        f = self._require_open()
        try:
            missing = np.flatnonzero(~self._written)
            if missing.size:
                shown = ", ".join(f"{i} ({self.image_ids[i]})" for i in missing[:10])
                more = f" and {missing.size - 10} more" if missing.size > 10 else ""
                raise ValueError(f"{self.path}: {missing.size} of {self.num_images} images never written: "
                                 f"indices {shown}{more}")
            if self._counted.any() and not self._counted.all():
                absent = np.flatnonzero(~self._counted)
                raise ValueError(f"{self.path}: pixel_counts given for some images but not for indices "
                                 f"{absent[:10].tolist()}")
            absent = [k for k in self._REQUIRED_USER_ATTRS if k not in f.attrs]
            if absent:
                raise ValueError(f"{self.path}: required attribute(s) {absent} never set")
            if "threshold_trajectory" in f and "instance_order" in f and \
                    f["threshold_trajectory"].shape[0] != f["instance_order"].shape[0]:
                raise ValueError(f"{self.path}: threshold_trajectory has {f['threshold_trajectory'].shape[0]} "
                                 f"rows, instance_order {f['instance_order'].shape[0]}")
            f["thresholds"][...] = self._threshold_rows
            if self._counted.any():
                f.create_dataset("pixel_counts", shape=self._count_rows.shape, dtype=np.int64, fillvalue=-1)
                f["pixel_counts"][...] = self._count_rows
            f.attrs["complete"] = True
            f.flush()
            f.close()
            self._file = None
            _fsync(self.tmp)
            os.replace(self.tmp, self.path)
        except BaseException:
            self.abort()
            raise

    def abort(self) -> None:
        """Close and remove the temporary file; the final path is not touched."""
        if self._file is not None:
            try:
                self._file.close()
            except Exception:  # noqa: BLE001 - already failing
                pass
            self._file = None
        self.tmp.unlink(missing_ok=True)


def _check_instance_order(order: np.ndarray, n: int, fail) -> None:
    if order.size == 0:
        return
    if ((order < -1) | (order >= n)).any():
        raise fail(f"instance_order holds values outside -1..{n - 1}")
    pad = order == -1
    # -1 only as trailing padding of each row
    if (pad[:, :-1] & ~pad[:, 1:]).any():
        raise fail("instance_order has -1 padding before image indices in a row")
    used = order[~pad]
    if np.unique(used).size != used.size:
        raise fail("instance_order lists an image more than once")


@dataclass(eq=False)
class PseudoLabels(_LazyH5):
    """A validated `pseudo_labels.h5`: metadata in memory, label maps read lazily."""

    path: Path
    image_ids: list[str]
    thresholds: np.ndarray            # [N, C] float32
    attrs: dict
    class_mean_conf: np.ndarray       # [C] float64
    height: int
    width: int
    num_classes: int
    pixel_counts: np.ndarray | None = None           # [N, C] int64
    threshold_trajectory: np.ndarray | None = None   # [K, C] float32
    instance_order: np.ndarray | None = None         # [K, S] int64, -1 padded
    _file: Any = field(default=None, init=False, repr=False)
    _pid: int | None = field(default=None, init=False, repr=False)
    _index: dict = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        self._index = {image_id: i for i, image_id in enumerate(self.image_ids)}

    def __len__(self) -> int:
        return len(self.image_ids)

    @property
    def policy(self) -> str:
        return self.attrs["policy"]

    @property
    def manifest_fingerprint(self) -> str:
        return self.attrs["manifest_fingerprint"]

    def index_of(self, image_id: str) -> int:
        try:
            return self._index[image_id]
        except KeyError:
            raise KeyError(f"{self.path}: no image {image_id!r}") from None

    def labels(self, index: int) -> np.ndarray:
        """Image `index`'s pseudo labels, uint8 [H, W] (255 = no label)."""
        if not -len(self) <= index < len(self):
            raise IndexError(f"{self.path}: index {index} out of range for {len(self)} images")
        try:
            return self._h5()["labels"][index]
        except OSError as exc:
            raise H5FormatError(f"{self.path}: cannot read labels of image {index} ({exc})") from exc

    def all_labels(self) -> np.ndarray:
        """All label maps, uint8 [N, H, W]."""
        try:
            return self._h5()["labels"][()]
        except OSError as exc:
            raise H5FormatError(f"{self.path}: cannot read labels ({exc})") from exc

    def _check_reopened(self, handle: h5py.File) -> None:
        shape = handle["labels"].shape if "labels" in handle else None
        if shape != (len(self), self.height, self.width):
            handle.close()
            raise H5FormatError(f"{self.path}: file changed since it was validated (labels {shape})")


def read_pseudo_labels(path: str | os.PathLike, expected_fingerprint: str | None = None,
                       expected_count: int | None = None) -> PseudoLabels:
    """Open and validate `pseudo_labels.h5`; optionally check it was made for this manifest
    (`manifest_fingerprint`) and holds `expected_count` images."""
    path, f = _open_checked(path)
    try:
        with f:
            return _read_pseudo_labels(_Checker(path, f), expected_fingerprint, expected_count)
    except OSError as exc:
        raise H5FormatError(f"{path}: not a readable HDF5 file, corrupt or truncated ({exc})") from exc


def _read_pseudo_labels(chk: _Checker, expected_fingerprint, expected_count) -> PseudoLabels:
    f, path = chk.f, chk.path
    attrs = chk.attrs(f, PSEUDO_LABEL_REQUIRED_ATTRS)
    chk.common(attrs)
    c = chk.int_attr(attrs, "num_classes", minimum=1)
    for key in ("alpha", "beta", "gamma"):
        attrs[key] = chk.float_attr(attrs, key)
    chk.str_attr(attrs, "policy")
    chk.str_attr(attrs, "manifest_fingerprint")
    conf = np.asarray(attrs["class_mean_conf"])
    if conf.shape != (c,) or conf.dtype.kind not in "fiu":
        raise chk.fail(f"attribute 'class_mean_conf' has shape {conf.shape} dtype {conf.dtype}, "
                       f"expected ({c},) floats (num_classes = {c})")
    conf = conf.astype(np.float64)
    attrs["class_mean_conf"] = conf

    ids_ds = chk.dataset("image_ids", "str", ndim=1)
    labels_ds = chk.dataset("labels", "uint8", ndim=3)
    thr_ds = chk.dataset("thresholds", "float32", ndim=2)
    n = ids_ds.shape[0]
    if labels_ds.shape[0] != n:
        raise chk.fail(f"labels has {labels_ds.shape[0]} images, image_ids has {n}")
    if thr_ds.shape != (n, c):
        raise chk.fail(f"thresholds has shape {thr_ds.shape}, expected ({n}, {c}) "
                       f"(image_ids [{n}], num_classes {c})")
    if expected_count is not None and n != expected_count:
        raise chk.fail(f"has {n} images, the manifest has {expected_count}")
    chk.fingerprint(attrs, "manifest_fingerprint", expected_fingerprint, "manifest")
    _, h, w = labels_ds.shape
    image_ids = [str(s) for s in ids_ds.asstr()[()].tolist()]
    if len(set(image_ids)) != n:
        raise chk.fail("image_ids holds duplicates")
    extras: dict[str, np.ndarray | None] = {}
    if "pixel_counts" in f:
        ds = chk.dataset("pixel_counts", "int64", ndim=2)
        if ds.shape != (n, c):
            raise chk.fail(f"pixel_counts has shape {ds.shape}, expected ({n}, {c})")
        extras["pixel_counts"] = ds[()]
    if "threshold_trajectory" in f:
        ds = chk.dataset("threshold_trajectory", "float32", ndim=2)
        if ds.shape[1] != c:
            raise chk.fail(f"threshold_trajectory has shape {ds.shape}, expected (K, {c})")
        extras["threshold_trajectory"] = ds[()]
    if "instance_order" in f:
        ds = chk.dataset("instance_order", "int64", ndim=2)
        order = ds[()]
        _check_instance_order(order, n, chk.fail)
        traj = extras.get("threshold_trajectory")
        if traj is not None and traj.shape[0] != order.shape[0]:
            raise chk.fail(f"threshold_trajectory has {traj.shape[0]} rows, instance_order {order.shape[0]}")
        extras["instance_order"] = order
    return PseudoLabels(path=path, image_ids=image_ids, thresholds=thr_ds[()], attrs=attrs,
                        class_mean_conf=conf, height=h, width=w, num_classes=c, **extras)


# --- instance bank ---------------------------------------------------------------------------------------

def _check_bank_core(hard: np.ndarray, conf: np.ndarray, prob: np.ndarray, fail) -> None:
    c = conf.shape[0]
    if prob.shape != (c,):
        raise fail(f"sampling_prob has shape {prob.shape}, expected ({c},) like class_mean_conf")
    if hard.size and ((hard < 0) | (hard >= c)).any():
        raise fail(f"hard_classes {hard.tolist()} outside 0..{c - 1}")
    if np.unique(hard).size != hard.size:
        raise fail(f"hard_classes {hard.tolist()} holds duplicates")
    if not np.isfinite(prob).all() or (prob < 0).any():
        raise fail("sampling_prob must be finite and >= 0")
    outside = np.ones(c, dtype=bool)
    outside[hard] = False
    if (prob[outside] != 0).any():
        raise fail(f"sampling_prob is non-zero outside the hard classes {hard.tolist()} "
                   f"(classes {np.flatnonzero(outside & (prob != 0)).tolist()})")
    if hard.size and abs(float(prob.sum()) - 1.0) > 1e-6:
        raise fail(f"sampling_prob sums to {float(prob.sum())!r}, expected 1")


def write_instance_bank(path: str | os.PathLike, hard_classes, class_mean_conf, sampling_prob,
                        donors: Mapping[int, tuple[Any, Any]],
                        regions: Mapping[int, tuple[Any, Any, Any]],
                        attrs: Mapping[str, Any]) -> None:
    """Write `instance_bank.h5` atomically.

    `donors[c] = (image_index [M], pixels [M])` for every hard class c (stored sorted by ascending pixels);
    `regions[i] = (bbox (top, left, bottom, right exclusive), rgb uint8 [h, w, 3], labels uint8 [h, w])`
    for every donor image i (labels 255 outside the hard classes; regions of non-donor images are not
    stored). `attrs` must hold `paste`, `max_donors`, `drop_smallest`, `manifest_fingerprint`,
    `pseudo_label_fingerprint`, `height`, `width`; `num_hard`, `format_version` and `complete` are set here.

    Layout: `hard_classes` [K] int64, `class_mean_conf` [C] float64, `sampling_prob` [C] float64; group
    `donors/<c>` with `image_index` [M] int64, `pixels` [M] int64, `bbox` [M, 4] int32 (box of class c in
    that donor, base-size coordinates); group `donor_images` with `image_index` [D] int64 (ascending),
    `bbox` [D, 4] int32, `offset` [D] int64 and flat buffers `rgb` [P, 3] uint8, `labels` [P] uint8 holding
    each region row-major from its offset.
    """
    path = Path(path)

    def fail(message: str) -> ValueError:
        return ValueError(f"{path}: {message}")

    hard = np.asarray(hard_classes, dtype=np.int64).reshape(-1)
    conf = np.asarray(class_mean_conf, dtype=np.float64)
    prob = np.asarray(sampling_prob, dtype=np.float64)
    if conf.ndim != 1:
        raise fail(f"class_mean_conf has shape {conf.shape}, expected [C]")
    _check_bank_core(hard, conf, prob, fail)
    attrs = dict(attrs)
    for key in _WRITER_OWNED_ATTRS:
        if key in attrs:
            raise fail(f"attribute {key!r} is set by the writer")
    if "num_hard" in attrs and attrs["num_hard"] != hard.size:
        raise fail(f"attrs num_hard={attrs['num_hard']!r} but {hard.size} hard classes given")
    attrs["num_hard"] = int(hard.size)
    missing = [k for k in BANK_REQUIRED_ATTRS if k not in attrs and k not in _WRITER_OWNED_ATTRS]
    if missing:
        raise fail(f"missing attribute(s) {missing}")
    for key in ("height", "width", "max_donors"):
        value = attrs[key]
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
            raise fail(f"attribute {key!r} must be a non-negative integer, got {value!r}")
    height, width = int(attrs["height"]), int(attrs["width"])
    for key in ("paste", "manifest_fingerprint", "pseudo_label_fingerprint"):
        if not isinstance(attrs[key], str):
            raise fail(f"attribute {key!r} must be a string, got {attrs[key]!r}")
    if isinstance(attrs["drop_smallest"], bool) or not isinstance(attrs["drop_smallest"], numbers.Real):
        raise fail(f"attribute 'drop_smallest' must be a number, got {attrs['drop_smallest']!r}")
    hard_set = set(hard.tolist())
    if set(int(k) for k in donors) != hard_set:
        raise fail(f"donors given for classes {sorted(int(k) for k in donors)}, "
                   f"expected the hard classes {sorted(hard_set)}")

    # donors per class, sorted by ascending pixel count
    donor_table: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for cls, (index, pixels) in donors.items():
        index = np.asarray(index, dtype=np.int64).reshape(-1)
        pixels = np.asarray(pixels, dtype=np.int64).reshape(-1)
        if index.shape != pixels.shape:
            raise fail(f"donors of class {cls}: {index.size} image indices but {pixels.size} pixel counts")
        if np.unique(index).size != index.size:
            raise fail(f"donors of class {cls} list an image more than once")
        if (index < 0).any() or (pixels <= 0).any():
            raise fail(f"donors of class {cls}: image indices must be >= 0 and pixel counts > 0")
        order = np.argsort(pixels, kind="stable")
        donor_table[int(cls)] = (index[order], pixels[order])

    used = sorted({int(i) for index, _ in donor_table.values() for i in index})
    absent = [i for i in used if i not in regions]
    if absent:
        raise fail(f"no region given for donor image(s) {absent[:10]}")
    boxes = np.zeros((len(used), 4), dtype=np.int32)
    offsets = np.zeros(len(used), dtype=np.int64)
    checked: dict[int, tuple[np.ndarray, np.ndarray, tuple[int, int]]] = {}
    total = 0
    allowed = np.full(256, False)
    allowed[IGNORE_LABEL] = True
    allowed[hard] = True
    for d, image in enumerate(used):
        bbox, rgb, labels = regions[image]
        bbox = np.asarray(bbox).reshape(-1)
        rgb, labels = np.asarray(rgb), np.asarray(labels)
        if bbox.size != 4:
            raise fail(f"region of image {image}: bbox must have 4 values, got {bbox.tolist()}")
        top, left, bottom, right = (int(v) for v in bbox)
        if not (0 <= top < bottom <= height and 0 <= left < right <= width):
            raise fail(f"region of image {image}: bbox {[top, left, bottom, right]} is empty or outside "
                       f"the base size {height}x{width}")
        h, w = bottom - top, right - left
        if rgb.shape != (h, w, 3) or rgb.dtype != np.uint8:
            raise fail(f"region of image {image}: rgb has shape {rgb.shape} dtype {rgb.dtype}, "
                       f"expected ({h}, {w}, 3) uint8")
        if labels.shape != (h, w) or labels.dtype != np.uint8:
            raise fail(f"region of image {image}: labels have shape {labels.shape} dtype {labels.dtype}, "
                       f"expected ({h}, {w}) uint8")
        if not allowed[labels].all():
            raise fail(f"region of image {image}: labels hold "
                       f"{np.unique(labels[~allowed[labels]])[:5].tolist()}, expected hard classes or 255")
        boxes[d] = (top, left, bottom, right)
        offsets[d] = total
        total += h * w
        checked[image] = (rgb, labels, (top, left))

    class_boxes: dict[int, np.ndarray] = {}
    for cls, (index, _) in donor_table.items():
        cb = np.zeros((index.size, 4), dtype=np.int32)
        for j, image in enumerate(index.tolist()):
            mask = checked[image][1] == cls
            if not mask.any():
                raise fail(f"donor image {image} of class {cls} has no pixels of class {cls} in its region")
            rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
            top, left = checked[image][2]
            cb[j] = (top + rows[0], left + cols[0], top + rows[-1] + 1, left + cols[-1] + 1)
        class_boxes[cls] = cb

    tmp = _temp_path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with h5py.File(tmp, "w") as f:
            f.attrs["format_version"] = FORMAT_VERSION
            f.attrs["complete"] = False
            f.create_dataset("hard_classes", data=hard)
            f.create_dataset("class_mean_conf", data=conf)
            f.create_dataset("sampling_prob", data=prob)
            group = f.create_group("donors")
            for cls in hard.tolist():
                index, pixels = donor_table[cls]
                g = group.create_group(str(cls))
                g.create_dataset("image_index", data=index)
                g.create_dataset("pixels", data=pixels)
                g.create_dataset("bbox", data=class_boxes[cls].reshape(-1, 4))
            g = f.create_group("donor_images")
            g.create_dataset("image_index", data=np.asarray(used, dtype=np.int64))
            g.create_dataset("bbox", data=boxes)
            g.create_dataset("offset", data=offsets)
            filters = {}
            if total:
                filters = dict(compression=COMPRESSION, compression_opts=COMPRESSION_LEVEL, shuffle=True)
            rows = min(REGION_CHUNK_PIXELS, total)
            rgb_ds = g.create_dataset("rgb", shape=(total, 3), dtype=np.uint8,
                                      chunks=(rows, 3) if total else None, **filters)
            lab_ds = g.create_dataset("labels", shape=(total,), dtype=np.uint8,
                                      chunks=(rows,) if total else None, **filters)
            if total:
                rgb_ds[...] = np.concatenate([checked[i][0].reshape(-1, 3) for i in used])
                lab_ds[...] = np.concatenate([checked[i][1].reshape(-1) for i in used])
            for key, value in attrs.items():
                _set_attr(f, key, value)
            f.attrs["complete"] = True
            f.flush()
        _fsync(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@dataclass(eq=False)
class InstanceBank(_LazyH5):
    """A validated `instance_bank.h5`: donor lists in memory, donor regions read lazily."""

    path: Path
    hard_classes: np.ndarray      # [K] int64, hardest first
    class_mean_conf: np.ndarray   # [C] float64
    sampling_prob: np.ndarray     # [C] float64
    donors: dict                  # class -> (image_index [M] int64, pixels [M] int64), ascending pixels
    donor_bboxes: dict            # class -> [M, 4] int32 box of that class in each donor
    attrs: dict
    height: int
    width: int
    region_image_index: np.ndarray  # [D] int64
    region_bbox: np.ndarray         # [D, 4] int32
    region_offset: np.ndarray       # [D] int64
    _file: Any = field(default=None, init=False, repr=False)
    _pid: int | None = field(default=None, init=False, repr=False)
    _row: dict = field(default_factory=dict, init=False, repr=False)
    # decoded regions, most recently used last, up to REGION_CACHE_BYTES: self-training draws the same
    # donors again and again, and each read decompresses whole chunks
    _cache: OrderedDict = field(default_factory=OrderedDict, init=False, repr=False)
    _cache_bytes: int = field(default=0, init=False, repr=False)

    def __post_init__(self) -> None:
        self._row = {int(i): d for d, i in enumerate(self.region_image_index.tolist())}

    def __getstate__(self) -> dict:
        state = super().__getstate__()
        state["_cache"], state["_cache_bytes"] = OrderedDict(), 0   # each process fills its own
        return state

    @property
    def num_hard(self) -> int:
        return int(self.hard_classes.size)

    def has_region(self, image_index: int) -> bool:
        return int(image_index) in self._row

    def region(self, image_index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Donor image `image_index`'s (bbox int32 [4] (top, left, bottom, right), rgb uint8 [h, w, 3],
        labels uint8 [h, w] (255 outside the hard classes)), read as one slice."""
        try:
            d = self._row[int(image_index)]
        except KeyError:
            raise KeyError(f"{self.path}: image {image_index} is not a donor image") from None
        bbox = self.region_bbox[d].copy()
        cached = self._cache.get(d)
        if cached is not None:
            self._cache.move_to_end(d)
            return (bbox, *cached)
        h, w = int(bbox[2] - bbox[0]), int(bbox[3] - bbox[1])
        start = int(self.region_offset[d])
        g = self._h5()["donor_images"]
        try:
            rgb = g["rgb"][start:start + h * w].reshape(h, w, 3)
            labels = g["labels"][start:start + h * w].reshape(h, w)
        except OSError as exc:
            raise H5FormatError(f"{self.path}: cannot read region of image {image_index} ({exc})") from exc
        rgb.flags.writeable = labels.flags.writeable = False   # shared by every later read of this donor
        size = rgb.nbytes + labels.nbytes
        if size <= REGION_CACHE_BYTES:
            while self._cache and self._cache_bytes + size > REGION_CACHE_BYTES:
                _, (old_rgb, old_labels) = self._cache.popitem(last=False)
                self._cache_bytes -= old_rgb.nbytes + old_labels.nbytes
            self._cache[d] = (rgb, labels)
            self._cache_bytes += size
        return bbox, rgb, labels

    def _check_reopened(self, handle: h5py.File) -> None:
        ds = handle.get("donor_images/offset")
        if ds is None or ds.shape != self.region_offset.shape:
            handle.close()
            raise H5FormatError(f"{self.path}: file changed since it was validated")


def read_instance_bank(path: str | os.PathLike, expected_fingerprint: str | None = None,
                       expected_pseudo_label_fingerprint: str | None = None) -> InstanceBank:
    """Open and validate `instance_bank.h5`; optionally check its `manifest_fingerprint` and
    `pseudo_label_fingerprint`."""
    path, f = _open_checked(path)
    try:
        with f:
            return _read_instance_bank(_Checker(path, f), expected_fingerprint,
                                       expected_pseudo_label_fingerprint)
    except OSError as exc:
        raise H5FormatError(f"{path}: not a readable HDF5 file, corrupt or truncated ({exc})") from exc


def _read_instance_bank(chk: _Checker, expected_fingerprint, expected_pl_fingerprint) -> InstanceBank:
    f = chk.f
    attrs = chk.attrs(f, BANK_REQUIRED_ATTRS)
    chk.common(attrs)
    height = chk.int_attr(attrs, "height", minimum=1)
    width = chk.int_attr(attrs, "width", minimum=1)
    num_hard = chk.int_attr(attrs, "num_hard", minimum=0)
    chk.int_attr(attrs, "max_donors", minimum=0)
    attrs["drop_smallest"] = chk.float_attr(attrs, "drop_smallest")
    chk.str_attr(attrs, "paste")
    chk.str_attr(attrs, "manifest_fingerprint")
    chk.str_attr(attrs, "pseudo_label_fingerprint")
    chk.fingerprint(attrs, "manifest_fingerprint", expected_fingerprint, "manifest")
    chk.fingerprint(attrs, "pseudo_label_fingerprint", expected_pl_fingerprint, "pseudo-label file")

    hard = chk.dataset("hard_classes", "int64", ndim=1)[()]
    conf = chk.dataset("class_mean_conf", "float64", ndim=1)[()]
    prob = chk.dataset("sampling_prob", "float64", ndim=1)[()]
    if hard.size != num_hard:
        raise chk.fail(f"attribute num_hard is {num_hard} but hard_classes has {hard.size} entries")
    _check_bank_core(hard, conf, prob, chk.fail)

    group = f.get("donors")
    if not isinstance(group, h5py.Group):
        raise chk.fail("missing group 'donors'")
    names = set(group.keys())
    expected_names = {str(c) for c in hard.tolist()}
    if names != expected_names:
        raise chk.fail(f"group 'donors' holds {sorted(names)}, expected one group per hard class "
                       f"{sorted(expected_names)}")
    donors, donor_bboxes = {}, {}
    for cls in hard.tolist():
        base = f"donors/{cls}"
        index = chk.dataset(f"{base}/image_index", "int64", ndim=1)[()]
        pixels = chk.dataset(f"{base}/pixels", "int64", ndim=1)[()]
        bbox = chk.dataset(f"{base}/bbox", "int32", ndim=2)[()]
        m = index.size
        if pixels.shape != (m,) or bbox.shape != (m, 4):
            raise chk.fail(f"{base}: image_index [{m}], pixels {pixels.shape} and bbox {bbox.shape} disagree")
        if m > 1 and (np.diff(pixels) < 0).any():
            raise chk.fail(f"{base}/pixels is not in ascending order")
        if m and not ((0 <= bbox[:, 0]) & (bbox[:, 0] < bbox[:, 2]) & (bbox[:, 2] <= height) &
                      (0 <= bbox[:, 1]) & (bbox[:, 1] < bbox[:, 3]) & (bbox[:, 3] <= width)).all():
            raise chk.fail(f"{base}/bbox has boxes empty or outside {height}x{width}")
        donors[int(cls)] = (index, pixels)
        donor_bboxes[int(cls)] = bbox

    base = "donor_images"
    if not isinstance(f.get(base), h5py.Group):
        raise chk.fail(f"missing group {base!r}")
    r_index = chk.dataset(f"{base}/image_index", "int64", ndim=1)[()]
    r_bbox = chk.dataset(f"{base}/bbox", "int32", ndim=2)[()]
    r_offset = chk.dataset(f"{base}/offset", "int64", ndim=1)[()]
    rgb = chk.dataset(f"{base}/rgb", "uint8", ndim=2)
    labels = chk.dataset(f"{base}/labels", "uint8", ndim=1)
    d = r_index.size
    if r_bbox.shape != (d, 4) or r_offset.shape != (d,):
        raise chk.fail(f"{base}: image_index [{d}], bbox {r_bbox.shape} and offset {r_offset.shape} disagree")
    total = labels.shape[0]
    if rgb.shape != (total, 3):
        raise chk.fail(f"{base}/rgb has shape {rgb.shape}, expected ({total}, 3) like {base}/labels")
    if np.unique(r_index).size != d:
        raise chk.fail(f"{base}/image_index holds duplicates")
    if d:
        if not ((0 <= r_bbox[:, 0]) & (r_bbox[:, 0] < r_bbox[:, 2]) & (r_bbox[:, 2] <= height) &
                (0 <= r_bbox[:, 1]) & (r_bbox[:, 1] < r_bbox[:, 3]) & (r_bbox[:, 3] <= width)).all():
            raise chk.fail(f"{base}/bbox has boxes empty or outside {height}x{width}")
        sizes = (r_bbox[:, 2] - r_bbox[:, 0]).astype(np.int64) * (r_bbox[:, 3] - r_bbox[:, 1])
        if (r_offset < 0).any() or (r_offset + sizes > total).any():
            raise chk.fail(f"{base}/offset points outside the {total}-pixel region buffers")
    have = set(r_index.tolist())
    lacking = sorted({int(i) for index, _ in donors.values() for i in index} - have)
    if lacking:
        raise chk.fail(f"donor image(s) {lacking[:10]} have no region in {base}")
    return InstanceBank(path=chk.path, hard_classes=hard, class_mean_conf=conf, sampling_prob=prob,
                        donors=donors, donor_bboxes=donor_bboxes, attrs=attrs, height=height, width=width,
                        region_image_index=r_index, region_bbox=r_bbox, region_offset=r_offset)


# --- model outputs of a pseudo-labelling shard -----------------------------------------------------------

MODEL_OUTPUTS_REQUIRED_ATTRS = ("manifest_fingerprint", "model_fingerprint", "shard", "shards", "num_classes",
                                "format_version", "complete")


@contextmanager
def model_outputs_writer(path: str | os.PathLike, image_index, height: int, width: int,
                         attrs: Mapping[str, Any]):
    """Write `model_outputs_<k>.h5`, the inference of one pseudo-labelling shard, one image at a time.

    Layout: `image_index` [M] int64 (rows of the target manifest, in the order written), `conf` [M, H, W]
    float32 (max softmax probability) and `pred` [M, H, W] uint8 (argmax), chunked per image (conf is stored
    raw: the sequential IAS pass must see exactly the values one process would). Attributes: `attrs` (with
    `manifest_fingerprint`, `model_fingerprint`, `shard`, `shards`, `num_classes`), `format_version`,
    `complete`. Yields `write(position, conf, pred)`; the temporary file replaces `path` only when every
    position was written, and is removed on any failure."""
    path = Path(path)
    image_index = np.asarray(image_index, dtype=np.int64)
    tmp = _temp_path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    written = np.zeros(len(image_index), dtype=bool)
    handle = h5py.File(tmp, "w")
    try:
        m = len(image_index)
        handle.create_dataset("image_index", data=image_index)
        conf_ds = handle.create_dataset("conf", shape=(m, height, width), dtype=np.float32,
                                        chunks=(1, height, width) if m else None)
        pred_ds = handle.create_dataset("pred", shape=(m, height, width), dtype=np.uint8,
                                        chunks=(1, height, width) if m else None, compression=COMPRESSION,
                                        compression_opts=COMPRESSION_LEVEL)
        for key, value in attrs.items():
            _set_attr(handle, key, value)
        handle.attrs["format_version"] = FORMAT_VERSION

        def write(position: int, conf, pred) -> None:
            conf_ds[position] = np.asarray(conf, dtype=np.float32)
            pred_ds[position] = np.asarray(pred, dtype=np.uint8)
            written[position] = True

        yield write
        if not written.all():
            raise ValueError(f"{path}: positions {np.flatnonzero(~written)[:10].tolist()} never written")
        handle.attrs["complete"] = True
        handle.close()
        _fsync(tmp)
        os.replace(tmp, path)
    except BaseException:
        if handle.id.valid:
            handle.close()
        tmp.unlink(missing_ok=True)
        raise


@dataclass
class ModelOutputs(_LazyH5):
    """A validated `model_outputs_<k>.h5`; `get(image)` gives (conf, pred) of one manifest row."""
    path: Path
    attrs: dict
    image_index: np.ndarray
    _file: Any = field(default=None, init=False, repr=False)
    _pid: int | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self._position = {int(i): k for k, i in enumerate(self.image_index)}

    def get(self, image: int) -> tuple[np.ndarray, np.ndarray]:
        k = self._position[int(image)]
        return self._h5()["conf"][k], self._h5()["pred"][k]


def read_model_outputs(path: str | os.PathLike, expected_fingerprint: str | None = None,
                       expected_model: str | None = None) -> ModelOutputs:
    """Open and validate a shard's model outputs (complete, layout, made for this manifest and model)."""
    path, handle = _open_checked(path)
    with handle:
        chk = _Checker(path, handle)
        attrs = chk.attrs(handle, MODEL_OUTPUTS_REQUIRED_ATTRS)
        chk.common(attrs)
        chk.fingerprint(attrs, "manifest_fingerprint", expected_fingerprint, "manifest")
        chk.fingerprint(attrs, "model_fingerprint", expected_model, "model")
        index = chk.dataset("image_index", "int64", 1)[()]
        conf, pred = chk.dataset("conf", "float32", 3), chk.dataset("pred", "uint8", 3)
        if not conf.shape == pred.shape or conf.shape[0] != len(index):
            raise chk.fail(f"conf {conf.shape}, pred {pred.shape} and image_index ({len(index)}) disagree")
    return ModelOutputs(path, attrs, index)
