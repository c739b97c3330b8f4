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

Every call of student code goes through ``Trial.call``, which holds it to the course's contract
(arguments left as they came, results of the reference's kind, dtype, device and graph link, the
same result when called again, no draws where the noise is given): see "the contract of every
call" below and CONTRIBUTING.md.
"""

from __future__ import annotations

import functools
import hashlib
import io
import math
import os
import pickle
import pickletools
import secrets
import warnings
import weakref
import zipfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from torch import nn
from torch.overrides import TorchFunctionMode

M = TypeVar("M", bound=nn.Module)

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
    if want is None:  # a complex reference: compared as a value above, never here
        return f"got {describe(got)}, expected {describe(expected)}"
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
    """What a probe may record: tensors (detached, on the CPU), plain numbers, short text, lists and dicts of them.

    NumPy scalars and arrays become Python numbers and tensors (``numpy.float64`` is a ``float``
    subclass, and the restricted unpickler that reads records refuses every NumPy type).
    """
    if depth > 4:
        return "<nested too deep>"
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu").clone().contiguous() if value.device.type != "meta" else "<tensor on meta>"
    if value is None or type(value) in (bool, int, float):
        return value
    if isinstance(value, (torch.device, torch.dtype)):
        return str(value)
    if isinstance(value, np.generic):
        return _portable(value.item(), depth)
    if isinstance(value, np.ndarray):
        try:
            return _portable(torch.as_tensor(value), depth)
        except (TypeError, ValueError, RuntimeError):  # object or string arrays
            return f"<numpy array of {value.dtype}>"
    if isinstance(value, float):  # a subclass: numpy.float64, say
        return float(value)
    if isinstance(value, int):  # a subclass: an IntEnum, say
        return int(value)
    if isinstance(value, str):
        return str(value)[:MAX_TEXT]
    if isinstance(value, (list, tuple)):
        return [_portable(v, depth + 1) for v in value[:1000]]
    if isinstance(value, dict):
        return {str(k)[:200]: _portable(v, depth + 1) for k, v in list(value.items())[:1000]}
    return f"<{type(value).__name__}>"


# ----------------------------------------------------------------------------- the contract of every call
#
# Every call of student code (Trial.call) is held to what the course's exercises share, whatever
# the exercise: its arguments come back as they went in, its result has the reference's kind,
# dtype, device and link to the autograd graph, and a deterministic function gives the same
# result when it is called again. A check exempts a call from one of these only with a reason.

CONTRACT = ("inputs", "device", "type", "graph", "repeat")
# Inputs up to this many elements are also compared value by value (bigger ones by their version
# counter only, which sees every in-place operation but a write through ``.data``).
COMPARED_ELEMENTS = 4_000_000
ON_ANOTHER_DEVICE = (
    "Expected all tensors to be on the same device: a tensor created without device= lives on the CPU, "
    "the inputs on the GPU when the grader has one. Create tensors on the inputs' device "
    "(torch.zeros(..., device=x.device), torch.zeros_like(x), or .to(x.device))"
)
_IN_PLACE_ON_SELF = frozenset({"copy_", "__setitem__", "index_put_"})
# Operations whose result stays where their first tensor is, whatever the others (indices, shapes).
_FOLLOW_SELF = frozenset({"__getitem__", "index_put", "__get__", "expand_as", "view_as", "reshape_as"})
_MOVING = frozenset({"to", "type_as", "cpu", "cuda", "__set__", "broadcast_tensors"})
_WATCHED = frozenset({"numpy", "__array__", "cpu", "to", "type_as"})  # looked at even before anything is marked


@functools.cache
def _constructors() -> frozenset[Any]:
    """Functions that create a tensor on the default device unless given ``device=``."""
    from torch.utils._device import _device_constructors

    return frozenset(_device_constructors()) | {torch.from_numpy, torch.frombuffer, torch.normal}


def _tensors_in(value: Any, depth: int = 0) -> Iterator[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        yield value
    elif depth < 3 and isinstance(value, (list, tuple)):
        for item in value:
            yield from _tensors_in(item, depth + 1)
    elif depth < 3 and isinstance(value, dict):
        for item in value.values():
            yield from _tensors_in(item, depth + 1)


class _DeviceWatch(TorchFunctionMode):
    """A grader's stand-in for a GPU: tensors created without ``device=`` count as being elsewhere.

    While student code runs, every tensor that a constructor makes without ``device=`` (or that
    ``.cpu()`` or NumPy hands back) is *marked*: it sits on the default device, the CPU, while the
    inputs are on ``home`` (a GPU where the grader has one, else the CPU standing in for one). What
    a GPU refuses is refused here too: a marked tensor with dimensions meeting an input in one
    operation, ``.numpy()`` of a tensor not known to be in host memory. ``.to(device)``,
    ``.to(other)`` and ``.cuda()`` clear the mark, so "create on the right device" and "create,
    then move" both pass; a result that is still marked is on the wrong device.
    """

    def __init__(self, home: torch.device) -> None:
        super().__init__()
        self.home = home
        self._marked: dict[int, weakref.ref] = {}
        # Tensors placed on the CPU by an explicit device (which a CPU grader cannot mark): NumPy may read them.
        self._hosted: dict[int, weakref.ref] = {}
        self._constructors = _constructors()

    @staticmethod
    def _holds(registry: dict[int, weakref.ref], tensor: torch.Tensor) -> bool:
        ref = registry.get(id(tensor))
        return ref is not None and ref() is tensor

    def marked(self, tensor: torch.Tensor) -> bool:
        return self._holds(self._marked, tensor)

    def hosted(self, tensor: torch.Tensor) -> bool:
        return self.marked(tensor) or self._holds(self._hosted, tensor)

    @staticmethod
    def _put(registry: dict[int, weakref.ref], value: Any, present: bool) -> None:
        for tensor in _tensors_in(value):
            if present:
                registry[id(tensor)] = weakref.ref(tensor)
            else:
                registry.pop(id(tensor), None)

    def _set(self, value: Any, marked: bool, hosted: bool = False) -> None:
        self._put(self._marked, value, marked)
        self._put(self._hosted, value, hosted)

    def _elsewhere(self, device: Any) -> bool:
        """Whether an explicit ``device`` argument leaves the inputs' device.

        On a CPU grader "cpu" spelt out cannot be told from ``x.device.type``, so it counts as the
        inputs' device (NumPy may read it): only ``.cpu()`` and NumPy mark a tensor there.
        """
        return torch.device(device).type != self.home.type

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        if not self._marked and not self._hosted and name not in _WATCHED and func not in self._constructors:
            return func(*args, **kwargs)  # nothing marked yet: no operation can mix devices
        tensors = list(_tensors_in((args, kwargs)))
        if name in ("numpy", "__array__") and tensors and not self.hosted(tensors[0]):
            raise TypeError(
                "can't convert a tensor on the inputs' device (a GPU when the grader has one) to NumPy: "
                "stay with torch operations, or call .cpu() first and move the result back with .to(x.device)"
            )
        marks = [self.marked(t) for t in tensors]
        crossing = name in _IN_PLACE_ON_SELF or name in _FOLLOW_SELF or name in _MOVING
        if (
            not crossing
            and func not in self._constructors
            and any(marks)
            and not all(marks)
            and any(t.dim() > 0 for t, m in zip(tensors, marks) if m)
        ):
            raise RuntimeError(ON_ANOTHER_DEVICE)
        out = func(*args, **kwargs)
        if func in self._constructors:
            device = kwargs.get("device")
            if device is None:
                self._set(out, all(marks) if tensors else True)
            else:
                self._set(out, self._elsewhere(device), hosted=torch.device(device).type == "cpu")
        elif name == "cpu":
            self._set(out, True)
        elif name == "cuda":
            self._set(out, False)
        elif name == "to":
            self._set(out, *self._after_to(args, kwargs))
        elif name == "type_as" and len(args) == 2 and isinstance(args[1], torch.Tensor):
            self._set(out, self.marked(args[1]), self.hosted(args[1]))
        elif name == "broadcast_tensors" and isinstance(out, (tuple, list)):
            for tensor, view in zip(tensors, out):
                self._set(view, self.marked(tensor), self.hosted(tensor))
        elif name == "__set__" and getattr(getattr(func, "__self__", None), "__name__", "") == "data":  # x.data = y
            value = args[1] if isinstance(args[1], torch.Tensor) else None
            self._set(args[0], value is not None and self.marked(value), value is not None and self.hosted(value))
        elif name in _FOLLOW_SELF and tensors:
            if isinstance(out, torch.Tensor) and isinstance(args[0], torch.Tensor):
                self._set(out, self.marked(args[0]), self.hosted(args[0]))
        elif name not in _IN_PLACE_ON_SELF and tensors and out is not None:
            self._set(out, all(marks), all(self.hosted(t) for t in tensors))
        return out

    def _after_to(self, args: tuple, kwargs: dict) -> tuple[bool, bool]:
        """Whether ``tensor.to(...)`` leaves its result marked (a move to the inputs' device clears the
        mark), and whether it is in host memory."""
        source, rest = args[0], args[1:]
        other = rest[0] if rest and isinstance(rest[0], torch.Tensor) else kwargs.get("other")
        if isinstance(other, torch.Tensor):
            return self.marked(other), self.hosted(other)
        device = kwargs.get("device")
        if device is None and rest and isinstance(rest[0], (str, torch.device)):
            device = rest[0]
        if device is None:
            return self.marked(source), self.hosted(source)
        return self._elsewhere(device), torch.device(device).type == "cpu"


def _where(value: torch.Tensor, home: torch.device, watch: _DeviceWatch | None) -> str:
    """ "inputs" when a result tensor is on the inputs' device, else "elsewhere"."""
    if value.device.type != home.type or (watch is not None and watch.marked(value)):
        return "elsewhere"
    return "inputs"


def signature(value: Any, home: torch.device, watch: _DeviceWatch | None = None, depth: int = 0) -> dict[str, Any]:
    """What kind of value a call returned: a tensor's dtype, device and graph link; a number; a sequence."""
    if isinstance(value, torch.Tensor):
        return {
            "kind": "tensor",
            "dtype": str(value.dtype),
            "dim": value.dim(),
            "numel": value.numel(),
            "grad": bool(value.requires_grad),
            "where": _where(value, home, watch),
        }
    if isinstance(value, (bool, np.bool_)):
        return {"kind": "bool"}
    if isinstance(value, (int, float, np.integer, np.floating)):
        return {"kind": "number", "type": type(value).__name__}
    if value is None:
        return {"kind": "none"}
    if isinstance(value, (list, tuple)) and depth < 3:
        return {
            "kind": type(value).__name__ if type(value) in (list, tuple) else "tuple",
            "items": [signature(v, home, watch, depth + 1) for v in value[:20]],
            "length": len(value),
        }
    if isinstance(value, nn.Module):
        return {"kind": "module"}
    return {"kind": "other", "type": type(value).__name__[:80]}


def _result_problem(got: Any, want: Any, exempt: Sequence[str], where: str = "the result") -> str | None:
    """How a result's signature departs from the reference's, in words; None when it fits."""
    if not isinstance(got, dict) or not isinstance(want, dict):
        return "its record of this call cannot be read"
    kind, have = want.get("kind"), got.get("kind")
    if kind in ("none", "other"):  # nothing in the text constrains what a procedure returns
        return None
    if kind == "tensor" and want.get("dim", 0) > 0:
        if have != "tensor":
            return f"{where} is {_kind_words(got)}; expected a torch.Tensor"
        return _tensor_problem(got, want, exempt, where)
    if kind in ("number", "tensor"):
        if kind == "number":  # a Python number; a one-element tensor is one too, but without graph history
            if have == "tensor" and got.get("numel") == 1:
                if got.get("grad") and "graph" not in exempt:
                    return f"{where} is a tensor that still carries graph history; return a number (.item())"
                return None
            if "type" not in exempt and have != "number":
                return f"{where} is {_kind_words(got)}; expected a number (float(...) or .item() gives one)"
            return None
        if have == "number":
            if want.get("grad") and "graph" not in exempt:
                return (
                    f"{where} is a Python number; expected a tensor that stays differentiable (no .item(), "
                    "float() or detach on the way)"
                )
            return None
        if have != "tensor" or got.get("numel") != 1:
            return f"{where} is {_kind_words(got)}; expected a number (a 0-dim tensor)"
        return _tensor_problem(got, want, (*exempt, "type"), where)
    if kind in ("tuple", "list"):
        items = got.get("items")
        if have not in ("tuple", "list") or got.get("length") != want.get("length") or not isinstance(items, list):
            return f"{where} is {_kind_words(got)}; expected a {kind} of {want.get('length')} items"
        for i, (g, w) in enumerate(zip(items, want.get("items", []))):
            problem = _result_problem(g, w, exempt, f"item {i} of {where}")
            if problem:
                return problem
        return None
    if have != kind and "type" not in exempt:
        return f"{where} is {_kind_words(got)}; expected {_kind_words(want)}"
    return None


def _tensor_problem(got: dict, want: dict, exempt: Sequence[str], where: str) -> str | None:
    if "type" not in exempt and got.get("dtype") != want.get("dtype"):
        return f"{where} has dtype {got.get('dtype')}; expected {want.get('dtype')}"
    if "device" not in exempt and got.get("where") != "inputs":
        return (
            f"{where} is not on the device the call asked for (its inputs' device, or the device= it was given): "
            "create tensors there (device=x.device or device=device, torch.zeros_like(x), or .to(...)), never "
            "on the default device"
        )
    if "graph" not in exempt and bool(got.get("grad")) != bool(want.get("grad")):
        if want.get("grad"):
            return (
                f"{where} does not require grad: gradients must flow through it back to the inputs (no .detach(), "
                ".item(), NumPy or torch.no_grad() on the way)"
            )
        return (
            f"{where} still carries graph history (requires_grad=True): return it detached (.detach()), "
            "as the reference does"
        )
    return None


def _kind_words(sig: dict) -> str:
    kind = sig.get("kind")
    if kind == "tensor":
        return f"a {sig.get('dtype')} tensor with {sig.get('dim')} dimensions"
    if kind == "number":
        return f"a number ({sig.get('type')})"
    if kind in ("tuple", "list"):
        return f"a {kind} of {sig.get('length')} items"
    if kind == "other":
        return f"a {sig.get('type')}"
    return {"none": "None", "bool": "a bool", "module": "an nn.Module"}.get(str(kind), str(kind))


@dataclass
class _Snapshot:
    """An argument as it went into a call, to see afterwards what the call changed."""

    label: str
    obj: Any
    version: int = 0
    requires_grad: bool = False
    grad: Any = None
    grad_version: int = 0
    values: torch.Tensor | None = None
    parameters: list[tuple[str, Any, bool]] | None = None


def _arguments(fn: Any, args: tuple, kwargs: dict) -> Iterator[tuple[str, Any]]:
    """Every tensor and module a call receives, labelled by position (the same on both sides)."""
    if isinstance(fn, nn.Module):
        yield "the module called", fn
    for i, arg in enumerate(args, start=1):
        yield from _labelled(f"argument {i}", arg, 0)
    for key, arg in kwargs.items():
        yield from _labelled(f"argument {key}=", arg, 0)


def _labelled(label: str, value: Any, depth: int) -> Iterator[tuple[str, Any]]:
    if isinstance(value, (torch.Tensor, nn.Module)):
        yield label, value
    elif depth < 3 and isinstance(value, (list, tuple)):
        for i, item in enumerate(value[:100]):
            yield from _labelled(f"{label}[{i}]", item, depth + 1)


def _snapshot(fn: Any, args: tuple, kwargs: dict) -> list[_Snapshot]:
    shots = []
    for label, obj in _arguments(fn, args, kwargs):
        if isinstance(obj, nn.Module):
            params = [(name, p, p.requires_grad) for name, p in obj.named_parameters()]
            shots.append(_Snapshot(label, obj, parameters=params))
            continue
        grad = obj.grad if obj.is_leaf else None
        keep = obj.device.type != "meta" and not obj.is_sparse and obj.numel() <= COMPARED_ELEMENTS
        shots.append(
            _Snapshot(
                label,
                obj,
                version=obj._version,
                requires_grad=obj.requires_grad,
                grad=grad,
                grad_version=grad._version if grad is not None else 0,
                values=obj.detach().clone() if keep else None,
            )
        )
    return shots


def _changes(shots: list[_Snapshot]) -> list[str]:
    """What a call did to its arguments, in words that name the fix (identical on both sides)."""
    found = []
    for shot in shots:
        obj = shot.obj
        if shot.parameters is not None:
            now = dict(obj.named_parameters())
            for name, param, requires_grad in shot.parameters:
                current = now.get(name)
                if current is not param or current is None:
                    found.append(
                        f"{shot.label}'s parameter {name!r} was replaced by a new tensor: change parameters in "
                        "place (nn.init.*_ functions, or p.copy_(...) under torch.no_grad()), since the caller's "
                        "optimizer holds the old ones"
                    )
                elif current.requires_grad != requires_grad:
                    found.append(
                        f"{shot.label}'s parameter {name!r} had requires_grad switched "
                        f"{'on' if requires_grad is False else 'off'}: leave requires_grad as you found it"
                    )
            continue
        moved = obj._version != shot.version
        if not moved and shot.values is not None:
            now = obj.detach()
            moved = now.shape != shot.values.shape or not bool(
                ((now == shot.values) | (now.isnan() & shot.values.isnan())).all()
                if now.is_floating_point() or now.is_complex()
                else (now == shot.values).all()
            )
        if moved:
            found.append(
                f"{shot.label} (a tensor) was changed in place: leave the caller's tensor as it is and work "
                "on a copy (x.clone(), or x.detach().clone() for a copy that is differentiated)"
            )
        if obj.requires_grad != shot.requires_grad:
            found.append(
                f"{shot.label} had requires_grad switched {'on' if obj.requires_grad else 'off'}: leave the "
                "caller's tensor as it is and differentiate a copy (x.detach().clone().requires_grad_())"
            )
        grad = obj.grad if obj.is_leaf else None
        if grad is not shot.grad or (grad is not None and grad._version != shot.grad_version):
            found.append(
                f"{shot.label}'s .grad was changed: do not back-propagate into the caller's tensors; take "
                "gradients with respect to copies (torch.autograd.grad, or x.detach().clone().requires_grad_())"
            )
    return found


def _rng_state() -> tuple[torch.Tensor, ...]:
    """The global generators' states: the CPU's, and every GPU's where there is one."""
    gpus = tuple(torch.cuda.get_rng_state_all()) if torch.cuda.is_available() else ()
    return (torch.random.get_rng_state(), *gpus)


def _again_problem(first: Any, second: Any) -> str | None:
    """Why a second call's result differs from the first call's (both already portable), or None."""
    if isinstance(first, list) and isinstance(second, list) and len(first) == len(second):
        for a, b in zip(first, second):
            problem = _again_problem(a, b)
            if problem:
                return problem
        return None
    if isinstance(first, torch.Tensor) and isinstance(second, torch.Tensor) and first.shape == second.shape:
        if first.dtype == second.dtype and torch.equal(first, second):
            return None  # the usual case, without the cost of a comparison within tolerance
    if isinstance(first, (torch.Tensor, int, float)) and not isinstance(first, bool):
        return close(second, first)
    try:
        same = bool(first == second)
    except Exception:  # mismatched kinds
        same = False
    return None if same else f"got {describe(second)} the second time, {describe(first)} the first"


def _arguments_test(exempt: Sequence[str]) -> Test:
    """The test of what a call did to its arguments: nothing the reference's call does not do too."""

    def test(got: Any, want: Any, _records: dict[str, Any]) -> str | None:
        allowed = {str(w) for w in want}
        extra = [str(c) for c in got if str(c) not in allowed]
        if extra and "inputs" not in exempt:
            return f"it changed what it was given: {extra[0]}"
        return None

    return test


def _result_test(exempt: Sequence[str]) -> Test:
    """The test of a call's result: what a second call returned, then the reference's kind, dtype, device and
    link to the graph."""

    def test(got: Any, want: Any, _records: dict[str, Any]) -> str | None:
        again = got.get("again")
        if again and "repeat" not in exempt:
            return (
                f"called a second time with the same arguments it returned something else ({str(again)[:300]}): "
                "the function must not keep or leave state behind (gradients accumulating in its arguments, "
                "a counter, a cache, a generator seeded once)"
            )
        return _result_problem(got.get("signature"), want.get("signature"), exempt)

    return test


# ----------------------------------------------------------------------------- one run of a check


@dataclass
class Expectation:
    """What one record must be: the reference's value and the test it must pass."""

    what: str
    value: Any
    test: Test
    hint: str = ""
    late: bool = False  # a call's contract: judged after every value (whose message names the mistake)


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
        self.conditions: frozenset[str] = frozenset()
        self.covered: set[str] = set()
        self.calls = 0

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

    def init_module(self, module: M, scale: float = 1.0) -> M:
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

    def covers(self, *conditions: str) -> None:
        """Say that the inputs drawn next test these conditions of the exercise's text (see ``check``)."""
        unknown = set(conditions) - self.conditions
        if unknown:
            raise GraderError(f"check {self.exercise}: conditions {sorted(unknown)} are not among its declared ones")
        self.covered.update(conditions)

    # ---------------------------------------------------------------- calls
    def call(
        self,
        fn: Callable,
        *args: Any,
        what: str,
        exempt: dict[str, str] | None = None,
        draws: bool = True,
        **kwargs: Any,
    ) -> Any:
        """Call the implementation, held to the contract; ``what`` names the call in messages.

        The call's record holds what it changed in its arguments, the signature of its result
        (kind, dtype, device, link to the graph) and, for a deterministic function, whether a
        second call returned the same; the grader compares it with the reference's record.
        ``exempt`` maps a property of ``CONTRACT`` to the reason why this call may break it;
        ``draws=False`` where the text says the call draws no random numbers (its noise is given).
        """
        exempt = dict(exempt or {})
        if set(exempt) - set(CONTRACT) or not all(str(reason).strip() for reason in exempt.values()):
            raise GraderError(f"check {self.exercise}: exempt= takes properties of {CONTRACT}, each with a reason")
        self.doing = what
        index = self.calls
        self.calls += 1
        shots = _snapshot(fn, args, kwargs)
        state = None if draws else _rng_state()
        if self.reference:
            result = fn(*args, **kwargs)
            returned: dict[str, Any] = {"signature": signature(result, self.device)}
        else:
            watch = None if "device" in exempt else _DeviceWatch(self.device)
            with watch if watch is not None else nullcontext():  # only student code runs watched
                result = self._guarded(fn, args, kwargs, what)
                returned = {"signature": signature(result, self.device, watch)}
            if "repeat" not in exempt:
                first = _portable(result)  # before the second call, which may change what the first returned
                with watch if watch is not None else nullcontext():
                    again = self._guarded(fn, args, kwargs, f"{what}, called a second time with the same arguments")
                returned["again"] = _again_problem(first, _portable(again))
        changed = _changes(shots)
        if state is not None and not all(torch.equal(a, b) for a, b in zip(state, _rng_state())):
            changed.append(
                "it drew from the global random number generator although its noise is given: use what you are "
                "given and draw nothing"
            )
        names = tuple(exempt)
        # A changed argument explains wrong values: judged in order, before them. The result's kind,
        # dtype and device, and a second call's result, are judged after every value.
        self._register(f"call {index}/arguments", changed, Expectation(what, changed, _arguments_test(names)))
        self._register(f"call {index}/result", returned, Expectation(what, returned, _result_test(names), late=True))
        return result

    def _guarded(self, fn: Callable, args: tuple, kwargs: dict, what: str) -> Any:
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
        self._register(key, value, Expectation(what, _portable(value), test, hint))

    def _register(self, key: str, value: Any, expectation: Expectation) -> None:
        if key in self.records or key in self.expected:
            raise GraderError(f"check {self.exercise}: record {key!r} is written twice")
        if self.reference:
            self.expected[key] = expectation
        else:
            self.records[key] = _portable(value)

    def note(self, key: str, value: Any) -> None:
        """Record a value that a later test reads (from ``records``) but that is not judged itself."""
        if not self.reference:
            self.records[key] = _portable(value)


# ----------------------------------------------------------------------------- checks


class Check:
    """A hidden test: ``probe_<exercise>(impl)`` in a hidden-test cell, verified in the grader.

    ``conditions`` maps a short name to each condition the exercise's text states (a tolerance,
    a broadcasting direction, an edge value, an error to raise, what may be a float); the probe
    says with ``t.covers(name)`` where it draws an input for it, and the chapter's tests require
    every condition to be drawn.
    """

    def __init__(self, body: Callable[[Trial, Any], None], reference: Any, conditions: dict[str, str] | None = None):
        if not body.__name__.startswith("probe_"):
            raise ValueError(f"a check's function must be called probe_<exercise>, not {body.__name__}")
        self.body = body
        self.reference = reference
        self.conditions = dict(conditions or {})
        self.exercise = body.__name__[len("probe_") :]
        self.__name__ = body.__name__
        self.__doc__ = body.__doc__

    def __repr__(self) -> str:
        return f"<check {self.exercise}>"

    def _trial(self, seed: int, *, reference: bool) -> Trial:
        t = Trial(self.exercise, seed, reference=reference)
        t.conditions = frozenset(self.conditions)
        return t

    def run(self, impl: Any, seed: int) -> dict[str, Any]:
        """Probe ``impl``: the payload a kernel writes (records, and where it stopped if it crashed)."""
        t = self._trial(seed, reference=False)
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

    def _reference_trial(self, seed: int) -> Trial:
        t = self._trial(seed, reference=True)
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
        return t

    def expectations(self, seed: int) -> dict[str, Expectation]:
        """Run the check on the reference implementation: what every record must be."""
        return self._reference_trial(seed).expected

    def coverage(self, seed: int) -> set[str]:
        """The conditions of the text that the inputs drawn with this seed test."""
        return self._reference_trial(seed).covered

    def verify(self, payload: Any, seed: int) -> str | None:
        """The first thing wrong with a probe's payload, or None when every record is right.

        Records are judged in the order they were made (what a call did to its arguments comes
        right after the call), then the signature of every call's result, so that a wrong value
        is named before its dtype. A test that raises is a fault of the check
        (:class:`GraderError`), never the student's: every test gets a record of the reference's
        kind (:func:`kind_problem` answers the others).
        """
        return self.judge(payload, self.expectations(seed))

    def judge(self, payload: Any, expected: dict[str, Expectation]) -> str | None:
        """:meth:`verify` against expectations already made (one reference run serves many payloads)."""
        if not isinstance(payload, dict) or not isinstance(payload.get("records"), dict):
            return "the hidden test recorded nothing readable (its result file was changed or damaged)"
        records, crash = payload["records"], payload.get("crash")
        ordered = [k for k, e in expected.items() if not e.late] + [k for k, e in expected.items() if e.late]
        for key in ordered:
            exp = expected[key]
            if key not in records:
                if crash:
                    return f"{crash}"
                return f"{exp.what}: no result was recorded (did the hidden test run to its end?)"
            problem = kind_problem(records[key], exp.value)
            if problem is None:
                try:
                    problem = exp.test(records[key], exp.value, records)
                except Exception as exc:
                    raise GraderError(
                        f"check {self.exercise}: the test of record {key!r} raised {type(exc).__name__}: {exc}"
                    ) from exc
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


def kind_problem(got: Any, want: Any) -> str | None:
    """A record that is not of the reference's kind, in words (the test never sees it); None otherwise.

    A reference tensor with dimensions needs a dense tensor, complex or boolean only where the
    reference is; a number takes any number (a Python number, a 0-dim or one-element tensor);
    text, lists and dicts need their own kind. None and booleans leave the judgement to the test.
    """
    if isinstance(want, torch.Tensor) and want.dim() > 0:
        if not isinstance(got, torch.Tensor):
            return f"expected a torch.Tensor of shape {tuple(want.shape)}, got {describe(got)}"
        if got.layout != torch.strided:
            return f"expected a dense tensor, got one of layout {got.layout}"
        if (got.is_complex() and not want.is_complex()) or (got.dtype == torch.bool) != (want.dtype == torch.bool):
            return f"expected {want.dtype} values, got {got.dtype}"
        return None
    if as_number(want) is not None and not isinstance(want, bool):
        return None if as_number(got) is not None else f"expected a number, got {describe(got)}"
    for kind, words in ((str, "text"), (list, "a list"), (dict, "a dict")):
        if isinstance(want, kind) and not isinstance(got, kind):
            return f"expected {words}, got {describe(got)}"
    return None


def check(reference: Any, conditions: dict[str, str] | None = None) -> Callable[[Callable[[Trial, Any], None]], Check]:
    """Decorator: ``@check(genlab.losses.gaussian_kl, conditions={...})`` over ``def probe_gaussian_kl(t, ...)``."""

    def wrap(body: Callable[[Trial, Any], None]) -> Check:
        return Check(body, reference, conditions)

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


class DamagedPickle(BadRecord):
    """Bytes that are no pickle at all."""


class UnconvertedRecord(BadRecord):
    """A record that names a NumPy value: a probe writes that only when ``_portable`` missed a conversion."""


# Modules a probe's record may name only through a gap in _portable (NumPy scalars and arrays).
_LEAKED_MODULES = ("numpy", "_codecs")


def _check_archive(data: bytes) -> bytes:
    """The pickle inside a payload archive, once the archive is known to hold no more than it shows."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        entries = archive.infolist()
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:
        raise BadRecord(f"it is not a file that torch.save wrote ({exc})") from None
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
                    if module.split(".")[0] in _LEAKED_MODULES:
                        raise UnconvertedRecord(f"it holds a value of {module}.{name}")
                    raise BadRecord(f"its pickle refers to GLOBAL {module}.{name}, which no probe writes")
            elif op.name not in RECORD_OPCODES:
                raise BadRecord(f"the pickle opcode {op.name} is not allowed in a record")
            elif op.name == "LONG1" and isinstance(arg, int) and arg.bit_length() > MAX_INT_BITS:
                raise BadRecord(f"an integer of {arg.bit_length()} bits")
    except BadRecord:
        raise
    except (ValueError, pickle.UnpicklingError) as exc:
        raise DamagedPickle(f"its pickle is damaged ({exc})") from None


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
        try:
            _check_pickle(data)  # a bare pickle is refused for the foreign global it names, if any
        except (DamagedPickle, UnconvertedRecord):
            pass
        raise BadRecord("it is not a file that torch.save wrote")
    _check_pickle(_check_archive(data))
    return _plain(torch.load(io.BytesIO(data), map_location="cpu", weights_only=True))


# What torch.save writes for the values a probe records, or could record through a gap in
# _portable (NumPy scalars and arrays, dtypes): a record that names anything else was not
# written by a probe.
_PROBE_GLOBALS = ("torch", "collections", "numpy", "_codecs")


def foreign_record(data: bytes) -> str | None:
    """Why a record that could not be read was demonstrably written by something other than a probe, or None.

    A record that a probe wrote but the grader cannot read is the grader's fault (a value that
    ``_portable`` should have converted): the submission is then ungraded, not failed.
    """
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            pickles = [name for name in archive.namelist() if name.endswith("/data.pkl")]
            if len(pickles) != 1:
                return "it is not a file that torch.save wrote"
            found = {
                str(arg).split()[0]
                for op, arg, _ in pickletools.genops(archive.read(pickles[0]))
                if op.name == "GLOBAL" and isinstance(arg, str)
            }
    except (zipfile.BadZipFile, ValueError, EOFError, OSError) as exc:
        return f"it is not a file that torch.save wrote ({type(exc).__name__})"
    strange = sorted(m for m in found if m.split(".")[0] not in _PROBE_GLOBALS)
    return f"it refers to {', '.join(strange[:3])}, which no probe writes" if strange else None


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


def backward(value: Any, weights: torch.Tensor | None = None) -> None:
    """Back-propagate ``(value * weights).sum()`` where the student's value is a tensor linked to the graph.

    Anything else leaves every ``.grad`` as it was: the gradient records that follow then say what
    is missing, where calling ``.backward()`` on a number would stop the probe with a confusing error.
    """
    if isinstance(value, torch.Tensor) and value.requires_grad:
        if weights is not None and value.shape != weights.shape:
            return
        (value if weights is None else value * weights).sum().backward()


def legacy_names(namespace: dict[str, Any]) -> None:
    """Also export each probe as ``check_<exercise>``, the name hidden tests generated before the probe
    form call (nbgrader restores test cells from the gradebook, so old assignments keep calling it)."""
    for obj in list(namespace.values()):
        if isinstance(obj, Check):
            namespace[f"check_{obj.exercise}"] = obj
