"""The book builds both editions offline from source/, executes each chapter once, and reads well in a browser.

The student edition holds no solution, model answer or hidden test; every number a model answer
quotes is on its page; every page of both editions typesets its math and shows legible figures and
tables.

The browser checks (:func:`inspect_page`) also serve tests/test_feedback_pages.py: a page is loaded
in headless Chromium through a local server that adds a small script to it; the script waits for
MathJax and the images, measures the page and writes its findings into the page, which Chromium
then dumps. Screenshots of every page are kept under test-output/.
"""

from __future__ import annotations

import base64
import html
import http.server
import io
import json
import math
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import urllib.parse
import urllib.request
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, unquote

import nbformat
import pytest

from autograder import manifest, notebooks
from tests.conftest import ROOT

pytestmark = pytest.mark.slow
BOOK = ROOT / "book"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
NAMES = [m.name for m in manifest.all_manifests()]
WINDOW = (1280, 900)
MIN_TEXT_PX = 9.0  # the smallest text a figure may show once the page has scaled it
MIN_THUMB_PX = 45.0  # the smallest image of a grid on the page: about ten 28-pixel images a row at most
DEFAULT_FONT_PT = 10.0  # matplotlib's default font size, assumed where a figure does not say
SHOT_SLICE_PX = 12000  # taller pages are photographed in slices of this height


def load_build():
    """book/build.py as a module (it is a script, not part of a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("genlab_book_build", BOOK / "build.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


# ----------------------------------------------------------------------------------------------
# the page inspector (also used by tests/test_feedback_pages.py)

PROBE = r"""
<script>
(function () {
  var started = Date.now();
  function column() {
    return document.querySelector("article.bd-article") || document.querySelector("#notebook-container")
        || document.body;
  }
  function mathReady() {
    var mj = window.MathJax;
    if (!mj) return Promise.resolve("none");
    if (mj.startup && mj.startup.promise) return mj.startup.promise.then(function () { return "typeset"; });
    if (Date.now() - started > 15000) return Promise.resolve("not loaded");
    return new Promise(function (r) { setTimeout(r, 100); }).then(mathReady);
  }
  function imagesReady() {
    return Promise.all(Array.from(document.images).map(function (img) {
      return img.complete ? 1 : new Promise(function (r) { img.onload = img.onerror = r; });
    }));
  }
  var SKIP = "pre, code, script, style, textarea, mjx-container, .MathJax, svg, .highlight, #genlab-report";
  var BLOCK = "p, li, td, th, caption, dt, dd, h1, h2, h3, h4, h5, h6, blockquote, div, section, article";
  function texts(col) {
    var walker = document.createTreeWalker(col, NodeFilter.SHOW_TEXT), node, blocks = new Map();
    while ((node = walker.nextNode())) {
      var el = node.parentElement;
      if (!el || el.closest(SKIP)) continue;
      var block = el.closest(BLOCK) || col;
      blocks.set(block, (blocks.get(block) || "") + node.nodeValue);
    }
    return Array.from(blocks.values()).filter(function (t) { return t.trim(); });
  }
  function scrollsAsCode(el) {
    return el.matches("pre, div.highlight, .cell_input, .input_area") && !el.closest(".cell_output, .output_area");
  }
  function describe(el) {
    var id = el.id ? "#" + el.id : "", cls = el.className && el.className.baseVal === undefined
        ? "." + String(el.className).trim().split(/\s+/).join(".") : "";
    var text = (el.textContent || "").trim().replace(/\s+/g, " ").slice(0, 60);
    return el.tagName.toLowerCase() + id + cls + ' "' + text + '"';
  }
  function overflowing(col) {
    var right = col.getBoundingClientRect().right + 1, out = [];
    col.querySelectorAll("*").forEach(function (el) {
      var r = el.getBoundingClientRect();
      if (!r.width || r.right <= right || el.closest("#genlab-report")) return;
      for (var a = el; a && a !== col; a = a.parentElement) {
        var s = getComputedStyle(a);
        if ((s.overflowX === "auto" || s.overflowX === "scroll") && a.getBoundingClientRect().right <= right) {
          if (scrollsAsCode(a)) return;
          break;
        }
      }
      out.push(describe(el) + " reaches x = " + Math.round(r.right) + " (column ends at " + Math.round(right) + ")");
    });
    return out;
  }
  function report() {
    var data;
    try { data = measure(); } catch (e) { data = {error: String(e) + "\n" + (e.stack || "")}; }
    var pre = document.createElement("pre");
    pre.id = "genlab-report";
    pre.textContent = JSON.stringify(data);
    document.body.appendChild(pre);
    var shot = new URLSearchParams(location.search).get("genlab-scroll");
    // Later slices of a tall page: the content moves up (a headless screenshot ignores scrolling).
    if (shot) document.body.style.transform = "translateY(-" + Number(shot) + "px)";
  }
  function measure() {
    var col = column(), rect = col.getBoundingClientRect();
    var headings = Array.from(col.querySelectorAll(".cell_output h1, .cell_output h2, .cell_output h3, "
        + ".cell_output h4, .output_area h1, .output_area h2, .output_area h3, .output_area h4"))
        .map(function (h) { return h.textContent.trim(); });
    var data = {
      url: location.href, title: document.title, column: col.tagName + (col.id ? "#" + col.id : ""),
      column_left: rect.left, column_width: rect.width, height: document.documentElement.scrollHeight,
      page_width: document.documentElement.scrollWidth, viewport_width: window.innerWidth,
      texts: texts(col), output_headings: headings,
      tables: col.querySelectorAll("table").length,
      output_tables: col.querySelectorAll(".cell_output table, .output_area table").length,
      math: col.querySelectorAll("mjx-container").length, math_errors: col.querySelectorAll("mjx-merror").length,
      images: Array.from(col.querySelectorAll("img")).map(function (img) {
        return {src: img.currentSrc || img.src, natural_width: img.naturalWidth, natural_height: img.naturalHeight,
                width: img.getBoundingClientRect().width, complete: img.complete};
      }),
      overflowing: overflowing(col),
      wrapped_numbers: Array.from(col.querySelectorAll("td.num")).filter(function (td) {
        // each piece of text (a mean, the spread set under it) on one line
        var lh = parseFloat(getComputedStyle(td).lineHeight) || 16, walker = document.createTreeWalker(td, 4), node;
        while ((node = walker.nextNode())) {
          var range = document.createRange();
          range.selectNodeContents(node);
          if (range.getBoundingClientRect().height > 1.6 * lh) return true;
        }
        return false;
      }).map(function (td) { return td.textContent.trim(); })
    };
    return data;
  }
  window.addEventListener("load", function () {
    Promise.all([mathReady(), imagesReady()]).then(report, report);
  });
})();
</script>
"""


def admit_probe(page: str) -> str:
    """``page`` with :data:`PROBE`'s hash added to its Content-Security-Policy, if it has one (a feedback page)."""
    from autograder.inert import script_hash

    probe = PROBE.strip().removeprefix("<script>").removesuffix("</script>")
    return page.replace("script-src ", f"script-src {html.escape(script_hash(probe))} ", 1)


def serve(directory: Path, requests: list[str] | None = None):
    """A local HTTP server for ``directory`` that adds :data:`PROBE` to every HTML page; yields its URL.

    Every path asked for is appended to ``requests`` when given (what a page fetched).
    """

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(directory), **kwargs)

        def log_message(self, *args):
            pass

        def send_head(self):
            if requests is not None:
                requests.append(self.path)
            path = Path(self.translate_path(self.path))
            if path.suffix != ".html" or not path.is_file():
                return super().send_head()
            page = admit_probe(path.read_text(encoding="utf-8"))
            cut = page.rfind("</body>")
            page = (page[:cut] + PROBE + page[cut:]) if cut >= 0 else page + PROBE
            body = page.encode("utf-8")
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            return io.BytesIO(body)

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()


def chromium(*args: str, timeout: int = 180, console: bool = False) -> str:
    """Run headless Chromium; its standard output, followed by the page's console messages if ``console``."""
    # A profile folder of its own: a second Chromium on a folder in use hands its work to the first and quits.
    with tempfile.TemporaryDirectory(prefix="genlab-chromium-") as profile:
        base = [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            f"--user-data-dir={profile}",
            "--virtual-time-budget=30000",
        ]
        if console:
            base += ["--enable-logging=stderr", "--v=0"]
        proc = subprocess.run(base + list(args), capture_output=True, text=True, timeout=timeout, check=True)
        if not console:
            return proc.stdout
        return proc.stdout + "\n".join(line for line in proc.stderr.splitlines() if ":CONSOLE" in line)


@dataclass
class Page:
    """What the probe found on one page, with the checks every page must pass."""

    data: dict
    shots: list[Path] = field(default_factory=list)

    def markdown_syntax(self) -> list[str]:
        """Lines outside code that look like a Markdown table or heading that was not rendered."""
        bad = []
        for text in self.data["texts"]:
            for line in text.splitlines():
                s = line.strip()
                if (
                    re.fullmatch(r"\|.*\|.*\|", s)
                    or re.fullmatch(r"\|?\s*:?-{3,}:?\s*(\|\s*:?-{3,}:?\s*)+\|?", s)
                    or re.match(r"#{1,6} \S", s)
                ):
                    bad.append(s[:120])
        return bad

    def raw_math(self) -> list[str]:
        """Text outside code that still holds TeX: a delimiter ($, \\( or \\[) or a command such as \\mathrm
        or \\frac that MathJax did not typeset."""
        found = []
        for text in self.data["texts"]:
            for hit in re.finditer(
                r"\$\$.+?\$\$|\$[^$\s][^$]*\$|\\\(.+?\\\)|\\\[.+?\\\]|\$|\\(?:mathrm|frac|mathcal|tfrac)\b", text, re.S
            ):
                found.append(text[max(0, hit.start() - 30) : hit.end() + 30].replace("\n", " "))
        return found

    def small_figures(self, fetch) -> list[str]:
        """Figures missing, or shown so small that their smallest text is under MIN_TEXT_PX pixels."""
        problems = []
        for img in self.data["images"]:
            if not img["complete"] or not img["natural_width"]:
                problems.append(f"{img['src'][:80]}: not loaded")
                continue
            info = png_info(fetch(img["src"]))
            if info is None:  # not a PNG (an icon, an SVG): no text size to check
                continue
            font_pt = info.get("min_font_pt") or DEFAULT_FONT_PT
            scale = img["width"] / img["natural_width"]
            text_px = font_pt * info["dpi"] / 72 * scale
            if text_px < MIN_TEXT_PX:
                problems.append(
                    f"{img['src'][-40:]}: {img['natural_width']} px wide at {info['dpi']:g} dpi shown "
                    f"{img['width']:.0f} px wide, so its {font_pt:g} pt text is {text_px:.1f} px high"
                )
            if "min_thumb_px" in info and info["min_thumb_px"] * scale < MIN_THUMB_PX:
                problems.append(
                    f"{img['src'][-40:]}: its image grid shows thumbnails {info['min_thumb_px'] * scale:.0f} px "
                    f"wide (at least {MIN_THUMB_PX:g}: ten images a row at most, or a larger figure)"
                )
        return problems


def png_info(data: bytes) -> dict | None:
    """Width, dpi and genlab's notes (smallest font size) of a PNG; None for anything else."""
    if not data.startswith(b"\x89PNG\r\n\x1a\n"):
        return None
    info: dict = {"dpi": 72.0}
    pos = 8
    while pos + 8 <= len(data):
        (length,), kind = struct.unpack(">I", data[pos : pos + 4]), data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            info["width"], info["height"] = struct.unpack(">II", body[:8])
        elif kind == b"pHYs" and body[8] == 1:  # pixels per metre
            info["dpi"] = struct.unpack(">I", body[:4])[0] * 0.0254
        elif kind in (b"tEXt", b"zTXt", b"iTXt"):
            key, _, value = body.partition(b"\0")
            if kind == b"zTXt":
                value = zlib.decompress(value[1:])
            elif kind == b"iTXt":
                value = value[2:].split(b"\0", 2)[-1]
            if key == b"genlab:min_font_pt" and value:
                info["min_font_pt"] = float(value)
            elif key == b"genlab:dpi" and value:
                info["dpi"] = float(value)
            elif key == b"genlab:min_thumb_px" and value:
                info["min_thumb_px"] = float(value)
        pos += 12 + length
    return info


def fetch(url: str) -> bytes:
    if url.startswith("data:"):
        header, _, payload = url.partition(",")
        return base64.b64decode(payload) if header.endswith(";base64") else urllib.parse.unquote_to_bytes(payload)
    with urllib.request.urlopen(url, timeout=30) as response:
        return response.read()


def inspect_page(url: str, shot_name: str, output_dir: Path) -> Page:
    """Load ``url`` in Chromium, read the probe's findings, and photograph the whole page."""
    dom = chromium(f"--window-size={WINDOW[0]},{WINDOW[1]}", "--dump-dom", url)
    found = re.search(r'<pre id="genlab-report"[^>]*>(.*?)</pre>', dom, re.S)
    assert found, f"{url}: the page never finished loading (no report from the probe)"
    page = Page(json.loads(html.unescape(found.group(1))))
    assert "error" not in page.data, f"{url}: the probe failed: {page.data.get('error')}"
    slices = max(1, math.ceil(page.data["height"] / SHOT_SLICE_PX))
    for k in range(slices):
        path = output_dir / (f"{shot_name}.png" if slices == 1 else f"{shot_name}-{k + 1}.png")
        sep = "&" if "?" in url else "?"
        height = min(SHOT_SLICE_PX, page.data["height"] - k * SHOT_SLICE_PX)
        chromium(
            f"--screenshot={path}",
            f"--window-size={WINDOW[0]},{max(height, WINDOW[1])}",
            f"{url}{sep}genlab-scroll={k * SHOT_SLICE_PX}",
        )
        assert path.stat().st_size > 10_000, f"{path}: the screenshot is empty"
        page.shots.append(path)
    return page


def check_page(page: Page, *, expect_tables: int, expect_math: bool) -> None:
    """The checks of the issue, for any page: Markdown, tables, math, figures, width."""
    d = page.data
    where = f"{d['url']} (screenshots: {', '.join(p.name for p in page.shots)})"
    assert not page.markdown_syntax(), f"{where}: Markdown shown as text: {page.markdown_syntax()[:5]}"
    assert not d["output_headings"], f"{where}: a cell's output made page headings: {d['output_headings'][:5]}"
    assert d["output_tables"] >= expect_tables, (
        f"{where}: the cells display {expect_tables} tables, the page shows {d['output_tables']} as tables"
    )
    if expect_math:
        assert d["math"] > 0, f"{where}: math was not typeset (no MathJax output in the page)"
    assert not d["math_errors"], f"{where}: MathJax could not typeset {d['math_errors']} formulas"
    assert not page.raw_math(), f"{where}: raw TeX in the page: {page.raw_math()[:5]}"
    small = page.small_figures(fetch)
    assert not small, f"{where}: figures too small to read: {small}"
    assert not d["overflowing"], f"{where}: wider than the content column: {d['overflowing'][:8]}"
    assert d["page_width"] <= d["viewport_width"], f"{where}: the page scrolls sideways ({d['page_width']} px)"
    assert not d.get("wrapped_numbers"), f"{where}: numbers broken over two lines: {d['wrapped_numbers'][:5]}"


def displayed_tables(nb: nbformat.NotebookNode) -> int:
    """How many tables a notebook's cells display (HTML tables, or Markdown tables)."""
    count = 0
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            html_text = data.get("text/html", "")
            md_text = data.get("text/markdown", "")
            html_text = "".join(html_text) if isinstance(html_text, list) else html_text
            md_text = "".join(md_text) if isinstance(md_text, list) else md_text
            if "<table" in html_text:
                count += html_text.count("<table")
            elif re.search(r"^\|?\s*:?-{3,}", md_text, re.M):
                count += 1
    return count


# ----------------------------------------------------------------------------------------------
# the book


@pytest.fixture(scope="module")
def build():
    return load_build()


def test_every_chapter_is_in_the_toc(build):
    assert set(build.toc_chapters()) == set(NAMES), "book/_toc.yml must list exactly the chapters with a manifest"


def test_execution_key_follows_the_package_and_the_hidden_tests(build, tmp_path, monkeypatch):
    """A change of the genlab package or of a chapter's checks changes the chapter's cache key."""
    (tmp_path / "src" / "genlab").mkdir(parents=True)
    (tmp_path / "autograder" / "checks").mkdir(parents=True)
    module = tmp_path / "src" / "genlab" / "losses.py"
    module.write_text("def f():\n    return 1\n")
    check = tmp_path / "autograder" / "checks" / "x.py"
    check.write_text("def probe_f(t, f):\n    pass\n")
    (tmp_path / "autograder" / "probing.py").write_text("")
    monkeypatch.setattr(build, "ROOT", tmp_path)
    source = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1")])
    first = build.chapter(source).cells[0]
    assert first.metadata["tags"] == [build.KEY_TAG] and not first.outputs
    key = first.source
    assert build.chapter(source).cells[0].source == key, "the key must not change by itself"
    module.write_text("def f():\n    return 2\n")
    assert build.chapter(source).cells[0].source != key, "a change of the package must re-execute the chapter"
    key = build.chapter(source).cells[0].source
    check.write_text("def probe_f(t, f):\n    t.same('a', f())\n")
    assert build.chapter(source).cells[0].source != key, "a change of a check must re-execute the chapter"


def test_progress_bars_leave_no_widgets_in_saved_notebooks(tmp_path):
    """A notebook saved after training shows the bars' last state, never a widget stuck at 0%."""
    from nbclient import NotebookClient

    nb = nbformat.v4.new_notebook(
        cells=[
            nbformat.v4.new_code_cell(
                "from genlab.progress import progress\n"
                "for _ in progress(range(3), desc='outer', leave=True):\n"
                "    for _ in progress(range(4), desc='inner'):\n"
                "        pass\n"
                "print('done')"
            )
        ]
    )
    env = {**__import__("os").environ, "GENLAB_PROGRESS": "1"}
    NotebookClient(nb, kernel_name="python3", timeout=120).execute(env=env, cwd=str(tmp_path))
    outputs = nb.cells[0].outputs
    assert not [o for o in outputs if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
    shown = "".join(o.get("data", {}).get("text/plain", "") for o in outputs)
    assert "outer: 100%" in shown and "3/3" in shown, f"the saved bar should show its final state: {shown!r}"
    assert "inner" not in shown, "a bar with leave=False disappears when it closes"


@pytest.mark.parametrize("name", NAMES)
def test_source_notebook_runs_in_the_smoke_profile(build, name):
    """The book's one execution of each chapter: its source notebook, hidden tests included (as nbval).

    Cached when neither the chapter's code, nor the genlab package, nor its hidden tests changed.
    """
    build.execute_chapter(name)


@pytest.fixture(scope="module")
def built(build) -> dict[str, Path]:
    """Both editions of the whole book, built (executing only what the cache lacks): their HTML folders."""
    build.build()
    return dict(build.OUTPUT)


@pytest.fixture(scope="module")
def html_dir(built) -> Path:
    return built["instructor"]


@pytest.mark.parametrize("name", NAMES)
def test_chapter_has_no_hidden_tests_and_shows_solutions(html_dir, name):
    page = (html_dir / "chapters" / f"{name}.html").read_text()
    assert "autograder.checks" not in page and "HIDDEN TESTS" not in page
    assert "BEGIN SOLUTION" not in page and "raise NotImplementedError()" not in page
    assert "Execution key" not in page, "the cache key cell must stay out of the page"
    images = re.findall(r'<img[^>]+src="([^"]+\.png)"', page)
    assert images, f"{name}: no figures in the rendered chapter"
    for src in images:
        assert (html_dir / "chapters" / src).resolve().exists(), f"{name}: figure {src} is missing"


def executed_chapter(build, name: str) -> nbformat.NotebookNode:
    nb = build.write_chapter(name)
    return build._cache().merge_match_into_notebook(nb)[1]


def test_student_edition_has_no_solution_model_answer_or_hidden_test(build, built):
    """The release's leak scan, and every run of eight words of a model answer, over the student edition;
    the same scan finds them in the instructor edition (so it can fail)."""
    assert build.student_leaks(NAMES) == []
    sources = [notebooks.read(manifest.load(n).source) for n in NAMES]
    secrets = set().union(*(notebooks.secret_lines(nb) for nb in sources))
    found = build.editions.leaks(built["instructor"], sources, secrets)
    assert any("model answer" in f for f in found) and any("model answer" not in f for f in found), found[:5]


@pytest.mark.parametrize("name", NAMES)
def test_student_chapter_is_the_release_with_its_downloads(build, built, name):
    """The page holds the exercises as released and links the notebook and the wheel students download."""
    page = (built["student"] / "student" / f"{name}.html").read_text()
    released, wheel = build.release_files(name)
    text = html.unescape(re.sub(r"<[^>]+>", "", page))  # code cells are split into highlighting spans
    assert "YOUR CODE HERE" in text and "raise NotImplementedError()" in text, (
        f"{name}: the exercises are not on the page"
    )
    for path in (released, wheel):
        links = re.findall(rf'href="([^"]*_downloads/[^"]*/{re.escape(quote(path.name))})"', page)
        assert links, f"{name}: no download link to {path.name}"
        target = (built["student"] / "student" / unquote(links[0])).resolve()
        assert target.read_bytes() == path.read_bytes(), f"{name}: the download is not release/'s {path.name}"


@pytest.mark.parametrize("name", NAMES)
def test_student_chapter_shows_only_what_given_code_computed(build, built, name):
    student = nbformat.read(build.STUDENT / f"{name}.ipynb", as_version=4)
    withheld = build.editions.withheld_outputs(executed_chapter(build, name))
    shown = [c for c in student.cells if c.cell_type == "code" and c.outputs]
    assert shown, f"{name}: the student edition shows no output at all"
    for cell in shown:
        assert build.editions.kind(cell) == "given" and cell.id not in withheld, f"{name}: cell {cell.id} shows output"


# Numbers a model answer may quote without their being on the page: the papers' and the exercises'
# published figures, and constants of the mathematics (a posterior width, a ratio of pixels), and
# illustrations that name no result (conv_vae: "a pixel with, say, 30% probability", the grid's 5%
# and 95% quantiles; harmonic: the 2022 report's ratios to the paper, 260-350 and 17-39).
ALLOWED_NUMBERS = {
    "vae_theory": {0.45, 0.707, 100, 105, 95, 50, 5},
    "ae_to_cvae": set(),
    "conv_vae": {0.71, 0.52, 2.0, 4.0, 30, 5, 95},
    "dcgan": {0.145, 1.39, 0.69, 500, 3072},
    "adversarial": {94, 87, 86, 46, 12, 3072, 55},
    "harmonic": {64, 4, 2.2, 5.2, 17.9, 29.8, 24.6, 13.9, 0.67, 2.59, 14, 3072, 100, 1000, 100000, 260, 350, 17, 39},
}
_ANSWER_NUMBER = re.compile(r"(?<![\w.\-])\d{1,3}(?:[ \u202f]\d{3})+(?![\d.])|(?<![\w.\-])\d+(?:\.\d+)?(?![\w.])")
_OUTPUT_NUMBER = re.compile(r"\d+(?:\.\d+)?(?:e[-+]?\d+)?", re.I)


def quoted_numbers(markdown: str) -> list[str]:
    """The numbers a model answer writes out (glue roles, citations and ordinals like (1) left out)."""
    text = re.sub(r"\{(?:glue|cite)[^}]*\}`[^`]*`", " ", markdown)
    text = re.sub(r"(\d)\\,(\d)", r"\1\2", text)  # TeX thin spaces between thousands
    text = re.sub(r"\(\d\)|\b\d+(?:st|nd|rd|th)\b|\b(?:19|20)\d\d\b|[A-Za-z]+-\d+", " ", text)
    return [m.group(0).replace(" ", "").replace("\u202f", "") for m in _ANSWER_NUMBER.finditer(text)]


def page_numbers(nb: nbformat.NotebookNode) -> list[float]:
    """Every number the page's code and outputs show (glued values included)."""
    texts = []
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        texts.append(cell.source)
        for out in cell.get("outputs", []):
            texts.append("".join(out.get("text", "")))
            for mime, value in out.get("data", {}).items():
                if "text" in mime:
                    texts.append(re.sub(r"<[^>]+>", " ", "".join(value)))
    return [float(m.group(0)) for text in texts for m in _OUTPUT_NUMBER.finditer(text)]


def unsupported(quoted: str, shown: list[float], allowed: set[float]) -> bool:
    """Whether ``quoted`` (as written, e.g. "0.8") is neither allowed nor any shown number at its precision."""
    value = float(quoted)
    if value <= 10 and quoted.isdigit() or value in allowed:
        return False
    digits = len(quoted.split(".")[1]) if "." in quoted else 0
    return not any(round(abs(v), digits) == value for v in shown)


@pytest.mark.parametrize("name", NAMES)
def test_model_answers_quote_only_numbers_their_page_shows(build, name):
    """A number in a model answer is glued from the run, or on the page (outputs or code), or listed above."""
    nb = executed_chapter(build, name)
    shown = page_numbers(nb)
    problems = [
        f"{cell.metadata['nbgrader']['grade_id']}: {number}"
        for cell in nb.cells
        if build.editions.kind(cell) == "written"
        for number in quoted_numbers(cell.source)
        if unsupported(number, shown, ALLOWED_NUMBERS[name])
    ]
    assert not problems, f"{name}: model answers quote numbers their page does not show: {problems}"


def test_the_number_check_can_fail():
    shown = [0.184, 0.840, 16.7, 81.2]
    assert quoted_numbers("from about 0.05 to about 0.8 ({glue:text}`p:.2f`), step 2 of (1)") == ["0.05", "0.8", "2"]
    assert unsupported("0.05", shown, set()) and not unsupported("0.8", shown, set())
    assert not unsupported("2", shown, set()), "small counts (step 2, three seeds) need no source"
    assert unsupported("15.2", [19.44], set()) and not unsupported("19.4", [19.44], set())
    assert quoted_numbers("more than the 65 536 we tried, $L = 16\\,384$") == ["65536", "16384"]


def test_no_cache_outside_the_project_reaches_a_chapter(build, tmp_path, monkeypatch):
    """A chapter's kernel finds its checkpoints inside book/_build, whatever the user's environment says."""
    from nbclient import NotebookClient

    monkeypatch.setenv("GENLAB_CACHE", str(tmp_path / "home-cache"))
    monkeypatch.setenv("HOME", str(tmp_path))
    nb = nbformat.v4.new_notebook(
        cells=[
            nbformat.v4.new_code_cell(
                "from genlab.experiments import conv_vae, harmonic\n"
                "print(harmonic.default_cache(), conv_vae.default_cache())"
            )
        ]
    )
    NotebookClient(nb, kernel_name="python3", timeout=120).execute(env=build.kernel_env(), cwd=str(tmp_path))
    for folder in nb.cells[0].outputs[0]["text"].split():
        assert Path(folder).is_relative_to(BOOK / "_build"), f"a chapter would use the cache {folder}"


@pytest.fixture(scope="module")
def servers(built):
    """A local server for each edition: its base URL."""
    running = {edition: serve(folder) for edition, folder in built.items()}
    yield {edition: next(server) for edition, server in running.items()}
    for server in running.values():
        server.close()


def pages() -> list[tuple[str, str]]:
    """Every page of both editions: the chapters, the first page and the bibliography."""
    found = []
    for edition, folder in (("instructor", "chapters"), ("student", "student")):
        first = "intro" if edition == "instructor" else "student/intro"
        found += [(edition, first), (edition, "bibliography")] + [(edition, f"{folder}/{n}") for n in NAMES]
    return found


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (Debian package `chromium`)")
@pytest.mark.parametrize("edition, page", pages(), ids=[f"{e}-{p.split('/')[-1]}" for e, p in pages()])
def test_every_page_reads_well_in_a_browser(build, servers, output_dir, edition, page):
    """Both editions: math typeset (no $, \\mathrm or \\frac left raw), tables as tables whose numbers stay
    on one line, figures and image grids legible at page width, nothing wider than the column."""
    name = page.split("/")[-1]
    if name in NAMES:
        nb = (
            executed_chapter(build, name)
            if edition == "instructor"
            else nbformat.read(build.STUDENT / f"{name}.ipynb", as_version=4)
        )
        assert not [
            o
            for c in nb.cells
            for o in c.get("outputs", [])
            if "application/vnd.jupyter.widget-view+json" in o.get("data", {})
        ], "stale widgets in the outputs"
        expect_tables, uses_math = (
            displayed_tables(nb),
            any("$" in c.source for c in nb.cells if c.cell_type == "markdown"),
        )
    else:
        expect_tables, uses_math = 0, name == "intro"
    found = inspect_page(f"{servers[edition]}/{page}.html", f"{edition}-{name}", output_dir)
    check_page(found, expect_tables=expect_tables, expect_math=uses_math)
