"""Lipschitz constants of MLPs w.r.t. the L2 norm: LipSDP, the product bound and a Jacobian lower bound.

Networks are ``nn.Sequential`` stacks of ``nn.Linear`` layers and ``nn.Sigmoid`` / ``nn.Tanh`` /
``nn.ReLU`` activations (nested ``nn.Sequential`` stacks are flattened, ``nn.Identity`` is skipped
anywhere and ``nn.Flatten`` at the start). Anything else raises :class:`UnsupportedLayerError`.

Three estimators, ordered ``jacobian_lower_bound <= true constant <= lipsdp <= spectral_product_bound``:

* :func:`lipsdp` -- LipSDP (Fazlyab et al., NeurIPS 2019) solved with cvxpy and an open solver.
  Every supported activation is slope-restricted in ``[0, beta]`` (sigmoid ``[0, 1/4]``, tanh and
  ReLU ``[0, 1]``). For a network ``W_L phi(... phi(W_1 x))`` with hidden post-activations
  ``x_1 .. x_H`` (``H = L - 1``) and multipliers ``T_k >= 0`` (diagonal, one per neuron, or
  ``lambda_k I`` per layer), ``rho`` is feasible if the block-tridiagonal matrix

  .. code-block:: text

      [ -rho I        beta_1 W_1^T T_1                                    ]
      [ beta_1 T_1 W_1   -2 T_1         beta_2 W_2^T T_2                  ]
      [                beta_2 T_2 W_2    -2 T_2      ...                  ]
      [                                   ...   -2 T_H + W_L^T W_L        ]

  is negative semidefinite; then ``L <= sqrt(rho)``. (The general form has ``-2 alpha beta W^T T W``
  terms on the diagonal; they vanish because every supported activation has ``alpha = 0``.)

  How the solve is kept small and well conditioned (all steps are exact):

  1. *Slopes absorbed*: ``phi = beta psi`` with ``psi`` in ``[0, 1]``, so ``beta_k`` moves into
     ``W_{k+1}``; then every weight is divided by its spectral norm and the constant multiplied
     back at the end. Without this, ``rho`` of a deep sigmoid net is ~``16^-depth`` while the
     multipliers are O(1), and SCS needs thousands of iterations for a few correct digits.
  2. *Input side*: ``W_1 = U S V^T`` is replaced by ``U S`` (``rank x n_1`` instead of
     ``n_0 x n_1``; a rotation of the input space does not change the constant), so a
     3072-pixel input costs no more than a 256-wide one.
  3. *Output side*: ``W_L`` only enters through ``W_L^T W_L`` (``n_H x n_H``), so a 3072-wide
     output costs nothing extra.
  4. *Chordal decomposition* (``method="chordal"``, the default): the matrix above has the
     sparsity of a chain of overlapping cliques ``{x_0, x_1}, {x_1, x_2}, ...``. For such chordal
     patterns a negative semidefinite matrix is exactly a sum of negative semidefinite matrices
     supported on the cliques (Agler et al. 1988), so the single LMI of size
     ``n_0 + n_1 + ... + n_H`` becomes ``H`` LMIs of size ``n_{k-1} + n_k``, coupled by free
     symmetric matrices ``Z_k`` that split each shared diagonal block between its two cliques.
     SCS projects onto each cone with an eigendecomposition every iteration, so the cost per
     iteration drops from ``(sum n)^3`` to ``sum (n_{k-1} + n_k)^3``, and it needs no more
     iterations (often far fewer). ``method="dense"`` keeps the single big LMI for comparison.
  5. *Certificate*: first-order solvers return slightly infeasible points, whose ``rho`` can sit
     below the true SDP optimum (and even below the true constant). So the solver's multipliers
     ``T`` are only used as a starting point: the smallest feasible ``rho`` for those ``T`` is
     computed exactly (Schur complement via a block-tridiagonal Cholesky factorisation), after a
     one-dimensional search along a direction that makes the hidden block strictly negative
     definite. The returned bound is therefore a valid LipSDP bound whatever the solver's accuracy;
     the solver's accuracy only decides how tight it is.
  6. *Polish*: a few L-BFGS steps on that exact, certified ``rho(T)`` (``polish`` evaluations,
     30 by default) recover most of what a loose solver tolerance loses; see :func:`_polish`.

  The default solver is SCS (first-order, memory linear in the problem size; the cones of the
  study's networks are 512 x 512) with ``eps_abs = eps_rel = 1e-4`` and the qdldl linear solver;
  with the certificate and the polish the bound lands within ~0.1% of the SDP optimum on small
  networks (a tighter ``eps`` costs 2-3 times the iterations for the last 0.1%). Clarabel
  (interior point, ``solver="clarabel"``) is exact to ~1e-8 and the better choice for tiny
  networks, but it forms dense ``(m(m+1)/2)^2`` Hessian blocks per cone of side ``m``, which is
  hopeless beyond widths of a few dozen (minutes and gigabytes at width 64).

  Measured on a shared 2-core CPU (``benchmarks/bench_lipschitz.py``): 1-16-16-1 in 0.15 s,
  64-64-64-64-256 in 2.4 s (dense LMI: 4-6 s), the study's 3072-256-256-256-64 encoder in 1-2 min
  and its 64-256-256-256-3072 decoder in about 1 min.

* :func:`spectral_product_bound` -- the product of the layers' spectral norms times the maximal
  slope of every activation (1/4 for a sigmoid).

* :func:`eclipse_fast_bound` -- ECLipsE-Fast from the ``eclipse-nn`` package, for comparison: a
  closed-form upper bound (milliseconds), between LipSDP and the product bound on the study's networks.

* :func:`jacobian_lower_bound` -- the largest Jacobian spectral norm found by gradient ascent on
  the input, with power iteration on ``J^T J``: a value attained at some point, hence a true lower
  bound.
"""

from __future__ import annotations

import copy
import math
import time
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
import torch.autograd.forward_ad as fwAD
from torch import nn

__all__ = [
    "LipSDPResult",
    "LipschitzError",
    "UnsupportedLayerError",
    "eclipse_fast_bound",
    "jacobian_lower_bound",
    "jacobian_spectral_norm",
    "lipsdp",
    "lipsdp_report",
    "spectral_product_bound",
]

# Slope bounds [alpha, beta] of the supported activations (derivative ranges).
SLOPES: dict[type, tuple[float, float]] = {
    nn.Sigmoid: (0.0, 0.25),
    nn.Tanh: (0.0, 1.0),
    nn.ReLU: (0.0, 1.0),
}

SUPPORTED = (
    "nn.Sequential stacks of nn.Linear layers and nn.Sigmoid / nn.Tanh / nn.ReLU activations "
    "(nested nn.Sequential is flattened, nn.Identity is skipped, nn.Flatten is allowed at the start)"
)

_OK_STATUSES = ("optimal", "optimal_inaccurate")


class _one_thread:
    """Run torch's small dense factorisations on one thread (restored afterwards): on a busy
    machine two threads make a 256 x 256 Cholesky ten times slower, not faster."""

    def __enter__(self):
        self.prev = torch.get_num_threads()
        torch.set_num_threads(1)

    def __exit__(self, *exc):
        torch.set_num_threads(self.prev)


class UnsupportedLayerError(TypeError, ValueError):
    """A layer that the Lipschitz estimators cannot handle (its name and repr are in the message)."""


class LipschitzError(RuntimeError):
    """LipSDP could not produce a bound (the solver's status is in the message and in ``.status``)."""

    def __init__(self, message: str, status: str | None = None):
        super().__init__(message)
        self.status = status


# --------------------------------------------------------------------------------------------------
# Reading a network
# --------------------------------------------------------------------------------------------------


def _walk(module: nn.Module, prefix: str) -> Iterator[tuple[str, nn.Module]]:
    if isinstance(module, nn.Sequential):
        for name, child in module.named_children():
            yield from _walk(child, f"{prefix}.{name}" if prefix else name)
    else:
        yield (prefix or "<net>"), module


def _unsupported(name: str, layer: nn.Module, why: str = "is not supported") -> UnsupportedLayerError:
    return UnsupportedLayerError(f"layer {name} ({layer!r}) {why}; the Lipschitz estimators handle {SUPPORTED}")


def _layers(net: nn.Module) -> list[tuple[str, nn.Module]]:
    """The network's layers in order, as ``(name, module)``, after checking that each is supported."""
    if not isinstance(net, nn.Module):
        raise TypeError(f"expected an nn.Module (an nn.Sequential of Linear layers and activations), got {type(net)!r}")
    out: list[tuple[str, nn.Module]] = []
    started = False
    for name, layer in _walk(net, ""):
        if isinstance(layer, nn.Identity):
            continue
        if isinstance(layer, nn.Flatten):
            if started:
                raise _unsupported(name, layer, "is only allowed at the start of the network")
            continue
        if isinstance(layer, nn.Linear) or type(layer) in SLOPES:
            out.append((name, layer))
            started = True
            continue
        raise _unsupported(name, layer)
    if not any(isinstance(layer, nn.Linear) for _, layer in out):
        raise UnsupportedLayerError(f"the network has no nn.Linear layer; the Lipschitz estimators handle {SUPPORTED}")
    return out


def _weight(layer: nn.Linear) -> np.ndarray:
    return layer.weight.detach().to("cpu", torch.float64).numpy()


def _spectral_norm(W: np.ndarray) -> float:
    # torch, not numpy (whose OpenBLAS threads crawl on a busy machine); callers hold _one_thread
    return float(torch.linalg.matrix_norm(torch.from_numpy(W), ord=2)) if W.size else 0.0


# A final activation wider than this is not turned into a hidden layer (see _canonical).
MAX_TAIL_WIDTH = 512


def _canonical(net: nn.Module) -> tuple[list[np.ndarray], list[float], float]:
    """``(W_1..W_L, beta_1..beta_{L-1}, tail)`` with ``f = W_L phi(... phi(W_1 x))`` up to ``tail``.

    Consecutive Linear layers are multiplied together (exact); an activation with no Linear layer
    before it (at the start, or right after another activation) gets an identity layer, which is
    also exact. A final activation gets an identity layer after it when it is at most
    ``MAX_TAIL_WIDTH`` wide (LipSDP then treats it neuron by neuron); a wider one (a decoder's
    3072-pixel sigmoid, say) would make an LMI of that size, so it is dropped and its slope bound
    returned as ``tail``, a factor on the constant -- valid, slightly looser. Biases do not change
    a Lipschitz constant.
    """
    layers = _layers(net)
    weights: list[np.ndarray] = []
    betas: list[float] = []
    pending: np.ndarray | None = None
    dim: int | None = None  # current feature dimension
    tail = 1.0
    for i, (name, layer) in enumerate(layers):
        if isinstance(layer, nn.Linear):
            if dim is not None and layer.in_features != dim:
                raise ValueError(f"layer {name} ({layer!r}) expects {layer.in_features} inputs but receives {dim}")
            W = _weight(layer)
            pending = W if pending is None else (torch.from_numpy(W) @ torch.from_numpy(pending)).numpy()
            dim = layer.out_features
            continue
        alpha, beta = SLOPES[type(layer)]
        assert alpha == 0.0, "the LMI assumes slope bounds [0, beta]"
        if pending is None:
            if dim is None:  # activation before the first Linear: its width is that Linear's input
                dim = next(lay.in_features for _, lay in layers[i:] if isinstance(lay, nn.Linear))
            pending = np.eye(dim)
        assert dim is not None  # an activation comes after a Linear layer or got one above
        if i == len(layers) - 1 and dim > MAX_TAIL_WIDTH:
            tail = beta
            break
        weights.append(pending)
        betas.append(beta)
        pending = None
    assert dim is not None  # _layers refuses a network without a Linear layer
    weights.append(pending if pending is not None else np.eye(dim))
    return weights, betas, tail


# --------------------------------------------------------------------------------------------------
# Cheap estimators
# --------------------------------------------------------------------------------------------------


def spectral_product_bound(net: nn.Module) -> float:
    """Product of the Linear layers' spectral norms times each activation's maximal slope.

    The classic upper bound ``prod_k ||W_k||_2 * prod_act beta_act`` (``beta = 1/4`` for a sigmoid,
    1 for tanh and ReLU); layers are taken one by one, as they appear.
    """
    # BEGIN REFERENCE
    bound = 1.0
    with _one_thread():
        for _, layer in _layers(net):
            if isinstance(layer, nn.Linear):
                bound *= _spectral_norm(_weight(layer))
            else:
                bound *= SLOPES[type(layer)][1]
    return float(bound)
    # END REFERENCE


def eclipse_fast_bound(net: nn.Module) -> float:
    """ECLipsE-Fast (Xu & Sivaranjani, NeurIPS 2024) from the ``eclipse-nn`` package: a closed-form upper bound.

    It builds, layer by layer, one feasible point of a LipSDP-type LMI with a multiple of the identity
    as each layer's multiplier, so it is never tighter than :func:`lipsdp` but takes milliseconds.
    The network is read as for the other estimators (same slope bounds, same handling of a wide final
    activation), so the numbers compare like for like.
    """
    try:
        from eclipse_nn import LipConstEstimator
    except ImportError as exc:
        raise ImportError(f"ECLipsE-Fast needs the package eclipse-nn ({exc}); pip install eclipse-nn") from exc
    with _one_thread():
        weights, betas, tail = _canonical(net)
        if len(weights) == 1:  # no activation: a linear map (the package needs a hidden layer)
            return _spectral_norm(weights[0]) * tail
        est = LipConstEstimator(weights=[torch.from_numpy(W) for W in weights], alphas=[0.0] * len(betas), betas=betas)
        return float(est.estimate(method="ECLipsE_Fast")) * tail


def jacobian_spectral_norm(net: nn.Module, x: torch.Tensor) -> float:
    """``||J_f(x)||_2``, the largest singular value of the Jacobian of ``net`` at one point ``x`` (1-D).

    Exact: the whole Jacobian, then its spectral norm. (The harmonic chapter asks for it by power
    iteration; this is the reference its hidden test compares with.)
    """
    # BEGIN REFERENCE
    jac = torch.autograd.functional.jacobian(lambda p: net(p.unsqueeze(0)).squeeze(0), x)
    return float(torch.linalg.matrix_norm(jac.reshape(-1, x.numel()), ord=2))
    # END REFERENCE


def jacobian_lower_bound(
    net: nn.Module,
    inputs: torch.Tensor,
    *,
    steps: int = 100,
    restarts: int = 0,
    power_iters: int = 20,
    lr: float = 1e-2,
    noise: float = 0.1,
    generator: torch.Generator | None = None,
) -> float:
    """The largest Jacobian spectral norm ``||J_f(x)||_2`` found, starting from ``inputs``.

    Every row of ``inputs`` (plus ``restarts`` copies of each, perturbed by Gaussian noise of
    standard deviation ``noise``) is a starting point; all run together as one batch. At each point
    the top singular pair ``(u, v)`` of the Jacobian comes from power iteration on ``J^T J``
    (``J v`` by forward-mode AD, ``J^T u`` by a backward pass), ``power_iters`` iterations at the
    start and two per step after that, warm-started. The input then takes an Adam step (learning
    rate ``lr``, in input units) up the gradient of ``u^T J(x) v``, which is the gradient of
    ``||J(x)||_2`` wherever the top singular value is simple; ``steps`` such steps are taken.

    Returned: ``max ||J(x) v||`` over the visited points ``x`` with their unit vectors ``v``,
    evaluated in float64 -- a directional derivative that the network attains, hence a true lower
    bound on its Lipschitz constant. Works for any module that maps a batch row by row; it runs on
    a float64 copy in eval mode on one CPU thread (these small products run much faster so on a
    busy machine) and leaves ``net`` untouched.
    """
    # The Jacobian norm at a point is a graded exercise of the harmonic chapter: the student edition
    # of the package ships neither this function's body nor its loop.
    # BEGIN REFERENCE
    if steps < 0 or restarts < 0 or power_iters < 1:
        raise ValueError(f"need steps >= 0, restarts >= 0, power_iters >= 1; got {steps}, {restarts}, {power_iters}")
    f = copy.deepcopy(net).to(device="cpu", dtype=torch.float64).eval()
    for p in f.parameters():
        p.requires_grad_(False)
    x0 = torch.as_tensor(inputs).detach().to("cpu", torch.float64)
    if x0.dim() == 1:
        x0 = x0.unsqueeze(0)
    starts = [x0]
    for _ in range(restarts):
        starts.append(x0 + noise * _randn(x0.shape, generator))
    x = torch.cat(starts).clone()

    v = _unit(_randn(x.shape, generator))
    with _one_thread():
        return _ascend(f, x, v, steps, power_iters, lr)
    # END REFERENCE


def _randn(shape, generator: torch.Generator | None) -> torch.Tensor:
    """Standard normal float64 CPU tensor, drawn on the generator's device (CPU or CUDA)."""
    device = generator.device if generator is not None else "cpu"
    return torch.randn(shape, generator=generator, dtype=torch.float64, device=device).cpu()


def _unit(t: torch.Tensor) -> torch.Tensor:
    """Each row scaled to unit L2 norm."""
    n = t.flatten(1).norm(dim=1).clamp_min(1e-300)
    return t / n.view(-1, *([1] * (t.dim() - 1)))


_fwad_loaded = False


def _jvp(f: nn.Module, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``J_f(x) v`` row by row, by forward-mode AD."""
    global _fwad_loaded
    if not _fwad_loaded:  # torch's first make_dual scripts its jvp decompositions and warns about it
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.*deprecated", category=FutureWarning)
            with fwAD.dual_level():
                fwAD.make_dual(torch.zeros(1, dtype=torch.float64), torch.zeros(1, dtype=torch.float64))
        _fwad_loaded = True
    with torch.no_grad(), fwAD.dual_level():
        return fwAD.unpack_dual(f(fwAD.make_dual(x, v))).tangent


def _ascend(f: nn.Module, x: torch.Tensor, v: torch.Tensor, steps: int, power_iters: int, lr: float) -> float:
    """The loop of :func:`jacobian_lower_bound`."""
    # BEGIN REFERENCE
    best = 0.0
    x_param = x.clone().requires_grad_(True)
    opt = torch.optim.Adam([x_param], lr=lr, maximize=True)
    for step in range(steps + 1):
        xx = x_param.detach().requires_grad_(True)
        with torch.enable_grad():
            y = f(xx)
            for _ in range(power_iters if step == 0 else 2):
                u = _unit(_jvp(f, xx.detach(), v))
                v = _unit(torch.autograd.grad(y, xx, u, retain_graph=True)[0])
            Jv = _jvp(f, xx.detach(), v)
            best = max(best, float(Jv.flatten(1).norm(dim=1).max()))
            if step == steps:
                break
            u = _unit(Jv)
            (jtu,) = torch.autograd.grad(y, xx, u, create_graph=True)  # J(x)^T u, differentiable in x
            s = (jtu * v).sum()  # u^T J(x) v
            if not s.requires_grad:  # J does not depend on x (a linear network)
                break
            (grad,) = torch.autograd.grad(s, xx, allow_unused=True, materialize_grads=True)
        opt.zero_grad()
        x_param.grad = grad
        opt.step()
    return best
    # END REFERENCE


# --------------------------------------------------------------------------------------------------
# LipSDP
# --------------------------------------------------------------------------------------------------


@dataclass
class LipSDPResult:
    """What :func:`lipsdp_report` found; ``bound`` is what :func:`lipsdp` returns."""

    bound: float  # certified LipSDP upper bound on the Lipschitz constant
    solver_bound: float  # sqrt(rho) as the solver reported it (may be slightly below the optimum)
    status: str
    solver: str
    method: str
    variant: str
    solve_time: float  # seconds in the solver (cvxpy's compile time excluded)
    total_time: float  # seconds for the whole call
    iterations: int | None
    block_sizes: list[int] = field(default_factory=list)  # side lengths of the LMIs handed to the solver
    input_rank: int | None = None


@dataclass
class _Scaled:
    """The normalised problem: slopes [0, 1], unit spectral norms, reduced first layer."""

    W: list[np.ndarray]  # W_1 (n_1 x r) .. W_H (n_H x n_{H-1}); the last layer only through G
    G: np.ndarray  # W_L^T W_L / ||.||, n_H x n_H
    scale: float  # the true constant is scale * (the normalised one)
    input_rank: int

    def __post_init__(self) -> None:
        self.W_t = [torch.from_numpy(np.ascontiguousarray(W)) for W in self.W]
        self.G_t = torch.from_numpy(np.ascontiguousarray(self.G))

    @property
    def hidden(self) -> list[int]:
        return [W.shape[0] for W in self.W]


def _normalise(weights: list[np.ndarray], betas: list[float], reduce_input: bool) -> _Scaled | float:
    """Absorb slopes, normalise spectral norms, reduce the first layer; a float if no SDP is needed."""
    Ws = [weights[0]] + [b * W for b, W in zip(betas, weights[1:])]
    norms = [_spectral_norm(W) for W in Ws]
    scale = float(np.prod(norms))
    if len(Ws) == 1 or scale == 0.0:
        return scale  # a linear map: its spectral norm (or a constant network)
    Ws = [W / n for W, n in zip(Ws, norms)]
    W1 = Ws[0]
    rank = W1.shape[1]
    if reduce_input:
        U, S, _ = (a.numpy() for a in torch.linalg.svd(torch.from_numpy(W1), full_matrices=False))
        tol = S[0] * max(W1.shape) * np.finfo(float).eps
        rank = int(np.sum(S > tol))
        W1 = U[:, :rank] * S[:rank]
    WL = torch.from_numpy(Ws[-1])
    return _Scaled(W=[W1] + Ws[1:-1], G=(WL.T @ WL).numpy(), scale=scale, input_rank=rank)


class _AffineMatrix:
    """A symmetric m x m matrix whose entries are affine in one cvxpy variable vector."""

    def __init__(self, m: int):
        self.m = m
        self._rows: list[np.ndarray] = []
        self._cols: list[np.ndarray] = []
        self._vars: list[np.ndarray] = []
        self._coef: list[np.ndarray] = []
        self.const = np.zeros((m, m))

    def add(self, rows, cols, var, coef, symmetric: bool = True) -> None:
        """Add ``coef * x[var]`` at ``(rows, cols)`` (and the mirrored entries off the diagonal)."""
        rows, cols, var = (np.asarray(a, dtype=np.int64).ravel() for a in (rows, cols, var))
        coef = np.broadcast_to(np.asarray(coef, dtype=float), rows.shape).ravel()
        self._rows.append(rows)
        self._cols.append(cols)
        self._vars.append(var)
        self._coef.append(coef)
        if symmetric:
            off = rows != cols
            self._rows.append(cols[off])
            self._cols.append(rows[off])
            self._vars.append(var[off])
            self._coef.append(coef[off])

    def expression(self, x, nvar: int):
        import cvxpy as cp

        m = self.m
        rows, cols = np.concatenate(self._rows), np.concatenate(self._cols)
        A = sp.csr_matrix(
            (np.concatenate(self._coef), (rows + cols * m, np.concatenate(self._vars))), shape=(m * m, nvar)
        )
        return cp.reshape(A @ x + self.const.ravel(order="F"), (m, m), order="F")


def _build(prob: _Scaled, variant: str, method: str):
    """cvxpy problem ``min rho`` s.t. the LipSDP LMI(s); returns (problem, x, t-slices, block sizes)."""
    import cvxpy as cp

    hidden = prob.hidden
    H = len(hidden)
    nvar = 1  # x[0] = rho
    t_index: list[np.ndarray] = []  # variable index of each neuron's multiplier
    for n in hidden:
        if variant == "neuron":
            t_index.append(nvar + np.arange(n))
            nvar += n
        else:
            t_index.append(np.full(n, nvar))
            nvar += 1
    n_t = nvar - 1

    def coupling(block: _AffineMatrix, k: int, r0: int, c0: int) -> None:
        """Entries ``W_k^T T_k`` at rows r0.. (x_{k-1}) and columns c0.. (x_k), mirrored."""
        W = prob.W[k]
        i, j = np.nonzero(W)  # W[i, j]: neuron i of layer k, input j
        block.add(r0 + j, c0 + i, t_index[k][i], W[i, j])

    blocks: list[_AffineMatrix] = []
    if method == "dense":
        sizes = [prob.input_rank] + hidden
        off = np.concatenate([[0], np.cumsum(sizes)])
        B = _AffineMatrix(int(off[-1]))
        B.add(np.arange(sizes[0]), np.arange(sizes[0]), np.zeros(sizes[0]), -1.0)
        for k in range(H):
            coupling(B, k, off[k], off[k + 1])
            d = off[k + 1] + np.arange(hidden[k])
            B.add(d, d, t_index[k], -2.0)
        B.const[off[H] :, off[H] :] = prob.G
        blocks.append(B)
    elif method == "chordal":
        z_index: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        for n in hidden[:-1]:
            i, j = np.tril_indices(n)
            z_index.append((i, j, nvar + np.arange(len(i))))
            nvar += len(i)
        for k in range(H):
            m_prev = prob.input_rank if k == 0 else hidden[k - 1]
            n = hidden[k]
            B = _AffineMatrix(m_prev + n)
            coupling(B, k, 0, m_prev)
            d = m_prev + np.arange(n)
            B.add(d, d, t_index[k], -2.0)
            if k == 0:
                B.add(np.arange(m_prev), np.arange(m_prev), np.zeros(m_prev), -1.0)
            else:  # -Z_{k-1}: the part of x_{k-1}'s diagonal block not used by the previous clique
                i, j, idx = z_index[k - 1]
                B.add(i, j, idx, -1.0)
            if k < H - 1:
                i, j, idx = z_index[k]
                B.add(m_prev + i, m_prev + j, idx, 1.0)
            else:
                B.const[m_prev:, m_prev:] = prob.G
            blocks.append(B)
    else:
        raise ValueError(f"method must be 'chordal' or 'dense', got {method!r}")

    x = cp.Variable(nvar)
    constraints = [b.expression(x, nvar) << 0 for b in blocks]
    constraints.append(x[1 : 1 + n_t] >= 0)
    problem = cp.Problem(cp.Minimize(x[0]), constraints)
    return problem, x, t_index, [b.m for b in blocks]


def _schur_eigs(prob: _Scaled, t: list[torch.Tensor]) -> torch.Tensor | None:
    """Eigenvalues of ``K(T) = B^T (-R)^{-1} B`` (ascending), or None if ``R`` is not negative definite.

    With ``R`` the hidden block of the LMI and ``B`` the coupling of ``x_0`` to ``x_1``, the LMI
    holds iff ``R < 0`` and ``rho >= lambda_max(K(T))``. Only the first diagonal block of
    ``(-R)^{-1}`` is needed, which a backward block-tridiagonal Schur recursion gives at the cost
    of one Cholesky factorisation per layer. Differentiable in ``t`` (used by the polish).
    """
    H = len(t)
    S = torch.diag(2.0 * t[H - 1]) - prob.G_t  # Schur complement of -R, from the last layer back
    for k in range(H - 1, -1, -1):
        L, info = torch.linalg.cholesky_ex(S)
        if int(info) != 0 or not bool(torch.isfinite(L).all()):
            return None
        if k == 0:
            B = t[0][:, None] * prob.W_t[0]  # T_1 W_1 (n_1 x r)
            Y = torch.linalg.solve_triangular(L, B, upper=False)  # K = Y^T Y
            return torch.linalg.eigvalsh(Y.T @ Y)
        E = prob.W_t[k].T * t[k][None, :]  # -(-R)_{k-1,k} = W_k^T T_k  (n_{k-1} x n_k)
        Y = torch.linalg.solve_triangular(L, E.T, upper=False)
        S = torch.diag(2.0 * t[k - 1]) - Y.T @ Y
    raise AssertionError("unreachable")


def _rho_for(prob: _Scaled, t: list[np.ndarray]) -> float:
    """The smallest rho with LMI(rho, T) <= 0 for these multipliers (inf if there is none)."""
    with torch.no_grad():
        eigs = _schur_eigs(prob, [torch.from_numpy(np.ascontiguousarray(tk, dtype=np.float64)) for tk in t])
    return math.inf if eigs is None else max(float(eigs[-1]), 0.0)


def _certify(prob: _Scaled, t: list[np.ndarray]) -> tuple[float, list[np.ndarray]]:
    """The best certified rho along ``T + s D`` for s >= 0, and the multipliers that give it.

    ``D_k = 2^-k I`` makes the hidden block strictly negative definite (with unit spectral norms
    each clique of it is), so a large enough ``s`` always certifies. The certified rho is a convex
    function of ``T``, hence unimodal along the ray: a geometric scan brackets the minimum and a
    golden-section search refines it.
    """
    t = [np.maximum(np.asarray(tk, dtype=float), 0.0) for tk in t]
    size = max(float(np.max(tk)) for tk in t) or 1.0
    D = [np.full(len(tk), size * 0.5**k) for k, tk in enumerate(t)]

    def at(s: float) -> list[np.ndarray]:
        return [tk + s * dk for tk, dk in zip(t, D)]

    def f(s: float) -> float:
        return _rho_for(prob, at(s))

    grid = [0.0] + list(np.logspace(-10, 1, 45))
    vals: list[float] = []
    for s in grid:
        vals.append(f(s))
        if len(vals) > 2 and np.isfinite(vals[-1]) and vals[-1] > vals[-2] > min(vals):
            break  # past the minimum
    i = int(np.argmin(vals))
    best, s_best = vals[i], grid[i]
    if not np.isfinite(best):
        return math.inf, t
    lo, hi = grid[max(i - 1, 0)], grid[min(i + 1, len(vals) - 1)]
    g = (math.sqrt(5) - 1) / 2
    a, b = hi - g * (hi - lo), lo + g * (hi - lo)
    fa, fb = f(a), f(b)
    for _ in range(25):
        if fa <= fb:
            hi, b, fb = b, a, fa
            a = hi - g * (hi - lo)
            fa = f(a)
        else:
            lo, a, fa = a, b, fb
            b = lo + g * (hi - lo)
            fb = f(b)
        for s, v in ((a, fa), (b, fb)):
            if v < best:
                best, s_best = v, s
    return best, at(s_best)


def _polish(prob: _Scaled, t: list[np.ndarray], variant: str, max_evals: int) -> tuple[float, list[np.ndarray]]:
    """Lower the certified rho further by minimising ``lambda_max(K(T))`` over the multipliers.

    This is LipSDP itself with ``rho`` eliminated by the Schur complement, a convex function of
    ``T`` on the set where ``R(T) < 0``. It is minimised by L-BFGS in ``log T`` (positivity for
    free), on the smooth upper model ``mu * logsumexp(lambda(K) / mu)`` with ``mu`` = 1e-3 of the
    starting value (``lambda_max`` itself is not differentiable where the top eigenvalue is
    multiple, which is typical at the optimum). Every evaluated point is certified exactly; the
    best one is returned, so this step can only lower the bound. Steps that leave the feasible set
    get a large value, and the line search backs off.
    """
    sizes = [len(tk) for tk in t]
    floor = 1e-12 * max(float(np.max(tk)) for tk in t)
    with torch.no_grad():
        eigs = _schur_eigs(prob, [torch.from_numpy(tk) for tk in t])
    if eigs is None or max_evals <= 0:
        return _rho_for(prob, t), t
    best_rho, best_t = float(eigs[-1]), t
    mu = 1e-3 * max(best_rho, 1e-300)
    if variant == "neuron":
        u0 = np.log(np.maximum(np.concatenate(t), floor))
    else:
        u0 = np.log(np.array([max(float(tk[0]), floor) for tk in t]))
    u = torch.tensor(u0, requires_grad=True)

    def multipliers() -> list[torch.Tensor]:
        if variant == "neuron":
            return list(torch.split(torch.exp(u), sizes))
        return [torch.exp(u[k]).expand(n) for k, n in enumerate(sizes)]

    def closure() -> torch.Tensor:
        nonlocal best_rho, best_t
        opt.zero_grad()
        tt = multipliers()
        eigs = _schur_eigs(prob, tt)
        if eigs is None:
            value = (0.0 * u).sum() + 1e3 * best_rho
        else:
            top = float(eigs[-1].detach())
            if top < best_rho:
                best_rho, best_t = top, [tk.detach().numpy().copy() for tk in tt]
            value = mu * torch.logsumexp(eigs / mu, 0)
        value.backward()
        return value

    opt = torch.optim.LBFGS(
        [u],
        lr=1.0,
        max_iter=max_evals,
        max_eval=max_evals,
        history_size=20,
        tolerance_grad=1e-12,
        tolerance_change=1e-15,
        line_search_fn="strong_wolfe",
    )
    opt.step(closure)
    return best_rho, best_t


_SOLVER_DEFAULTS = {
    "SCS": {"eps_abs": 1e-4, "eps_rel": 1e-4, "max_iters": 10000, "linear_solver": "qdldl"},
    "CLARABEL": {},
}


def _solve(problem, solver: str, options: dict) -> str:
    """Run the solver; return cvxpy's status, turning solver exceptions into ``solver_error``."""
    import cvxpy as cp

    try:
        problem.solve(solver=solver, **options)
    except cp.SolverError as exc:
        return f"solver_error ({exc})"
    return str(problem.status)


def lipsdp_report(
    net: nn.Module,
    variant: str = "neuron",
    solver: str | None = None,
    *,
    method: str = "chordal",
    reduce_input: bool = True,
    polish: int = 30,
    solver_options: Mapping[str, Any] | None = None,
) -> LipSDPResult:
    """:func:`lipsdp` with the details: solver status, its own value, times, LMI sizes."""
    start = time.perf_counter()
    if variant not in ("neuron", "layer"):
        raise ValueError(f"variant must be 'neuron' or 'layer', got {variant!r}")
    if method not in ("chordal", "dense"):
        raise ValueError(f"method must be 'chordal' or 'dense', got {method!r}")
    with _one_thread():
        weights, betas, tail = _canonical(net)
        prob = _normalise(weights, betas, reduce_input)
    if not isinstance(prob, _Scaled):  # no hidden layer: the constant is a spectral norm
        elapsed = time.perf_counter() - start
        return LipSDPResult(tail * prob, tail * prob, "exact", "none", method, variant, 0.0, elapsed, 0)
    prob.scale *= tail

    name = (solver or "SCS").upper()
    if name not in _SOLVER_DEFAULTS:
        raise ValueError(f"solver must be 'SCS' or 'CLARABEL' (open solvers), got {solver!r}")
    options = {**_SOLVER_DEFAULTS[name], **(solver_options or {})}
    problem, x, t_index, sizes = _build(prob, variant, method)
    if name == "CLARABEL":
        gigabytes = sum((m * (m + 1) // 2) ** 2 for m in sizes) * 8 / 1e9
        if gigabytes > 2:
            raise ValueError(
                f"Clarabel would need ~{gigabytes:.0f} GB for LMIs of sizes {sizes} (dense Hessian blocks of "
                "side m(m+1)/2 per cone); use solver='SCS' for networks this wide"
            )
    status = _solve(problem, name, options)
    if status not in _OK_STATUSES:
        raise LipschitzError(
            f"LipSDP failed: {name} returned status {status!r} (method={method!r}, variant={variant!r}, "
            f"LMI sizes {sizes}); no bound was computed",
            status=status,
        )
    if x.value is None or problem.value is None or not np.all(np.isfinite(x.value)):
        raise LipschitzError(f"LipSDP failed: {name} reported {status!r} but returned no solution", status=status)
    xv = np.asarray(x.value, dtype=float)
    with _one_thread():
        rho, t = _certify(prob, [xv[idx] for idx in t_index])
        if np.isfinite(rho) and polish > 0:
            rho, t = _polish(prob, t, variant, polish)
    if not np.isfinite(rho):
        raise LipschitzError(
            f"LipSDP failed: {name} returned status {status!r} but its multipliers do not certify any bound "
            "(the hidden block of the LMI is not negative definite along the repair direction)",
            status=status,
        )
    bound = prob.scale * math.sqrt(rho)
    if status == "optimal_inaccurate":
        warnings.warn(
            f"{name} stopped at status 'optimal_inaccurate'; the returned LipSDP bound {bound:.6g} is "
            "certified (valid) but may be looser than the SDP optimum",
            RuntimeWarning,
            stacklevel=3,
        )
    stats = problem.solver_stats
    return LipSDPResult(
        bound=float(bound),
        solver_bound=float(prob.scale * math.sqrt(max(float(problem.value), 0.0))),
        status=status,
        solver=name,
        method=method,
        variant=variant,
        solve_time=float(stats.solve_time or 0.0) + float(stats.setup_time or 0.0),
        total_time=time.perf_counter() - start,
        iterations=stats.num_iters,
        block_sizes=sizes,
        input_rank=prob.input_rank,
    )


def lipsdp(
    net: nn.Module,
    variant: str = "neuron",
    solver: str | None = None,
    *,
    method: str = "chordal",
    reduce_input: bool = True,
    polish: int = 30,
    solver_options: Mapping[str, Any] | None = None,
) -> float:
    """LipSDP upper bound on the L2 Lipschitz constant of ``net`` (see the module docstring).

    ``variant``: ``"neuron"`` (one multiplier per hidden neuron, the tighter) or ``"layer"`` (one
    per layer). ``solver``: ``"SCS"`` (default) or ``"CLARABEL"``; ``solver_options`` override the
    defaults (SCS: ``eps_abs = eps_rel = 1e-4``, ``max_iters = 10000``, ``linear_solver =
    "qdldl"``). ``polish``: at most this many evaluations of the exact certified bound to tighten
    it (0 to skip). ``method``: ``"chordal"``
    (default; exact decomposition into one small LMI per pair of consecutive layers) or
    ``"dense"`` (the single LMI of the paper). ``reduce_input``: replace ``W_1`` by ``U S`` from
    its SVD (exact).

    Returns a certified bound (see "Certificate" above). A network without hidden layers returns
    the spectral norm of its (merged) weight. A final activation up to ``MAX_TAIL_WIDTH`` (512)
    wide is modelled neuron by neuron; a wider one only multiplies the bound by its slope bound.
    Raises :class:`LipschitzError` when the solver does not reach ``optimal`` / ``optimal_inaccurate``
    (the latter gives a ``RuntimeWarning``, the bound stays valid), and :class:`UnsupportedLayerError`
    for layers other than the supported ones.
    """
    return lipsdp_report(
        net,
        variant,
        solver,
        method=method,
        reduce_input=reduce_input,
        polish=polish,
        solver_options=solver_options,
    ).bound
