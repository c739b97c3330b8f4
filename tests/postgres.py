"""A private PostgreSQL server for tests (autograder/pgserver.py): started once per module, stopped after it."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

from autograder import pgserver


def durable_folder(name: str) -> Path:
    """A folder for a durable server that the system keeps (as a course's must be): test-output/ in this
    checkout, or /var/lib/genlab-tests when the checkout itself is in a temporary folder."""
    checkout = Path(__file__).resolve().parent.parent
    base = checkout / "test-output"
    if pgserver._volatile(checkout):
        base = Path("/var/lib/genlab-tests")
    return base / name


@pytest.fixture(scope="module")
def postgres():
    """A running fast server (no fsync, no password on 127.0.0.1) with an empty database ``genlab``; ``.url`` is
    its SQLAlchemy URL."""
    why = pgserver.missing()
    if why:
        pytest.skip(why)
    folder = Path(tempfile.mkdtemp(prefix="genlab-pg-"))  # not under pytest's 0700 folders: the server's user reads it
    server = pgserver.start(folder, fast=True)
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)
