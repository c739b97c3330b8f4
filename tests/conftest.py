"""Shared fixtures: a throw-away copy of the course for the pipeline tests."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from autograder import manifest

ROOT = manifest.ROOT
OUTPUT = ROOT / "test-output"  # screenshots and logs worth keeping from a test run


@pytest.fixture(scope="session")
def output_dir() -> Path:
    OUTPUT.mkdir(exist_ok=True)
    return OUTPUT


def make_course(tmp: Path, names: list[str]) -> Path:
    """A course root in ``tmp`` with the config and the source notebooks of ``names``."""
    tmp.mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / "nbgrader_config.py", tmp / "nbgrader_config.py")
    for name in names:
        shutil.copytree(ROOT / "source" / name, tmp / "source" / name)
    return tmp


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Test tensors are tiny: on a busy 2-core machine a second torch thread makes them ~10x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
