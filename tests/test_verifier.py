"""Record bombs against the verifier: refused when decoded, and confined when they get through (issue 22).

The kinds of the hostile examination: a flood of sparse tensors, a broadcast tensor whose shape
dwarfs its storage, a compressed record, a few bytes that ask for a 4 GB ``bytearray``, shared
references that a walk follows forever. Each one fails its own test with a message; the
verifying process stays within 1 GB of what it needs for an honest submission; the limits of
the confined worker (autograder/confined.py) hold for what a fence in the decoder would miss.
"""

from __future__ import annotations

import collections
import io
import pickle
import time
import zipfile

import pytest
import torch
from nbformat.v4 import new_code_cell, new_notebook

from autograder import confined, probing, status
from autograder.checks import ae_to_cvae
from autograder.preprocessors import VerifyProbes
from autograder.preprocessors.verifyprobes import VerificationError
from genlab.latent import interpolate
from genlab.losses import gaussian_kl
from genlab.models.mlp import one_hot

SEED = 11
EXERCISES = {"interpolate": interpolate, "one_hot": one_hot, "gaussian_kl": gaussian_kl}


class _Storage:
    """Stands for a storage in a hand-made pickle (see :func:`storage_pickle`)."""


class _Tensor:
    def __init__(self, storage: _Storage, size: tuple[int, ...], stride: tuple[int, ...]):
        self.args = (storage, 0, size, stride, False, collections.OrderedDict())

    def __reduce__(self):
        return torch._utils._rebuild_tensor_v2, self.args


def storage_pickle(value, storages: dict[_Storage, tuple]) -> bytes:
    """A protocol-2 pickle as torch.save writes it, with storages referenced by persistent id."""

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj):
            return storages.get(obj) if isinstance(obj, _Storage) else None

    buffer = io.BytesIO()
    Pickler(buffer, protocol=2).dump(value)
    return buffer.getvalue()


def archive(data_pkl: bytes, records: dict[str, bytes] | None = None, *, compress: bool = False) -> bytes:
    """A payload file laid out as torch.save's archive."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED) as zf:
        zf.writestr("archive/data.pkl", data_pkl)
        for name, text in {".format_version": "1", ".storage_alignment": "64", "byteorder": "little"}.items():
            zf.writestr(f"archive/{name}", text)
        for key, data in (records or {}).items():
            zf.writestr(f"archive/data/{key}", data)
        zf.writestr("archive/version", "3\n")
    return buffer.getvalue()


def payload(records) -> dict:
    return {"exercise": "interpolate", "records": records, "crash": None}


def sparse_flood() -> bytes:
    dense_shape = (100_000, 100_000)
    sparse = torch.sparse_coo_tensor(torch.zeros(2, 1, dtype=torch.long), torch.ones(1), dense_shape)
    return probing.encode(payload({f"k{i}": sparse for i in range(200)}))


def broadcast() -> bytes:
    return probing.encode(payload({"z": torch.zeros(1).expand(2**30)}))


def compressed() -> bytes:
    storage = _Storage()
    n = 2**24  # 64 MB of zeros inside a few kB
    pkl = storage_pickle(
        payload({"z": _Tensor(storage, (n,), (1,))}), {storage: ("storage", torch.FloatStorage, "0", "cpu", n)}
    )
    return archive(pkl, {"0": bytes(4 * n)}, compress=True)


class _Bytearray:
    def __reduce__(self):
        return bytearray, (4 * 2**30,)


def bytearray_bomb() -> bytes:
    return archive(storage_pickle(payload({"z": _Bytearray()}), {}))


def shared_references() -> bytes:
    level: list = [0.0]
    for _ in range(8):  # 100**8 values to a walk, a few kB on disk
        level = [level] * 100
    return archive(storage_pickle(payload({"z": level}), {}))


BOMBS = {
    "sparse-flood": sparse_flood,
    "broadcast": broadcast,
    "compressed": compressed,
    "bytearray": bytearray_bomb,
    "shared-references": shared_references,
}


@pytest.mark.parametrize("bomb", BOMBS)
def test_a_record_bomb_is_refused_when_decoded_at_once(bomb):
    data = BOMBS[bomb]()
    assert len(data) < probing.MAX_RECORD_BYTES
    start = time.perf_counter()
    with pytest.raises(probing.BadRecord):
        probing.decode(data)
    assert time.perf_counter() - start < 5


def test_honest_records_decode_dense_and_unchanged():
    records = ae_to_cvae.probe_interpolate.run(interpolate, SEED)
    records["records"]["view"] = torch.arange(12.0).reshape(3, 4).t()  # a strided view is made dense
    back = probing.decode(probing.encode(records))
    assert back["records"]["view"].is_contiguous() and torch.equal(back["records"]["view"], records["records"]["view"])
    assert ae_to_cvae.probe_interpolate.verify(back, SEED) is None


def test_a_bare_pickle_is_refused_for_its_globals_before_anything_runs():
    with pytest.raises(pickle.UnpicklingError, match="GLOBAL (__builtin__|builtins).bytearray"):
        probing.decode(pickle.dumps(_Bytearray(), protocol=2))


def test_only_the_records_the_test_cells_verify_are_read_and_within_a_total(tmp_path):
    from autograder.preprocessors.gradeexecute import read_probes, recorded_exercises

    for k in range(300):  # a flooded probes folder
        (tmp_path / f"flood{k}.pt").write_bytes(b"x" * 1000)
    for name in EXERCISES:
        (tmp_path / f"{name}.pt").write_bytes(name.encode() * 100)
    names = recorded_exercises(_notebook())
    assert names == set(EXERCISES)
    assert set(read_probes(tmp_path, names=names)) == set(EXERCISES)
    total = len("gaussian_kl" * 100) + len("one_hot" * 100)  # read in name order; what no longer fits is skipped
    assert set(read_probes(tmp_path, names=names, total=total)) == {"gaussian_kl", "one_hot"}


# ----------------------------------------------------------------------------- the confined worker


def _allocate(gb):
    block = bytearray(int(gb * 2**30))
    return len(block)


def _spin(_):
    while True:
        pass


def _raise_grader_error(_):
    raise probing.GraderError("the reference broke")


def test_the_worker_answers_and_carries_grader_errors_back_as_such():
    with confined.Confined(lambda x: x * 2, exceptions=(probing.GraderError,)) as worker:
        assert worker.call(21) == 42 and worker.call([1]) == [1, 1]
    with confined.Confined(_raise_grader_error, exceptions=(probing.GraderError,)) as worker:
        with pytest.raises(probing.GraderError, match="the reference broke"):
            worker.call(0)


def test_the_worker_stops_at_its_memory_and_cpu_limits_and_starts_again():
    limits = confined.Limits(memory_mb=256, cpu_s=2, wall_s=30)
    with confined.Confined(lambda gb: _allocate(gb), limits) as worker:
        with pytest.raises(confined.LimitExceeded, match="256 MB of memory"):
            worker.call(1)
        assert worker.call(0.1) == int(0.1 * 2**30), "a fresh worker takes the next request"
    start = time.monotonic()
    with confined.Confined(_spin, limits) as worker:
        with pytest.raises(confined.LimitExceeded, match="2 s of CPU time"):
            worker.call(None)
    assert time.monotonic() - start < 30


# ----------------------------------------------------------------------------- VerifyProbes, end to end


def _notebook() -> tuple:
    cells = []
    for name in EXERCISES:
        source = (
            f"### BEGIN HIDDEN TESTS\nfrom autograder.checks.ae_to_cvae import probe_{name}\nprobe_{name}({name})\n"
        )
        meta = {"nbgrader": {"grade": True, "solution": False, "locked": True, "points": 1, "grade_id": f"test_{name}"}}
        cells.append(new_code_cell(source + "### END HIDDEN TESTS", metadata=meta))
    return new_notebook(cells=cells)


def verify(payloads: dict[str, bytes], **traits) -> tuple[list, float]:
    """The error messages VerifyProbes gives the three test cells, and the verifier's peak resident memory (MB)."""
    step = VerifyProbes(**traits)
    peaks = []
    make = step._confined

    def tracked(info):
        worker = make(info)
        peaks.append(worker)
        return worker

    step._confined = tracked
    nb, _ = step.preprocess(_notebook(), {"genlab_probe": {"seed": SEED, "payloads": payloads}, "nbgrader": {}})
    errors = [next((o.evalue for o in c.outputs if o.output_type == "error"), None) for c in nb.cells]
    return errors, max(w.peak_rss_mb for w in peaks)


def honest_payloads() -> dict[str, bytes]:
    checks = {name: getattr(ae_to_cvae, f"probe_{name}") for name in EXERCISES}
    return {name: probing.encode(check.run(EXERCISES[name], SEED)) for name, check in checks.items()}


def test_record_bombs_fail_their_tests_and_keep_the_verifier_near_an_honest_ones_memory():
    errors, honest_mb = verify(honest_payloads())
    assert errors == [None, None, None]
    for bomb, make in BOMBS.items():
        payloads = {**honest_payloads(), "one_hot": make()}
        errors, peak_mb = verify(payloads)
        assert errors[0] is None and errors[2] is None, f"{bomb}: other tests are not affected"
        assert "could not be read" in errors[1], f"{bomb}: {errors[1]}"
        assert peak_mb < honest_mb + 1024, f"{bomb}: the verifier reached {peak_mb:.0f} MB (honest: {honest_mb:.0f})"


def test_what_gets_past_the_decoder_is_stopped_by_the_limits(monkeypatch):
    # Loosen the decoder's fences (as a new kind of bomb would): the confined worker's limits still hold.
    monkeypatch.setattr(probing, "RECORD_GLOBALS", probing.RECORD_GLOBALS | {("__builtin__", "bytearray")})
    monkeypatch.setattr(ae_to_cvae.probe_gaussian_kl, "verify", lambda payload, seed: _spin(None))
    payloads = {**honest_payloads(), "one_hot": bytearray_bomb()}
    start = time.monotonic()
    errors, peak_mb = verify(payloads, cpu_s=3, memory_mb=512)
    assert errors[0] is None
    assert "went past the grader's limits (more than 512 MB of memory)" in errors[1], errors[1]
    assert "went past the grader's limits (more than 3 s of CPU time)" in errors[2], errors[2]
    assert time.monotonic() - start < 60
    _, honest_mb = verify(honest_payloads())
    assert peak_mb < honest_mb + 512 + 64


def test_a_fault_of_the_course_still_stops_the_submission_as_ungraded(monkeypatch):
    def broken(payload, seed):
        raise probing.GraderError("the reference run of check one_hot failed: KeyError")

    marks = []
    monkeypatch.setattr(ae_to_cvae.probe_one_hot, "verify", broken)
    monkeypatch.setattr(status, "mark", lambda step, resources, state, reason="": marks.append((state, reason)))
    with pytest.raises((VerificationError, probing.GraderError), match="reference run of check one_hot"):
        verify(honest_payloads())
    assert marks and marks[0][0] == "ungraded" and "reference run of check one_hot" in marks[0][1]


def test_a_verdict_is_cut_to_the_message_cap():
    forged = probing.encode({"exercise": "one_hot", "records": {}, "crash": "x" * 7000})
    errors, _ = verify({**honest_payloads(), "one_hot": forged}, max_message=500)
    assert len(errors[1]) < 520 and errors[1].endswith("[... cut]")
