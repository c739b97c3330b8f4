"""The probe/verify machinery on its own: comparisons, records, payload files and the VerifyProbes step."""

from __future__ import annotations

import os
import warnings

import nbformat
import numpy as np
import pytest
import torch
from nbformat.v4 import new_code_cell, new_notebook, new_output
from torch import nn

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
    values = [v for k, v in payload["records"].items() if not k.startswith("call ")]
    assert payload["crash"] is None and set(values) == {"wrong"}
    problem = ae_to_cvae.probe_interpolate.verify(payload, 1234)
    assert "expected a torch.Tensor of shape" in problem and "first row is z0" in problem


def test_the_seed_decides_the_inputs():
    check = ae_to_cvae.probe_interpolate
    a, b, c = (check.run(interpolate, seed)["records"] for seed in (1, 1, 2))
    tensors = [k for k, v in a.items() if isinstance(v, torch.Tensor)]
    assert tensors and all(torch.equal(a[k], b[k]) for k in tensors)
    assert not all(torch.equal(a[k], c[k]) for k in tensors)
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
    key = next(k for k, v in records.items() if isinstance(v, torch.Tensor))
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
HIDDEN_FIRST = (
    "### BEGIN HIDDEN TESTS\nfrom autograder.checks.ae_to_cvae import probe_interpolate\n"
    "probe_interpolate(interpolate)\n### END HIDDEN TESTS\nassert interpolate(z0, z1, 3).shape == (3, 2)"
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
    assert "not written by the hidden test" in garbage[-1].evalue and "not a file that torch.save wrote" in (
        garbage[-1].evalue
    )


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


def test_the_hidden_diagnosis_is_shown_under_a_failed_visible_assert():
    wrong = probing.encode(ae_to_cvae.probe_interpolate.run(lambda a, b, n: interpolate(a, b, n + 1), 7))
    error = new_output("error", ename="AssertionError", evalue="expected shape (3, 2)", traceback=[])
    outputs = _verify(_cell(HIDDEN_FIRST, [error]), {"interpolate": wrong})
    assert [o.evalue for o in outputs if o.output_type == "error"][0] == "expected shape (3, 2)"
    assert "first row is z0" in outputs[-1].evalue  # the probe ran before the visible assert failed


def test_a_broken_check_leaves_the_submission_ungraded():
    @probing.check(interpolate)
    def probe_broken(t, fn):
        got = t.call(fn, t.randn(3), t.randn(3), 4, what="interpolate")
        t.check("path", got, what="the path", test=lambda g, w, r: g.no_such_attribute)

    with pytest.raises(probing.GraderError, match="the test of record 'path' raised AttributeError"):
        probe_broken.verify(probe_broken.run(interpolate, 1), 1)


# ----------------------------------------------------------------------------- the contract of every call


def _verdict(check, answer, seed=3):
    return check.verify(check.run(answer, seed), seed)


@probing.check(interpolate)
def probe_path(t, fn):
    """A stand-in check: one call of a path between two codes, its values compared."""
    z0, z1 = t.randn(4, dtype=torch.float64), t.randn(4, dtype=torch.float64)
    t.same("path", t.call(fn, z0, z1, 5, what="interpolate(z0, z1, 5)"), what="the path")


def test_a_tensor_created_on_the_default_device_is_caught_without_a_gpu():
    def made_on_the_default_device(z0, z1, steps):
        w = torch.linspace(0, 1, steps, dtype=z0.dtype)[:, None]  # no device=: on the CPU, whatever z0's device
        return z0 + w * (z1 - z0)

    def made_then_moved(z0, z1, steps):
        w = torch.linspace(0, 1, steps, dtype=z0.dtype).to(z0.device)[:, None]
        return z0 + w * (z1 - z0)

    def made_like_the_input(z0, z1, steps):
        w = torch.arange(steps, dtype=z0.dtype, device=z0.device)[:, None] / (steps - 1)
        return torch.lerp(z0.expand(steps, -1), z1.expand(steps, -1), w)

    assert _verdict(probe_path, made_then_moved) is None
    assert _verdict(probe_path, made_like_the_input) is None
    problem = _verdict(probe_path, made_on_the_default_device)
    assert "raised RuntimeError: Expected all tensors to be on the same device" in problem


def test_the_device_watch_follows_moves_and_refuses_what_a_gpu_refuses():
    x = torch.rand(4, 3)

    def where(make):
        watch = probing._DeviceWatch(torch.device("cpu"))
        try:
            with watch:
                return probing.signature(make(), torch.device("cpu"), watch)["where"]
        except (RuntimeError, TypeError) as exc:
            return type(exc).__name__

    assert where(lambda: torch.zeros(4, 3)) == "elsewhere"
    assert where(lambda: torch.zeros(4, 3) + x) == "RuntimeError"
    assert where(lambda: torch.zeros(4, 3).to(x.device) + x) == "inputs"
    assert where(lambda: torch.zeros(4, 3).type_as(x) + x) == "inputs"
    assert where(lambda: torch.zeros_like(x) + torch.tensor(2.0)) == "inputs"  # a CPU scalar mixes on a GPU too
    assert where(lambda: torch.eye(3)[x.argmax(1)]) == "elsewhere"
    assert where(lambda: x.cpu() * 2) == "elsewhere"
    assert where(lambda: torch.as_tensor(x.cpu().numpy(), device=x.device)) == "inputs"
    assert where(lambda: x.numpy()) == "TypeError"  # a GPU tensor has no NumPy view
    assert where(lambda: torch.zeros(12).view_as(x) + x) == "RuntimeError"


def test_a_call_that_changes_its_arguments_fails_with_what_it_changed():
    def in_place(z0, z1, steps):
        z0.mul_(1.0)
        return interpolate(z0, z1, steps)

    def flips_requires_grad(z0, z1, steps):
        z0.requires_grad_(True)
        return interpolate(z0, z1, steps).detach()

    assert "argument 1 (a tensor) was changed in place" in _verdict(probe_path, in_place)
    assert "argument 1 had requires_grad switched on" in _verdict(probe_path, flips_requires_grad)


def test_parameters_replaced_or_frozen_are_caught_and_changes_the_reference_makes_are_allowed():
    def reference_step(net):
        with torch.no_grad():
            net.weight.add_(1.0)  # a change of values, which the reference makes too

    def replaces(net):
        net.weight = nn.Parameter(net.weight.detach() + 1.0)

    def freezes(net):
        reference_step(net)
        net.bias.requires_grad_(False)

    @probing.check(reference_step)
    def probe_step(t, step):
        net = t.init_module(nn.Linear(3, 2))
        t.call(step, net, what="step(net)", exempt={"repeat": "changes the layer by design"})
        t.same("weight", net.weight, what="the weight")

    assert _verdict(probe_step, reference_step) is None
    assert "parameter 'weight' was replaced by a new tensor" in _verdict(probe_step, replaces)
    assert "parameter 'bias' had requires_grad switched off" in _verdict(probe_step, freezes)


def test_state_kept_between_calls_is_caught_and_random_calls_can_be_exempt():
    calls = []

    def counting(z0, z1, steps):
        calls.append(1)  # state kept between calls: the first result is right, the next ones are not
        return interpolate(z0, z1, steps) + (len(calls) - 1)

    assert "called a second time with the same arguments it returned something else" in _verdict(probe_path, counting)
    t = probing.Trial("x", 1, reference=False)
    assert t.call(torch.rand, 3, what="torch.rand(3)", exempt={"repeat": "random by design"}).shape == (3,)
    with pytest.raises(probing.GraderError, match="each with a reason"):
        t.call(torch.rand, 3, what="torch.rand(3)", exempt={"repeat": " "})
    with pytest.raises(probing.GraderError, match="each with a reason"):
        t.call(torch.rand, 3, what="torch.rand(3)", exempt={"colour": "no such property"})


@pytest.mark.parametrize(
    "answer, problem",
    [
        (lambda z0, z1, n: interpolate(z0, z1, n).float(), "dtype torch.float32; expected torch.float64"),
        (lambda z0, z1, n: interpolate(z0, z1, n).requires_grad_(), "still carries graph history"),
        (lambda z0, z1, n: interpolate(z0, z1, n).tolist(), "expected a torch.Tensor"),
    ],
)
def test_the_result_must_have_the_references_dtype_kind_and_graph(answer, problem):
    assert problem in _verdict(probe_path, answer)


def test_numbers_come_back_in_any_form_but_not_with_graph_history():
    def mean_of(values):
        return float(values.mean())

    @probing.check(mean_of)
    def probe_mean(t, fn):
        values = t.randn(6, dtype=torch.float64).requires_grad_()
        t.same("mean", t.call(fn, values, what="mean_of(values)"), what="the mean")

    for right in (
        lambda v: np.float64(v.detach().cpu().numpy().mean()),  # a float subclass the unpickler used to refuse
        lambda v: np.float32(v.detach().cpu().numpy().mean()),
        lambda v: v.detach().mean(),
        lambda v: v.detach().mean().reshape(1),
        lambda v: v.mean().item(),
    ):
        assert _verdict(probe_mean, right) is None
    assert "still carries graph history" in _verdict(probe_mean, lambda v: v.mean())
    assert "expected a number" in _verdict(probe_mean, lambda v: str(v.mean().item()))


def test_numpy_values_are_recorded_as_plain_numbers_and_tensors():
    payload = {
        "records": {
            "f64": np.float64(0.5),
            "f32": np.float32(0.25),
            "i64": np.int64(3),
            "flag": np.bool_(True),
            "array": np.arange(3.0),
            "nested": [np.float64(1.0), {"a": np.int32(2)}],
        },
        "crash": None,
    }
    back = probing.decode(probing.encode(probing._portable(payload)))["records"]
    assert back["f64"] == 0.5 and type(back["f64"]) is float and type(back["i64"]) is int and back["flag"] is True
    assert torch.equal(back["array"], torch.arange(3.0, dtype=torch.float64))
    assert back["nested"] == [1.0, {"a": 2}]


@pytest.mark.slow
def test_records_of_the_wrong_kind_are_the_students_failure_never_a_grader_error():
    """Every check of every chapter, its reference payload with one record replaced by junk at a time."""
    import importlib

    junk = [None, "text", 3, [1, "a"], {"x": None}, torch.zeros(2, dtype=torch.int32), torch.ones(()) * float("nan")]
    for chapter in ("vae_theory", "ae_to_cvae", "conv_vae", "dcgan", "adversarial", "harmonic"):
        module = importlib.import_module(f"autograder.checks.{chapter}")
        for name, check in probing.checks_of(module).items():
            if not name.startswith("probe_") or check.exercise in ("noisy_step", "reconstruct", "ae_train_step"):
                continue  # the slow ones are fuzzed below on a few records
            payload = check.run(check.reference, 0)
            expected = check.expectations(0)
            for key in list(payload["records"])[:12]:
                for value in junk:
                    records = dict(payload["records"], **{key: value})
                    check.judge({"records": records, "crash": None}, expected)  # raises GraderError if broken


def test_the_conditions_a_probe_draws_must_be_declared():
    @probing.check(interpolate, conditions={"ends": "both ends included"})
    def probe_declared(t, fn):
        t.covers("ends", "the middle")

    with pytest.raises(probing.GraderError, match="not among its declared ones"):
        probe_declared.coverage(0)


def test_an_unreadable_record_is_the_graders_fault_unless_written_by_something_else():
    leaked = probing.encode({"exercise": "interpolate", "records": {"x": np.float64(1.0)}, "crash": None})
    with pytest.raises(probing.GraderError, match="could not read the record its probe wrote"):
        judge([("ae_to_cvae", "probe_interpolate")], {"interpolate": leaked}, 7)
    import io

    class Forged:  # what a tampering submission could save in the probe's place
        def __reduce__(self):
            return (os.getcwd, ())

    buffer = io.BytesIO()
    torch.save({"records": Forged()}, buffer)
    problem = judge([("ae_to_cvae", "probe_interpolate")], {"interpolate": buffer.getvalue()}, 7)
    assert "not written by the hidden test" in problem and "which no probe writes" in problem


def test_a_call_whose_noise_is_given_must_not_draw_its_own():
    def shift(z, eps):
        return z + eps

    def draws_anyway(z, eps):
        noise = torch.randn_like(z)  # drawn "just in case", then unused
        return z + (eps if eps is not None else noise)

    @probing.check(shift)
    def probe_shift(t, fn):
        z, eps = t.randn(3), t.randn(3)
        t.same("z", t.call(fn, z, eps, what="shift(z, eps)", draws=False), what="the shifted code")

    assert _verdict(probe_shift, shift) is None
    assert "drew from the global random number generator although its noise is given" in _verdict(
        probe_shift, draws_anyway
    )
