"""Build the book: chapters generated from source/, then Jupyter Book 1.x.

    python book/build.py

Each chapter is its source notebook with the hidden tests removed and the solution markers
dropped (the instructor edition shows solutions, never hidden tests). Chapters are rewritten
only when their content changes, and execution is cached, so an unchanged rebuild takes seconds.
Sphinx warnings are errors.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat

from autograder import manifest, notebooks

BOOK = Path(__file__).resolve().parent
MARKERS = (notebooks.BEGIN_SOLUTION, notebooks.END_SOLUTION)


def chapter(source: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """The instructor edition of a source notebook: solutions kept, hidden tests removed."""
    nb = nbformat.from_dict(source)
    for cell in nb.cells:
        text = notebooks.drop_regions(cell.source, notebooks.BEGIN_HIDDEN, notebooks.END_HIDDEN)
        cell.source = notebooks.drop_markers(text, *MARKERS).strip("\n")
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    nb.cells = [c for c in nb.cells if c.source.strip()]
    return nb


def write_chapters() -> list[Path]:
    out_dir = BOOK / "chapters"
    out_dir.mkdir(exist_ok=True)
    written = []
    for m in manifest.all_manifests():
        target = out_dir / f"{m.name}.ipynb"
        text = nbformat.writes(chapter(notebooks.read(m.source))) + "\n"
        if not target.exists() or target.read_text() != text:
            target.write_text(text)
        written.append(target)
    return written


def install_mathjax() -> None:
    """Copy MathJax 3 (shipped by the PyPI package django-static-mathjax) into the book, once.

    The default MathJax comes from a CDN, which an offline build or reader cannot reach.
    """
    import mathjax

    target = BOOK / "_static" / "mathjax"
    if not (target / "tex-chtml.js").exists():
        shutil.copytree(Path(mathjax.__file__).parent / "static" / "mathjax" / "es5", target, dirs_exist_ok=True)


def build() -> Path:
    write_chapters()
    install_mathjax()
    env = {**os.environ, "GENLAB_BATCH": "1"}
    # A non-inline MPLBACKEND (Agg, set for headless scripts) reaches the kernels and stops
    # ipykernel from choosing its inline backend: the chapters would render without figures.
    env.pop("MPLBACKEND", None)
    env.setdefault("GENLAB_PROFILE", "smoke")
    jb = Path(sys.executable).parent / "jupyter-book"
    subprocess.run([str(jb), "build", str(BOOK), "--warningiserror", "--keep-going", "--quiet"], check=True, env=env)
    return BOOK / "_build" / "html" / "index.html"


if __name__ == "__main__":
    print(f"book: {build()}")
