"""``CapOutputs``: the graded notebook under the assignment's output cap, whatever route its bytes took.

The execution step caps what the kernel sends as it arrives (autograder/preprocessors/
gradeexecute.py), but bytes reach a graded notebook by other routes too: a display updated in
place, the verdicts VerifyProbes writes from the probes' records, repeated crash messages.
This step runs after VerifyProbes and before the scores are saved, so that the notebook nbgrader
writes, the copy the status table stores and the feedback made from it all start under the
manifest's ``output_limit_mb``: outputs are cut from where the cap is reached, with a note,
and the errors of graded cells always stay (autograder/outputcap.py).
"""

from __future__ import annotations

from nbformat import NotebookNode
from nbgrader.preprocessors import NbGraderPreprocessor
from traitlets import Bool, Integer

from autograder import outputcap


class CapOutputs(NbGraderPreprocessor):
    """Cut a graded notebook's outputs to the manifest's output cap (nbgrader's LimitOutput counts lines only)."""

    enabled = Bool(True).tag(config=True)
    limit_mb = Integer(8, help="The cap where the assignment has no manifest with output_limit_mb").tag(config=True)

    def preprocess(self, nb: NotebookNode, resources: dict):
        limit = outputcap.output_limit(resources, self.limit_mb * 2**20)
        cut = outputcap.cap_notebook(nb, limit)
        if cut:
            self.log.warning("outputs cut by about %d bytes to keep the notebook under %d bytes", cut, limit)
        return nb, resources
