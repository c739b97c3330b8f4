"""What ran is what is reported: checkpoints know their model code, results their commit."""

from __future__ import annotations

import importlib
import subprocess
import sys
from dataclasses import replace

import pytest
import torch

import genlab.experiments.harmonic as R
from genlab import train
from genlab.experiments import ae_to_cvae, conv_vae, provenance
from genlab.experiments.harmonic import training

LAYER = """
import torch
from torch import nn


class Scaled(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 2)

    def forward(self, x):
        return {body}
"""


@pytest.fixture
def layer_module(tmp_path, monkeypatch):
    """A model class in a module of its own whose code a test can change."""
    (tmp_path / "scaledlayer.py").write_text(LAYER.format(body="self.lin(x)"))
    monkeypatch.syspath_prepend(str(tmp_path))
    module = importlib.import_module("scaledlayer")
    yield module, tmp_path / "scaledlayer.py"
    sys.modules.pop("scaledlayer", None)


def test_a_checkpoint_records_its_commit_and_model_code(tmp_path, layer_module):
    module, _ = layer_module
    model = module.Scaled()
    path = train.save_checkpoint(tmp_path / "m.pt", model, config={}, seed=0, epoch=1)
    meta = train.load_checkpoint(path, module.Scaled())["meta"]
    assert meta["model_code"] == train.model_code_digest(model)
    assert meta["commit"] == provenance.git_commit() != ""


def test_a_checkpoint_of_other_model_code_is_stale(tmp_path, layer_module):
    module, source = layer_module
    path = train.save_checkpoint(tmp_path / "m.pt", module.Scaled(), config={}, seed=0, epoch=1)
    source.write_text(LAYER.format(body="2 * self.lin(x)"))
    changed = importlib.reload(module)
    with pytest.raises(train.StaleCheckpoint, match="m.pt: made by other model code.*train again"):
        train.load_checkpoint(path, changed.Scaled())
    assert train.load_checkpoint(path)["meta"]["epoch"] == 1  # without a model: the payload as it is


def test_a_checkpoint_that_records_no_model_code_is_stale(tmp_path):
    model = torch.nn.Linear(3, 2)
    path = train.save_checkpoint(tmp_path / "old.pt", model, config={}, seed=0, epoch=1)
    payload = torch.load(path, weights_only=True)
    del payload["meta"]["model_code"]
    torch.save(payload, path)
    with pytest.raises(train.StaleCheckpoint, match="old.pt: records no model code"):
        train.load_checkpoint(path, torch.nn.Linear(3, 2))


def test_the_harmonic_cache_retrains_a_stale_network(tmp_path):
    plan = replace(R.make_plan("smoke", datasets=["sinc"], seeds=[0]), epochs={"sinc": 1}, hidden=8)
    g = torch.Generator().manual_seed(0)
    data = training.Dataset("sinc", torch.rand(64, 172, 2, generator=g) * 2 - 1, torch.rand(1, 172, 2), None)
    cfg = training.run_config(plan, data, "sigma_enc", 1.0, 0)
    _, status = training.train_or_load(cfg, data, tmp_path)
    assert status == "trained"
    assert training.train_or_load(cfg, data, tmp_path)[1] == "cached"
    path = training.checkpoint_path(tmp_path, cfg)
    payload = torch.load(path, weights_only=True)
    payload["meta"]["model_code"] = "0" * 16  # as if the network's code had changed since
    torch.save(payload, path)
    assert training.train_or_load(cfg, data, tmp_path)[1] == "retrained"
    assert training.train_or_load(cfg, data, tmp_path)[1] == "cached"


@pytest.fixture
def checkout(tmp_path, monkeypatch):
    """A git checkout standing in for the package's, with one committed file."""
    repo = tmp_path / "repo"
    repo.mkdir()
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.org", "-C", str(repo)]
    subprocess.run([*git, "init", "-q"], check=True)
    (repo / "model.py").write_text("x = 1\n")
    subprocess.run([*git, "add", "model.py"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "one"], check=True)
    monkeypatch.setattr(provenance, "PACKAGE", repo)
    monkeypatch.setattr(provenance, "_run_commit", None)  # no run has started in this process
    head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    return repo, head


def test_results_name_a_clean_commit(checkout):
    _, head = checkout
    assert provenance.require_clean() == head == provenance.git_commit()


def test_results_name_the_commit_the_run_started_from(checkout):
    repo, head = checkout
    assert provenance.require_clean() == head
    (repo / "model.py").write_text("x = 4\n")  # committed while the run trains: other code than what ran
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.org", "-C", str(repo)]
    subprocess.run([*git, "commit", "-q", "-am", "two"], check=True)
    assert provenance.git_commit() == head


def test_results_refuse_uncommitted_changes_unless_allowed(checkout):
    repo, head = checkout
    (repo / "model.py").write_text("x = 2\n")
    with pytest.raises(SystemExit, match=f"uncommitted changes to model.py: results would name commit {head}"):
        provenance.require_clean()
    assert provenance.require_clean(allow_dirty=True) == f"{head} with uncommitted changes to model.py"


def test_results_outside_a_checkout_need_the_flag(tmp_path, monkeypatch):
    monkeypatch.setattr(provenance, "PACKAGE", tmp_path)
    with pytest.raises(SystemExit, match="not in a git checkout.*--allow-dirty"):
        provenance.require_clean()
    assert provenance.require_clean(allow_dirty=True) == "unknown"


@pytest.mark.parametrize("runner", [conv_vae, ae_to_cvae], ids=lambda m: m.__name__.rsplit(".", 1)[-1])
def test_a_runner_refuses_a_dirty_tree_before_it_starts(checkout, tmp_path, monkeypatch, runner):
    repo, _ = checkout
    (repo / "model.py").write_text("x = 3\n")

    def no_work(*args, **kwargs):
        raise AssertionError("the runner started work on a dirty tree")

    monkeypatch.setattr(runner, "make_plan", no_work)
    with pytest.raises(SystemExit, match="uncommitted changes to model.py.*--allow-dirty"):
        runner.main(["--profile", "smoke", "--out", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()


def test_the_data_fingerprint_changes_with_the_files_and_not_with_derived_caches(tmp_path, monkeypatch):
    from genlab import data

    monkeypatch.setattr(data, "SYSTEM_DIRS", {"fashion-mnist": (str(tmp_path / "system"),)})
    root = tmp_path / "root"
    (root / "MNIST" / "raw").mkdir(parents=True)
    (root / "MNIST" / "raw" / "train-images-idx3-ubyte").write_bytes(b"x" * 16)
    before = data.fingerprint(root)
    assert data.fingerprint(root) == before
    (root / "celeba-64-train.pt").write_bytes(b"a cache made from the JPEGs")
    (root / ".genlab-download-x").mkdir()
    (root / ".genlab-download-x" / "part").write_bytes(b"half a download")
    assert data.fingerprint(root) == before
    (root / "MNIST" / "raw" / "train-images-idx3-ubyte").write_bytes(b"y" * 17)
    changed = data.fingerprint(root)
    assert changed != before
    (tmp_path / "system").mkdir()
    (tmp_path / "system" / "t10k-images-idx3-ubyte.gz").write_bytes(b"z")
    assert data.fingerprint(root) != changed


def test_the_books_execution_key_names_profile_data_and_environment(tmp_path, monkeypatch):
    from autograder import manifest, notebooks
    from tests.test_book import load_build

    build = load_build()
    source = notebooks.read(manifest.load("vae_theory").source)
    monkeypatch.setenv("GENLAB_DATA", str(tmp_path))
    monkeypatch.setenv("GENLAB_PROFILE", "smoke")
    smoke = build.execution_key(source)
    lock = build._digest([build.ROOT / "requirements" / "lock.txt"])
    assert "profile smoke; data " in smoke and smoke.endswith(f"environment {lock}")
    monkeypatch.setenv("GENLAB_PROFILE", "full")
    full = build.execution_key(source)
    assert full != smoke
    (tmp_path / "FashionMNIST").mkdir()
    (tmp_path / "FashionMNIST" / "t10k-labels-idx1-ubyte").write_bytes(b"labels")
    assert build.execution_key(source) != full
