"""Hidden tests of the chapter "Adversarial attacks and defenses" (``adversarial``).

Each ``probe_<exercise>`` runs twice (see autograder/probing.py): in the student's kernel, where it
records what the student's function returns on seeded inputs, and in the grader, where the
reference from ``genlab`` meets the same inputs and every record is compared.

The probes use tiny float64 networks (float64 keeps the sign of every gradient identical on a GPU
and a CPU) handed over in **train mode** with BatchNorm statistics that differ from a batch's own:
a function that takes its gradients in train mode changes the running statistics and its outputs,
and one that does not hand the model back in train mode is seen too. The defenses are probed with
stand-in attacks defined here (deterministic, mode-sensitive, and still attached to the model's
graph) that log how they were called, so a mistake in an exercise's own code is never blamed on
the student's FGSM or PGD. Every call is held to the course's contract (autograder/probing.py);
calls whose stand-in logs would double when called again are exempt from the second call, with
that reason. Each check's ``conditions`` list what its exercise's text states.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from autograder.probing import Trial, as_number, check, close, describe
from genlab import attacks, defenses

IMAGE = (3, 6, 6)
LOGGED = {"repeat": "the stand-in attack logs every call: a second call would double its log"}

MODE_HINT = (
    "Take the gradients with the model in eval mode (model.eval(): BatchNorm then uses its running "
    "statistics and leaves them alone), and hand the model back in the mode it came in "
    "(was_training = model.training ... model.train(was_training))."
)


# ----------------------------------------------------------------------------------------------- probe models


def _bn_net(t: Trial) -> nn.Module:
    """A small convolutional classifier with BatchNorm, float64, in train mode, with skewed running statistics."""
    net = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 5)
    )
    t.init_module(net, scale=2.0)
    buffers = dict(net[1].named_buffers())
    with torch.no_grad():  # running statistics unlike any batch's own: train and eval mode disagree
        buffers["running_mean"].copy_(t.randn(4, dtype=torch.float64, scale=0.5).cpu())
        buffers["running_var"].copy_(t.rand(4, dtype=torch.float64, low=0.3, high=3.0).cpu())
    return net.to(t.device, torch.float64).train()


class _TrainScale(nn.Module):
    """Scales its input by 1.5 in train mode only: a per-example layer whose output shows the mode."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 1.5 if self.training else x


def _mode_net(t: Trial) -> nn.Module:
    """A classifier whose outputs depend on the mode but never on the rest of the batch (no BatchNorm)."""
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), _TrainScale(), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 5))
    t.init_module(
        net, scale=2.0
    )  # ReLU, not a saturating activation: the adversarial term must differ from the clean one
    return net.to(t.device, torch.float64).train()


def _images(t: Trial, n: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Images in [0, 1] with about one pixel in six exactly 0 or 1, so that clamping matters."""
    return t.rand(n, *IMAGE, dtype=dtype, low=-0.15, high=1.15).clamp(0.0, 1.0)


def _state(model: nn.Module) -> dict[str, Any]:
    """The BatchNorm buffers and every module's mode: what a well-behaved attack leaves as it found it."""
    return {"buffers": {k: v for k, v in model.named_buffers()}, "training": [m.training for m in model.modules()]}


def _record_state(t: Trial, key: str, model: nn.Module, what: str) -> None:
    state = _state(model)
    t.check(
        f"{key}/training",
        state["training"],
        what=f"the modes of the model's modules after {what}",
        test=_modes_test,
        hint="Remember model.training before model.eval() and call model.train(was_training) before returning.",
    )
    t.check(
        f"{key}/buffers",
        state["buffers"],
        what=f"the BatchNorm running statistics after {what}",
        test=_tree_test,
        hint="They changed, so the model ran in train mode: " + MODE_HINT,
    )


def _modes_test(got: Any, want: Any, _records: dict) -> str | None:
    if not isinstance(got, list) or len(got) != len(want) or not all(isinstance(g, bool) for g in got):
        return "the modes could not be read"
    if got == want:
        return None
    left = sum(1 for g, w in zip(got, want) if g != w)
    return f"the model came in train mode and left with {left} of its {len(want)} modules in eval mode"


def _tree_close(got: Any, want: Any, where: str = "") -> str | None:
    """close() through lists and dicts (parameters' gradients, buffers)."""
    if isinstance(want, dict):
        if not isinstance(got, dict) or set(got) != set(want):
            return f"expected the entries {sorted(want)}, got {sorted(got) if isinstance(got, dict) else describe(got)}"
        for k in want:
            problem = _tree_close(got[k], want[k], f"{where}{k}")
            if problem:
                return problem
        return None
    if isinstance(want, list):
        if not isinstance(got, list) or len(got) != len(want):
            return f"expected {len(want)} entries, got {len(got) if isinstance(got, list) else describe(got)}"
        for i, (g, w) in enumerate(zip(got, want)):
            problem = _tree_close(g, w, f"{where}[{i}]")
            if problem:
                return problem
        return None
    if want is None:
        return None if got is None else f"{where}: expected None, got {describe(got)}"
    if got is None:
        return f"{where}: expected {describe(want)}, got None"
    problem = close(got, want)
    return f"{where}: {problem}" if problem else None


def _tree_test(got: Any, want: Any, _records: dict) -> str | None:
    return _tree_close(got, want)


# ----------------------------------------------------------------------------------------------- FGSM


def _margin_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.multi_margin_loss(logits, y, margin=2.0)


def _fgsm_diagnosis(got: Any, want: Any, records: dict, key: str, eps: float) -> str | None:
    """Compare with the reference; when wrong, name the known wrong variant it looks like."""
    problem = close(got, want)
    if problem is None or not isinstance(got, torch.Tensor) or got.shape != want.shape:
        return problem
    x = records.get(f"{key}/x")
    if not isinstance(x, torch.Tensor) or x.shape != want.shape:
        return problem
    got, want, x = got.double(), want.double(), x.double()
    tol = 1e-6 + 1e-4 * eps
    if bool((got < -tol).any() or (got > 1 + tol).any()):
        return f"{problem}: some pixels leave [0, 1]; clamp the adversarial image to the image range, x_adv.clamp(0, 1)"
    inside = (want > tol) & (want < 1 - tol) & (got > tol) & (got < 1 - tol)
    d_got, d_want = (got - x)[inside], (want - x)[inside]
    if d_want.numel() and bool(((d_got + d_want).abs() <= tol).float().mean() > 0.9) and eps > 0:
        return (
            f"{problem}: the image moved against the gradient (that descends the loss); "
            "FGSM ascends it: x + eps * sign(grad)"
        )
    moved = d_got[d_want.abs() > tol]
    if moved.numel() and bool(((moved.abs() - eps).abs() > tol).float().mean() > 0.2):
        return (
            f"{problem}: the pixels did not all move by eps; the step is eps * sign(grad) (the sign of the "
            "gradient, not the gradient itself)"
        )
    return f"{problem}. FGSM is clamp(x + eps * sign(grad_x loss_fn(model(x), y)), 0, 1)"


def _mostly_same(got: Any, want: Any, records: dict, eps: float) -> str | None:
    """float32 on a GPU may flip the sign of a few near-zero gradients: 97% of the pixels must agree."""
    if not isinstance(got, torch.Tensor) or got.shape != want.shape:
        return close(got, want)
    if got.dtype != want.dtype:
        return f"expected a {want.dtype} tensor (the dtype of x), got {got.dtype}"
    agree = ((got.double() - want.double()).abs() <= 1e-5 + 1e-4 * eps).float().mean().item()
    if agree < 0.97:
        return f"only {agree:.1%} of the pixels agree with the reference"
    if bool((got < 0).any() or (got > 1).any()):
        return "some pixels leave [0, 1]: clamp the adversarial image"
    return None


FGSM = {
    "eval-mode": "the gradient taken in eval mode, the model handed back in the mode it came in (train here)",
    "copy": "computed on a copy: x itself is left as it is",
    "sign-step": "a step of eps times the sign of the gradient, up the loss",
    "clamp": "clamped to [0, 1]: pixels at 0 and 1 in the images",
    "loss-fn": "the loss_fn given: cross-entropy and another loss",
    "detached": "the result detached",
    "eps-values": "several eps, eps = 0 included",
    "float32": "float32 images as well as float64",
}


@check(attacks.fgsm, conditions=FGSM)
def probe_fgsm(t: Trial, fgsm) -> None:
    """``fgsm(model, loss_fn, x, y, eps)`` = clamp(x + eps * sign(grad_x loss), 0, 1), in eval mode, detached."""
    t.covers(*FGSM)
    cases = [
        (F.cross_entropy, 8 / 255, 7),
        (F.cross_entropy, 0.1, 4),
        (_margin_loss, 0.05, 6),
        (F.cross_entropy, 0.0, 3),
    ]
    for k, (loss_fn, eps, n) in enumerate(cases):
        key = f"case{k}"
        model = _bn_net(t)
        x, y = _images(t, n), t.randint(0, 5, n)
        x_before = x.clone()
        loss_name = "cross-entropy" if loss_fn is F.cross_entropy else "a margin loss"
        what = f"fgsm(model, loss_fn, x, y, eps={eps:.4g}) with {loss_name}, {n} images, model in train mode"
        adv = t.call(fgsm, model, loss_fn, x, y, eps, what=what)
        _record_state(t, key, model, what)
        t.note(f"{key}/x", x)
        t.check(
            f"{key}/adv",
            adv,
            what=what,
            test=partial(_fgsm_diagnosis, key=key, eps=eps),
            hint="Use the loss_fn you are given." if loss_fn is not F.cross_entropy else "",
        )
        t.same(
            f"{key}/requires_grad",
            getattr(adv, "requires_grad", None),
            what=f"adv.requires_grad ({what})",
            hint="Return a detached tensor (x_adv.detach()): an adversarial example is a fixed input.",
        )
        t.same(
            f"{key}/x_unchanged",
            x,
            what=f"the input x after {what}",
            hint="Do not change x in place: work on a copy (x.clone().detach().requires_grad_(True)).",
        )
        del x_before
    # float32 (a GPU may use TF32 convolutions): most pixels must agree
    model = _bn_net(t).float()
    x, y = _images(t, 8, torch.float32), t.randint(0, 5, 8)
    what = "fgsm on float32 images, eps=8/255"
    adv = t.call(fgsm, model, F.cross_entropy, x, y, 8 / 255, what=what)
    t.check("float32/adv", adv, what=what, test=lambda g, w, r: _mostly_same(g, w, r, 8 / 255))


# ----------------------------------------------------------------------------------------------- PGD


def _pgd_diagnosis(got: Any, want: Any, records: dict, key: str, eps: float, alpha: float) -> str | None:
    problem = close(got, want)
    if problem is None or not isinstance(got, torch.Tensor) or got.shape != want.shape:
        return problem
    x = records.get(f"{key}/x")
    if not isinstance(x, torch.Tensor) or x.shape != want.shape:
        return problem
    got, x = got.double(), x.double()
    tol = 1e-6 + 1e-4 * eps
    if bool((got < -tol).any() or (got > 1 + tol).any()):
        return f"{problem}: some pixels leave [0, 1]; clamp to the image range after every step"
    reach = (got - x).abs().max().item()
    if reach > eps + tol:
        return (
            f"{problem}: a pixel moved {reach:.4g} from the original image, more than eps = {eps:.4g}; "
            "project onto the eps-ball around the ORIGINAL image x after every step "
            "(clamp x_adv - x to [-eps, eps]), not around the previous iterate"
        )
    if alpha < eps and reach <= alpha + tol and (want.double() - x).abs().max().item() > alpha + tol:
        return (
            f"{problem}: no pixel moved more than the step size alpha = {alpha:.4g}; the projection clips to "
            f"[-eps, eps] (eps = {eps:.4g}), not to [-alpha, alpha]"
        )
    return f"{problem}. Each step: x_adv + alpha * sign(grad), then clamp x_adv - x to [-eps, eps] and x_adv to [0, 1]"


def _random_start_test(got: Any, _want: Any, records: dict, eps: float, alpha: float) -> str | None:
    """PGD from a random start, one small step: the perturbation spreads uniformly over [-eps, eps]."""
    x = records.get("random/x")
    if not isinstance(got, torch.Tensor) or not isinstance(x, torch.Tensor) or got.shape != x.shape:
        return f"expected a tensor of shape {tuple(getattr(x, 'shape', ()))}, got {got!r:.80}"
    d = got.double() - x.double()
    tol = 1e-6
    if bool((got < -tol).any() or (got > 1 + tol).any()):
        return "some pixels leave [0, 1]: clamp to the image range"
    if d.abs().max().item() > eps + tol:
        return f"the perturbation exceeds eps = {eps:.4g}: project onto the eps-ball around x"
    interior = (x > eps + alpha) & (x < 1 - eps - alpha)  # pixels that no clamp to [0, 1] touches
    u = d[interior].abs() / eps
    if u.numel() < 1000:
        return None
    mean = u.mean().item()  # uniform start plus a step of alpha = eps/10, clipped: about 0.5
    if not 0.42 <= mean <= 0.58:
        if mean < 0.2:
            return (
                "with random_start=True the perturbation should start uniformly in [-eps, eps] "
                "(torch.empty_like(x).uniform_(-eps, eps)); here it stayed near x, as without a random start"
            )
        return (
            f"with random_start=True, |x_adv - x| / eps should average about 0.5 (a uniform start in [-eps, eps] "
            f"and one small step); got {mean:.3f}: draw the start with uniform_(-eps, eps), not randn"
        )
    return None


def _differs(got: Any, _want: Any, records: dict) -> str | None:
    first = records.get("random/adv")
    if (
        isinstance(got, torch.Tensor)
        and isinstance(first, torch.Tensor)
        and got.shape == first.shape
        and torch.equal(got, first)
    ):
        return "two calls with random_start=True returned the same image: draw a new random start on every call"
    return None


PGD = {
    "eval-mode": "the model in eval mode, its mode restored at the end",
    "steps": "steps of alpha * sign(grad), 0 and 1 steps included",
    "projection": "each step projected onto the eps-ball around the original x, and onto [0, 1]",
    "random-start": "with random_start, x + u, u uniform in [-eps, eps] drawn on x's device, clamped",
    "fresh-start": "a new random start on every call",
    "detached": "the result detached",
    "loss-fn": "the loss_fn given",
}


@check(attacks.pgd, conditions=PGD)
def probe_pgd(t: Trial, pgd) -> None:
    """L-inf PGD: steps of alpha * sign(grad), projection onto the eps-ball and onto [0, 1]; eval mode; detached."""
    t.covers(*PGD)
    cases = [  # (eps, alpha, steps): alpha * steps > eps, so the projection matters
        (8 / 255, 2 / 255, 7),
        (0.1, 0.04, 5),
        (0.05, 0.05, 3),
        (0.08, 0.01, 1),
        (0.06, 0.02, 0),
    ]
    for k, (eps, alpha, steps) in enumerate(cases):
        key = f"case{k}"
        model = _bn_net(t)
        loss_fn = _margin_loss if k == 2 else F.cross_entropy
        x, y = _images(t, 6), t.randint(0, 5, 6)
        what = f"pgd(model, loss_fn, x, y, eps={eps:.4g}, alpha={alpha:.4g}, steps={steps}, random_start=False)"
        adv = t.call(
            pgd, model, loss_fn, x, y, eps=eps, alpha=alpha, steps=steps, random_start=False, what=what, draws=False
        )
        _record_state(t, key, model, what)
        t.note(f"{key}/x", x)
        t.check(
            f"{key}/adv",
            adv,
            what=what,
            test=partial(_pgd_diagnosis, key=key, eps=eps, alpha=alpha),
        )
        t.same(
            f"{key}/requires_grad",
            getattr(adv, "requires_grad", None),
            what=f"adv.requires_grad after {what}",
            hint="Detach the iterate after every step (x_adv = x_adv.detach()) and return a detached tensor: "
            "otherwise the graph of every step is kept and the result still requires grad.",
        )
        t.same(
            f"{key}/x_unchanged",
            x,
            what=f"the input x after {what}",
            hint="Do not change x in place: the projection needs the original image.",
        )
    # random start: uniform in the box, fresh on every call, on the inputs' device
    eps, alpha = 0.1, 0.01
    model = _bn_net(t)
    x, y = t.rand(64, *IMAGE, dtype=torch.float64, low=0.25, high=0.75), t.randint(0, 5, 64)
    t.note("random/x", x)
    what = f"pgd(..., eps={eps}, alpha={alpha}, steps=1, random_start=True) (draw the start on x's device)"
    random = {"repeat": "a random start: two calls must differ (tested on their own)"}
    adv = t.call(
        pgd, model, F.cross_entropy, x, y, eps=eps, alpha=alpha, steps=1, random_start=True, what=what, exempt=random
    )
    t.check("random/adv", adv, what=what, test=lambda g, w, r: _random_start_test(g, w, r, eps, alpha))
    again = t.call(
        pgd,
        model,
        F.cross_entropy,
        x,
        y,
        eps=eps,
        alpha=alpha,
        steps=1,
        random_start=True,
        what="a second call of pgd with random_start=True",
        exempt=random,
    )
    t.check("random/again", again, what="a second call of pgd with random_start=True", test=_differs)
    _record_state(t, "random", model, "pgd with random_start=True")


# ----------------------------------------------------------------------------------------------- stand-in attacks


class _AttackLog:
    """A deterministic stand-in for an attack that logs every call.

    It queries the model (so a model left in train mode shows in BatchNorm's statistics and in the
    result), moves each image by ``size * sigmoid(logit_0) * pattern`` and returns the result still
    attached to the model's graph, as an attack that forgot to detach would.
    """

    def __init__(self, pattern: torch.Tensor, size: float):
        self.pattern = pattern
        self.size = size
        self.calls: list[list[bool]] = []
        self.inside = False

    def _run(self, model: nn.Module, x: torch.Tensor, scale: float) -> torch.Tensor:
        self.calls.append([bool(model.training), bool(torch.is_grad_enabled())])
        self.inside = True
        try:
            logits = model(x)
        finally:
            self.inside = False
        w = torch.sigmoid(logits[:, 0]).view(-1, *([1] * (x.dim() - 1)))
        return (x + scale * w * self.pattern[: len(x)]).clamp(0.0, 1.0)

    def fgsm_like(
        self, model: nn.Module, loss_fn: Callable, x: torch.Tensor, y: torch.Tensor, eps: float
    ) -> torch.Tensor:
        """fgsm's signature: (model, loss_fn, x, y, eps); moves pixels by up to ``size * eps``."""
        return self._run(model, x, self.size * eps)

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """An attack for adversarial_batch and accuracy_under_attack: (model, x, y)."""
        return self._run(model, x, self.size)


def _pattern(t: Trial, n: int) -> torch.Tensor:
    return (2.0 * t.randint(0, 2, n, *IMAGE) - 1.0).to(torch.float64)


def _pairs_of_flags(got: Any) -> bool:
    """A log of (training, grad enabled) pairs, as the stand-ins record them."""
    return isinstance(got, list) and all(
        isinstance(entry, list) and len(entry) == 2 and all(isinstance(f, bool) for f in entry) for entry in got
    )


def _calls_test(expected_calls: int) -> Callable[[Any, Any, dict], str | None]:
    def test(got: Any, _want: Any, _records: dict) -> str | None:
        if not _pairs_of_flags(got):
            return "the attack's calls could not be read"
        if len(got) != expected_calls:
            return (
                f"the attack was called {len(got)} time(s), expected {expected_calls} (once per batch of clean images)"
            )
        for training, grad in got:
            if training:
                return (
                    "the attack ran with the model in train mode: call model.eval() before building the adversarial "
                    "examples (and model.train() after, to go on training)"
                )
            if not grad:
                return (
                    "the attack ran inside torch.no_grad(): it needs gradients; keep torch.no_grad() around the "
                    "evaluation only"
                )
        return None

    return test


# ----------------------------------------------------------------------------------------------- accuracy


class _Logged(nn.Module):
    """Wraps a network and logs, for every forward pass outside the attack, its mode and grad mode."""

    def __init__(self, net: nn.Module, attack: _AttackLog):
        super().__init__()
        self.net = net
        self.attack = attack
        self.log: list[list[bool]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.attack.inside:
            self.log.append([bool(self.training), bool(torch.is_grad_enabled())])
        return self.net(x)


def _evaluation_test(got: Any, _want: Any, _records: dict) -> str | None:
    if not _pairs_of_flags(got) or not got:
        return "the model never classified the (adversarial) images"
    for training, grad in got:
        if training:
            return (
                "the predictions were made in train mode (BatchNorm used the batch's statistics and changed its "
                "running ones): call model.eval() first"
            )
        if grad:
            return (
                "the predictions were made with gradients enabled: wrap the evaluation in torch.no_grad() "
                "(it saves the memory and time of a graph nobody uses)"
            )
    return None


def _accuracy_test(
    got: Any, want: Any, _records: dict, *, per_batch_of: Callable[[], list[float]], sizes: tuple[int, ...]
) -> str | None:
    return _accuracy_diagnosis(got, want, per_batch_of, sizes)


def _accuracy_diagnosis(
    got: Any, want: Any, per_batch_of: Callable[[], list[float]], sizes: tuple[int, ...]
) -> str | None:
    problem = close(got, want)
    if problem is None:
        return None
    value = (
        got
        if isinstance(got, (int, float))
        else (float(got) if isinstance(got, torch.Tensor) and got.numel() == 1 else None)
    )
    if value is not None and close(value, 100 * want) is None:
        return f"{problem}: return a fraction in [0, 1], not a percentage"
    per_batch = per_batch_of() if value is not None else None
    if per_batch is not None and len(per_batch) == len(sizes):
        if close(value, sum(per_batch) / len(per_batch)) is None:
            return (
                f"{problem}: that is the mean of the per-batch accuracies; the batches differ in size, so count "
                "the correct predictions over all examples and divide by the number of examples"
            )
    return f"{problem}. Return (number of examples classified correctly after the attack) / (number of examples)"


ACCURACY = {
    "eval-mode": "the model put in eval mode",
    "attack-per-batch": "x_adv = attack(model, x, y) for every batch, with gradients enabled",
    "no-attack": "attack None keeps x, and None is the default",
    "no-grad": "the adversarial images classified under torch.no_grad(), by the argmax of the logits",
    "all-examples": "the fraction of all examples classified correctly, batches of different sizes",
    "python-float": "returned as a Python float in [0, 1]",
}


@check(defenses.accuracy_under_attack, conditions=ACCURACY)
def probe_accuracy_under_attack(t: Trial, accuracy_under_attack) -> None:
    """Correct predictions / examples after the attack, predictions in eval mode under torch.no_grad()."""
    t.covers(*ACCURACY)
    sizes = (16, 16, 5)
    for kind in ("attacked", "clean", "default"):
        attack = _AttackLog(_pattern(t, max(sizes)), size=0.3)
        net = _bn_net(t)
        model = _Logged(net, attack).train()
        batches = []
        for n in sizes:
            x = _images(t, n)
            with torch.no_grad():  # labels: half the eval-mode predictions, half random
                net.eval()
                pred = net(x).argmax(1)
                net.train()
            y = torch.where(t.rand(n) < 0.5, pred, t.randint(0, 5, n))
            batches.append((x, y))
        what = {
            "attacked": "accuracy_under_attack(model, batches, attack) on batches of 16, 16 and 5 images",
            "clean": "accuracy_under_attack(model, batches, None)",
            "default": "accuracy_under_attack(model, batches) (no attack: the clean accuracy)",
        }[kind]
        if kind == "attacked":
            acc = t.call(accuracy_under_attack, model, batches, attack, what=what, exempt=LOGGED)
        elif kind == "clean":
            acc = t.call(accuracy_under_attack, model, batches, None, what=what)
        else:
            acc = t.call(accuracy_under_attack, model, batches, what=what)
        if kind == "attacked":
            t.check(
                f"{kind}/attack_calls",
                attack.calls,
                what=f"how the attack was called by {what}",
                test=_calls_test(len(sizes)),
            )
        t.check(
            f"{kind}/evaluation",
            model.log,
            what=f"the forward passes that classify the images in {what}",
            test=_evaluation_test,
        )
        per_batch = partial(_per_batch_accuracies, net, batches, attack if kind == "attacked" else None)
        t.check(
            f"{kind}/accuracy",
            acc,
            what=what,
            test=partial(_accuracy_test, per_batch_of=per_batch, sizes=sizes),
        )


def _per_batch_accuracies(net: nn.Module, batches: list, attack: _AttackLog | None) -> list[float]:
    """Per-batch accuracies of the eval-mode network, in the grader (for naming the mean-of-means mistake)."""
    # BEGIN REFERENCE
    out = []
    was = net.training
    net.eval()
    calls, inside = (list(attack.calls), attack.inside) if attack is not None else ([], False)
    try:
        for x, y in batches:
            xa = attack._run(net, x, attack.size).detach() if attack is not None else x
            with torch.no_grad():
                out.append((net(xa).argmax(1) == y).double().mean().item())
    finally:
        net.train(was)
        if attack is not None:
            attack.calls[:] = calls
            attack.inside = inside
    return out
    # END REFERENCE


# ----------------------------------------------------------------------------------------------- FGSM loss


def _fgsm_loss_test(
    got: Any, want: Any, _records: dict, *, terms_of: Callable[[], list[float]], alpha: float
) -> str | None:
    return _fgsm_loss_diagnosis(got, want, terms_of, alpha)


def _fgsm_loss_diagnosis(got: Any, want: Any, terms_of: Callable[[], list[float]], alpha: float) -> str | None:
    problem = close(got, want)
    if problem is None:
        return None
    if as_number(got) is not None:
        clean, adversarial = terms_of()
        if close(got, (1 - alpha) * clean + alpha * adversarial) is None:
            return f"{problem}: alpha multiplies the adversarial term; it weights the CLEAN loss"
        if alpha != 0.5 and close(got, 0.5 * clean + 0.5 * adversarial) is None:
            return f"{problem}: that is the plain mean of the two terms; weight them with alpha and 1 - alpha"
    return problem


def _terms(model: nn.Module, attack: _AttackLog, x: torch.Tensor, y: torch.Tensor, eps: float) -> list[float]:
    """J(x) in train mode and J(x_adv) with the stand-in's x_adv built in eval mode (grader only: to name mistakes)."""
    # BEGIN REFERENCE
    calls = list(attack.calls)
    was = model.training
    try:
        with torch.no_grad():
            model.eval()
            x_adv = attack.fgsm_like(model, F.cross_entropy, x, y, eps)
            model.train()
            return [float(F.cross_entropy(model(x), y)), float(F.cross_entropy(model(x_adv), y))]
    finally:
        model.train(was)
        attack.calls[:] = calls
    # END REFERENCE


FGSM_LOSS = {
    "attack-eval-mode": "x_adv built by the attack given, with the model in eval mode",
    "mode-restored": "the model handed back its mode, both J computed in it (train mode while training)",
    "weights": "alpha * J(x) + (1 - alpha) * J(x_adv), several alpha",
    "default-alpha": "alpha defaults to 0.5",
    "tensor": "returned as a tensor that back-propagates",
    "detached-adv": "no gradient through the attack into the weights",
    "any-attack": "an attack with fgsm's signature that does not switch modes or detach",
}


@check(defenses.fgsm_loss, conditions=FGSM_LOSS)
def probe_fgsm_loss(t: Trial, fgsm_loss) -> None:
    """alpha * J(x) + (1 - alpha) * J(x_adv): x_adv from the attack in eval mode, detached; J in train mode."""
    t.covers(*FGSM_LOSS)
    gradients = []  # recorded after every loss, so that a wrong weighting is named before its gradients
    for k, alpha in enumerate((0.3, 0.8, 0.5, None)):
        key = f"alpha={alpha}"
        model = _mode_net(t)
        for p in model.parameters():
            p.grad = None
        n = 6
        attack = _AttackLog(_pattern(t, n), size=4.0)
        x, y = _images(t, n), t.randint(0, 5, n)
        eps = (0.05, 0.1, 8 / 255, 0.2)[k]
        if alpha is None:
            what = f"fgsm_loss(model, F.cross_entropy, x, y, eps={eps:.4g}, attack=attack) (the default alpha)"
            loss = t.call(
                fgsm_loss, model, F.cross_entropy, x, y, eps, attack=attack.fgsm_like, what=what, exempt=LOGGED
            )
        else:
            what = f"fgsm_loss(model, F.cross_entropy, x, y, eps={eps:.4g}, alpha={alpha}, attack=attack)"
            loss = t.call(
                fgsm_loss, model, F.cross_entropy, x, y, eps, alpha, attack=attack.fgsm_like, what=what, exempt=LOGGED
            )
        t.check(f"{key}/attack_calls", attack.calls, what=f"how {what} called the attack", test=_calls_test(1))
        t.check(
            f"{key}/training",
            [m.training for m in model.modules()],
            what=f"the model's modes after {what}",
            test=_modes_test,
            hint="The loss is computed in the mode the model came in (train mode while training): "
            "switch to eval mode only for the attack, then back with model.train(was_training).",
        )
        terms = partial(_terms, model, attack, x, y, eps)
        t.check(
            f"{key}/loss",
            loss,
            what=what,
            test=partial(_fgsm_loss_test, terms_of=terms, alpha=0.5 if alpha is None else alpha),
            hint=(
                "alpha weights the CLEAN loss: alpha * J(x) + (1 - alpha) * J(x_adv), both J computed in train "
                "mode with loss_fn" + (", and alpha defaults to 0.5" if alpha is None else "")
            ),
        )
        t.call(
            lambda: loss.backward(),
            what=f"loss.backward() on the loss returned by {what} (return a tensor)",
            exempt={"repeat": "back-propagates the student's loss, which works once"},
        )
        gradients.append((key, what, [p.grad for p in model.parameters()]))
    detach = (
        "Detach the adversarial examples (x_adv.detach()): they are fixed inputs, and no gradient may "
        "flow back through the attack into the weights."
    )
    # A wrong default weight can move the default call's loss less than its tolerance but not its gradients.
    default = " Or alpha does not default to 0.5: without alpha the loss is 0.5 * J(x) + 0.5 * J(x_adv)."
    for key, what, grads in gradients:
        t.check(
            f"{key}/grads",
            grads,
            what=f"the gradients of the parameters from {what}",
            test=_tree_test,
            hint=detach + (default if key == "alpha=None" else ""),
        )


# ----------------------------------------------------------------------------------------------- adversarial batch


def _batch_test(got: Any, want: Any, records: dict, part: str, key: str) -> str | None:
    """Clean then adversarial, or adversarial then clean: both orders train alike."""
    if not isinstance(got, torch.Tensor) or not isinstance(want, torch.Tensor) or got.shape != want.shape:
        return close(got, want)
    n = len(want) // 2
    swapped = torch.cat([want[n:], want[:n]])
    if part == "x":
        problem = close(got, want)
        if problem is None or close(got, swapped) is None:
            return None
        return problem + (
            ". Return torch.cat([x, x_adv]) (the clean images and their adversarial "
            "examples), built with the model in eval mode"
        )
    x_got, clean = records.get(f"{key}/x"), records.get(f"{key}/clean")
    order_swapped = (
        isinstance(x_got, torch.Tensor)
        and isinstance(clean, torch.Tensor)
        and len(x_got) == 2 * n
        and close(x_got[n:], clean) is None
        and close(x_got[:n], clean) is not None
    )
    problem = close(got, swapped if order_swapped else want)
    return None if problem is None else problem + ": the labels must line up with the images: torch.cat([y, y])"


ADVERSARIAL_BATCH = {
    "pair": "(torch.cat([x, x_adv]), torch.cat([y, y])): labels lined up with their images",
    "eval-mode": "x_adv built with the model in eval mode, gradients enabled, the mode handed back",
    "detached": "x_adv detached, whatever the attack returns",
    "any-attack": "an attack that does not switch modes or detach",
    "batch-sizes": "batches of several sizes",
}


@check(defenses.adversarial_batch, conditions=ADVERSARIAL_BATCH)
def probe_adversarial_batch(t: Trial, adversarial_batch) -> None:
    """(cat([x, x_adv]), cat([y, y])) with x_adv from the attack in eval mode (gradients on), detached."""
    t.covers(*ADVERSARIAL_BATCH)
    for n in (5, 8):
        key = f"n={n}"
        model = _bn_net(t)
        attack = _AttackLog(_pattern(t, n), size=0.1)
        x, y = _images(t, n), t.randint(0, 5, n)
        what = f"adversarial_batch(model, x, y, attack) with {n} images, model in train mode"
        out = t.call(adversarial_batch, model, x, y, attack, what=what, exempt=LOGGED)
        pair = isinstance(out, (tuple, list)) and len(out) == 2
        t.same(
            f"{key}/pair", pair, what=f"the value returned by {what} (a pair?)", hint="Return a pair (images, labels)."
        )
        if not pair:
            return
        x2, y2 = out
        t.check(f"{key}/attack_calls", attack.calls, what=f"how {what} called the attack", test=_calls_test(1))
        _record_state(t, key, model, what)
        t.check(
            f"{key}/x",
            x2,
            what=f"the images returned by {what}",
            test=partial(_batch_test, part="x", key=key),
        )
        t.note(f"{key}/clean", x)  # which half holds the clean images: the labels' order must match
        t.check(
            f"{key}/y",
            y2,
            what=f"the labels returned by {what}",
            test=partial(_batch_test, part="y", key=key),
        )
        t.same(
            f"{key}/requires_grad",
            getattr(x2, "requires_grad", None),
            what=f"images.requires_grad after {what}",
            hint="Detach the adversarial examples (x_adv.detach()): the training loss must not reach back through "
            "the attack into the weights.",
        )
