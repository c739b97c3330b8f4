"""Reference runs: their data named by what it is, found from a notebook's scratch folder, shown with provenance."""

from __future__ import annotations

import os

import pytest
import torch

from genlab.data import TensorData
from genlab.experiments import reference
from genlab.experiments.harmonic import comparable, data_title, find_sinc_encoder_csv
from genlab.plotting import data_label
from tests.conftest import ROOT


def test_stand_in_data_is_never_named_after_the_data_it_replaces():
    grey = torch.zeros(2, 1, 28, 28, dtype=torch.uint8)
    rgb = torch.zeros(2, 3, 32, 32, dtype=torch.uint8)
    assert data_label(TensorData(grey, None, "mnist", stand_in="fashion-mnist")) == "Fashion-MNIST (smoke stand-in)"
    label = data_label(TensorData(rgb, None, "cifar10", stand_in="fashion-mnist padded to 3x32x32"))
    assert "CIFAR" not in label and "Fashion-MNIST padded to 3x32x32" in label
    assert data_label(TensorData(rgb, None, "fashion-mnist")) == "Fashion-MNIST padded to 3x32x32"
    assert data_label(TensorData(rgb, None, "cifar10")) == "CIFAR-10"
    assert "CIFAR" not in data_title("cifar10", "fashion-mnist padded to 3x32x32")
    assert comparable("cifar10") and comparable("sinc")
    assert not comparable("cifar10", "fashion-mnist padded to 3x32x32") and not comparable("fashion32")


def test_committed_runs_are_found_from_a_scratch_folder(tmp_path, monkeypatch):
    """A book's kernel runs in a temporary folder: the committed results are still found (the checkout)."""
    monkeypatch.chdir(tmp_path)
    assert find_sinc_encoder_csv() == ROOT / "results" / "harmonic" / "sinc-encoder" / "sinc-encoder.csv"
    full = reference.Reference.find("harmonic", "full")
    assert full is not None and full.folder == ROOT / "results" / "harmonic" / "full"
    assert "python -m genlab.experiments.harmonic" in full.caption() and "commit" in full.caption()
    assert reference.Reference.find("no-such-chapter") is None


def test_a_readme_written_for_a_run_is_read_back_as_its_caption(tmp_path):
    reference.write_readme(
        tmp_path / "run",
        title="A run",
        command="python -m genlab.experiments.something --profile reference",
        data="Fashion-MNIST, 10 images",
        settings=["recipe: 1 epoch"],
        seconds={"training": 120.0},
    )
    run = reference.Reference("something", tmp_path / "run")
    fields = run.fields()
    assert fields["data"] == "Fashion-MNIST, 10 images" and fields["time"].startswith("2 min")
    assert fields["commit"] and "CPU" in fields["machine"]
    caption = run.caption()
    assert "Fashion-MNIST, 10 images" in caption and "--profile reference" in caption
    with pytest.raises(FileNotFoundError, match="run its command again"):
        run.path("missing.png")


@pytest.mark.skipif(not os.path.isdir("/usr/share/datasets/fashion-mnist"), reason="Fashion-MNIST is not installed")
def test_reference_data_is_real_fashion_mnist_in_either_shape():
    grey = reference.load_fashion(False, subset=4)
    rgb = reference.load_fashion(False, subset=4, rgb32=True)
    assert grey.name == rgb.name == "fashion-mnist" and not grey.stand_in and not rgb.stand_in
    assert tuple(grey.x.shape) == (4, 1, 28, 28) and tuple(rgb.x.shape) == (4, 3, 32, 32)
    assert torch.equal(rgb.x[:, 0, 2:30, 2:30], grey.x[:, 0]) and torch.equal(rgb.x[:, 0], rgb.x[:, 2])
    assert rgb.x[:, :, :2].sum() == 0, "the padding is black"
