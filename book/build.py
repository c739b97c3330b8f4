"""Build the book's two editions: chapters generated from source/, each executed once, then Jupyter Book 1.x.

    python book/build.py [--jobs N] [--only CHAPTER ...] [--edition instructor|student]

The **instructor edition** (``book/_build/html``) is each chapter's source notebook with the hidden
tests removed and the solution markers dropped: solutions, model answers and every output. The
**student edition** (``book/_build/student/_build/html``) is each chapter's released notebook
(``release/``, what students download from its pages with the student wheel) with the outputs of the
same execution that given code alone computed (book/editions.py); a course publishes it on the first
day of term. It executes nothing, and the build refuses to finish if its pages show a solution line, a
model answer or a hidden test (the release's leak scan). Sphinx warnings are errors.

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
sys.path.insert(0, str(BOOK))  # book/editions.py, also when this file is loaded as a module

import editions  # noqa: E402

CACHE = BOOK / "_build" / ".jupyter_cache"  # execute.cache in _config.yml
# The chapters' checkpoints and caches (genlab's GENLAB_CACHE) stay inside the project: a cache in the
# user's home would let networks trained by another checkout, or by hand, into the book.
GENLAB_CACHE = BOOK / "_build" / "genlab-cache"
STUDENT = BOOK / "student"  # the student edition's pages and downloads (generated: never edit)
OUTPUT = {"instructor": BOOK / "_build" / "html", "student": BOOK / "_build" / "student" / "_build" / "html"}
MARKERS = (notebooks.BEGIN_SOLUTION, notebooks.END_SOLUTION)
KEY_TAG = "remove-cell"
CELL_TIMEOUT_S = 1800  # a cell that trains a grid on a loaded shared 2-core machine can take 15 minutes

# Run in the kernel before the notebook's first cell (its outputs are dropped): every figure's PNG
# records the smallest font size on it, the dpi it was drawn at and its smallest image-grid thumbnail
# (genlab.plotting.figure_notes), so the browser test can tell how large they are once the page has
# scaled the image.
FIGURE_NOTES = """
import matplotlib.pyplot
from IPython import get_ipython
from matplotlib.figure import Figure
from genlab.plotting import figure_png

get_ipython().display_formatter.formatters["image/png"].for_type(Figure, figure_png)
del get_ipython, Figure, figure_png
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
    env = {**os.environ, "GENLAB_BATCH": "1", "GENLAB_CACHE": str(GENLAB_CACHE)}
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
    return {n: r for n, r in results.items() if isinstance(r, str)}


def install_mathjax() -> None:
    """Copy MathJax 3 (shipped by the PyPI package django-static-mathjax) for the book, once.

    The default MathJax comes from a CDN, which an offline build or reader cannot reach. It goes to
    _build/_mathjax, which _config.yml copies next to the pages (html_extra_path).
    """
    import mathjax

    target = BOOK / "_build" / "_mathjax" / "mathjax"
    if not (target / "tex-chtml.js").exists():
        shutil.copytree(Path(mathjax.__file__).parent / "static" / "mathjax" / "es5", target, dirs_exist_ok=True)


def release_files(name: str) -> tuple[Path, Path]:
    """The released notebook of a chapter and the student wheel, as students download them."""
    m = manifest.load(name)
    notebook = ROOT / "release" / m.name / m.notebook
    wheels = sorted((ROOT / "release").glob("genlab-*+student-py3-none-any.whl"))
    if not notebook.is_file() or not wheels:
        raise SystemExit(f"{notebook} or the student wheel is missing: run `make release` before the student edition")
    return notebook, wheels[-1]


def write_student_chapter(name: str) -> Path:
    """book/student/<name>.ipynb: the released notebook with the outputs it may show, and its downloads."""
    released, wheel = release_files(name)
    try:
        executed = _cache().merge_match_into_notebook(write_chapter(name))[1]
    except KeyError:
        raise SystemExit(f"{name} has no execution in the cache for its current code: build the book again") from None
    downloads = STUDENT / "downloads"
    downloads.mkdir(parents=True, exist_ok=True)
    for path in (released, wheel):
        shutil.copyfile(path, downloads / path.name)
    header = (
        f"**Download** {{download}}`the notebook <downloads/{released.name}>` (fill in the cells that say "
        f"`# YOUR CODE HERE` and the written answers) and {{download}}`the genlab package <downloads/{wheel.name}>` "
        f"(`pip install {wheel.name}`). Outputs appear below where given code alone computes them; run your "
        "notebook for the rest."
    )
    try:
        nb = editions.student_chapter(notebooks.read(released), executed, header)
    except ValueError as err:
        raise SystemExit(f"{name}: {err}") from None
    target = STUDENT / f"{name}.ipynb"
    text = nbformat.writes(nb) + "\n"
    if not target.exists() or target.read_text() != text:
        target.write_text(text)
    return target


def write_student_intro() -> Path:
    """book/student/intro.md: the student edition's first page (intro_student.md) with the wheel's name."""
    wheel = release_files(toc_chapters()[0])[1]
    (STUDENT / "downloads").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(wheel, STUDENT / "downloads" / wheel.name)
    target = STUDENT / "intro.md"
    text = (BOOK / "intro_student.md").read_text().replace("WHEEL", wheel.name)
    if not target.exists() or target.read_text() != text:
        target.write_text(text)
    return target


def _edition_files(edition: str, names: list[str]) -> tuple[Path, Path]:
    """The table of contents and the configuration of an edition (generated under _build/)."""
    config = yaml.safe_load((BOOK / "_config.yml").read_text())
    if edition == "student":
        config["title"] += " (student edition)"
        config["execute"] = {**config["execute"], "execute_notebooks": "off"}  # outputs come with the pages
        root, folder = "student/intro", "student"
    else:
        root, folder = "intro", "chapters"
    toc = {
        "format": "jb-book",
        "root": root,
        "chapters": [*({"file": f"{folder}/{n}"} for n in names), {"file": "bibliography"}],
    }
    out = BOOK / "_build"
    out.mkdir(exist_ok=True)
    (out / f"_toc.{edition}.yml").write_text(yaml.safe_dump(toc, sort_keys=False))
    (out / f"_config.{edition}.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    return out / f"_toc.{edition}.yml", out / f"_config.{edition}.yml"


def build_edition(edition: str, names: list[str]) -> Path:
    """Run jupyter-book for one edition of the chapters ``names`` (already executed); its index.html."""
    if edition == "student":
        write_student_intro()
        for name in names:
            write_student_chapter(name)
    toc, config = _edition_files(edition, names)
    jb = Path(sys.executable).parent / "jupyter-book"
    output = ["--path-output", str(OUTPUT[edition].parents[1])] if edition == "student" else []
    # From the book's folder: jupyter-book resolves the cache path of _config.yml against the working folder.
    subprocess.run(
        [str(jb), "build", ".", "--toc", str(toc), "--config", str(config), *output]
        + ["--warningiserror", "--keep-going", "--quiet"],
        check=True,
        env=kernel_env(),
        cwd=BOOK,
    )
    if edition == "student":
        found = student_leaks(names)
        if found:
            raise SystemExit("the student edition shows what only the instructor may see:\n" + "\n".join(found[:20]))
    return OUTPUT[edition] / "index.html"


def student_leaks(names: list[str]) -> list[str]:
    """The release leak scan's secrets and the model answers of ``names``, found in the built student edition."""
    from autograder.release import PACKAGE, strip_reference

    assignments = [manifest.load(n) for n in names]
    sources = [notebooks.read(m.source) for m in assignments]
    secrets = notebooks.reference_lines(PACKAGE.rglob("*.py"))
    for nb in sources:
        secrets |= notebooks.secret_lines(nb)
    secrets -= {
        line.strip() for path in PACKAGE.rglob("*.py") for line in strip_reference(path.read_text()).splitlines()
    }
    return editions.leaks(OUTPUT["student"], sources, secrets)


def build(
    jobs: int | None = None, only: list[str] | None = None, edition_names: tuple[str, ...] = ("instructor", "student")
) -> dict[str, Path]:
    """Execute what the cache lacks, then build the editions; ``only`` builds a book of just those chapters."""
    names = toc_chapters()
    missing = sorted({m.name for m in manifest.all_manifests()} - set(names))
    if missing:
        raise SystemExit(f"book/_toc.yml does not list the chapters {missing}")
    if only:
        unknown = sorted(set(only) - set(names))
        if unknown:
            raise SystemExit(f"no chapters {unknown} in book/_toc.yml")
        names = [n for n in names if n in only]
    jobs = jobs or int(os.environ.get("GENLAB_BOOK_JOBS", min(2, os.cpu_count() or 1)))
    for name, status in execute_chapters(names, jobs).items():
        print(f"{name}: {status}", flush=True)
    install_mathjax()
    return {edition: build_edition(edition, names) for edition in edition_names}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, help="chapters executed at once (default: GENLAB_BOOK_JOBS or 2)")
    parser.add_argument("--only", nargs="+", metavar="CHAPTER", help="a book of these chapters alone (a quick look)")
    parser.add_argument("--edition", choices=tuple(OUTPUT), help="build one edition (default: both)")
    args = parser.parse_args()
    t0 = time.perf_counter()
    built = build(args.jobs, args.only, (args.edition,) if args.edition else tuple(OUTPUT))
    for edition, path in built.items():
        print(f"{edition} edition: {path}")
    print(f"built in {time.perf_counter() - t0:.0f} s")
