"""The book builds offline from source/ and reads well in a real browser."""
from __future__ import annotations

import functools
import http.server
import re
import shutil
import subprocess
import threading
from pathlib import Path

import pytest

from autograder import manifest
from tests.conftest import ROOT

pytestmark = pytest.mark.slow
BOOK = ROOT / "book"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def html_dir() -> Path:
    import sys

    sys.path.insert(0, str(BOOK))
    try:
        import build
    finally:
        sys.path.remove(str(BOOK))
    build.build()
    return BOOK / "_build" / "html"


@pytest.fixture(scope="module")
def server(html_dir):
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(html_dir))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    handler.log_message = lambda *a: None
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def chromium(*args: str, timeout: int = 120) -> str:
    base = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--user-data-dir=/tmp/genlab-chromium", "--virtual-time-budget=20000"]
    return subprocess.run(base + list(args), capture_output=True, text=True, timeout=timeout, check=True).stdout


def test_every_chapter_is_in_the_toc():
    toc = (BOOK / "_toc.yml").read_text()
    for m in manifest.all_manifests():
        assert f"chapters/{m.name}" in toc, f"{m.name} is missing from book/_toc.yml"


@pytest.mark.parametrize("name", [m.name for m in manifest.all_manifests()])
def test_chapter_has_no_hidden_tests_and_shows_solutions(html_dir, name):
    page = (html_dir / "chapters" / f"{name}.html").read_text()
    assert "autograder.checks" not in page and "HIDDEN TESTS" not in page
    assert "BEGIN SOLUTION" not in page and "raise NotImplementedError()" not in page
    images = re.findall(r'<img[^>]+src="([^"]+\.png)"', page)
    assert images, f"{name}: no figures in the rendered chapter"
    for src in images:
        assert (html_dir / "chapters" / src).resolve().exists(), f"{name}: figure {src} is missing"


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (Debian package `chromium`)")
@pytest.mark.parametrize("name", [m.name for m in manifest.all_manifests()])
def test_chapter_renders_in_a_browser(server, output_dir, name):
    url = f"{server}/chapters/{name}.html"
    dom = chromium("--dump-dom", url)
    assert manifest.load(name).title.split(":")[0][:20] in dom or "<h1" in dom
    assert dom.count("<mjx-container") >= 5, "math was not typeset (no MathJax output in the page)"
    shot = output_dir / f"book-{name}.png"
    chromium(f"--screenshot={shot}", "--window-size=1280,2400", url)
    assert shot.stat().st_size > 10_000, "the screenshot is empty"
