"""Profiles, device choice, seeding, the training harness, checkpoints and plotting helpers."""

from __future__ import annotations

import re

import matplotlib

matplotlib.use("Agg")

import nbformat
import pytest
import torch
from torch import nn

import genlab
from genlab import plotting, train
from tests.conftest import ROOT


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


def test_full_dry_is_full_with_its_own_cuts(monkeypatch):
    monkeypatch.setenv("GENLAB_PROFILE", "full-dry")
    p = genlab.profile()
    assert p.full and p.dry and not p.smoke
    assert p.pick(smoke=1, full=2, dry=3) == 3
    assert p.pick(smoke=1, full=2) == 2  # no dry value: the full one (model sizes, data)
    monkeypatch.setenv("GENLAB_PROFILE", "full")
    assert not genlab.profile().dry and genlab.profile().pick(smoke=1, full=2, dry=3) == 2
    monkeypatch.setenv("NBGRADER_EXECUTION", "autograde")
    monkeypatch.setenv("GENLAB_PROFILE", "full-dry")
    assert genlab.profile().pick(smoke=1, full=2, grading=0, dry=3) == 0


def test_unknown_profile_lists_the_valid_ones(monkeypatch):
    monkeypatch.setenv("GENLAB_PROFILE", "fast")
    with pytest.raises(ValueError, match="'fast'.*smoke, full, full-dry"):
        genlab.profile()


def test_device_prefers_cuda_then_mps_then_the_cpu(monkeypatch):
    mps = torch.backends.mps
    for cuda, apple, expected in ((True, True, "cuda"), (False, True, "mps"), (False, False, "cpu")):
        monkeypatch.setattr(torch.cuda, "is_available", lambda cuda=cuda: cuda)
        monkeypatch.setattr(mps, "is_available", lambda apple=apple: apple)
        assert genlab.device() == torch.device(expected)


def test_device_is_the_best_here_and_computes():
    mps = torch.backends.mps.is_available()
    expected = "cuda" if torch.cuda.is_available() else "mps" if mps else "cpu"
    dev = genlab.device()
    assert dev.type == expected
    x = torch.arange(6.0, device=dev).reshape(2, 3)
    assert (x @ x.T).device.type == expected
    assert (x @ x.T).cpu().tolist() == [[5.0, 14.0], [14.0, 50.0]]


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


# Picks without a grading value, by the name they set (or the argument they fill), and why a grading
# run needs none: it costs nothing there, or the value is what the hidden tests must see.
NO_GRADING_VALUE = {
    "blocks": "the network's depth: a grading run keeps the profile's blocks and shrinks the width instead",
    "batch": "a batch size: a grading run trains on a few hundred images, a few batches whatever it is",
    "batch_bn": "a batch size: a grading run trains on a few hundred images, a few batches whatever it is",
    "batches": "a batch size: a grading run trains on a few hundred images, a few batches whatever it is",
    "lr": "a learning rate costs no time",
    "lr_max": "a learning rate costs no time",
    "pgd_train_alpha": "an attack's step size costs no time",
    "pgd_alpha": "an attack's step size costs no time",
}
PICK_TARGET = re.compile(r"(\w+)\s*[=(]\s*P\.pick\(")


def _pick_lines() -> list[tuple[str, str]]:
    """Every line that calls ``P.pick`` in the source notebooks and genlab's experiments, with its origin."""
    found = []
    for path in sorted((ROOT / "source").rglob("*.ipynb")):
        for cell in nbformat.read(path, as_version=4).cells:
            if cell.cell_type == "code":
                found += [(path.name, line) for line in cell.source.splitlines() if "P.pick(" in line]
    for path in sorted((ROOT / "src" / "genlab").rglob("*.py")):
        found += [(path.name, line) for line in path.read_text().splitlines() if "P.pick(" in line]
    return found


def test_every_pick_has_a_grading_value_or_a_reason():
    lines = _pick_lines()
    assert len(lines) > 40
    unexplained, used = [], set()
    for origin, line in lines:
        if "grading=" in line:
            continue
        match = PICK_TARGET.search(line)
        key = match.group(1).lower() if match else line.strip()
        if key in NO_GRADING_VALUE:
            used.add(key)
        else:
            unexplained.append(f"{origin}: {line.strip()}")
    assert not unexplained, f"picks without grading= and without a reason in NO_GRADING_VALUE: {unexplained}"
    assert used == set(NO_GRADING_VALUE), f"reasons for picks that no longer exist: {set(NO_GRADING_VALUE) - used}"
