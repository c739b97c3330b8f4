"""genlab.data: the real torchvision readers on small fake folders in each dataset's on-disk format.

Every test is hermetic: the data root is an empty temporary folder, no system folder is searched
unless a test says so, and the download step raises instead of touching the network.
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

import genlab.data as gd
from genlab.data import DATASETS, CorruptDataError, DataUnavailable, TensorData, flat, load, to_float, to_signed
from tests.fakedata import fake_celeba, fake_cifar, fake_mnist, write_idx

REAL_DOWNLOAD = gd.download
SYSTEM_FASHION = Path("/usr/share/datasets/fashion-mnist")
IDX = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


@pytest.fixture(autouse=True)
def hermetic(tmp_path, monkeypatch):
    empty = tmp_path / "empty-root"
    empty.mkdir()
    monkeypatch.setenv("GENLAB_DATA", str(empty))
    monkeypatch.setenv("GENLAB_PROFILE", "smoke")
    monkeypatch.delenv("NBGRADER_EXECUTION", raising=False)
    monkeypatch.setattr(gd, "SYSTEM_DIRS", {k: () for k in DATASETS})
    monkeypatch.setattr(gd, "_ANNOUNCED", set())
    calls = []

    def no_network(key, root):
        calls.append((key, Path(root)))
        raise OSError("network disabled in tests")

    monkeypatch.setattr(gd, "download", no_network)
    return calls


def files_under(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")} if root.exists() else set()


# ------------------------------------------------------------------ names and helpers


def test_unknown_name_lists_the_valid_ones():
    with pytest.raises(ValueError) as err:
        load("imagenet")
    for name in DATASETS:
        assert name in str(err.value)


def test_helpers():
    x = torch.tensor([[0, 51, 255]], dtype=torch.uint8)
    assert to_float(x).dtype == torch.float32
    assert torch.allclose(to_float(x), torch.tensor([[0.0, 0.2, 1.0]]))
    assert torch.allclose(to_signed(x), torch.tensor([[-1.0, -0.6, 1.0]]))
    assert torch.allclose(to_signed(torch.tensor([0.5])), torch.tensor([0.0]))
    assert flat(torch.zeros(5, 3, 4, 4)).shape == (5, 48)
    with pytest.raises(TypeError):
        to_float(torch.tensor([1, 2]))


# ------------------------------------------------------------------ MNIST / Fashion-MNIST


def test_mnist_plain_files_through_torchvision(tmp_path, monkeypatch):
    root = tmp_path / "data"
    written = fake_mnist(root / "MNIST" / "raw", gz=False)
    monkeypatch.setenv("GENLAB_DATA", str(root))
    for train, split in ((True, "train"), (False, "t10k")):
        data = load("mnist", train=train)
        images, labels = written[split]
        assert data.x.shape == (len(images), 1, 28, 28) and data.x.dtype == torch.uint8
        assert data.y.dtype == torch.int64
        assert torch.equal(data.x[:, 0], torch.from_numpy(images))
        assert torch.equal(data.y, torch.from_numpy(labels).long())
        assert data.name == "mnist" and data.stand_in is None
        assert data.source == str(root / "MNIST" / "raw")


def test_fashion_gzip_files_with_root_overriding_env(tmp_path):
    root = tmp_path / "data"
    written = fake_mnist(root / "FashionMNIST" / "raw", gz=True, seed=5)
    data = load("fashion-mnist", root=root, subset=10)  # GENLAB_DATA points at an empty folder
    assert len(data) == 10
    assert torch.equal(data.x[:, 0], torch.from_numpy(written["train"][0][:10]))
    assert torch.equal(data.y, torch.from_numpy(written["train"][1][:10]).long())
    assert load("FashionMNIST", root=root, train=False).x.shape == (13, 1, 28, 28)


def test_system_folder_is_searched_after_the_data_root(tmp_path, monkeypatch):
    system = tmp_path / "usr-share-datasets-fashion-mnist"
    written = fake_mnist(system, gz=True, seed=9)
    monkeypatch.setattr(gd, "SYSTEM_DIRS", {**gd.SYSTEM_DIRS, "fashion-mnist": (str(system),)})
    data = load("fashion-mnist")
    assert data.source == str(system)
    assert torch.equal(data.y, torch.from_numpy(written["train"][1]).long())
    # the data root wins over the system folder
    root = tmp_path / "data"
    fake_mnist(root / "FashionMNIST" / "raw", gz=False, n_train=4, n_test=3)
    assert len(load("fashion-mnist", root=root)) == 4
    assert files_under(system) == {f"{n}.gz" for n in IDX}  # read in place, nothing written


@pytest.mark.skipif(
    not (SYSTEM_FASHION / "train-images-idx3-ubyte.gz").is_file(),
    reason="Debian's dataset-fashion-mnist is not installed (/usr/share/datasets/fashion-mnist)",
)
def test_real_system_fashion_mnist(monkeypatch):
    monkeypatch.setattr(gd, "SYSTEM_DIRS", {**gd.SYSTEM_DIRS, "fashion-mnist": (str(SYSTEM_FASHION),)})
    train = load("fashion-mnist")
    test = load("fashion-mnist", train=False)
    assert train.x.shape == (60000, 1, 28, 28) and test.x.shape == (10000, 1, 28, 28)
    assert torch.equal(torch.bincount(train.y), torch.full((10,), 6000))
    assert torch.equal(torch.bincount(test.y), torch.full((10,), 1000))
    assert train.y[:6].tolist() == [9, 0, 0, 3, 0, 2]
    assert int(train.x.max()) == 255 and int(train.x.min()) == 0
    # the smoke stand-in for MNIST is this data
    mnist = load("mnist", subset=100)
    assert mnist.stand_in == "fashion-mnist" and torch.equal(mnist.x, train.x[:100])


def test_corrupt_idx_files_name_the_file(tmp_path):
    root = tmp_path / "data"
    raw = root / "MNIST" / "raw"
    fake_mnist(raw, gz=True)
    before = files_under(root)
    # truncated gzip
    images = raw / "train-images-idx3-ubyte.gz"
    blob = images.read_bytes()
    images.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(CorruptDataError) as err:
        load("mnist", root=root)
    assert str(images) in str(err.value) and "delete" in str(err.value).lower()
    # bad magic number
    labels = raw / "t10k-labels-idx1-ubyte.gz"
    labels.write_bytes(gzip.compress(b"\x00\x00\x08\x03" + struct.pack(">I", 13) + bytes(13)))
    with pytest.raises(CorruptDataError, match="magic") as err:
        load("mnist", root=root, train=False)
    assert err.value.path == labels
    assert files_under(root) == before


def test_wrong_length_plain_idx_is_caught_before_torchvision(tmp_path):
    root = tmp_path / "data"
    raw = root / "FashionMNIST" / "raw"
    fake_mnist(raw, gz=False)
    labels = raw / "train-labels-idx1-ubyte"
    labels.write_bytes(labels.read_bytes()[:-5])
    with pytest.raises(CorruptDataError, match="truncated") as err:
        load("fashion-mnist", root=root)
    assert err.value.path == labels
    # images and labels that disagree in count
    write_idx(raw / "t10k-labels-idx1-ubyte", np.zeros(12, dtype=np.uint8), gz=False)
    with pytest.raises(CorruptDataError, match="12 labels for 13 images"):
        load("fashion-mnist", root=root, train=False)


def test_half_provided_split_is_an_error_not_a_stand_in(tmp_path):
    root = tmp_path / "data"
    raw = root / "MNIST" / "raw"
    fake_mnist(raw, gz=True)
    (raw / "train-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(CorruptDataError) as err:
        load("mnist", root=root)
    assert err.value.path == raw / "train-labels-idx1-ubyte"


# ------------------------------------------------------------------ CIFAR-10


def test_cifar10_pickles(tmp_path, monkeypatch):
    root = tmp_path / "data"
    (train_x, train_y), (test_x, test_y) = fake_cifar(root)
    monkeypatch.setenv("GENLAB_DATA", str(root))
    data = load("cifar10")
    assert data.x.shape == (30, 3, 32, 32) and data.x.dtype == torch.uint8 and data.x.is_contiguous()
    assert torch.equal(data.x, torch.from_numpy(train_x.reshape(-1, 3, 32, 32)))
    assert data.y.tolist() == train_y.tolist() and data.y.dtype == torch.int64
    test = load("cifar-10", train=False)
    assert torch.equal(test.x, torch.from_numpy(test_x.reshape(-1, 3, 32, 32)))
    assert test.y.tolist() == test_y.tolist()
    assert test.source == str(root / "cifar-10-batches-py")


def test_cifar10_unpickling_failure_names_the_file(tmp_path):
    root = tmp_path / "data"
    fake_cifar(root)
    bad = root / "cifar-10-batches-py" / "data_batch_3"
    bad.write_bytes(bad.read_bytes()[:100])
    before = files_under(root)
    with pytest.raises(CorruptDataError) as err:
        load("cifar10", root=root)
    assert err.value.path == bad and "unpickle" in str(err.value)
    assert load("cifar10", root=root, train=False).x.shape == (5, 3, 32, 32)  # the other split is fine
    (root / "cifar-10-batches-py" / "batches.meta").unlink()
    with pytest.raises(CorruptDataError, match="missing") as err:
        load("cifar10", root=root, train=False)
    assert err.value.path.name == "batches.meta"
    assert files_under(root) == before - {"cifar-10-batches-py/batches.meta"}


# ------------------------------------------------------------------ CelebA


def test_celeba_crop_resize_attributes_and_cache(tmp_path, monkeypatch):
    root = tmp_path / "data"
    names, attrs, levels = fake_celeba(root)
    monkeypatch.setenv("GENLAB_DATA", str(root))
    data = load("celeba")
    assert data.x.shape == (3, 3, 64, 64) and data.x.dtype == torch.uint8
    assert data.y.shape == (3, 40) and data.y.dtype == torch.int64
    assert torch.equal(data.y, torch.from_numpy(attrs[:3]).long())
    # centre crop 178x178 cut the red bands; the green level identifies each image, in order
    assert float(data.x[:, 0].float().mean()) < 8
    green = data.x[:, 1].float().mean(dim=(1, 2))
    assert torch.allclose(green, torch.tensor(levels[:3], dtype=torch.float32), atol=3)
    cache = root / "celeba-64-train.pt"
    assert cache.is_file() and data.source == str(cache)
    test = load("celeba", train=False)
    assert test.x.shape == (2, 3, 64, 64) and torch.equal(test.y, torch.from_numpy(attrs[4:]).long())
    assert sorted(p.name for p in root.iterdir()) == ["celeba", "celeba-64-test.pt", "celeba-64-train.pt"]

    # the second load reads the cache, no JPEG decoding
    def no_decoding(*args):
        raise AssertionError("decoded again")

    monkeypatch.setattr(gd, "_decode_celeba", no_decoding)
    again = load("celeba")
    assert torch.equal(again.x, data.x) and torch.equal(again.y, data.y)


def test_celeba_without_optional_lists(tmp_path):
    root = tmp_path / "data"
    _, attrs, _ = fake_celeba(root, partition=(0, 0, 2, 2), optional=False)
    data = load("celeba", root=root, train=False)
    assert data.x.shape == (2, 3, 64, 64)
    assert torch.equal(data.y, torch.from_numpy(attrs[2:]).long())


def test_celeba_broken_jpeg_names_it_and_leaves_no_cache(tmp_path):
    root = tmp_path / "data"
    names, _, _ = fake_celeba(root)
    broken = root / "celeba" / "img_align_celeba" / names[1]
    broken.write_bytes(broken.read_bytes()[:300])
    before = files_under(root)
    with pytest.raises(CorruptDataError) as err:
        load("celeba", root=root)
    assert err.value.path == broken
    assert files_under(root) == before  # no cache, no temporary file


def test_celeba_missing_attribute_file(tmp_path):
    root = tmp_path / "data"
    fake_celeba(root)
    attr = root / "celeba" / "list_attr_celeba.txt"
    attr.unlink()
    with pytest.raises(CorruptDataError) as err:
        load("celeba", root=root)
    assert err.value.path == attr
    # malformed: a row with 39 values
    fake = tmp_path / "other"
    names, _, _ = fake_celeba(fake)
    attr = fake / "celeba" / "list_attr_celeba.txt"
    lines = attr.read_text().splitlines()
    lines[3] = lines[3].rsplit(" ", 1)[0]
    attr.write_text("\n".join(lines) + "\n")
    with pytest.raises(CorruptDataError) as err:
        load("celeba", root=fake)
    assert err.value.path == attr
    assert not list(fake.glob("*.pt")) and not list(fake.glob(".*"))


# ------------------------------------------------------------------ stand-ins and profiles


@pytest.fixture
def small_fashion(tmp_path, monkeypatch):
    system = tmp_path / "system-fashion"
    written = fake_mnist(system, gz=True, n_train=20, n_test=8, seed=3)
    monkeypatch.setattr(gd, "SYSTEM_DIRS", {**gd.SYSTEM_DIRS, "fashion-mnist": (str(system),)})
    return written


def test_smoke_stand_ins_printed_once(small_fashion, capsys, hermetic):
    mnist = load("mnist")
    load("mnist", train=False)
    assert mnist.stand_in == "fashion-mnist" and mnist.name == "mnist"
    assert torch.equal(mnist.x[:, 0], torch.from_numpy(small_fashion["train"][0]))
    out = capsys.readouterr().out
    assert out.count("stand-in: MNIST is not available here; using Fashion-MNIST") == 1
    assert "GENLAB_DATA" in out
    assert hermetic and hermetic[0][0] == "mnist"  # the download was tried (and failed) first

    cifar = load("cifar10", subset=5)
    assert cifar.x.shape == (5, 3, 32, 32) and cifar.x.dtype == torch.uint8
    assert cifar.stand_in and "fashion" in cifar.stand_in
    core = torch.from_numpy(small_fashion["train"][0][:5])
    for c in range(3):
        assert torch.equal(cifar.x[:, c, 2:30, 2:30], core)
    assert int(cifar.x[:, :, :2].max()) == 0 and int(cifar.x[:, :, :, 30:].max()) == 0
    celeba = load("celeba", train=False)
    assert celeba.x.shape == (8, 3, 32, 32) and celeba.stand_in
    load("celeba")
    out = capsys.readouterr().out
    assert out.count("stand-in: CIFAR-10") == 1 and out.count("stand-in: CelebA") == 1
    assert "32x32, not 64x64" in out


def test_full_profile_never_substitutes(small_fashion, monkeypatch, capsys):
    monkeypatch.setenv("GENLAB_PROFILE", "full")
    messages = {}
    for name, title in (("mnist", "MNIST"), ("cifar10", "CIFAR-10"), ("celeba", "CelebA")):
        with pytest.raises(DataUnavailable) as err:
            load(name)
        message = messages[name] = str(err.value)
        assert message.startswith(title)
        assert "GENLAB_DATA" in message and "apt-get install dataset-fashion-mnist" in message
        assert "network" in message and "network disabled in tests" in message
    assert "<root>/MNIST/raw/train-images-idx3-ubyte" in messages["mnist"]
    assert "cifar-10-batches-py/data_batch_1" in messages["cifar10"]
    assert "list_attr_celeba.txt" in messages["celeba"] and "img_align_celeba" in messages["celeba"]
    assert capsys.readouterr().out == ""
    assert load("fashion-mnist").stand_in is None


def test_fashion_has_no_stand_in_and_a_missing_stand_in_is_reported():
    with pytest.raises(DataUnavailable, match="Fashion-MNIST") as err:
        load("fashion-mnist")
    assert isinstance(err.value, RuntimeError)
    assert "apt-get install dataset-fashion-mnist" in str(err.value)
    with pytest.raises(DataUnavailable, match="stand-in, Fashion-MNIST, is not available either"):
        load("mnist")


def test_failed_download_leaves_nothing(tmp_path, monkeypatch):
    """The real download step, with torchvision's class replaced by one that fails half-way."""
    import torchvision.datasets

    monkeypatch.setattr(gd, "download", REAL_DOWNLOAD)
    monkeypatch.setattr(gd, "_reachable", lambda urls: None)

    class HalfDownload:
        mirrors = ["http://127.0.0.1:9/"]

        def __init__(self, root, train=True, download=False):
            raw = Path(root) / "MNIST" / "raw"
            raw.mkdir(parents=True)
            (raw / "train-images-idx3-ubyte.gz").write_bytes(b"\x1f\x8b partial")
            raise RuntimeError("connection reset")

    monkeypatch.setattr(torchvision.datasets, "MNIST", HalfDownload)
    root = tmp_path / "new" / "root"
    monkeypatch.setenv("GENLAB_PROFILE", "full")
    with pytest.raises(DataUnavailable, match="connection reset"):
        load("mnist", root=root)
    assert not (tmp_path / "new").exists()
    existing = tmp_path / "existing"
    existing.mkdir()
    with pytest.raises(DataUnavailable):
        load("mnist", root=existing)
    assert files_under(existing) == set()


def test_no_network_is_detected_quickly(monkeypatch):
    monkeypatch.setattr(gd, "NETWORK_TIMEOUT", 0.5)
    reason = gd._reachable(["http://no-such-host.invalid/"])
    assert reason and "no network" in reason


# ------------------------------------------------------------------ TensorData and batches


def numbered(n=103, device="cpu") -> TensorData:
    x = torch.arange(n, dtype=torch.int64).remainder(256).to(torch.uint8).view(n, 1, 1, 1).expand(n, 1, 2, 2)
    return TensorData(x=x.contiguous(), y=torch.arange(n), name="numbers").to(device)


def test_batches_cover_every_example_once_per_epoch():
    data = numbered()
    seen_epochs = []
    for epoch in range(2):
        batches = data.batches(10, generator=torch.Generator().manual_seed(epoch))
        assert len(batches) == 11
        ys = []
        for x, y in batches:
            assert x.dtype == torch.float32 and 0.0 <= float(x.min()) and float(x.max()) <= 1.0
            assert torch.allclose(x[:, 0, 0, 0], y.float() / 255.0)  # x and y stay paired
            ys.append(y)
        ys = torch.cat(ys)
        assert sorted(ys.tolist()) == list(range(103))
        seen_epochs.append(ys)
    assert not torch.equal(seen_epochs[0], seen_epochs[1])  # reshuffled per epoch
    assert ys.tolist() != list(range(103))
    # a generator makes the order reproducible
    a = torch.cat([y for _, y in data.batches(16, generator=torch.Generator().manual_seed(7))])
    b = torch.cat([y for _, y in data.batches(16, generator=torch.Generator().manual_seed(7))])
    assert torch.equal(a, b)


def test_batches_drop_last_and_order():
    data = numbered()
    sizes = [len(y) for _, y in data.batches(25, drop_last=True)]
    assert sizes == [25, 25, 25, 25] and len(data.batches(25, drop_last=True)) == 4
    sizes = [len(y) for _, y in data.batches(25)]
    assert sizes == [25, 25, 25, 25, 3]
    ordered = torch.cat([y for _, y in data.batches(25, shuffle=False)])
    assert ordered.tolist() == list(range(103))
    x, _ = next(iter(data.batches(4, shuffle=False)))
    assert x[:, 0, 0, 0].tolist() == pytest.approx([0, 1 / 255, 2 / 255, 3 / 255])
    with pytest.raises(ValueError):
        data.batches(0)


def test_tensordata_subset_to_and_labels_none():
    data = numbered()
    sub = data.subset(7)
    assert len(sub) == 7 and sub.y.tolist() == list(range(7)) and sub.name == "numbers"
    assert len(data.subset(10_000)) == 103
    moved = data.to("cpu")
    assert moved.device.type == "cpu" and torch.equal(moved.x, data.x)
    plain = TensorData(x=torch.rand(9, 3, 2), y=None, name="f")
    for x, y in plain.batches(4):
        assert y is None and x.dtype == torch.float32
    assert torch.equal(torch.cat([x for x, _ in plain.batches(4, shuffle=False)]), plain.x)
    with pytest.raises(ValueError):
        TensorData(x=torch.zeros(3, 1), y=torch.zeros(2), name="bad")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")
def test_batches_on_the_gpu_with_a_cpu_generator():
    data = numbered(device="cuda")
    ys = torch.cat([y for _, y in data.batches(8, generator=torch.Generator().manual_seed(0))])
    assert ys.device.type == "cuda" and sorted(ys.tolist()) == list(range(103))


# ------------------------------------------------------------------ sinc


def test_sinc_tracks():
    train = load("sinc")
    assert train.x.shape == (4096, 172, 2) and train.x.dtype == torch.float32 and train.y is None
    values, times = train.x[..., 0], train.x[..., 1]
    assert float(times.min()) >= -1 and float(times.max()) <= 1
    assert bool((times[:, 1:] >= times[:, :-1]).all())  # sorted per track
    assert float(values.min()) >= -1 and float(values.max()) <= 1
    assert float(values.min()) < -0.999 and float(values.max()) > 0.999  # the range is used
    lo = -0.21723362821122166  # min of sin(u)/u, at u = 4.4934
    expected = torch.where(times == 0, 1.0, torch.sin(5 * times) / (5 * times))
    assert torch.allclose(values, ((expected - lo) / (1 - lo) * 2 - 1), atol=1e-5)
    assert torch.equal(load("sinc").x, train.x)  # deterministic
    assert len(load("sinc", subset=10)) == 10
    test = load("sinc", train=False)
    assert test.x.shape == (1, 172, 2)
    assert torch.allclose(test.x[0, :, 1], torch.linspace(-1, 1, 172))
    # sin(5)/5 at both ends: a symmetric track
    assert torch.allclose(test.x[0, :, 0], test.x[0, :, 0].flip(0), atol=1e-6)
    assert test.x[0, 0, 0].item() == pytest.approx((np.sin(5) / 5 - lo) / (1 - lo) * 2 - 1, abs=1e-6)
    x, y = next(iter(train.batches(256)))
    assert y is None and x.shape == (256, 172, 2) and float(x.min()) < 0  # floats passed as they are


def test_device_argument_moves_tensors():
    data = load("sinc", train=False, device="cpu")
    assert data.x.device.type == "cpu"
