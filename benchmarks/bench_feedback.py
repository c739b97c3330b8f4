"""Feedback generation per submission, with the sanitising of issue 22 and without it, side by side.

    python benchmarks/bench_feedback.py [--submissions 4] [--reps 3]

Grades ``--submissions`` submissions of the small assignment of tests/gradingcourse.py, each with
the outputs a chapter shows (eight figures, HTML tables, Markdown with math, a few hundred lines
of training log), half of them also with the HTML/JavaScript vectors of the hostile suite. Then
it generates each submission's feedback in-process (nbgrader's ``NbGraderAPI.generate_feedback``,
what ``nbgrader generate_feedback`` runs) with the course's configuration, and with the
sanitising steps taken out (no nh3 on HTML and Markdown, no inert outputs), ``--reps`` times in
alternating order so that a load that drifts favours neither, and prints

    feedback_sanitising: <with / without>x
    feedback_sanitising_added_per_submission: <s>     (target: at most 0.2 s)

with the medians per submission of both ways.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import nbformat  # noqa: E402
from nbconvert.preprocessors import CSSHTMLHeaderPreprocessor  # noqa: E402
from nbgrader.apps import NbGraderAPI  # noqa: E402
from nbgrader.coursedir import CourseDirectory  # noqa: E402
from traitlets.config.loader import PyFileConfigLoader  # noqa: E402

from autograder import release  # noqa: E402
from autograder.feedback import GetGradeStates, SanitizeErrors  # noqa: E402
from tests import gradingcourse as gc  # noqa: E402
from tests.test_feedback_pages import VECTOR_MARKDOWN, VECTOR_OUTPUTS  # noqa: E402

# What a chapter's executed cells show: figures, tables, Markdown with math, a training log.
CHAPTER_OUTPUTS = [
    """
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from IPython.display import HTML, Markdown, display
rng = np.random.default_rng(0)
for k in range(8):
    fig, axes = plt.subplots(1, 3, figsize=(9, 3))
    for ax in axes:
        ax.imshow(rng.random((28, 28)), cmap="gray")
        ax.set_title(f"figure {k}")
    plt.show()
""",
    """
rows = "".join(
    f"<tr><th>{i}</th>" + "".join(f"<td>{rng.random():.4f}</td>" for _ in range(6)) + "</tr>" for i in range(30)
)
for _ in range(3):
    display(HTML(f"<table class='dataframe' border='1'><thead><tr><th></th>"
                 + "".join(f"<th>col {j}</th>" for j in range(6)) + f"</tr></thead><tbody>{rows}</tbody></table>"))
display(Markdown("The ELBO $\\\\mathcal{L} = \\\\mathbb{E}_q[\\\\log p(x|z)]"
                 " - \\\\mathrm{KL}(q \\\\| p)$ after **training**."))
for epoch in range(300):
    print(f"epoch {epoch:3d}: loss {1 / (epoch + 1):.5f}  kl {0.1 * epoch:.3f}")
""",
]


def course(n: int) -> Path:
    """A graded course of ``n`` submissions with chapter-like outputs (every other one with the vectors)."""
    root = gc.make_course(Path(tempfile.mkdtemp(prefix="genlab-bench-feedback-")))
    for k in range(n):
        nb = gc.submission("correct-1")
        nb.cells += [nbformat.v4.new_code_cell(code) for code in CHAPTER_OUTPUTS]
        nb.cells.append(nbformat.v4.new_markdown_cell("My notes: the KL term $\\beta$ grows.\n\n" * 20))
        if k % 2:
            nb.cells += [nbformat.v4.new_code_cell(VECTOR_OUTPUTS), nbformat.v4.new_markdown_cell(VECTOR_MARKDOWN)]
        folder = root / "submitted" / f"student-{k}" / gc.NAME
        folder.mkdir(parents=True)
        nbformat.write(nb, folder / f"{gc.NAME}.ipynb")
        release.nbgrader("autograde", gc.NAME, "--student", f"student-{k}", "--force", root=root)
    return root


def apis(root: Path) -> dict[str, NbGraderAPI]:
    """The course's configuration ("sanitised") and the same without the sanitising steps ("plain")."""
    made = {}
    for way in ("sanitised", "plain"):
        config = PyFileConfigLoader("nbgrader_config.py", path=str(root)).load_config()
        if way == "plain":
            config.GenerateFeedback.preprocessors = [GetGradeStates, SanitizeErrors, CSSHTMLHeaderPreprocessor]
            config.HTMLExporter.sanitize_html = False
            config.HTMLExporter.filters = {}
            config.HTMLExporter.preprocessors = []
        made[way] = NbGraderAPI(CourseDirectory(config=config), config=config)
    return made


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--submissions", type=int, default=4)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    root = course(args.submissions)
    print(f"graded {args.submissions} submissions in {time.perf_counter() - start:.0f} s ({root})")
    ways = apis(root)
    times: dict[str, list[float]] = {way: [] for way in ways}
    sizes: dict[str, int] = {}
    for rep in range(args.reps + 1):  # the first round warms both ways up and is not counted
        for way in list(ways) if rep % 2 else list(reversed(ways)):
            for k in range(args.submissions):
                began = time.perf_counter()
                result = ways[way].generate_feedback(gc.NAME, f"student-{k}", force=True)
                seconds = time.perf_counter() - began
                if not result["success"]:
                    raise SystemExit(f"generate_feedback failed ({way}): {result.get('error') or result.get('log')}")
                if rep:
                    times[way].append(seconds)
                page = root / "feedback" / f"student-{k}" / gc.NAME / f"{gc.NAME}.html"
                sizes[way] = max(sizes.get(way, 0), page.stat().st_size)
    with_, without = statistics.median(times["sanitised"]), statistics.median(times["plain"])
    print(f"feedback_sanitising: {with_ / without:.2f}x")
    print(f"feedback_sanitising_added_per_submission: {with_ - without:.3f} s (target: at most 0.2 s)")
    print(
        f"  per submission (median of {len(times['plain'])}): without sanitising {without:.3f} s, "
        f"with {with_:.3f} s; largest page {sizes['plain'] / 1e6:.2f} MB without, "
        f"{sizes['sanitised'] / 1e6:.2f} MB with"
    )


if __name__ == "__main__":
    main()
