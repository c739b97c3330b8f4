"""Profiles, device choice, seeding, the training harness, checkpoints and plotting helpers."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import pytest
import torch
from torch import nn

import genlab
from genlab import plotting, train


def test_profile_defaults_to_smoke(monkeypatch):
    monkeypatch.delenv("GENLAB_PROFILE", raising=False)
    monkeypatch.delenv("NBGRADER_EXECUTION", raising=False)
    p = genlab.profile()
    assert p.smoke and not p.full and not p.grading
    assert p.pick(smoke=1, full=2, grading=0) == 1


def test_full_and_grading_modes(monkeypatch):
    monkeypatch.setenv("GENLAB_PROFILE", "FULL")
    assert genlab.profile().pick(smoke=1, full=2) == 2
    monkeypatch.setenv("NBGRADER_EXECUTION", "autograde")
    p = genlab.profile()
    assert p.grading and p.pick(smoke=1, full=2, grading=0) == 0
    assert p.pick(smoke=1, full=2) == 2  # no grading value: the profile's own


def test_unknown_profile_lists_the_valid_ones(monkeypatch):
    monkeypatch.setenv("GENLAB_PROFILE", "fast")
    with pytest.raises(ValueError, match="'fast'.*smoke, full"):
        genlab.profile()


def test_device_is_usable():
    x = torch.ones(2, device=genlab.device())
    assert x.sum().item() == 2


def test_seed_everything_repeats_draws():
    genlab.seed_everything(3)
    a = torch.randn(4)
    gen = genlab.seed_everything(3)
    assert torch.equal(a, torch.randn(4))
    assert torch.equal(torch.randn(4, generator=gen), torch.randn(4, generator=torch.Generator().manual_seed(3)))
    with pytest.raises(ValueError, match="seed"):
        genlab.seed_everything(-1)


def regression_problem():
    genlab.seed_everything(0)
    x = torch.randn(256, 3)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5]])
    model = nn.Linear(3, 1)
    batches = lambda: [(x[i : i + 32], y[i : i + 32]) for i in range(0, 256, 32)]
    step = lambda m, b: {"loss": ((m(b[0]) - b[1]) ** 2).mean(), "abs": (m(b[0]) - b[1]).abs().mean()}
    return model, batches, step


def test_fit_lowers_the_loss_and_keeps_history():
    model, batches, step = regression_problem()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    seen = []
    history = train.fit(model, step, batches, epochs=5, optimizer=opt, on_epoch_end=lambda e, h: seen.append(e))
    assert seen == [0, 1, 2, 3, 4]
    assert len(history.steps["loss"]) == 40 and len(history.epochs["loss"]) == 5
    assert history.epochs["loss"][-1] < 0.1 * history.epochs["loss"][0]
    assert set(history.epochs) == {"loss", "abs"}
    assert not model.training


def test_fit_rejects_a_step_without_loss():
    model, batches, _ = regression_problem()
    with pytest.raises(KeyError, match="'loss'"):
        train.fit(
            model,
            lambda m, b: {"mse": m(b[0]).mean()},
            batches,
            epochs=1,
            optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
        )


def test_checkpoint_round_trip_with_metadata(tmp_path):
    model, batches, step = regression_problem()
    opt = torch.optim.Adam(model.parameters())
    history = train.fit(model, step, batches, epochs=1, optimizer=opt)
    path = train.save_checkpoint(
        tmp_path / "ck" / "m.pt", model, config={"lr": 1e-3}, seed=0, epoch=1, history=history, optimizer=opt
    )
    fresh = nn.Linear(3, 1)
    payload = train.load_checkpoint(path, fresh, config={"lr": 1e-3})
    assert torch.equal(fresh.weight, model.weight)
    assert payload["meta"]["seed"] == 0 and payload["meta"]["genlab_version"] == genlab.__version__
    assert payload["history"].epochs["loss"] == history.epochs["loss"]
    with pytest.raises(ValueError, match="trained with config"):
        train.load_checkpoint(path, config={"lr": 1e-2})
    assert [p.name for p in path.parent.iterdir()] == ["m.pt"]  # no temporary file left behind


def test_damaged_checkpoint_names_the_file(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(RuntimeError, match="bad.pt.*delete it"):
        train.load_checkpoint(bad)


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.bin"
    target.write_text("old")

    def fail(tmp):
        tmp.write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError):
        train.atomic_write(target, fail)
    assert target.read_text() == "old" and list(tmp_path.iterdir()) == [target]


def test_image_grid_and_loss_curves_are_titled():
    ax = plotting.image_grid(torch.rand(6, 784), nrow=3, title="samples")
    assert ax.get_title() == "samples" and ax.images[0].get_array().shape[:2] == (2 * 28 + 6, 3 * 28 + 8)
    ax = plotting.loss_curves({"train": [3, 2, 1], "test": [3, 2.5, 2]}, title="loss")
    assert ax.get_title() == "loss" and ax.get_xlabel() == "epoch" and len(ax.lines) == 2
    with pytest.raises(ValueError, match="shape="):
        plotting.as_images(torch.rand(2, 10))
