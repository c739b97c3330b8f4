"""book/build.py without executing a notebook: what two chapters executed at once share."""

from __future__ import annotations

import copy
import threading
import time

import pytest

from tests.test_book import load_build


@pytest.mark.parametrize("attempt", range(5))
def test_two_chapters_executed_at_once_from_an_empty_cache(tmp_path, monkeypatch, attempt):
    """jobs=2 on an empty cache folder: both chapters are filed (the cache's tables are made once)."""
    build = load_build()
    monkeypatch.setattr(build, "CACHE", tmp_path / "cache")
    monkeypatch.setattr(build, "chapter_path", lambda name: tmp_path / "chapters" / f"{name}.ipynb")
    both_running = threading.Barrier(2, timeout=30)

    def fake_execution(name, source):
        both_running.wait()  # the two threads meet here, then reach the new cache together
        return copy.deepcopy(source), 0.0

    monkeypatch.setattr(build, "execute_source", fake_execution)
    names = ["vae_theory", "ae_to_cvae"]
    start = time.perf_counter()
    assert build.execute_chapters(names, jobs=2) == {name: "executed in 0 s" for name in names}
    assert time.perf_counter() - start < 60
    assert build.execute_chapters(names, jobs=2) == {name: "cached" for name in names}


def test_each_edition_builds_its_own_pages_and_the_student_edition_executes_nothing():
    """The student edition's configuration turns execution off (its pages carry their outputs)."""
    import yaml

    build = load_build()
    names = build.toc_chapters()
    toc_path, config_path = build._edition_files("student", names)
    toc, config = yaml.safe_load(toc_path.read_text()), yaml.safe_load(config_path.read_text())
    assert config["execute"]["execute_notebooks"] == "off"
    assert "student edition" in config["title"]
    assert toc["root"] == "student/intro"
    assert [c["file"] for c in toc["chapters"]] == [*(f"student/{n}" for n in names), "bibliography"]
    toc_path, config_path = build._edition_files("instructor", names)
    toc, config = yaml.safe_load(toc_path.read_text()), yaml.safe_load(config_path.read_text())
    assert config["execute"]["execute_notebooks"] == "cache"
    assert [c["file"] for c in toc["chapters"]] == [*(f"chapters/{n}" for n in names), "bibliography"]
