"""The full-dry run: what an instructor's GPU runner executes, executed here first, on the CPU.

``GENLAB_PROFILE=full-dry`` is the full profile (its model sizes, the real data loaders, never a
stand-in, its checkpoints and results writers) with epochs, sample counts and attack budgets cut
to a minimum (``P.pick(..., dry=...)``, and the ``full-dry`` plans of genlab.experiments). Here it
reads a data root of small folders in the exact on-disk formats of MNIST, Fashion-MNIST, CIFAR-10
and CelebA (tests/fakedata.py), so each epoch is one or two batches.

Every chapter's source notebook runs top to bottom as the book executes it (hidden tests
included), and every results runner writes its tables, README and checkpoints.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from autograder import manifest, notebooks
from tests.conftest import ROOT
from tests.fakedata import fake_root
from tests.test_book import load_build

pytestmark = pytest.mark.slow
# Chapters whose full profile does not fit a CPU test run even when dry, and why. harmonic: LipSDP on
# the full-width (256) networks, which no budget shortens: five SCS iterations leave some LMIs
# "infeasible", and enough iterations take minutes per network (40 s to 200 s for each sinc network,
# more for the images), so its grid timed out after 15 minutes here.
TOO_SLOW_WHEN_DRY = {"harmonic"}
CHAPTERS = [m.name for m in manifest.all_manifests() if m.name not in TOO_SLOW_WHEN_DRY]
# the runner of each chapter that has one, with the options that keep its files in the test's folder
RUNNERS = {
    "conv_vae": ["--cache", "{cache}"],
    "adversarial": [],
    "dcgan": [],
}
RUN_TIMEOUT_S = 600


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    return fake_root(tmp_path_factory.mktemp("full-dry-data"))


@pytest.fixture
def full_dry(data_root, tmp_path, monkeypatch) -> dict[str, str]:
    """The environment of a full-dry run: the profile, the small data root, caches in the test's folder."""
    env = {
        "GENLAB_PROFILE": "full-dry",
        "GENLAB_DATA": str(data_root),
        "GENLAB_CACHE": str(tmp_path / "cache"),
        "GENLAB_BATCH": "1",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("NBGRADER_EXECUTION", raising=False)
    return env


def text_of(nb) -> str:
    """Everything the notebook's cells printed."""
    out = []
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            out.append(output.get("text", "") or output.get("data", {}).get("text/plain", ""))
    return "\n".join(out)


def substituted(text: str) -> bool:
    """Whether genlab.data announced a stand-in ("stand-in: ...", "... standing in for ...")."""
    return "stand-in:" in text or "standing in for" in text


def test_the_stand_in_check_reads_what_genlab_data_prints():
    assert substituted("stand-in: CIFAR-10 is not available here; using Fashion-MNIST padded to 32x32")
    assert substituted("- data: fashion-mnist standing in for MNIST; 4000 training")
    assert not substituted("wall time: standard 20.2 s, augmented 14.2 s; standard deviations from 0.1")


@pytest.mark.parametrize("name", CHAPTERS)
def test_the_chapter_runs_its_full_profile(name, full_dry):
    build = load_build()
    source = notebooks.read(manifest.load(name).source)
    executed, _ = build.execute_source(name, source)  # raises, naming the cell, when a cell fails
    printed = text_of(executed)
    assert "profile full-dry" in printed, f"{name}: the setup cell did not report the full-dry profile"
    assert not substituted(printed), f"{name}: a dataset was substituted"


@pytest.mark.parametrize("runner", sorted(RUNNERS))
def test_the_runner_writes_its_full_results(runner, full_dry, tmp_path):
    out = tmp_path / "results"
    extra = [a.format(cache=tmp_path / "checkpoints") for a in RUNNERS[runner]]
    cmd = [sys.executable, "-m", f"genlab.experiments.{runner}", "--profile", "full-dry", "--out", str(out), *extra]
    proc = subprocess.run(
        [*cmd, "--allow-dirty"],  # a developer's tree may hold changes; CI's is clean either way
        cwd=ROOT,
        env={**os.environ, **full_dry, "MPLBACKEND": "Agg"},
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
    )
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    readmes = list(out.rglob("README.md"))
    assert readmes, f"{runner}: no README.md under {out}"
    readme = readmes[0].read_text()
    assert "full-dry" in readme and "commit" in readme, readme
    assert not substituted(readme), f"{runner}: a dataset was substituted:\n{readme}"
    if "--cache" in RUNNERS[runner]:
        assert list((tmp_path / "checkpoints").rglob("*.pt")), f"{runner}: no checkpoint written"
