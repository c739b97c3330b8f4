"""Hidden tests in two halves: probe a submission inside its sandbox, verify outside it.

A check is one function, ``probe_<exercise>(t, impl)``, written once and run twice:

* in the student's kernel (the *probe*), ``impl`` is the student's object. The check draws its
  inputs from ``t`` (a generator seeded by the grader afresh for every run), calls ``impl`` and
  hands what comes back to ``t.same`` / ``t.check``, which only **record** it. At the end the
  records are written, in torch's safe format, to ``$GENLAB_PROBE_DIR/<exercise>.pt``.
* in the grader, outside the sandbox (the *verification*), the same function runs again with the
  reference implementation from the full genlab package and the same seed, so it meets the
  same inputs. There ``t.same`` / ``t.check`` register what each record must be; the student's
  records are then compared with them, in order, and the first difference is the verdict.

Nothing the submission does in its own process can change a verdict: the comparison, the
reference and the expected values never exist there, and records that were forged or patched
still have to equal what the reference computes on inputs drawn from a seed nobody knew in
advance. Without ``$GENLAB_PROBE_DIR`` (a notebook run by nbval or by hand), a probe verifies
at once in the same process and raises :class:`Failed`, which is how the source notebooks test
their own solutions.
"""

from __future__ import annotations

import hashlib
import io
import math
import os
import pickle
import pickletools
import secrets
import warnings
import zipfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

PROBE_DIR_ENV = "GENLAB_PROBE_DIR"
PROBE_SEED_ENV = "GENLAB_PROBE_SEED"
# One exercise's records; checks that need more (many samples) keep summaries out of the kernel
# and record raw values that fit.
MAX_RECORD_BYTES = 32 * 2**20
MAX_PROBE_BYTES = 64 * 2**20  # all records of one submission that the grader reads (honest ones: under 12 MB)
MAX_TEXT = 2000
# One tolerance for every check: float32 arithmetic anywhere on the way is a correct answer.
RTOL, ATOL = 1e-4, 1e-5

Test = Callable[[Any, Any, dict[str, Any]], "str | None"]


class Failed(AssertionError):
    """A hidden test found a wrong answer; the message says what to fix."""


class GraderError(RuntimeError):
    """The reference side of a check broke: a fault of the course, never of the student."""


class _Crash(Exception):
    """The student's code raised inside a probe; the probe stops and says where."""


# ----------------------------------------------------------------------------- comparing values


def describe(value: Any) -> str:
    """A short description of a recorded value for messages."""
    if isinstance(value, torch.Tensor):
        return f"a tensor of shape {tuple(value.shape)} ({value.dtype})"
    if isinstance(value, bool) or value is None:
        return repr(value)
    if isinstance(value, (int, float)):
        return f"{value:.8g}"
    if isinstance(value, str):
        return repr(value[:80])
    return type(value).__name__


def as_number(value: Any) -> float | None:
    """A Python number, a 0-dim tensor or a one-element tensor as a float; None otherwise."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, torch.Tensor) and value.numel() == 1 and not value.is_complex():
        return float(value.reshape(()).to(torch.float64))
    return None


def close(got: Any, expected: Any, *, rtol: float = RTOL, atol: float = ATOL, exact_dtype: bool = False) -> str | None:
    """Why ``got`` differs from ``expected`` beyond the tolerance, or None when it does not.

    Numbers compare with one-element tensors and Python floats alike (``float(loss)`` is a loss);
    tensors need the same shape; NaN and infinities must sit where the reference has them.
    """
    if isinstance(expected, bool) or not isinstance(expected, (int, float, torch.Tensor)):
        try:
            same = bool(got == expected) and type(got) is type(expected)
        except Exception:  # comparing a tensor with a list, say
            same = False
        return None if same else f"got {describe(got)}, expected {describe(expected)}"
    if isinstance(expected, torch.Tensor) and expected.dim() > 0:
        if not isinstance(got, torch.Tensor):
            return f"expected a torch.Tensor of shape {tuple(expected.shape)}, got {describe(got)}"
        if tuple(got.shape) != tuple(expected.shape):
            return f"expected shape {tuple(expected.shape)}, got {tuple(got.shape)}"
        if exact_dtype and got.dtype != expected.dtype:
            return f"expected dtype {expected.dtype}, got {got.dtype}"
        if got.is_complex() or got.dtype == torch.bool and expected.dtype != torch.bool:
            return f"expected {expected.dtype} values, got {got.dtype}"
        a, e = got.to(torch.float64), expected.to(torch.float64)
        if expected.dtype == torch.bool or not expected.is_floating_point():
            if not torch.equal(a, e):
                i = int((a != e).flatten().nonzero()[0])
                return (
                    f"wrong value at flat index {i}: got {a.flatten()[i].item():g}, expected {e.flatten()[i].item():g}"
                )
            return None
        scale = max(1.0, float(e[torch.isfinite(e)].abs().max())) if torch.isfinite(e).any() else 1.0
        ok = torch.isclose(a, e, rtol=rtol, atol=atol * scale, equal_nan=True)
        if bool(ok.all()):
            return None
        diff = torch.where(ok, torch.zeros_like(a), (a - e).abs().nan_to_num(math.inf))
        i = int(diff.flatten().argmax())
        return (
            f"wrong values ({int((~ok).sum())} of {ok.numel()} differ; the largest difference is at flat index {i}: "
            f"got {a.flatten()[i].item():.8g}, expected {e.flatten()[i].item():.8g})"
        )
    want, have = as_number(expected), as_number(got)
    if have is None:
        return f"expected a number, got {describe(got)}"
    if math.isnan(want):
        return None if math.isnan(have) else f"got {have:.8g}, expected nan"
    if math.isclose(have, want, rel_tol=rtol, abs_tol=atol * max(1.0, abs(want) if math.isfinite(want) else 1.0)):
        return None
    return f"got {have:.8g}, expected {want:.8g}"


def naming(
    variants: Sequence[tuple[Callable[[], Any], str]],
    *,
    convert: Callable[[Any], Any] | None = None,
    extra: Callable[[Any, Any], str | None] | None = None,
    rtol: float = RTOL,
    atol: float = ATOL,
) -> Test:
    """A test: the reference's value within the tolerance; otherwise name the wrong variant it matches.

    ``variants`` are (value maker, explanation) pairs; the makers run in the grader only, on the
    reference side's inputs. ``convert`` turns the student's record into a comparable value first;
    ``extra(got, want)`` may explain a difference that no variant matches.
    """

    def test(got: Any, want: Any, _records: dict[str, Any]) -> str | None:
        if convert is not None:
            try:
                got = convert(got)
            except Exception:  # not convertible: let close() describe it
                pass
        problem = close(got, want, rtol=rtol, atol=atol)
        if problem is None:
            return None
        for make, explanation in variants:
            try:
                wrong = make()
            except Exception:  # a variant that does not apply to these inputs
                continue
            if isinstance(wrong, torch.Tensor):
                wrong = wrong.detach().cpu()
            if close(got, wrong, rtol=rtol, atol=atol) is None:
                return f"{problem}: {explanation}"
        more = extra(got, want) if extra is not None else None
        return f"{problem}: {more}" if more else problem

    return test


def _portable(value: Any, depth: int = 0) -> Any:
    """What a probe may record: tensors (detached, on the CPU), numbers, short text, lists and dicts of them."""
    if depth > 4:
        return "<nested too deep>"
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu").clone().contiguous() if value.device.type != "meta" else "<tensor on meta>"
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, str):
        return value[:MAX_TEXT]
    if isinstance(value, (torch.device, torch.dtype)):
        return str(value)
    if isinstance(value, torch.Size):
        return list(value)
    if isinstance(value, (list, tuple)):
        return [_portable(v, depth + 1) for v in value[:1000]]
    if isinstance(value, dict):
        return {str(k)[:200]: _portable(v, depth + 1) for k, v in list(value.items())[:1000]}
    try:  # numpy scalars and arrays
        import numpy as np

        if isinstance(value, (np.ndarray, np.generic)):
            return _portable(torch.as_tensor(np.asarray(value)), depth)
    except (ImportError, TypeError, ValueError):
        pass
    return f"<{type(value).__name__}>"


# ----------------------------------------------------------------------------- one run of a check


@dataclass
class Expectation:
    """What one record must be: the reference's value and the test it must pass."""

    what: str
    value: Any
    test: Test
    hint: str


def _mix(*parts: Any) -> int:
    """A 63-bit seed from the run's seed and labels (stable across processes, unlike hash())."""
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:8], "little") >> 1


class Trial:
    """One run of a check: seeded inputs, calls of the implementation, and what came back.

    ``reference`` is False in the student's kernel (values are recorded) and True in the grader
    (expectations are registered). Inputs live on the CPU in the grader and on ``genlab.device()``
    in the kernel; they are drawn on the CPU either way, so both sides see the same numbers.
    """

    def __init__(self, exercise: str, seed: int, *, reference: bool):
        import genlab

        self.exercise = exercise
        self.seed = seed
        self.reference = reference
        self.device = torch.device("cpu") if reference else genlab.device()
        self.gen = torch.Generator().manual_seed(_mix(seed, exercise))
        self.records: dict[str, Any] = {}
        self.expected: dict[str, Expectation] = {}
        self.doing = "starting"

    # ---------------------------------------------------------------- inputs
    def randn(
        self, *shape: int, dtype: torch.dtype = torch.float32, scale: float = 1.0, mean: float = 0.0
    ) -> torch.Tensor:
        x = mean + scale * torch.randn(shape, generator=self.gen, dtype=torch.float64)
        return x.to(self.device, dtype)

    def rand(
        self, *shape: int, dtype: torch.dtype = torch.float32, low: float = 0.0, high: float = 1.0
    ) -> torch.Tensor:
        x = low + (high - low) * torch.rand(shape, generator=self.gen, dtype=torch.float64)
        return x.to(self.device, dtype)

    def randint(self, low: int, high: int, *shape: int, dtype: torch.dtype = torch.int64) -> torch.Tensor:
        return torch.randint(low, high, shape, generator=self.gen).to(self.device, dtype)

    def integer(self, low: int, high: int) -> int:
        """A Python int in [low, high)."""
        return int(torch.randint(low, high, (), generator=self.gen))

    def seed_global(self, label: str) -> None:
        """Seed torch's global generator alike on both sides, for code that draws its own noise."""
        torch.manual_seed(_mix(self.seed, self.exercise, label) % 2**63)

    def init_module(self, module: nn.Module, scale: float = 1.0) -> nn.Module:
        """Give every parameter values determined by its shape alone.

        Two correct modules that register their layers in different orders get the same
        function, so their outputs can be compared with the reference's.
        """
        with torch.no_grad():
            for p in module.parameters():
                g = torch.Generator().manual_seed(_mix(self.seed, "weights", tuple(p.shape)))
                fan_in = p[0].numel() if p.dim() > 1 else p.numel()
                values = torch.randn(tuple(p.shape), generator=g, dtype=torch.float64) * scale / math.sqrt(fan_in)
                p.copy_(values.to(p.device, p.dtype))
        return module

    # ---------------------------------------------------------------- calls
    def call(self, fn: Callable, *args: Any, what: str, **kwargs: Any) -> Any:
        """Call the implementation; ``what`` names the call in messages if it raises."""
        self.doing = what
        if self.reference:
            return fn(*args, **kwargs)
        try:
            return fn(*args, **kwargs)
        except NotImplementedError as exc:
            raise _Crash(
                f"{what} raised NotImplementedError{': ' + str(exc)[:300] if str(exc) else ''} "
                "(is the exercise written yet?)"
            ) from None
        except Exception as exc:  # the student's code may raise anything
            raise _Crash(f"{what} raised {type(exc).__name__}: {str(exc)[:500]}") from None

    @contextmanager
    def default_device_elsewhere(self) -> Iterator[None]:
        """Make tensors created without ``device=`` land on the meta device, as they would land on
        the CPU while the inputs are on a GPU: code that ignores its inputs' device fails here too."""
        with torch.device("meta"):
            yield

    @contextmanager
    def without_distributions(self) -> Iterator[None]:
        """Make ``torch.distributions`` unusable, for exercises that ask for the densities by hand:
        constructing any distribution (also one imported earlier) raises with a message saying so."""
        from torch.distributions import Distribution

        original = Distribution.__init__

        def refuse(*_args: Any, **_kwargs: Any) -> None:
            raise RuntimeError(
                "torch.distributions is not available in this exercise: write the density "
                "or the sampling with plain tensor operations"
            )

        Distribution.__init__ = refuse  # type: ignore[method-assign]
        try:
            yield
        finally:
            Distribution.__init__ = original  # type: ignore[method-assign]

    # ---------------------------------------------------------------- records
    def same(
        self,
        key: str,
        value: Any,
        *,
        what: str,
        hint: str = "",
        rtol: float = RTOL,
        atol: float = ATOL,
        exact_dtype: bool = False,
    ) -> None:
        """Record ``value``; it must equal the reference's within the tolerance."""
        self.check(
            key,
            value,
            what=what,
            hint=hint,
            test=lambda got, want, _: close(got, want, rtol=rtol, atol=atol, exact_dtype=exact_dtype),
        )

    def check(self, key: str, value: Any, *, what: str, test: Test, hint: str = "") -> None:
        """Record ``value``; ``test(got, reference_value, records)`` says what is wrong with it, or None.

        The test runs only in the grader, with the student's records at hand, so it may use the
        full genlab package (to name a known wrong variant, say).
        """
        if key in self.records or key in self.expected:
            raise GraderError(f"check {self.exercise}: record {key!r} is written twice")
        if self.reference:
            self.expected[key] = Expectation(what, _portable(value), test, hint)
        else:
            self.records[key] = _portable(value)

    def note(self, key: str, value: Any) -> None:
        """Record a value that a later test reads (from ``records``) but that is not judged itself."""
        if not self.reference:
            self.records[key] = _portable(value)


# ----------------------------------------------------------------------------- checks


class Check:
    """A hidden test: ``probe_<exercise>(impl)`` in a hidden-test cell, verified in the grader."""

    def __init__(self, body: Callable[[Trial, Any], None], reference: Any):
        if not body.__name__.startswith("probe_"):
            raise ValueError(f"a check's function must be called probe_<exercise>, not {body.__name__}")
        self.body = body
        self.reference = reference
        self.exercise = body.__name__[len("probe_") :]
        self.__name__ = body.__name__
        self.__doc__ = body.__doc__

    def __repr__(self) -> str:
        return f"<check {self.exercise}>"

    def run(self, impl: Any, seed: int) -> dict[str, Any]:
        """Probe ``impl``: the payload a kernel writes (records, and where it stopped if it crashed)."""
        t = Trial(self.exercise, seed, reference=False)
        crash = None
        state = torch.random.get_rng_state()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                self.body(t, impl)
        except _Crash as exc:
            crash = str(exc)
        except Exception as exc:  # the check tripped over something the student returned
            crash = f"while checking {t.doing}: {type(exc).__name__}: {str(exc)[:500]}"
        finally:
            torch.random.set_rng_state(state)
        return {"exercise": self.exercise, "records": t.records, "crash": crash}

    def expectations(self, seed: int) -> dict[str, Expectation]:
        """Run the check on the reference implementation: what every record must be."""
        t = Trial(self.exercise, seed, reference=True)
        state = torch.random.get_rng_state()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                self.body(t, self.reference)
        except Exception as exc:
            raise GraderError(
                f"the reference run of check {self.exercise} failed: {type(exc).__name__}: {exc}"
            ) from exc
        finally:
            torch.random.set_rng_state(state)
        return t.expected

    def verify(self, payload: Any, seed: int) -> str | None:
        """The first thing wrong with a probe's payload, or None when every record is right."""
        if not isinstance(payload, dict) or not isinstance(payload.get("records"), dict):
            return "the hidden test recorded nothing readable (its result file was changed or damaged)"
        records, crash = payload["records"], payload.get("crash")
        for key, exp in self.expectations(seed).items():
            if key not in records:
                if crash:
                    return f"{crash}"
                return f"{exp.what}: no result was recorded (did the hidden test run to its end?)"
            try:
                problem = exp.test(records[key], exp.value, records)
            except Exception as exc:  # a malformed record: the student's value, not the grader, is at fault
                problem = f"could not be compared ({type(exc).__name__}: {str(exc)[:200]})"
            if problem:
                return f"{exp.what}: {problem}" + (f". {exp.hint}" if exp.hint else "")
        return str(crash) if crash else None

    def __call__(self, impl: Any) -> None:
        """The probe, as a hidden-test cell calls it."""
        folder = os.environ.get(PROBE_DIR_ENV)
        seed = int(os.environ.get(PROBE_SEED_ENV) or secrets.randbits(48))
        payload = self.run(impl, seed)
        if folder:
            write_payload(Path(folder), self.exercise, payload)
            return
        problem = self.verify(payload, seed)
        if problem:
            raise Failed(f"{problem} (check {self.exercise}, {PROBE_SEED_ENV}={seed})")


def check(reference: Any) -> Callable[[Callable[[Trial, Any], None]], Check]:
    """Decorator: ``@check(genlab.losses.gaussian_kl)`` over ``def probe_gaussian_kl(t, gaussian_kl)``."""

    def wrap(body: Callable[[Trial, Any], None]) -> Check:
        return Check(body, reference)

    return wrap


def checks_of(module: Any) -> dict[str, Check]:
    """The checks a chapter's module defines, by the name hidden tests call them with."""
    return {name: obj for name, obj in vars(module).items() if isinstance(obj, Check)}


# ----------------------------------------------------------------------------- payload files


def encode(payload: dict[str, Any]) -> bytes:
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return buffer.getvalue()


# ----------------------------------------------------------------------------- reading payloads in the grader
#
# A payload file comes from the submission's kernel: anything may be in it. The grader reads it in
# three fences (and, on top of them, VerifyProbes decodes and verifies in a confined process):
# the archive (torch.save's zip, stored entries only, no bigger inside than outside), the pickle
# (only the opcodes and globals that records need: no bytearray, no sparse tensor, no huge int)
# and the loaded value (the shapes a probe records: small, plain, dense tensors).

# What torch.save writes for records: dense tensors in typed storages, and plain containers.
RECORD_GLOBALS = frozenset(
    {("torch._utils", "_rebuild_tensor_v2"), ("collections", "OrderedDict")}
    | {
        ("torch", f"{kind}Storage")
        for kind in (
            "Double",
            "Float",
            "Half",
            "BFloat16",
            "Long",
            "Int",
            "Short",
            "Char",
            "Byte",
            "Bool",
            "ComplexFloat",
            "ComplexDouble",
        )  # fmt: skip
    }
)
RECORD_OPCODES = frozenset(
    "PROTO FRAME GLOBAL BINPERSID REDUCE MARK TUPLE TUPLE1 TUPLE2 TUPLE3 EMPTY_TUPLE EMPTY_LIST EMPTY_DICT "
    "APPEND APPENDS SETITEM SETITEMS BININT BININT1 BININT2 LONG1 BINFLOAT BINUNICODE SHORT_BINUNICODE "
    "NEWTRUE NEWFALSE NONE BINPUT LONG_BINPUT BINGET LONG_BINGET MEMOIZE STOP".split()
)
MAX_RECORD_ELEMENTS = 2**23  # tensor elements in one payload once dense (honest ones: under 10^6)
MAX_SPREAD = 16  # a tensor may show at most this many elements per element of its storage (then densified)
MAX_RECORD_NODES = 200_000  # values reached walking a payload, a shared one counted each time it is reached
MAX_RECORD_DEPTH = 12
MAX_INT_BITS = 1024
MAX_ENTRIES = 4096  # files in a payload's archive


class BadRecord(pickle.UnpicklingError):
    """A payload file that is not what a probe writes; the message says what is wrong with it."""


def _check_archive(data: bytes) -> bytes:
    """The pickle inside a payload archive, once the archive is known to hold no more than it shows."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        entries = archive.infolist()
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:
        raise BadRecord(f"not a file torch.save writes ({exc})") from None
    if len(entries) > MAX_ENTRIES:
        raise BadRecord(f"its archive holds {len(entries)} files")
    if any(e.compress_type != zipfile.ZIP_STORED for e in entries):
        raise BadRecord("its archive is compressed (torch.save stores records uncompressed)")
    if sum(e.file_size for e in entries) > len(data):
        raise BadRecord("its archive claims more data than the file holds")
    pickles = [e for e in entries if e.filename.endswith("/data.pkl") or e.filename == "data.pkl"]
    if len(pickles) != 1:
        raise BadRecord("its archive holds no single data.pkl")
    return archive.read(pickles[0])


def _check_pickle(data: bytes) -> None:
    """Refuse a pickle that uses an opcode or a global that records never need (before anything runs)."""
    try:
        for op, arg, _ in pickletools.genops(data):
            if op.name == "GLOBAL":
                module, _, name = str(arg).partition(" ")
                if (module, name) not in RECORD_GLOBALS:
                    raise BadRecord(f"GLOBAL {module}.{name} is not allowed in a record")
            elif op.name not in RECORD_OPCODES:
                raise BadRecord(f"the pickle opcode {op.name} is not allowed in a record")
            elif op.name == "LONG1" and isinstance(arg, int) and arg.bit_length() > MAX_INT_BITS:
                raise BadRecord(f"an integer of {arg.bit_length()} bits")
    except BadRecord:
        raise
    except (ValueError, pickle.UnpicklingError) as exc:
        raise BadRecord(f"its pickle is damaged ({exc})") from None


def _plain(value: Any) -> Any:
    """``value`` (a loaded payload) with every tensor dense and within the caps, or raise BadRecord.

    Walks without recursion; a value reached twice (the pickle's memo) counts twice, so a few
    bytes of shared references cannot make a verification walk billions of values.
    """
    nodes = elements = 0
    stack: list[tuple[Any, int, Any, Any]] = [(value, 0, None, None)]
    root: list[Any] = [value]
    while stack:
        item, depth, parent, key = stack.pop()
        nodes += 1
        if nodes > MAX_RECORD_NODES or depth > MAX_RECORD_DEPTH:
            raise BadRecord("it nests too deeply or holds too many values")
        if isinstance(item, torch.Tensor):
            dense = _dense(item, MAX_RECORD_ELEMENTS - elements)
            elements += dense.numel()
            if dense is not item:
                (root if parent is None else parent)[0 if parent is None else key] = dense
        elif isinstance(item, dict):
            if not all(isinstance(k, str) and len(k) <= MAX_TEXT for k in item):
                raise BadRecord("a dict with keys that are not short strings")
            stack += [(v, depth + 1, item, k) for k, v in item.items()]
        elif isinstance(item, (list, tuple)):
            if isinstance(item, tuple):
                item = list(item)
                (root if parent is None else parent)[0 if parent is None else key] = item
            stack += [(v, depth + 1, item, i) for i, v in enumerate(item)]
        elif isinstance(item, str):
            if len(item) > 4 * MAX_TEXT:
                raise BadRecord(f"a string of {len(item)} characters")
        elif isinstance(item, int) and not isinstance(item, bool):
            if item.bit_length() > MAX_INT_BITS:
                raise BadRecord(f"an integer of {item.bit_length()} bits")
        elif not (item is None or isinstance(item, (bool, float))):
            raise BadRecord(f"a value of type {type(item).__name__}")
    return root[0]


def _dense(t: torch.Tensor, room: int) -> torch.Tensor:
    """``t`` as a plain dense CPU tensor (densified when it is a view), or raise BadRecord past the caps."""
    if t.layout != torch.strided or t.is_quantized or t.device.type != "cpu":
        raise BadRecord(f"a tensor with layout {t.layout} on {t.device}")
    if t.numel() > room:
        raise BadRecord(f"tensors of more than {MAX_RECORD_ELEMENTS} elements in all")
    stored = t.untyped_storage().nbytes() // max(1, t.element_size())
    if t.numel() > MAX_SPREAD * max(1, stored):
        raise BadRecord(f"a tensor of shape {tuple(t.shape)[:8]} over a storage of {stored} elements")
    t = t.detach()
    t.requires_grad_(False)
    return t if t.is_contiguous() and t.numel() == stored else t.contiguous().clone()


def decode(data: bytes) -> Any:
    """Read a payload: the archive, the pickle and the value within the caps, or raise BadRecord.

    The pickle is then read by torch's restricted unpickler (``weights_only=True``) as well.
    """
    if len(data) > MAX_RECORD_BYTES:
        raise BadRecord(f"it is larger than {MAX_RECORD_BYTES // 2**20} MB")
    if not zipfile.is_zipfile(io.BytesIO(data)):
        _check_pickle(data)  # a bare pickle: refused for what it holds, if anything, or else for its format
        raise BadRecord("not a file torch.save writes")
    _check_pickle(_check_archive(data))
    return _plain(torch.load(io.BytesIO(data), map_location="cpu", weights_only=True))


def write_payload(folder: Path, exercise: str, payload: dict[str, Any]) -> None:
    data = encode(payload)
    if len(data) > MAX_RECORD_BYTES:
        data = encode(
            {
                "exercise": exercise,
                "records": {},
                "crash": f"the hidden test's records exceed {MAX_RECORD_BYTES // 2**20} MB",
            }
        )
    tmp = folder / f".{exercise}.tmp"
    tmp.write_bytes(data)
    os.replace(tmp, folder / f"{exercise}.pt")


# ----------------------------------------------------------------------------- small shared tests


def is_true(message: str) -> Test:
    """A test that the recorded value is True, failing with ``message``."""
    return lambda got, _want, _records: None if got is True else message


def shapes_of(modules: Sequence[nn.Module]) -> list[list[int]]:
    """Weight shapes of a list of layers, for recording an architecture."""
    return [list(m.weight.shape) for m in modules]


def legacy_names(namespace: dict[str, Any]) -> None:
    """Also export each probe as ``check_<exercise>``, the name hidden tests generated before the probe
    form call (nbgrader restores test cells from the gradebook, so old assignments keep calling it)."""
    for obj in list(namespace.values()):
        if isinstance(obj, Check):
            namespace[f"check_{obj.exercise}"] = obj
