"""Datasets of the workbook, kept whole in memory as tensors, with a fast shuffling batch iterator.

    from genlab.data import load
    data = load("fashion-mnist", subset=2000, device=genlab.device())
    for x, y in data.batches(64):          # x: float32 in [0, 1], shape (64, 1, 28, 28)
        ...

``load(name, train=True, *, root=None, subset=None, device=None)`` returns a :class:`TensorData`.
Datasets (:data:`DATASETS`):

==============  ======================================  ==========================================
name            ``x``                                   ``y``
==============  ======================================  ==========================================
mnist           uint8 (N, 1, 28, 28)                    int64 (N,) digit
fashion-mnist   uint8 (N, 1, 28, 28)                    int64 (N,) class
cifar10         uint8 (N, 3, 32, 32)                    int64 (N,) class
celeba          uint8 (N, 3, 64, 64)                    int64 (N, 40) attributes in {0, 1}
sinc            float32 (N, 172, 2): (value, time)      None
==============  ======================================  ==========================================

CelebA images (aligned, 178x218) are centre-cropped to 178x178 and resized to 64x64 (bilinear,
antialiased). That is the crop of PyTorch's DCGAN tutorial (``Resize(64)`` then ``CenterCrop(64)``
on 178x218 is the same square), keeps the whole face and chin, and needs no magic number; the
tighter 140/148 crops zoom into the face and cut the hair. CelebA's ``train=False`` is its
``test`` partition.

Where the data comes from (the same order for every dataset)
-----------------------------------------------------------
1. The data root: ``root=`` if given, else ``$GENLAB_DATA``, else ``~/.cache/genlab/data``, in
   torchvision's folder layout (``MNIST/raw/``, ``FashionMNIST/raw/``, ``cifar-10-batches-py/``,
   ``celeba/``). IDX files may be plain or gzipped.
2. System dataset folders (:data:`SYSTEM_DIRS`): Debian's ``dataset-fashion-mnist`` installs the
   gzipped IDX files of Fashion-MNIST in ``/usr/share/datasets/fashion-mnist``. Read in place,
   never written to.
3. A torchvision download (``download=True``) into the data root, when the network allows. It runs
   in a hidden staging folder inside the data root, so a failed download leaves nothing behind.

When all three fail, :class:`DataUnavailable` (a ``RuntimeError``) names the dataset and the three
ways to provide it. In the ``smoke`` profile (``GENLAB_PROFILE=smoke``, the default) an unavailable
dataset is replaced by an explicit stand-in, announced once per process and dataset and recorded
in ``TensorData.stand_in``: Fashion-MNIST for MNIST; Fashion-MNIST padded to 32x32 and repeated to
3 channels for CIFAR-10 and for CelebA (so a CelebA stand-in is 32x32, not 64x64, and its ``y``
are the Fashion-MNIST classes (N,), not the 40 attributes). The ``full`` profile never substitutes.

Broken files
------------
A file that is there but unreadable (bad IDX magic, truncated or corrupt gzip, a length that
disagrees with its header, a pickle that does not load or lacks its keys, a broken or missing
JPEG, a missing or malformed CelebA list file) raises :class:`CorruptDataError` (a ``ValueError``)
naming the file and the fix. Such a dataset is never replaced by a stand-in: the files were meant
to be used. Caches are written with :func:`genlab.train.atomic_write`, so nothing half-written is
left in the data root.

Checksums: torchvision checks the MD5 sums of CIFAR-10's and CelebA's files against the full
official release. genlab reads those files through torchvision's classes with the MD5 check
replaced by a check that the files exist (:class:`_CIFAR10Files`, :class:`_CelebAFiles`) and then
checks their structure (pickle keys, shapes, label ranges, row counts), so a partial copy or a
small fixture of the same format loads too, and a damaged file still fails with its name.
"""

from __future__ import annotations

import gzip
import hashlib
import math
import os
import pickle
import shutil
import socket
import struct
import tempfile
import warnings
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
import torch.nn.functional as F

from genlab.progress import progress
from genlab.runtime import profile
from genlab.train import atomic_write

__all__ = [
    "DATASETS",
    "SYSTEM_DIRS",
    "CorruptDataError",
    "DataUnavailable",
    "TensorData",
    "Batches",
    "load",
    "read_idx",
    "data_root",
    "fingerprint",
    "download",
    "sinc_tracks",
    "to_float",
    "to_signed",
    "flat",
]

DATASETS = ("mnist", "fashion-mnist", "cifar10", "celeba", "sinc")

#: System folders searched (after the data root) for each dataset, holding the files flat (not in
#: torchvision's layout). Tests and unusual installs may replace this mapping.
SYSTEM_DIRS: dict[str, tuple[str, ...]] = {
    "mnist": (),
    "fashion-mnist": ("/usr/share/datasets/fashion-mnist",),
    "cifar10": (),
    "celeba": (),
}

#: The default data root when neither ``root=`` nor ``$GENLAB_DATA`` is given.
DEFAULT_ROOT = Path("~/.cache/genlab/data")

#: Seconds allowed to reach a download host before the download step gives up.
NETWORK_TIMEOUT = 3.0

SINC_POINTS = 172
SINC_TRACKS = 4096
SINC_FREQ = 5.0
SINC_SEED = 0

_TITLES = {
    "mnist": "MNIST",
    "fashion-mnist": "Fashion-MNIST",
    "cifar10": "CIFAR-10",
    "celeba": "CelebA",
    "sinc": "sinc(5t)",
}
_DEBIAN = {"fashion-mnist": "dataset-fashion-mnist"}
_TV_FOLDER = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST"}
_IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
_CIFAR_FOLDER = "cifar-10-batches-py"
_CIFAR_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
_CIFAR_TEST = ("test_batch",)
_CIFAR_META = "batches.meta"
_CELEBA_REQUIRED = ("list_attr_celeba.txt", "list_eval_partition.txt")
_CELEBA_OPTIONAL = ("identity_CelebA.txt", "list_bbox_celeba.txt", "list_landmarks_align_celeba.txt")
_CELEBA_CROP = 178
_CELEBA_SIZE = 64
_CHUNK = 256  # CelebA images per decoding task

_ANNOUNCED: set[str] = set()


# --------------------------------------------------------------------------------------------
# errors


class DataUnavailable(RuntimeError):
    """No source of a dataset worked: not in the data root, no system folder, no download."""


class CorruptDataError(ValueError):
    """A data file is there but unreadable; ``.path`` is the file."""

    def __init__(self, path: str | os.PathLike, problem: str):
        self.path = Path(path)
        self.problem = problem
        super().__init__(
            f"{self.path}: {problem}. Fix: delete {self.path} and provide it again "
            "(copy it anew, or let torchvision re-download it)."
        )


# --------------------------------------------------------------------------------------------
# tensors and batches


def to_float(x: torch.Tensor) -> torch.Tensor:
    """uint8 pixels -> float32 in [0, 1]; a floating tensor is returned as it is."""
    if x.dtype == torch.uint8:
        return x.to(torch.float32).div_(255.0)
    if not x.is_floating_point():
        raise TypeError(f"to_float expects uint8 pixels or floats, got {x.dtype}")
    return x


def to_signed(x: torch.Tensor) -> torch.Tensor:
    """Pixels (uint8, or floats in [0, 1]) -> float in [-1, 1], the Lipschitz chapter's scaling."""
    return to_float(x) * 2.0 - 1.0


def flat(x: torch.Tensor) -> torch.Tensor:
    """(N, ...) -> (N, D)."""
    return x.reshape(x.shape[0], -1)


class Batches:
    """One epoch of ``(x, y)`` batches over a :class:`TensorData`; an iterator with ``len()``.

    The order is drawn once (one ``torch.randperm`` on the data's device); each batch is one
    ``index_select`` of whole tensors, then uint8 images become float32 in [0, 1].
    """

    def __init__(
        self, data: TensorData, batch_size: int, *, shuffle: bool, drop_last: bool, generator: torch.Generator | None
    ):
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        self._x, self._y = data.x, data.y
        self._n = len(data)
        self._bs = batch_size
        self._len = self._n // batch_size if drop_last else -(-self._n // batch_size)
        self._order: torch.Tensor | None = None
        if shuffle:
            dev = self._x.device
            gdev = generator.device if generator is not None else dev
            if gdev.type == dev.type:
                self._order = torch.randperm(self._n, device=dev, generator=generator)
            else:  # e.g. a CPU generator with data on the GPU
                self._order = torch.randperm(self._n, device=gdev, generator=generator).to(dev)
        self._i = 0

    def __len__(self) -> int:
        return self._len

    def __iter__(self) -> Batches:
        return self

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self._i >= self._len:
            raise StopIteration
        start = self._i * self._bs
        stop = min(start + self._bs, self._n)
        self._i += 1
        if self._order is None:
            xb = self._x[start:stop]
            yb = None if self._y is None else self._y[start:stop]
        else:
            idx = self._order[start:stop]
            xb = self._x.index_select(0, idx)
            yb = None if self._y is None else self._y.index_select(0, idx)
        if xb.dtype == torch.uint8:
            xb = xb.to(torch.float32).div_(255.0)
        return xb, yb


@dataclass(frozen=True, eq=False)
class TensorData:
    """A whole dataset as tensors: ``x`` (uint8 images, or float32 sinc tracks), ``y`` or None.

    ``name`` is the dataset asked for; ``stand_in`` is None, or what replaced it (smoke profile);
    ``source`` is the folder or file it came from.
    """

    x: torch.Tensor
    y: torch.Tensor | None
    name: str
    stand_in: str | None = None
    source: str = ""

    def __post_init__(self) -> None:
        if self.y is not None and len(self.y) != len(self.x):
            raise ValueError(f"x has {len(self.x)} examples but y has {len(self.y)}")

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def __repr__(self) -> str:
        y = "None" if self.y is None else f"{self.y.dtype} {tuple(self.y.shape)}"
        extra = f", stand_in={self.stand_in!r}" if self.stand_in else ""
        return (
            f"TensorData(name={self.name!r}, x={self.x.dtype} {tuple(self.x.shape)}, y={y}, "
            f"device={self.x.device}{extra}, source={self.source!r})"
        )

    @property
    def device(self) -> torch.device:
        return self.x.device

    def to(self, device: str | torch.device) -> TensorData:
        """The same data on ``device``."""
        device = torch.device(device)
        return replace(self, x=self.x.to(device), y=None if self.y is None else self.y.to(device))

    def subset(self, n: int) -> TensorData:
        """The first ``n`` examples (all of them when ``n`` is larger)."""
        if not isinstance(n, int) or isinstance(n, bool) or n < 0:
            raise ValueError(f"subset must be a non-negative int, got {n!r}")
        return replace(self, x=self.x[:n], y=None if self.y is None else self.y[:n])

    def batches(
        self,
        batch_size: int,
        *,
        shuffle: bool = True,
        drop_last: bool = False,
        generator: torch.Generator | None = None,
    ) -> Batches:
        """One epoch of ``(x, y)``: images as float32 in [0, 1] (sinc tracks as they are), y or None.

        ``shuffle`` draws one permutation per call (``generator`` makes it reproducible; a CPU
        generator works for data on the GPU). Without ``drop_last`` the last batch may be short.
        """
        return Batches(self, batch_size, shuffle=shuffle, drop_last=drop_last, generator=generator)


# --------------------------------------------------------------------------------------------
# public entry point


def data_root(root: str | os.PathLike | None = None) -> Path:
    """The data root: ``root`` if given, else ``$GENLAB_DATA``, else ``~/.cache/genlab/data``."""
    if root is None:
        root = os.environ.get("GENLAB_DATA") or DEFAULT_ROOT
    return Path(root).expanduser()


def fingerprint(root: str | os.PathLike | None = None) -> str:
    """A short hash naming the data a run would read: every file of the data root and system folders.

    Each file counts by its path, size and modification time (reading the contents of CelebA's
    200 000 images would take longer than the runs it names). genlab's own caches derived from
    those files and hidden staging folders are left out.
    """
    digest = hashlib.sha256()
    folders = [data_root(root), *(Path(f) for dirs in SYSTEM_DIRS.values() for f in dirs)]
    for folder in dict.fromkeys(folders):
        digest.update(f"{folder}\0".encode())
        if not folder.is_dir():
            continue
        for path in sorted(folder.rglob("*")):
            rel = path.relative_to(folder)
            if any(part.startswith(".") for part in rel.parts) or _is_celeba_cache(path) or not path.is_file():
                continue
            stat = path.stat()
            digest.update(f"{rel}\0{stat.st_size}\0{stat.st_mtime_ns}\0".encode())
    return digest.hexdigest()[:16]


def _canonical(name: str) -> str:
    if not isinstance(name, str):
        raise ValueError(f"dataset name must be a string, one of {', '.join(DATASETS)}; got {name!r}")
    key = name.strip().lower().replace("_", "-")
    key = {"fashionmnist": "fashion-mnist", "cifar-10": "cifar10"}.get(key, key)
    if key not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; valid names: {', '.join(DATASETS)}")
    return key


def load(
    name: str,
    train: bool = True,
    *,
    root: str | os.PathLike | None = None,
    subset: int | None = None,
    device: str | torch.device | None = None,
) -> TensorData:
    """Load dataset ``name`` (one of :data:`DATASETS`) whole, as tensors.

    ``train`` picks the split; ``root`` overrides ``$GENLAB_DATA``; ``subset=n`` keeps the first
    ``n`` examples; ``device`` moves the tensors there (default: stay on the CPU).
    Raises :class:`DataUnavailable` when no source has the data (the ``smoke`` profile substitutes
    a printed stand-in instead), :class:`CorruptDataError` for unreadable files, ``ValueError``
    for an unknown name.
    """
    key = _canonical(name)
    if subset is not None and (not isinstance(subset, int) or isinstance(subset, bool) or subset < 0):
        raise ValueError(f"subset must be None or a non-negative int, got {subset!r}")
    if key == "sinc":
        data = sinc_tracks(train)
    else:
        try:
            data = _locate(key, bool(train), data_root(root))
        except DataUnavailable as missing:
            if not profile().smoke:
                raise
            data = _stand_in(key, bool(train), data_root(root), missing, subset)
    if subset is not None:
        data = data.subset(subset)
    if device is not None:
        data = data.to(device)
    return data


# --------------------------------------------------------------------------------------------
# lookup


Reader = Callable[[Path, bool], "TensorData | None"]


def _locate(key: str, train: bool, root: Path) -> TensorData:
    """Data root, then system folders, then a download; DataUnavailable when all fail."""
    tried: list[str] = []
    data = _READ_ROOT[key](root, train)
    if data is not None:
        return data
    tried.append(f"{_root_location(key, root)} (data root, torchvision's layout): not there")
    system = SYSTEM_DIRS.get(key, ())
    for folder in system:
        data = _READ_FLAT[key](Path(folder), train)
        if data is not None:
            return data
        tried.append(f"{folder} (system folder): not there")
    if not system:
        tried.append(f"system folders: none is known for {_TITLES[key]}")
    try:
        download(key, root)
    except Exception as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        tried.append(f"torchvision download into {root}: failed ({reason})")
    else:
        data = _READ_ROOT[key](root, train)
        if data is not None:
            return data
        tried.append(f"torchvision download into {root}: finished, but the files are not there")
    raise DataUnavailable(_unavailable_message(key, train, root, tried))


def _root_location(key: str, root: Path) -> Path:
    if key in _TV_FOLDER:
        return root / _TV_FOLDER[key] / "raw"
    if key == "cifar10":
        return root / _CIFAR_FOLDER
    return root / "celeba"


def _expected_files(key: str) -> str:
    if key in _TV_FOLDER:
        folder = _TV_FOLDER[key]
        return f"<root>/{folder}/raw/" + ", ".join(_IDX_FILES) + " (each may be gzipped, name + .gz)"
    if key == "cifar10":
        return f"<root>/{_CIFAR_FOLDER}/" + ", ".join(_CIFAR_TRAIN + _CIFAR_TEST + (_CIFAR_META,))
    return (
        "<root>/celeba/img_align_celeba/000001.jpg ... 202599.jpg (aligned 178x218 JPEGs), "
        "<root>/celeba/list_attr_celeba.txt, <root>/celeba/list_eval_partition.txt "
        "(identity_CelebA.txt, list_bbox_celeba.txt, list_landmarks_align_celeba.txt are optional)"
    )


def _unavailable_message(key: str, train: bool, root: Path, tried: list[str]) -> str:
    title = _TITLES[key]
    debian = _DEBIAN.get(key)
    if debian:
        way2 = f"install the Debian package: apt-get install {debian}"
    else:
        way2 = (
            f"install a system package: no Debian package provides {title} "
            "(Fashion-MNIST has one: apt-get install dataset-fashion-mnist)"
        )
    lines = [
        f"{title} ({'train' if train else 'test'} split) is not available here. Looked in:",
        *(f"  - {t}" for t in tried),
        "Provide it in one of three ways:",
        f"  1. set GENLAB_DATA (or pass root=) to a folder in torchvision's layout: {_expected_files(key)}",
        f"  2. {way2}",
        f"  3. allow network access, so that torchvision downloads it into {root} on the next load",
    ]
    return "\n".join(lines)


def as_rgb32(images: torch.Tensor) -> torch.Tensor:
    """Grey 28x28 images (N, 1, 28, 28) padded to 32x32 and repeated to 3 channels: (N, 3, 32, 32).

    The shape of CIFAR-10 with Fashion-MNIST's content: the smoke profile's stand-in, and the data of the
    reference runs of the chapters written for CIFAR-10 (which call it by its own name).
    """
    return F.pad(images, (2, 2, 2, 2)).expand(-1, 3, -1, -1).contiguous()


def _stand_in(key: str, train: bool, root: Path, missing: DataUnavailable, subset: int | None) -> TensorData:
    if key == "fashion-mnist":
        raise missing
    try:
        fashion = _locate("fashion-mnist", train, root)
    except DataUnavailable as also:
        raise DataUnavailable(
            f"{missing}\nThe smoke profile's stand-in, Fashion-MNIST, is not available either:\n{also}"
        ) from None
    if subset is not None:
        fashion = fashion.subset(subset)  # before padding: no work on examples that are dropped
    if key == "mnist":
        x, what = fashion.x, "Fashion-MNIST (same shape)"
        used = "fashion-mnist"
    else:
        x = as_rgb32(fashion.x)
        used = "fashion-mnist padded to 3x32x32"
        what = "Fashion-MNIST padded to 32x32 and repeated to 3 channels"
        if key == "celeba":
            what += " (32x32, not 64x64; labels are the 10 Fashion-MNIST classes, not the 40 attributes)"
    if key not in _ANNOUNCED:
        _ANNOUNCED.add(key)
        print(
            f"stand-in: {_TITLES[key]} is not available here; using {what} instead. "
            "Set GENLAB_DATA to use the real data.",
            flush=True,
        )
    return TensorData(x=x, y=fashion.y, name=key, stand_in=used, source=fashion.source)


# --------------------------------------------------------------------------------------------
# MNIST and Fashion-MNIST: IDX files


def _idx_bytes(path: Path) -> bytes:
    """The IDX file's bytes, gunzipped when the file is gzip (detected by its magic)."""
    try:
        with open(path, "rb") as f:
            head = f.read(2)
            f.seek(0)
            if head == b"\x1f\x8b":
                with gzip.GzipFile(fileobj=f) as g:
                    return g.read()
            return f.read()
    except (EOFError, zlib.error, gzip.BadGzipFile) as err:
        raise CorruptDataError(path, f"truncated or corrupt gzip ({err})") from None


def _idx_header(path: Path, data: bytes, ndim: int) -> tuple[int, ...]:
    if len(data) < 4 + 4 * ndim:
        raise CorruptDataError(path, f"too short for an IDX header ({len(data)} bytes)")
    magic = struct.unpack(">I", data[:4])[0]
    want = 0x0800 + ndim
    if magic != want:
        raise CorruptDataError(
            path, f"bad IDX magic number 0x{magic:08x} (expected 0x{want:08x}: unsigned bytes, {ndim} dimensions)"
        )
    return struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])


def _check_idx_size(path: Path, dims: tuple[int, ...], have: int) -> None:
    want = math.prod(dims)
    if have != want:
        what = "truncated" if have < want else "longer than its header says"
        raise CorruptDataError(path, f"{what}: {have} data bytes, the header announces {dims} = {want}")


def read_idx(path: str | os.PathLike, ndim: int) -> torch.Tensor:
    """Read an IDX file of unsigned bytes (plain or gzipped), checking magic number and length."""
    path = Path(path)
    data = _idx_bytes(path)
    dims = _idx_header(path, data, ndim)
    offset = 4 + 4 * ndim
    _check_idx_size(path, dims, len(data) - offset)
    return torch.frombuffer(bytearray(data), dtype=torch.uint8, offset=offset).view(*dims)


def _check_plain_idx(path: Path, ndim: int) -> None:
    """Header and length check of an uncompressed IDX file, before torchvision reads it."""
    with open(path, "rb") as f:
        head = f.read(4 + 4 * ndim)
    if head[:2] == b"\x1f\x8b":
        raise CorruptDataError(path, "is gzip-compressed but named like an uncompressed IDX file")
    dims = _idx_header(path, head, ndim)
    _check_idx_size(path, dims, path.stat().st_size - 4 - 4 * ndim)


def _check_mnist(images: torch.Tensor, labels: torch.Tensor, image_path: Path, label_path: Path) -> None:
    if tuple(images.shape[1:]) != (28, 28):
        raise CorruptDataError(image_path, f"holds images of {tuple(images.shape[1:])} pixels, not 28x28")
    if len(images) != len(labels):
        raise CorruptDataError(label_path, f"holds {len(labels)} labels for {len(images)} images in {image_path.name}")
    if len(labels) and int(labels.max()) > 9:
        raise CorruptDataError(label_path, f"holds label {int(labels.max())}, outside 0..9")


def _find_file(folder: Path, name: str) -> Path | None:
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _read_idx_folder(key: str, folder: Path, train: bool, torchvision_root: Path | None) -> TensorData | None:
    prefix = "train" if train else "t10k"
    names = (f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte")
    found = [_find_file(folder, n) for n in names]
    if found == [None, None]:
        return None
    for n, f in zip(names, found):
        if f is None:
            raise CorruptDataError(folder / n, f"is missing (its partner {names[1 - names.index(n)]} is there)")
    image_path, label_path = found
    assert image_path is not None and label_path is not None
    plain = torchvision_root is not None and all((folder / n).is_file() for n in _IDX_FILES)
    if plain:
        # torchvision's own reader; it needs all four uncompressed files (its _check_exists).
        from torchvision import datasets

        _check_plain_idx(image_path, 3)
        _check_plain_idx(label_path, 1)
        cls = datasets.MNIST if key == "mnist" else datasets.FashionMNIST
        ds = cls(str(torchvision_root), train=train, download=False)
        images, labels = ds.data, ds.targets
    else:
        images, labels = read_idx(image_path, 3), read_idx(label_path, 1).long()
    _check_mnist(images, labels, image_path, label_path)
    return TensorData(x=images.unsqueeze(1).contiguous(), y=labels.long(), name=key, source=str(folder))


def _read_mnist_root(key: str) -> Reader:
    def read(root: Path, train: bool) -> TensorData | None:
        return _read_idx_folder(key, root / _TV_FOLDER[key] / "raw", train, root)

    return read


def _read_mnist_flat(key: str) -> Reader:
    def read(folder: Path, train: bool) -> TensorData | None:
        return _read_idx_folder(key, folder, train, None)

    return read


# --------------------------------------------------------------------------------------------
# CIFAR-10: python pickles


@cache
def _cifar_class():
    from torchvision.datasets import CIFAR10

    class _CIFAR10Files(CIFAR10):
        """torchvision's CIFAR10 reader with its MD5 check replaced by an existence check.

        The MD5 sums only match the complete official files; genlab checks structure instead.
        """

        def _check_integrity(self) -> bool:
            names = self.train_list if self.train else self.test_list
            folder = os.path.join(self.root, self.base_folder)
            return all(os.path.isfile(os.path.join(folder, n)) for n, _ in names)

        def _load_meta(self) -> None:
            path = os.path.join(self.root, self.base_folder, self.meta["filename"])
            with open(path, "rb") as infile:
                data = pickle.load(infile, encoding="latin1")
            self.classes = data[self.meta["key"]]
            self.class_to_idx = {c: i for i, c in enumerate(self.classes)}

    return _CIFAR10Files


def _check_cifar_pickle(path: Path, meta: bool) -> None:
    """Find out what is wrong with one CIFAR-10 file (called once loading failed)."""
    try:
        with open(path, "rb") as f:
            entry = pickle.load(f, encoding="latin1")
    except Exception as err:
        raise CorruptDataError(path, f"does not unpickle ({type(err).__name__}: {err})") from None
    keys = ("label_names",) if meta else ("data", "labels")
    if not isinstance(entry, dict) or any(k not in entry for k in keys):
        raise CorruptDataError(path, f"is not a CIFAR-10 {'meta' if meta else 'batch'} file (needs keys {keys})")
    if not meta:
        data = entry["data"]
        if getattr(data, "ndim", 0) != 2 or data.shape[1] != 3072 or len(entry["labels"]) != data.shape[0]:
            raise CorruptDataError(path, "holds data that is not (N, 3072) with N labels")


def _read_cifar_root(root: Path, train: bool) -> TensorData | None:
    folder = root / _CIFAR_FOLDER
    names = (_CIFAR_TRAIN if train else _CIFAR_TEST) + (_CIFAR_META,)
    present = [(folder / n).is_file() for n in names]
    if not any(present):
        return None
    for n, ok in zip(names, present):
        if not ok:
            raise CorruptDataError(folder / n, "is missing")
    try:
        ds = _cifar_class()(str(root), train=train, download=False)
        data, targets = ds.data, ds.targets
    except Exception as err:
        for n in names:
            _check_cifar_pickle(folder / n, meta=n == _CIFAR_META)
        raise CorruptDataError(folder, f"could not be read by torchvision ({type(err).__name__}: {err})") from None
    x = torch.from_numpy(data).permute(0, 3, 1, 2).contiguous()
    y = torch.as_tensor(targets, dtype=torch.int64)
    if x.dtype != torch.uint8:
        raise CorruptDataError(folder / names[0], f"holds {x.dtype} pixels, not uint8")
    if len(y) and (int(y.min()) < 0 or int(y.max()) > 9):
        bad = next(n for n in names[:-1] if _cifar_labels_out_of_range(folder / n))
        raise CorruptDataError(folder / bad, "holds labels outside 0..9")
    return TensorData(x=x, y=y, name="cifar10", source=str(folder))


def _cifar_labels_out_of_range(path: Path) -> bool:
    with open(path, "rb") as f:
        labels = pickle.load(f, encoding="latin1")["labels"]
    return any(not 0 <= int(v) <= 9 for v in labels)


def _read_cifar_flat(folder: Path, train: bool) -> TensorData | None:
    # A system folder holding cifar-10-batches-py directly, or its parent.
    if (folder / _CIFAR_FOLDER).is_dir():
        return _read_cifar_root(folder, train)
    if folder.name == _CIFAR_FOLDER:
        return _read_cifar_root(folder.parent, train)
    return None


# --------------------------------------------------------------------------------------------
# CelebA: JPEGs, decoded once, cached as a uint8 tensor file


@cache
def _celeba_class():
    from torchvision.datasets import CelebA

    class _CelebAFiles(CelebA):
        """torchvision's CelebA reader; MD5 check replaced by an existence check, optional lists optional.

        identity/bbox/landmark lists are not needed for images and attributes: when absent they
        read as zeros. Every list must have one row per image of list_eval_partition.txt.
        """

        _rows: int | None = None

        def _check_integrity(self) -> bool:
            folder = Path(self.root) / self.base_folder
            return all((folder / n).is_file() for n in _CELEBA_REQUIRED) and (folder / "img_align_celeba").is_dir()

        def _load_csv(self, filename: str, header: int | None = None):
            path = Path(self.root) / self.base_folder / filename
            if filename in _CELEBA_OPTIONAL and not path.is_file():
                from torchvision.datasets.celeba import CSV

                n = self._rows or 0
                return CSV([], [""] * n, torch.zeros(n, 1, dtype=torch.int64))
            try:
                csv = super()._load_csv(filename, header)
            except Exception as err:
                raise CorruptDataError(path, f"is malformed ({type(err).__name__}: {err})") from None
            if filename == "list_eval_partition.txt":
                self._rows = len(csv.index)
            elif self._rows is not None and len(csv.index) != self._rows:
                raise CorruptDataError(path, f"has {len(csv.index)} rows, list_eval_partition.txt has {self._rows}")
            if filename == "list_attr_celeba.txt" and (csv.data.ndim != 2 or csv.data.shape[1] != 40):
                raise CorruptDataError(path, f"has {tuple(csv.data.shape)} values, not 40 attributes per image")
            return csv

    return _CelebAFiles


def _celeba_transform():
    from torchvision import transforms

    return transforms.Compose(
        [
            transforms.Lambda(lambda im: im.convert("RGB")),
            transforms.CenterCrop(_CELEBA_CROP),
            transforms.Resize((_CELEBA_SIZE, _CELEBA_SIZE), antialias=True),
            transforms.PILToTensor(),
        ]
    )


def _celeba_cache_path(root: Path, split: str) -> Path:
    return root / f"celeba-{_CELEBA_SIZE}-{split}.pt"


def _is_celeba_cache(path: Path) -> bool:
    return path.name in {_celeba_cache_path(path.parent, split).name for split in ("train", "test")}


def _read_celeba_cache(path: Path, files: list[str] | None) -> TensorData | None:
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        x, y, names = payload["x"], payload["y"], payload["files"]
        ok = x.dtype == torch.uint8 and tuple(x.shape[1:]) == (3, _CELEBA_SIZE, _CELEBA_SIZE)
        ok = ok and y.shape == (len(x), 40) and len(names) == len(x)
    except Exception as err:
        if files is None:
            raise CorruptDataError(path, f"is not a readable genlab CelebA cache ({type(err).__name__})") from None
        warnings.warn(f"{path} is not a readable CelebA cache; rebuilding it from the JPEGs", stacklevel=4)
        return None
    if not ok:
        if files is None:
            raise CorruptDataError(path, "is not a genlab CelebA cache of 3x64x64 images and 40 attributes")
        return None
    if files is not None and list(names) != files:
        return None  # made from other files: rebuild
    return TensorData(x=x, y=y.long(), name="celeba", source=str(path))


def _decode_celeba(ds: Any, folder: Path) -> torch.Tensor:
    n = len(ds.filename)
    out = torch.empty(n, 3, _CELEBA_SIZE, _CELEBA_SIZE, dtype=torch.uint8)

    def one(i: int) -> None:
        path = folder / "img_align_celeba" / ds.filename[i]
        if not path.is_file():
            raise CorruptDataError(path, "is listed in list_eval_partition.txt but missing")
        try:
            out[i] = ds[i][0]
        except CorruptDataError:
            raise
        except Exception as err:
            raise CorruptDataError(path, f"is not a readable image ({type(err).__name__}: {err})") from None

    def chunk(start: int) -> int:
        stop = min(start + _CHUNK, n)
        for i in range(start, stop):
            one(i)
        return stop - start

    # PIL decodes and resizes without the GIL: threads use every core. Chunks in order, so a
    # broken file stops the work early (the remaining chunks are cancelled).
    pool = ThreadPoolExecutor(max(1, min(8, os.cpu_count() or 1)))
    try:
        futures = [pool.submit(chunk, s) for s in range(0, n, _CHUNK)]
        bar = progress(None, total=n, desc="CelebA -> 64x64 (once)", unit="img")
        for fut in futures:
            bar.update(fut.result())
        bar.close()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return out


def _read_celeba_root(root: Path, train: bool) -> TensorData | None:
    split = "train" if train else "test"
    folder = root / "celeba"
    cache = _celeba_cache_path(root, split)
    images = folder / "img_align_celeba"
    present = [(folder / n).is_file() for n in _CELEBA_REQUIRED] + [images.is_dir()]
    if not any(present):
        return _read_celeba_cache(cache, None) if cache.is_file() else None
    for n, ok in zip((*_CELEBA_REQUIRED, "img_align_celeba"), present):
        if not ok:
            raise CorruptDataError(folder / n, "is missing (CelebA needs it beside the others)")
    cls = _celeba_class()
    ds = cls(str(root), split=split, target_type="attr", transform=_celeba_transform(), download=False)
    files = list(ds.filename)
    if cache.is_file():
        data = _read_celeba_cache(cache, files)
        if data is not None:
            return data
    x = _decode_celeba(ds, folder)
    y = ds.attr.to(torch.int64)
    if len(y) and (int(y.min()) < 0 or int(y.max()) > 1):
        raise CorruptDataError(folder / "list_attr_celeba.txt", "holds attribute values other than -1 and 1")
    payload = {"x": x, "y": y, "files": files, "crop": _CELEBA_CROP, "size": _CELEBA_SIZE}
    try:
        atomic_write(cache, lambda tmp: torch.save(payload, tmp))
        source = cache
    except OSError as err:
        warnings.warn(f"could not cache CelebA at {cache} ({err}); it will be decoded again next time", stacklevel=3)
        source = folder
    return TensorData(x=x, y=y, name="celeba", source=str(source))


def _read_celeba_flat(folder: Path, train: bool) -> TensorData | None:
    # A system folder holding celeba/ or being it.
    if (folder / "celeba").is_dir():
        return _read_celeba_root(folder, train)
    if folder.name == "celeba":
        return _read_celeba_root(folder.parent, train)
    return None


_READ_ROOT: dict[str, Reader] = {
    "mnist": _read_mnist_root("mnist"),
    "fashion-mnist": _read_mnist_root("fashion-mnist"),
    "cifar10": _read_cifar_root,
    "celeba": _read_celeba_root,
}
_READ_FLAT: dict[str, Reader] = {
    "mnist": _read_mnist_flat("mnist"),
    "fashion-mnist": _read_mnist_flat("fashion-mnist"),
    "cifar10": _read_cifar_flat,
    "celeba": _read_celeba_flat,
}


# --------------------------------------------------------------------------------------------
# download


def _download_urls(key: str) -> list[str]:
    from torchvision import datasets

    if key in _TV_FOLDER:
        cls = datasets.MNIST if key == "mnist" else datasets.FashionMNIST
        return list(cls.mirrors)
    if key == "cifar10":
        return [datasets.CIFAR10.url]
    return ["https://drive.google.com/"]


def _reachable(urls: list[str]) -> str | None:
    """None when one of the hosts answers within NETWORK_TIMEOUT, else the reason."""
    reason = "no host to try"
    for url in urls:
        parsed = urlparse(url)
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
        try:
            socket.create_connection((parsed.hostname, port), timeout=NETWORK_TIMEOUT).close()
            return None
        except OSError as err:
            reason = f"no network: {parsed.hostname}: {err}"
    return reason


def download(key: str, root: str | os.PathLike) -> None:
    """Download dataset ``key`` with torchvision into ``root`` (torchvision's layout).

    The download runs in a hidden staging folder inside ``root`` whose files are moved into place
    only when torchvision finished; on any failure the staging folder (and a ``root`` this call
    created) is removed and the error raised.
    """
    key = _canonical(key)
    if key == "sinc":
        return
    from torchvision import datasets

    reason = _reachable(_download_urls(key))
    if reason is not None:
        raise OSError(reason)
    root = Path(root)
    created = [p for p in (root, *root.parents) if not p.exists()]
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=root, prefix=".genlab-download-"))
    old_timeout = socket.getdefaulttimeout()
    socket.setdefaulttimeout(30.0)
    try:
        if key in _TV_FOLDER:
            cls = datasets.MNIST if key == "mnist" else datasets.FashionMNIST
            cls(str(staging), train=True, download=True)
            src, dst = staging / _TV_FOLDER[key] / "raw", root / _TV_FOLDER[key] / "raw"
            dst.mkdir(parents=True, exist_ok=True)
            for f in src.iterdir():
                if not f.name.endswith(".gz"):
                    os.replace(f, dst / f.name)
        elif key == "cifar10":
            datasets.CIFAR10(str(staging), train=True, download=True)
            _move_tree(staging / _CIFAR_FOLDER, root / _CIFAR_FOLDER)
        else:
            datasets.CelebA(str(staging), split="all", download=True)
            (staging / "celeba" / "img_align_celeba.zip").unlink(missing_ok=True)
            _move_tree(staging / "celeba", root / "celeba")
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        for p in created:  # innermost first; only folders this call made, only when empty
            try:
                p.rmdir()
            except OSError:
                break
        raise
    finally:
        socket.setdefaulttimeout(old_timeout)
    shutil.rmtree(staging, ignore_errors=True)


def _move_tree(src: Path, dst: Path) -> None:
    if not dst.exists():
        os.replace(src, dst)
        return
    for f in src.iterdir():
        if f.is_dir():
            _move_tree(f, dst / f.name)
        else:
            os.replace(f, dst / f.name)


# --------------------------------------------------------------------------------------------
# sinc(5t)


def _sinc5(t: torch.Tensor) -> torch.Tensor:
    """sin(5t) / (5t), 1 at t = 0 (computed in float64)."""
    u = SINC_FREQ * t
    safe = torch.where(u == 0, torch.ones_like(u), u)
    return torch.where(u == 0, torch.ones_like(u), torch.sin(safe) / safe)


def _sinc5_range() -> tuple[float, float]:
    """Min and max of sin(5t)/(5t) over [-1, 1]: the first side lobe at 5t = u*, tan u* = u*."""
    u = 4.4934  # Newton on tan(u) = u near 4.49
    for _ in range(20):
        u -= (math.tan(u) - u) / (1.0 / math.cos(u) ** 2 - 1.0)
    return math.sin(u) / u, 1.0


def sinc_tracks(train: bool = True) -> TensorData:
    """The tracks of the Lipschitz study, generated: (value, time) pairs, float32 (N, 172, 2).

    train: 4096 tracks, each with 172 times drawn uniformly in [-1, 1] (torch generator seeded
    with ``SINC_SEED``) and sorted. test: one track on the uniform grid ``linspace(-1, 1, 172)``.

    Convention: sinc(5t) = sin(5t) / (5t), the mathematical (unnormalised) sinc, 1 at t = 0, as
    the paper writes it: over t in [-1, 1] it shows the main lobe and one side lobe on each side
    (zeros at t = +-pi/5, +-2pi/5). ``torch.sinc``/``numpy.sinc`` are the normalised
    sin(pi x)/(pi x); ``torch.sinc(5 t)`` (what the 2022 reproduction computed) is a different,
    pi times faster signal with four zeros on each side.

    Values are mapped affinely from [min, max] of sinc(5t) over [-1, 1] (about -0.2172 at the
    first side lobe, and 1) to [-1, 1], the same map for both splits, so values lie in [-1, 1]
    and reach the ends only where a track samples the extrema. Times are already in [-1, 1].
    """
    if train:
        g = torch.Generator().manual_seed(SINC_SEED)
        t = (torch.rand(SINC_TRACKS, SINC_POINTS, generator=g, dtype=torch.float64) * 2 - 1).sort(dim=1).values
        source = f"generated: sin(5t)/(5t), {SINC_TRACKS} tracks, seed {SINC_SEED}"
    else:
        t = torch.linspace(-1.0, 1.0, SINC_POINTS, dtype=torch.float64).unsqueeze(0)
        source = "generated: sin(5t)/(5t), uniform grid"
    lo, hi = _sinc5_range()
    v = (_sinc5(t) - lo) / (hi - lo) * 2 - 1
    x = torch.stack([v.clamp(-1.0, 1.0), t], dim=-1).to(torch.float32)
    return TensorData(x=x, y=None, name="sinc", source=source)
