"""nbgrader steps of the course's grader (one class per module, as nbgrader's own)."""

from autograder.preprocessors.capoutputs import CapOutputs
from autograder.preprocessors.gradeexecute import GradeExecute, GradingFailure
from autograder.preprocessors.overwritecells import OverwriteCells
from autograder.preprocessors.repaircells import RepairCells
from autograder.preprocessors.verifyprobes import VerificationError, VerifyProbes

__all__ = [
    "CapOutputs",
    "GradeExecute",
    "GradingFailure",
    "OverwriteCells",
    "RepairCells",
    "VerificationError",
    "VerifyProbes",
]
