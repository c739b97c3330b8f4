"""nbgrader configuration of the course; the course root is this folder.

The standard commands work unchanged from here:
    nbgrader generate_assignment <assignment>
    nbgrader autograde <assignment>
    nbgrader generate_feedback <assignment>
    nbgrader export
"""

from pathlib import Path

from nbconvert.preprocessors import ClearMetadataPreprocessor, CSSHTMLHeaderPreprocessor
from nbgrader.preprocessors import (
    AssignLatePenalties,
    CheckCellMetadata,
    ClearOutput,
    DeduplicateIds,
    IgnorePattern,
    LimitOutput,
    OverwriteKernelspec,
    SaveAutoGrades,
)

from autograder import inert, linkguard
from autograder.course import gradebook_url
from autograder.export import GradesExport
from autograder.feedback import FeedbackExporter, GetGradeStates, SanitizeErrors
from autograder.inert import InertOutputs
from autograder.preprocessors import CapOutputs, GradeExecute, OverwriteCells, RepairCells, VerifyProbes
from autograder.preprocessors.recordgraded import RecordGraded  # last: "graded" only once the scores are saved

here = Path(__file__).resolve().parent
c = get_config()  # noqa: F821 (provided by traitlets when nbgrader loads this file)

c.CourseDirectory.root = str(here)
c.CourseDirectory.course_id = "genlab"
c.CourseDirectory.source_directory = "source"
c.CourseDirectory.release_directory = "release"
# Manifest folders and runtime data stay out of what nbgrader copies with an assignment.
c.CourseDirectory.ignore = [".ipynb_checkpoints", "*.pyc", "__pycache__", "feedback", "*.pt", "results"]

c.CourseDirectory.db_url = gradebook_url(here)

# A submission with deleted graded cells is graded as far as possible: the cells come back
# from the release (scoring nothing) with a note saying so.
c.OverwriteCells.add_missing_cells = True
c.OverwriteCells.missing_cell_notification = (
    "**Grading note:** this cell (id: {cell_id}) was missing from your submission; "
    "it was restored from the release and scores no points.\n\n"
)

# nbgrader runs as root: its copies and chmods refuse a folder that holds a link or a special file.
linkguard.install()

# The export says which submissions are ungraded (a grading failure), instead of writing a zero.
c.ExportApp.plugin_class = GradesExport

# Hidden tests hold only check calls; their tracebacks would show the checks' code. Each graded
# cell says whether its score is decided or waits for a grader, and names its exercise
# (GetGradeStates extends nbgrader's GetGrades); the page typesets its math offline and wraps long
# messages (autograder/feedback.py).
c.GenerateFeedback.preprocessors = [GetGradeStates, SanitizeErrors, InertOutputs, CSSHTMLHeaderPreprocessor]
c.GenerateFeedback.exporter_class = FeedbackExporter

# No page made from a submission runs its content: feedback and formgrader's view of a submission
# (an HTMLExporter configured from this file) show outputs and Markdown sanitised (autograder/inert.py).
c.HTMLExporter.sanitize_html = True
c.HTMLExporter.filters = {"markdown2html": inert.markdown2html, "clean_html": inert.clean_html}
c.HTMLExporter.preprocessors = [InertOutputs]

# A tampered notebook is repaired from the gradebook first (grading metadata, forged or duplicated
# graded cells, kernelspec), with a note in the feedback, so nbgrader's steps after it cannot fail on
# it; locked cells come back from the gradebook, with a warning only about real changes.
c.Autograde.sanitize_preprocessors = [
    RepairCells,
    ClearOutput,
    DeduplicateIds,
    OverwriteKernelspec,
    OverwriteCells,
    CheckCellMetadata,
]

# Execution and verdicts: the kernel runs in a jail (autograder/sandbox.py) and only probes; the
# verdict of every hidden test is decided here, outside it, in a confined process
# (autograder/preprocessors/); then the notebook is cut to the manifest's output cap, whatever
# route its bytes took, before anything is saved or shown.
c.Autograde.autograde_preprocessors = [
    GradeExecute,
    IgnorePattern,
    ClearMetadataPreprocessor,
    LimitOutput,
    VerifyProbes,
    CapOutputs,
    SaveAutoGrades,
    AssignLatePenalties,
    CheckCellMetadata,
    RecordGraded,
]
# A generous per-cell limit; each assignment's manifest sets its own (and the whole run's).
c.Execute.timeout = 600
c.Execute.interrupt_on_timeout = True
c.Execute.kernel_name = "python3"
