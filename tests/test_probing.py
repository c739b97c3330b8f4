"""The probe/verify machinery on its own: comparisons, records, payload files and the VerifyProbes step."""

from __future__ import annotations

import os
import warnings

import nbformat
import pytest
import torch
from nbformat.v4 import new_code_cell, new_notebook, new_output

from autograder import probing
from autograder.checks import ae_to_cvae
from autograder.preprocessors import VerifyProbes
from autograder.preprocessors.gradeexecute import read_probes
from autograder.preprocessors.verifyprobes import VerificationError, judge, probe_calls
from genlab.latent import interpolate

# ----------------------------------------------------------------------------- close()


def test_numbers_compare_in_any_form():
    assert probing.close(1.0, torch.tensor(1.0)) is None
    assert probing.close(torch.tensor([1.0]), 1.0) is None
    assert probing.close(torch.tensor(1.0, dtype=torch.float64), torch.tensor(1.0 + 1e-6)) is None
    assert "got 1.1" in probing.close(1.1, 1.0)
    assert "expected a number" in probing.close("1.0", 1.0)


def test_tensors_need_the_shape_and_values_within_float32_error():
    want = torch.linspace(0, 1, 7, dtype=torch.float64)
    assert probing.close(want.float(), want) is None  # float32 intermediate steps are a correct answer
    assert "expected shape (7,)" in probing.close(want[:6], want)
    assert "expected a torch.Tensor" in probing.close(want.tolist(), want)
    message = probing.close(want + 1e-3, want)
    assert "7 of 7 differ" in message and "expected" in message
    assert probing.close(want.float(), want, exact_dtype=True) == "expected dtype torch.float64, got torch.float32"


def test_nan_and_inf_must_sit_where_the_reference_has_them():
    want = torch.tensor([1.0, float("inf"), float("nan")])
    assert probing.close(want.clone(), want) is None
    assert probing.close(torch.tensor([1.0, 2.0, float("nan")]), want) is not None
    assert probing.close(torch.tensor([1.0, float("inf"), 0.0]), want) is not None


def test_other_values_compare_by_equality():
    assert probing.close([256, 784], [256, 784]) is None
    assert probing.close(1, True) is not None  # True is no number of layers
    assert probing.close(torch.ones(2), [1.0, 1.0]) is not None


# ----------------------------------------------------------------------------- runs and records


def test_a_probe_records_instead_of_judging(tmp_path, monkeypatch):
    monkeypatch.setenv(probing.PROBE_DIR_ENV, str(tmp_path))
    monkeypatch.setenv(probing.PROBE_SEED_ENV, "1234")
    ae_to_cvae.probe_interpolate(lambda z0, z1, steps: "wrong")  # no error in the kernel
    payload = probing.decode((tmp_path / "interpolate.pt").read_bytes())
    assert payload["crash"] is None and set(payload["records"].values()) == {"wrong"}
    problem = ae_to_cvae.probe_interpolate.verify(payload, 1234)
    assert "expected a torch.Tensor of shape" in problem and "first row is z0" in problem


def test_the_seed_decides_the_inputs():
    check = ae_to_cvae.probe_interpolate
    a, b, c = (check.run(interpolate, seed)["records"] for seed in (1, 1, 2))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)
    # records made with one seed do not verify against another
    assert check.verify({"records": a, "crash": None}, 1) is None
    assert check.verify({"records": a, "crash": None}, 2) is not None


def test_a_crash_is_reported_where_it_happened():
    def broken(z0, z1, steps):
        raise ZeroDivisionError("oops")

    payload = ae_to_cvae.probe_interpolate.run(broken, 5)
    assert payload["crash"].startswith("interpolate(z0, z1, 2) raised ZeroDivisionError: oops")
    assert ae_to_cvae.probe_interpolate.verify(payload, 5) == payload["crash"]


def test_a_probe_keeps_the_notebooks_random_state_and_silences_warnings():
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)

    def noisy(z0, z1, steps):
        warnings.warn("deprecated", DeprecationWarning, stacklevel=2)
        torch.rand(10)
        return interpolate(z0, z1, steps)

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ae_to_cvae.probe_interpolate(noisy)
    assert torch.equal(torch.rand(3), expected)


def test_forged_or_damaged_payloads_fail_verification():
    check = ae_to_cvae.probe_interpolate
    assert "nothing readable" in check.verify("forged", 3)
    assert "nothing readable" in check.verify({"records": [1, 2]}, 3)
    records = check.run(interpolate, 3)["records"]
    key = next(iter(records))
    records[key] = torch.zeros(10**6).expand(10**6)  # a huge record fails on its shape first
    assert "expected shape" in check.verify({"records": records, "crash": None}, 3)


def test_oversized_records_are_replaced_by_a_note(tmp_path, monkeypatch):
    monkeypatch.setattr(probing, "MAX_RECORD_BYTES", 10_000)
    probing.write_payload(tmp_path, "big", {"records": {"x": torch.zeros(100_000)}, "crash": None})
    payload = probing.decode((tmp_path / "big.pt").read_bytes())
    assert payload["records"] == {} and "exceed" in payload["crash"]


def test_payloads_load_with_the_restricted_unpickler(tmp_path):
    import io
    import pickle

    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    data = io.BytesIO()
    pickle.dump({"records": Evil()}, data, protocol=2)  # the protocol torch.save writes
    with pytest.raises(pickle.UnpicklingError, match="GLOBAL (posix|os).system"):
        probing.decode(data.getvalue())
    assert not marker.exists()


# ----------------------------------------------------------------------------- reading the probes folder


def test_read_probes_takes_regular_files_only(tmp_path):
    (tmp_path / "good.pt").write_bytes(b"data")
    (tmp_path / "big.pt").write_bytes(b"x" * 200)
    os.symlink("/etc/hostname", tmp_path / "link.pt")
    os.link(tmp_path / "good.pt", tmp_path / "hard.pt")
    os.mkfifo(tmp_path / "fifo.pt")
    assert read_probes(tmp_path, limit=100) == {}  # good.pt now has two links
    os.unlink(tmp_path / "hard.pt")
    assert read_probes(tmp_path, limit=100) == {"good": b"data"}
    os.symlink(tmp_path, tmp_path.parent / "probes-link")
    assert read_probes(tmp_path.parent / "probes-link") == {}


# ----------------------------------------------------------------------------- VerifyProbes


def _cell(source: str, outputs=(), points: int = 2, gid: str = "test_x") -> nbformat.NotebookNode:
    cell = new_code_cell(
        source,
        metadata={
            "nbgrader": {
                "grade": True,
                "solution": False,
                "locked": True,
                "points": points,
                "grade_id": gid,
                "schema_version": 3,
            }
        },
    )
    cell.outputs = list(outputs)
    return cell


HIDDEN = (
    "assert True\n### BEGIN HIDDEN TESTS\n"
    "from autograder.checks.ae_to_cvae import probe_interpolate\nprobe_interpolate(interpolate)\n"
    "### END HIDDEN TESTS"
)


def _verify(cell, payloads: dict, seed: int = 7) -> list:
    """The outputs VerifyProbes leaves in a one-cell notebook."""
    nb = new_notebook(cells=[cell])
    VerifyProbes()._judge_cell(cell, {"seed": seed, "payloads": payloads})
    return nb.cells[0].outputs


def test_probe_calls_are_read_from_the_restored_cell():
    assert probe_calls(HIDDEN) == [("ae_to_cvae", "probe_interpolate")]
    assert probe_calls("check_interpolate(f)\nfrom autograder.checks.ae_to_cvae import check_interpolate") == [
        ("ae_to_cvae", "check_interpolate")
    ]
    with pytest.raises(VerificationError):
        probe_calls("probe_x(f)")


def test_a_correct_record_passes_and_warnings_cost_nothing():
    payload = probing.encode(ae_to_cvae.probe_interpolate.run(interpolate, 7))
    cell = _cell(
        HIDDEN,
        [
            new_output("stream", name="stderr", text="UserWarning: careful\n"),
            new_output("execute_result", data={"text/plain": "0.5"}, execution_count=1),
        ],
    )
    outputs = _verify(cell, {"interpolate": payload})
    assert [o.output_type for o in outputs] == ["stream", "display_data"]
    assert outputs[0].name == "stdout" and "careful" in outputs[0].text


def test_a_missing_or_wrong_record_fails_the_cell():
    outputs = _verify(_cell(HIDDEN), {})
    assert outputs[-1].output_type == "error" and "recorded nothing" in outputs[-1].evalue
    wrong = probing.encode(ae_to_cvae.probe_interpolate.run(lambda a, b, n: interpolate(a, b, n + 1), 7))
    outputs = _verify(_cell(HIDDEN), {"interpolate": wrong})
    assert outputs[-1].ename == "AssertionError" and "expected shape" in outputs[-1].evalue
    garbage = _verify(_cell(HIDDEN), {"interpolate": b"not a torch file"})
    assert "could not be read" in garbage[-1].evalue


def test_a_kernel_error_stays_and_forged_records_do_not_help_a_wrong_answer():
    forged = probing.encode({"records": {}, "crash": None})
    outputs = _verify(_cell(HIDDEN), {"interpolate": forged})
    assert "no result was recorded" in outputs[-1].evalue
    error = new_output("error", ename="AssertionError", evalue="visible test", traceback=[])
    outputs = _verify(
        _cell(HIDDEN, [error]), {"interpolate": probing.encode(ae_to_cvae.probe_interpolate.run(interpolate, 7))}
    )
    assert [o.evalue for o in outputs if o.output_type == "error"] == ["visible test"]


def test_judge_refuses_an_unknown_check():
    with pytest.raises(VerificationError, match="no check probe_nothing"):
        judge([("ae_to_cvae", "probe_nothing")], {}, 1)
