"""Small data folders in the exact on-disk formats genlab reads: MNIST and Fashion-MNIST IDX files,
CIFAR-10's pickled batches, CelebA's aligned JPEGs with their list files.

The readers under test are the real ones (torchvision's classes behind genlab.data), so these
folders must be what a download leaves behind. :func:`fake_root` lays out a whole data root in
torchvision's layout for the full-dry run (tests/test_full_dry.py); the other functions make one
dataset each, with the knobs the loader tests need.
"""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np


def idx_bytes(array: np.ndarray) -> bytes:
    header = struct.pack(">I", 0x0800 + array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_idx(path: Path, array: np.ndarray, gz: bool) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = idx_bytes(array)
    if gz:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)
    return path


def fake_mnist(folder: Path, *, gz: bool, n_train=37, n_test=13, seed=0, splits=("train", "t10k")):
    rng = np.random.default_rng(seed)
    out = {}
    for split, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n, dtype=np.uint8)
        if split in splits:
            write_idx(folder / f"{split}-images-idx3-ubyte", images, gz)
            write_idx(folder / f"{split}-labels-idx1-ubyte", labels, gz)
        out[split] = (images, labels)
    return out


def fake_cifar(root: Path, *, per_batch=6, n_test=5, seed=1):
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    train_x, train_y = [], []
    for i in range(1, 6):
        data = rng.integers(0, 256, size=(per_batch, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, size=per_batch)]
        with open(folder / f"data_batch_{i}", "wb") as f:
            pickle.dump(
                {
                    "batch_label": f"training batch {i} of 5",
                    "labels": labels,
                    "data": data,
                    "filenames": [f"img{i}_{j}.png" for j in range(per_batch)],
                },
                f,
            )
        train_x.append(data)
        train_y += labels
    test_x = rng.integers(0, 256, size=(n_test, 3072), dtype=np.uint8)
    test_y = [int(v) for v in rng.integers(0, 10, size=n_test)]
    with open(folder / "test_batch", "wb") as f:
        pickle.dump(
            {
                "batch_label": "testing batch 1 of 1",
                "labels": test_y,
                "data": test_x,
                "filenames": [f"t{j}.png" for j in range(n_test)],
            },
            f,
        )
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump(
            {
                "label_names": [
                    "airplane",
                    "automobile",
                    "bird",
                    "cat",
                    "deer",
                    "dog",
                    "frog",
                    "horse",
                    "ship",
                    "truck",
                ],
                "num_cases_per_batch": per_batch,
                "num_vis": 3072,
            },
            f,
        )
    return (np.vstack(train_x), np.array(train_y)), (test_x, np.array(test_y))


ATTRS = [f"Attr_{i}" for i in range(40)]


def fake_celeba(root: Path, *, partition=(0, 0, 0, 1, 2, 2), optional=True, seed=2):
    """Aligned CelebA: 178x218 JPEGs whose top and bottom 20 rows (cut by the crop) are red."""
    from PIL import Image

    folder = root / "celeba"
    images = folder / "img_align_celeba"
    images.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    n = len(partition)
    names = [f"{i + 1:06d}.jpg" for i in range(n)]
    attrs = rng.choice([-1, 1], size=(n, 40))
    levels = []
    for i, name in enumerate(names):
        level = (30 + 40 * i) % 256  # distinct for the first six images, which the loader tests compare
        pixels = np.zeros((218, 178, 3), dtype=np.uint8)
        pixels[:, :, 1] = level
        pixels[:20, :, 0] = 255
        pixels[-20:, :, 0] = 255
        Image.fromarray(pixels).save(images / name, quality=95)
        levels.append(level)
    (folder / "list_eval_partition.txt").write_text("".join(f"{name} {p}\n" for name, p in zip(names, partition)))
    rows = "".join(name + " " + " ".join(f"{v:2d}" for v in a) + "\n" for name, a in zip(names, attrs))
    (folder / "list_attr_celeba.txt").write_text(f"{n}\n" + " ".join(ATTRS) + " \n" + rows)
    if optional:
        (folder / "identity_CelebA.txt").write_text("".join(f"{name} {i % 3 + 1}\n" for i, name in enumerate(names)))
        (folder / "list_bbox_celeba.txt").write_text(
            f"{n}\nimage_id x_1 y_1 width height\n" + "".join(f"{name} 95 71 226 313\n" for name in names)
        )
        (folder / "list_landmarks_align_celeba.txt").write_text(
            f"{n}\nlefteye_x lefteye_y righteye_x righteye_y nose_x nose_y leftmouth_x leftmouth_y "
            "rightmouth_x rightmouth_y\n" + "".join(f"{name} 69 109 106 113 77 142 73 152 108 154\n" for name in names)
        )
    return names, (attrs + 1) // 2, levels


def fake_root(root: Path, *, n_train: int = 128, n_test: int = 64, seed: int = 0) -> Path:
    """A data root with every image dataset, ``n_train`` training and ``n_test`` test examples each.

    MNIST and Fashion-MNIST as torchvision keeps them after a download (plain IDX files under
    ``<Name>/raw``), CIFAR-10's five training batches and its test batch, and CelebA with
    ``n_train`` images in its training partition, ``n_test`` in its test partition and a few in
    its validation partition. Returns ``root``. 128 is the full profiles' batch size: one batch per
    epoch, the least that trains (DCGAN drops a short last batch).
    """
    for offset, folder in enumerate(("MNIST", "FashionMNIST")):
        fake_mnist(root / folder / "raw", gz=False, n_train=n_train, n_test=n_test, seed=seed + offset)
    fake_cifar(root, per_batch=-(-n_train // 5), n_test=n_test, seed=seed + 2)
    fake_celeba(root, partition=(0,) * n_train + (1,) * 4 + (2,) * n_test, seed=seed + 3)
    return root
