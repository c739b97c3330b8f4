"""``VerifyProbes``: decide every hidden-test cell from what its probes recorded, outside the kernel.

nbgrader scores a test cell from its outputs (``determine_grade``: an error or any stderr is 0,
a number in the result is partial credit, anything else is full marks). This step therefore owns
the outputs of the autograded test cells, and runs between ``LimitOutput`` and ``SaveAutoGrades``:

* stderr becomes stdout, marked as such: a warning is no failure;
* a result is shown as plain output: only the grader gives partial credit;
* an error the kernel reported stays (a failed visible assert can only lower a student's own
  grade, so hiding one gains nothing);
* each probe the cell calls is verified (autograder/probing.py) with the seed the execution step
  chose, and the first problem becomes the cell's error output, so feedback reads like any
  failed test. The hidden block runs before the visible asserts, so a cell whose visible assert
  failed still shows the hidden test's diagnosis after it.

The records come from the submission's kernel, so they are decoded and verified in a process of
their own (autograder/confined.py) with limits of its own: ``memory_mb`` beyond the grader's
memory, ``cpu_s`` of CPU per test cell. A record that takes more fails its test with a message;
the grader, and every other submission on the machine, never notice. A fault of the course (a
check that breaks, ``probing.GraderError``, or a record a probe wrote that the grader cannot read)
fails the step: the submission is ungraded, never given a zero.
"""

from __future__ import annotations

import importlib
import re

from nbformat import NotebookNode
from nbformat.v4 import new_output
from nbgrader import utils
from nbgrader.preprocessors import NbGraderPreprocessor
from traitlets import Bool, Integer

from autograder import probing, status
from autograder.confined import Confined, LimitExceeded, Limits, out_of_memory

CHECKS_IMPORT = re.compile(r"^\s*from\s+autograder\.checks\.(\w+)\s+import\b", re.M)
PROBE_CALL = re.compile(r"^\s*((?:probe|check)_\w+)\s*\(", re.M)
STDERR_NOTE = "[printed on stderr; warnings do not cost points]\n"


class VerificationError(RuntimeError):
    """The grader could not verify (a broken check): the submission is left ungraded."""


def probe_calls(source: str) -> list[tuple[str, str]]:
    """(chapter module, probe name) for every probe a test cell calls."""
    modules = CHECKS_IMPORT.findall(source)
    calls = PROBE_CALL.findall(source)
    if calls and len(set(modules)) != 1:
        raise VerificationError(
            f"a hidden-test cell must import its probes from one autograder.checks module: {source!r}"
        )
    return [(modules[0], name) for name in calls]


def forged(name: str, why: str) -> str:
    """The message of a test whose record the submission damaged or wrote itself."""
    return (
        f"{name}(...): its record could not be read: it was not written by the hidden test ({why}). "
        "Do not write to .probes"
    )


def judge(calls: list[tuple[str, str]], payloads: dict[str, bytes], seed: int) -> str | None:
    """The first problem of a test cell's probes, or None when all of them verify."""
    for module, name in calls:
        check = getattr(importlib.import_module(f"autograder.checks.{module}"), name, None)
        if not isinstance(check, probing.Check):
            raise VerificationError(f"autograder.checks.{module} has no check {name}")
        data = payloads.get(check.exercise)
        if data is None:
            return (
                f"{name}(...) recorded nothing: the hidden test did not run to its end (an error above in "
                "this cell, or earlier in the notebook, stopped it)"
            )
        try:
            payload = probing.decode(data)
        except probing.UnconvertedRecord as exc:  # the probe's own record: a value _portable should have converted
            raise probing.GraderError(f"{name}: the grader could not read the record its probe wrote ({exc})") from exc
        except probing.BadRecord as exc:
            return forged(name, str(exc))
        except Exception as exc:  # forged by the submission, or a value the probe should have converted
            if out_of_memory(exc):
                raise  # the confined worker's limit: reported as such
            foreign = probing.foreign_record(data)
            if foreign is None:
                raise probing.GraderError(
                    f"{name}: the grader could not read the record its probe wrote ({type(exc).__name__}: "
                    f"{str(exc)[:200]})"
                ) from exc
            return forged(name, foreign)
        problem = check.verify(payload, seed)  # a probing.GraderError (the check broke) goes up as it is
        if problem:
            return problem
    return None


class VerifyProbes(NbGraderPreprocessor):
    """Verify the probes of each autograded test cell and write the verdict into its outputs."""

    enabled = Bool(True).tag(config=True)
    memory_mb = Integer(1024, help="Memory the verifying process may use beyond the grader's, in MB").tag(config=True)
    cpu_s = Integer(20, help="CPU seconds to decode and verify the records of one test cell").tag(config=True)
    max_message = Integer(2000, help="Characters of a verdict kept in a test cell's output").tag(config=True)

    _worker: Confined | None = None  # the confined verifier of the notebook being verified

    def preprocess(self, nb: NotebookNode, resources: dict):
        status.lap(resources, "verify")
        info = resources.get("genlab_probe")
        if info is None:
            raise VerificationError("VerifyProbes needs GradeExecute as the execution step (see nbgrader_config.py)")
        try:
            with self._confined(info) as self._worker:
                for cell in nb.cells:
                    if cell.cell_type == "code" and utils.is_grade(cell) and not utils.is_solution(cell):
                        self._judge_cell(cell, info)
        except (VerificationError, probing.GraderError) as exc:
            status.mark(self, resources, "ungraded", f"verification failed: {exc}")
            raise
        finally:
            self._worker = None
        status.lap(resources, "write")  # RecordGraded marks it graded once the scores are saved
        return nb, resources

    def _confined(self, info: dict) -> Confined:
        """A worker that runs :func:`judge` on this notebook's records, within this step's limits."""
        payloads, seed = info["payloads"], info["seed"]
        return Confined(
            lambda calls: judge([(module, name) for module, name in calls], payloads, seed),
            Limits(memory_mb=self.memory_mb, cpu_s=self.cpu_s, wall_s=3 * self.cpu_s + 10),
            exceptions=(VerificationError, probing.GraderError),
        )

    def _verify(self, calls: list[tuple[str, str]], info: dict) -> str | None:
        """:func:`judge` in the confined worker; a record over a limit is that test's failure, with the reason."""
        worker = self._worker or self._confined(info)
        try:
            problem = worker.call(calls)
        except LimitExceeded as exc:
            names = ", ".join(f"{name}(...)" for _, name in calls)
            problem = (
                f"{names}: checking its records went past the grader's limits ({exc}); record what the exercise "
                "asks for, as plain tensors and numbers"
            )
        finally:
            if worker is not self._worker:
                worker.close()
        if problem and len(problem) > self.max_message:
            problem = problem[: self.max_message] + " [... cut]"
        return problem

    def _judge_cell(self, cell: NotebookNode, info: dict) -> None:
        outputs = []
        for out in cell.outputs:
            if out.output_type == "stream" and out.name == "stderr":
                out = new_output("stream", name="stdout", text=STDERR_NOTE + out.text)
            elif out.output_type == "execute_result":
                out = new_output("display_data", data=out.get("data", {}), metadata=out.get("metadata", {}))
            outputs.append(out)
        calls = probe_calls(cell.source)
        if calls:  # also under a failed visible assert: the probe ran first, and its diagnosis is the precise one
            problem = self._verify(calls, info)
            if problem:
                outputs.append(
                    new_output(
                        "error", ename="AssertionError", evalue=problem, traceback=[f"AssertionError: {problem}"]
                    )
                )
        cell.outputs = outputs
