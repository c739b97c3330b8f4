"""Build the book: chapters generated from source/, each executed once, then Jupyter Book 1.x.

    python book/build.py [--jobs N] [--only CHAPTER ...]

Each chapter is its source notebook with the hidden tests removed and the solution markers
dropped (the instructor edition shows solutions, never hidden tests). Sphinx warnings are errors.

Execution happens here, not in jupyter-book. The *source* notebook runs top to bottom in a fresh
kernel, hidden tests included (without a probe folder each probe verifies in process, as under
nbval), in ``GENLAB_PROFILE`` (smoke by default). Any error fails the build. The chapter then takes
the outputs of its cells and goes into Jupyter Book's execution cache, where jupyter-book finds it
and executes nothing itself. So one execution is both the smoke-profile check of the source
notebook and the book's outputs.

The cache key is the chapter's code plus a hidden first cell that names the content hash of the
genlab package and of the source notebook's hidden tests with the checks they call: a change to
any of them re-executes the chapter; an unchanged rebuild executes nothing and takes seconds.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import nbformat
import yaml

from autograder import manifest, notebooks

BOOK = Path(__file__).resolve().parent
ROOT = BOOK.parent
CACHE = BOOK / "_build" / ".jupyter_cache"  # execute.cache in _config.yml
MARKERS = (notebooks.BEGIN_SOLUTION, notebooks.END_SOLUTION)
KEY_TAG = "remove-cell"
CELL_TIMEOUT_S = 900

# Run in the kernel before the notebook's first cell (its outputs are dropped): every figure's PNG
# records the smallest font size on it and the dpi it was drawn at, so the browser test can tell
# how large the figure's text is once the page has scaled the image.
FIGURE_NOTES = """
import matplotlib.pyplot
from IPython import get_ipython
from IPython.core.pylabtools import print_figure
from matplotlib.figure import Figure
from matplotlib.text import Text

def _genlab_png(fig):
    sizes = [t.get_fontsize() for t in fig.findobj(Text) if t.get_visible() and t.get_text().strip()]
    notes = {"genlab:min_font_pt": f"{min(sizes):g}" if sizes else "", "genlab:dpi": f"{fig.dpi:g}"}
    return print_figure(fig, "png", bbox_inches="tight", metadata=notes)

get_ipython().display_formatter.formatters["image/png"].for_type(Figure, _genlab_png)
del _genlab_png, get_ipython, print_figure, Figure, Text
"""


class ExecutionFailed(RuntimeError):
    """A source notebook raised while the book executed it."""


def toc_chapters() -> list[str]:
    """The chapters listed in _toc.yml, in order."""
    toc = yaml.safe_load((BOOK / "_toc.yml").read_text())
    return [Path(entry["file"]).name for entry in toc.get("chapters", [])]


def _digest(paths: list[Path], *texts: str) -> str:
    h = hashlib.sha256()
    for path in sorted(paths):
        h.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes() + b"\0")
    for text in texts:
        h.update(text.encode() + b"\0")
    return h.hexdigest()[:16]


def execution_key(source: nbformat.NotebookNode) -> str:
    """The hidden first cell of a chapter: what, besides its visible code, its outputs depend on.

    The genlab package, the hidden tests with their checks, the profile the kernel runs in, the
    data it would read (:func:`genlab.data.fingerprint`) and the locked environment: outputs made
    under ``full``, from other data or with other library versions never stand for this build.
    """
    from genlab.data import fingerprint

    package = _digest(list((ROOT / "src" / "genlab").rglob("*.py")))
    hidden = "\n".join(c.source for c in source.cells if c.cell_type == "code" and notebooks.BEGIN_HIDDEN in c.source)
    checks = _digest([*(ROOT / "autograder" / "checks").rglob("*.py"), ROOT / "autograder" / "probing.py"], hidden)
    lock = ROOT / "requirements" / "lock.txt"
    environment = _digest([lock]) if lock.is_file() else "unlocked"
    return (
        "# Execution key (not shown in the book): the chapter is executed again when it changes.\n"
        f"# genlab package {package}; hidden tests and their checks {checks}\n"
        f"# profile {kernel_env()['GENLAB_PROFILE']}; data {fingerprint()}; environment {environment}"
    )


def chapter(source: nbformat.NotebookNode, executed: nbformat.NotebookNode | None = None) -> nbformat.NotebookNode:
    """The instructor edition of a source notebook: solutions kept, hidden tests removed.

    Without ``executed`` the code cells have no outputs; with it (the source notebook after a run,
    cell for cell) each kept cell takes its outputs.
    """
    nb = nbformat.from_dict(copy.deepcopy(source))
    runs = executed.cells if executed is not None else [None] * len(nb.cells)
    kept = []
    for cell, run in zip(nb.cells, runs, strict=True):
        text = notebooks.drop_regions(cell.source, notebooks.BEGIN_HIDDEN, notebooks.END_HIDDEN)
        cell.source = notebooks.drop_markers(text, *MARKERS).strip("\n")
        if not cell.source.strip():
            continue
        if cell.cell_type == "code":
            cell.outputs = copy.deepcopy(run.outputs) if run is not None else []
            cell.execution_count = run.execution_count if run is not None else None
        kept.append(cell)
    key = nbformat.v4.new_code_cell(execution_key(source), metadata={"tags": [KEY_TAG]}, id="genlab-execution-key")
    nb.cells = [key, *kept]
    return nb


def chapter_path(name: str) -> Path:
    return BOOK / "chapters" / f"{name}.ipynb"


def write_chapter(name: str, source: nbformat.NotebookNode | None = None) -> nbformat.NotebookNode:
    """Write book/chapters/<name>.ipynb (only when its content changed) and return it."""
    nb = chapter(source if source is not None else notebooks.read(manifest.load(name).source))
    target = chapter_path(name)
    target.parent.mkdir(exist_ok=True)
    text = nbformat.writes(nb) + "\n"
    if not target.exists() or target.read_text() != text:
        target.write_text(text)
    return nbformat.reads(text, as_version=4)


_cache_lock = threading.Lock()
_caches: dict[Path, Any] = {}


def _cache():
    """The book's execution cache, its database created once, whichever thread asks first.

    Two threads that create the tables of a new cache folder at once collide (``table settings
    already exists``), so creation happens under a lock and every thread then shares one cache.
    """
    from jupyter_cache import get_cache

    with _cache_lock:
        if CACHE not in _caches:
            cache = get_cache(str(CACHE))
            _ = cache.db  # creates the folder's SQLite tables now, under the lock
            _caches[CACHE] = cache
        return _caches[CACHE]


def is_cached(nb: nbformat.NotebookNode) -> bool:
    try:
        _cache().match_cache_notebook(nb)
        return True
    except KeyError:
        return False


def kernel_env() -> dict[str, str]:
    env = {**os.environ, "GENLAB_BATCH": "1"}
    # A non-inline MPLBACKEND (Agg, set for headless scripts) reaches the kernels and stops
    # ipykernel from choosing its inline backend: the chapters would render without figures.
    env.pop("MPLBACKEND", None)
    env.setdefault("GENLAB_PROFILE", "smoke")
    return env


def execute_source(name: str, source: nbformat.NotebookNode) -> tuple[nbformat.NotebookNode, float]:
    """Run the source notebook of ``name`` (hidden tests included) in a fresh kernel and scratch folder."""
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    nb = copy.deepcopy(source)
    nb.cells.insert(0, nbformat.v4.new_code_cell(FIGURE_NOTES))
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix=f"genlab-book-{name}-") as cwd:
        client = NotebookClient(
            nb, timeout=CELL_TIMEOUT_S, kernel_name="python3", allow_errors=False, record_timing=False
        )
        try:
            client.execute(env=kernel_env(), cwd=cwd)
        except CellExecutionError as err:
            nb.cells.pop(0)
            failed = BOOK / "_build" / "failed" / f"{name}.ipynb"  # the outputs up to the error, to look at
            failed.parent.mkdir(parents=True, exist_ok=True)
            nbformat.write(nb, failed)
            raise ExecutionFailed(
                f"{name}: the source notebook failed in the {kernel_env()['GENLAB_PROFILE']} "
                f"profile (its outputs so far: {failed})\n{err}"
            ) from None
    nb.cells.pop(0)
    return nb, time.perf_counter() - start


def execute_chapter(name: str) -> str:
    """Make sure the chapter's outputs are in the cache: ``"cached"`` or ``"executed in N s"``."""
    from jupyter_cache.base import CacheBundleIn

    source = notebooks.read(manifest.load(name).source)
    nb = write_chapter(name, source)  # the chapter as it is now; its first cell is the execution key
    if is_cached(nb):
        return "cached"
    executed, seconds = execute_source(name, source)
    done = chapter(source, executed)
    # Filed under the key taken before the run: if the package changed meanwhile, the next build runs again.
    done.cells[0] = nb.cells[0]
    _cache().cache_notebook_bundle(
        CacheBundleIn(done, str(chapter_path(name)), data={"execution_seconds": seconds}),
        check_validity=False,
        overwrite=True,
    )
    return f"executed in {seconds:.0f} s"


def execute_chapters(names: list[str], jobs: int = 1) -> dict[str, str]:
    """:func:`execute_chapter` for each name, ``jobs`` at a time; every failure is reported together."""

    def run(name: str) -> str | Exception:
        try:
            return execute_chapter(name)
        except Exception as err:
            return err

    with ThreadPoolExecutor(max(1, jobs)) as pool:
        results = dict(zip(names, pool.map(run, names)))
    failed = {n: r for n, r in results.items() if isinstance(r, Exception)}
    if failed:
        raise ExecutionFailed("\n\n".join(str(e) for e in failed.values()))
    return results


def install_mathjax() -> None:
    """Copy MathJax 3 (shipped by the PyPI package django-static-mathjax) for the book, once.

    The default MathJax comes from a CDN, which an offline build or reader cannot reach. It goes to
    _build/_mathjax, which _config.yml copies next to the pages (html_extra_path).
    """
    import mathjax

    target = BOOK / "_build" / "_mathjax" / "mathjax"
    if not (target / "tex-chtml.js").exists():
        shutil.copytree(Path(mathjax.__file__).parent / "static" / "mathjax" / "es5", target, dirs_exist_ok=True)


def build(jobs: int | None = None, only: list[str] | None = None) -> Path:
    """Execute what the cache lacks, then build the HTML; ``only`` builds a book of just those chapters."""
    names = toc_chapters()
    missing = sorted({m.name for m in manifest.all_manifests()} - set(names))
    if missing:
        raise SystemExit(f"book/_toc.yml does not list the chapters {missing}")
    toc = BOOK / "_toc.yml"
    if only:
        unknown = sorted(set(only) - set(names))
        if unknown:
            raise SystemExit(f"no chapters {unknown} in book/_toc.yml")
        names = [n for n in names if n in only]
        toc = BOOK / "_build" / "_toc.partial.yml"
        toc.parent.mkdir(exist_ok=True)
        toc.write_text(
            yaml.safe_dump(
                {"format": "jb-book", "root": "intro", "chapters": [{"file": f"chapters/{n}"} for n in names]}
            )
        )
    jobs = jobs or int(os.environ.get("GENLAB_BOOK_JOBS", min(2, os.cpu_count() or 1)))
    for name, status in execute_chapters(names, jobs).items():
        print(f"{name}: {status}", flush=True)
    install_mathjax()
    jb = Path(sys.executable).parent / "jupyter-book"
    # From the book's folder: jupyter-book resolves the cache path of _config.yml against the working folder.
    subprocess.run(
        [str(jb), "build", ".", "--toc", str(toc), "--warningiserror", "--keep-going", "--quiet"],
        check=True,
        env=kernel_env(),
        cwd=BOOK,
    )
    return BOOK / "_build" / "html" / "index.html"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, help="chapters executed at once (default: GENLAB_BOOK_JOBS or 2)")
    parser.add_argument("--only", nargs="+", metavar="CHAPTER", help="a book of these chapters alone (a quick look)")
    args = parser.parse_args()
    t0 = time.perf_counter()
    path = build(args.jobs, args.only)
    print(f"book: {path} ({time.perf_counter() - t0:.0f} s)")
