"""genlab.lipschitz on networks whose Lipschitz constant is known exactly."""

from __future__ import annotations

import math
import warnings

import cvxpy as cp
import pytest
import torch
from torch import nn

from genlab.lipschitz import (
    LipschitzError,
    UnsupportedLayerError,
    eclipse_fast_bound,
    jacobian_lower_bound,
    lipsdp,
    lipsdp_report,
    spectral_product_bound,
)

ACTS = {"sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "relu": nn.ReLU}


def mlp(widths, act=nn.Sigmoid, seed=0, gain=1.0):
    torch.manual_seed(seed)
    layers = []
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        lin = nn.Linear(a, b)
        with torch.no_grad():
            lin.weight.mul_(gain)
        layers.append(lin)
        if i < len(widths) - 2:
            layers.append(act())
    return nn.Sequential(*layers).double()


def linear(W, b=None):
    W = torch.as_tensor(W, dtype=torch.float64)
    lin = nn.Linear(W.shape[1], W.shape[0]).double()
    with torch.no_grad():
        lin.weight.copy_(W)
        lin.bias.copy_(torch.zeros(W.shape[0]) if b is None else torch.as_tensor(b))
    return lin


def orthogonal(n, seed):
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    return q


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------------------------------- known constants


def test_single_linear_all_estimators_equal_spectral_norm():
    W = torch.randn(5, 7, generator=gen(1), dtype=torch.float64)
    net = nn.Sequential(linear(W))
    exact = float(torch.linalg.matrix_norm(W, 2))
    assert lipsdp(net) == pytest.approx(exact, rel=1e-12)
    assert spectral_product_bound(net) == pytest.approx(exact, rel=1e-12)
    assert jacobian_lower_bound(net, torch.randn(3, 7, generator=gen(2)), steps=5) == pytest.approx(exact, rel=1e-9)


def test_consecutive_linear_layers_are_merged_exactly():
    A = torch.randn(6, 4, generator=gen(3), dtype=torch.float64)
    B = torch.randn(3, 6, generator=gen(4), dtype=torch.float64)
    net = nn.Sequential(nn.Flatten(), linear(A), nn.Identity(), linear(B))
    assert lipsdp(net) == pytest.approx(float(torch.linalg.matrix_norm(B @ A, 2)), rel=1e-12)
    # the product bound takes the layers one by one
    assert spectral_product_bound(net) == pytest.approx(
        float(torch.linalg.matrix_norm(A, 2) * torch.linalg.matrix_norm(B, 2)), rel=1e-12
    )


@pytest.mark.parametrize("w1,w2,b1", [(3.0, -2.0, 0.5), (-0.7, 5.0, -1.0)])
def test_scalar_sigmoid_net(w1, w2, b1):
    """f(x) = w2 sigmoid(w1 x + b1): the constant is |w2| |w1| / 4, attained at w1 x + b1 = 0."""
    net = nn.Sequential(linear([[w1]], [b1]), nn.Sigmoid(), linear([[w2]]))
    exact = abs(w1 * w2) / 4
    assert spectral_product_bound(net) == pytest.approx(exact, rel=1e-12)
    assert lipsdp(net) == pytest.approx(exact, rel=1e-4)
    assert lipsdp(net, "layer") == pytest.approx(exact, rel=1e-4)
    start = torch.tensor([[-b1 / w1 + 0.3]])
    assert jacobian_lower_bound(net, start, steps=200, lr=0.05) == pytest.approx(exact, rel=1e-6)


def test_activation_at_the_end_and_start():
    # sigmoid(2x): constant 2/4; tanh(3 * tanh(x)): constant 3
    net = nn.Sequential(linear([[2.0]]), nn.Sigmoid())
    assert lipsdp(net) == pytest.approx(0.5, rel=1e-4)
    net = nn.Sequential(nn.Tanh(), linear([[3.0]]), nn.Tanh())
    assert lipsdp(net) == pytest.approx(3.0, rel=1e-4)
    assert spectral_product_bound(net) == pytest.approx(3.0, rel=1e-12)


def test_wide_final_activation_is_a_slope_factor():
    W = torch.randn(600, 3, generator=gen(5), dtype=torch.float64)
    net = nn.Sequential(linear(W), nn.Sigmoid())  # 600 > MAX_TAIL_WIDTH: no 600-wide LMI
    assert lipsdp(net) == pytest.approx(0.25 * float(torch.linalg.matrix_norm(W, 2)), rel=1e-12)
    narrow = nn.Sequential(linear(W[:40]), nn.Sigmoid())  # modelled as a hidden layer
    assert lipsdp(narrow) <= 0.25 * float(torch.linalg.matrix_norm(W[:40], 2)) * (1 + 1e-3)


def test_diagonal_relu_net_neuron_exact_layer_looser():
    """f(x) = diag(b) relu(diag(a) x) with a = (1, 2), b = (2, 1): the constant is max a_i b_i = 2.

    Per coordinate the LMI is [[-rho, a_i t_i], [a_i t_i, b_i^2 - 2 t_i]] <= 0, so one multiplier
    per neuron recovers rho = max a_i^2 b_i^2 exactly, while one shared multiplier lambda must
    satisfy both coordinates: min over lambda of max(l^2 / (2l - 4), 4 l^2 / (2l - 1)) = 6.25 at
    lambda = 2.5, i.e. L = 2.5. The product of norms is 2 * 2 = 4.
    """
    net = nn.Sequential(linear([[1.0, 0.0], [0.0, 2.0]]), nn.ReLU(), linear([[2.0, 0.0], [0.0, 1.0]]))
    assert lipsdp(net, "neuron") == pytest.approx(2.0, rel=1e-3)
    assert lipsdp(net, "layer") == pytest.approx(2.5, rel=1e-3)
    assert lipsdp(net, "layer", "clarabel") == pytest.approx(2.5, rel=1e-6)
    assert spectral_product_bound(net) == pytest.approx(4.0)
    assert jacobian_lower_bound(net, torch.tensor([[1.0, 1.0]]), steps=3) == pytest.approx(2.0, rel=1e-9)


@pytest.mark.parametrize("act,slope", [("sigmoid", 0.25), ("tanh", 1.0)])
def test_orthogonal_layers_attain_the_product_bound(act, slope):
    """Orthogonal weights and biases that put every pre-activation at 0 for x = 0, where the
    slopes are maximal: the Jacobian at 0 is slope^2 Q3 Q2 Q1, so the constant is slope^2 and
    every estimator must give exactly that (LipSDP is squeezed between the other two)."""
    n = 6
    Q1, Q2, Q3 = (orthogonal(n, s) for s in (1, 2, 3))
    mid = 0.5 if act == "sigmoid" else 0.0  # activation value at 0
    net = nn.Sequential(
        linear(Q1), ACTS[act](), linear(Q2, -Q2 @ torch.full((n,), mid, dtype=torch.float64)), ACTS[act](), linear(Q3)
    )
    exact = slope**2
    assert spectral_product_bound(net) == pytest.approx(exact, rel=1e-12)
    assert jacobian_lower_bound(net, torch.zeros(1, n), steps=0, power_iters=50) == pytest.approx(exact, rel=1e-9)
    bound = lipsdp(net)
    assert bound >= exact * (1 - 1e-9)  # certified: never below the true constant
    assert bound == pytest.approx(exact, rel=1e-3)


# ------------------------------------------------------------------------------------------ orderings


@pytest.mark.parametrize("act", sorted(ACTS))
def test_lower_le_lipsdp_le_product_on_random_nets(act):
    net = mlp([5, 12, 10, 3], ACTS[act], seed=7, gain=2.0)
    lower = jacobian_lower_bound(net, torch.randn(8, 5, generator=gen(0)), steps=60, lr=0.05)
    neuron = lipsdp(net)
    layer = lipsdp(net, "layer")
    product = spectral_product_bound(net)
    assert 0 < lower <= neuron <= product
    assert neuron <= layer * (1 + 1e-3) and layer <= product * (1 + 1e-6)
    # LipSDP is really tighter than the product here, and the lower bound is not trivial
    assert neuron < 0.9 * product and lower > 0.2 * neuron


@pytest.mark.parametrize("c", [0.5, 3.0])
def test_eclipse_fast_exact_on_a_scaled_identity(c):
    """f(x) = relu(c x) has constant c; ECLipsE-Fast's layer-wise certificate is tight here."""
    net = nn.Sequential(linear(c * torch.eye(4)), nn.ReLU(), linear(torch.eye(4)))
    assert eclipse_fast_bound(net) == pytest.approx(c, rel=1e-9)
    W = torch.randn(3, 5, generator=gen(11), dtype=torch.float64)  # no activation: the spectral norm
    assert eclipse_fast_bound(nn.Sequential(linear(W))) == pytest.approx(float(torch.linalg.matrix_norm(W, 2)))


@pytest.mark.parametrize("act", sorted(ACTS))
def test_eclipse_fast_between_lipsdp_and_product(act):
    """Its certificate is one feasible point of the layer-wise LMI: never below LipSDP-layer."""
    net = mlp([5, 12, 10, 3], ACTS[act], seed=7, gain=2.0)
    fast = eclipse_fast_bound(net)
    assert lipsdp(net, "layer") <= fast * (1 + 1e-3)
    assert fast <= spectral_product_bound(net) * (1 + 1e-9)
    # the sigmoid's slope 1/4 is used (with slope 1 the bound would be ~16x larger)
    if act == "sigmoid":
        relu_twin = nn.Sequential(*[nn.ReLU() if isinstance(m, nn.Sigmoid) else m for m in net])
        assert fast < 0.1 * eclipse_fast_bound(relu_twin)


def test_eclipse_fast_names_unsupported_layers_and_a_missing_package(monkeypatch):
    with pytest.raises(UnsupportedLayerError, match="Conv1d"):
        eclipse_fast_bound(nn.Sequential(nn.Linear(3, 3), nn.Conv1d(1, 1, 1)))
    monkeypatch.setitem(__import__("sys").modules, "eclipse_nn", None)
    with pytest.raises(ImportError, match="pip install eclipse-nn"):
        eclipse_fast_bound(mlp([2, 3, 2]))


def test_lipsdp_is_not_fooled_by_the_sigmoid_slope():
    """A sigmoid network's LipSDP bound must be ~1/4 per layer of a tanh network's with the same
    weights, scaled so that the slopes match: sigmoid(x) = (1 + tanh(x / 2)) / 2."""
    torch.manual_seed(0)
    W1, W2 = torch.randn(6, 4, dtype=torch.float64), torch.randn(2, 6, dtype=torch.float64)
    sig = nn.Sequential(linear(W1), nn.Sigmoid(), linear(W2))
    tanh = nn.Sequential(linear(W1 / 2), nn.Tanh(), linear(W2 / 2))  # the same function up to a constant
    assert lipsdp(sig, solver="clarabel") == pytest.approx(lipsdp(tanh, solver="clarabel"), rel=1e-6)


def test_chordal_decomposition_equals_dense_lmi():
    net = mlp([4, 7, 6, 5, 3], nn.Tanh, seed=3, gain=1.5)
    chordal = lipsdp_report(net, solver="clarabel", method="chordal", polish=0)
    dense = lipsdp_report(net, solver="clarabel", method="dense", polish=0)
    assert chordal.block_sizes == [4 + 7, 7 + 6, 6 + 5] and dense.block_sizes == [4 + 7 + 6 + 5]
    assert chordal.bound == pytest.approx(dense.bound, rel=1e-6)
    assert chordal.solver_bound == pytest.approx(dense.solver_bound, rel=1e-6)


def test_svd_input_reduction_is_exact():
    net = mlp([40, 8, 6, 2], nn.Sigmoid, seed=5, gain=3.0)
    reduced = lipsdp_report(net, solver="clarabel", reduce_input=True)
    full = lipsdp_report(net, solver="clarabel", reduce_input=False)
    assert reduced.input_rank == 8 and full.input_rank == 40
    assert reduced.block_sizes[0] == 8 + 8 and full.block_sizes[0] == 40 + 8
    assert reduced.bound == pytest.approx(full.bound, rel=1e-6)


def test_default_solver_close_to_interior_point_and_certified():
    net = mlp([6, 16, 16, 4], nn.Sigmoid, seed=11, gain=2.0)
    exact = lipsdp_report(net, solver="clarabel", polish=0)
    default = lipsdp_report(net)
    assert default.solver == "SCS" and default.status == "optimal"
    assert isinstance(lipsdp(net), float)
    # a certified bound is an upper bound on the SDP optimum, and SCS + polish is close to it
    assert exact.bound * (1 - 1e-6) <= default.bound <= exact.bound * (1 + 5e-3)


# ------------------------------------------------------------------------------------------------ errors


@pytest.mark.parametrize(
    "net,name,cls",
    [
        (nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(8, 2)), "layer 0", "Conv2d"),
        (nn.Sequential(nn.Linear(3, 4), nn.GELU(), nn.Linear(4, 2)), "layer 1", "GELU"),
        (nn.Sequential(nn.Linear(3, 4), nn.Sequential(nn.BatchNorm1d(4), nn.ReLU())), "layer 1.0", "BatchNorm1d"),
        (nn.Sequential(nn.Linear(3, 4), nn.Flatten(), nn.Linear(4, 2)), "layer 1", "Flatten"),
    ],
)
def test_unsupported_layers_are_named(net, name, cls):
    for estimator in (lipsdp, spectral_product_bound):
        with pytest.raises(UnsupportedLayerError) as info:
            estimator(net)
        message = str(info.value)
        assert name in message and cls in message and "nn.Linear" in message and "Sigmoid" in message
    assert issubclass(UnsupportedLayerError, TypeError) and issubclass(UnsupportedLayerError, ValueError)


def test_bad_arguments():
    net = mlp([2, 3, 1])
    with pytest.raises(ValueError, match="variant"):
        lipsdp(net, "diagonal")
    with pytest.raises(ValueError, match="method"):
        lipsdp(net, method="sparse")
    with pytest.raises(ValueError, match="MOSEK"):
        lipsdp(net, solver="MOSEK")


@pytest.mark.parametrize("status", ["infeasible", "unbounded", "solver_error", "infeasible_inaccurate"])
@pytest.mark.parametrize("with_values", [False, True])
def test_solver_failure_raises_never_returns(monkeypatch, status, with_values):
    """A failed solve raises, whether or not the variables were left holding (stale) values."""
    real_solve = cp.Problem.solve

    def failing_solve(self, *args, **kwargs):
        if with_values:
            real_solve(self, *args, **kwargs)
        self._status = status
        return math.inf

    monkeypatch.setattr(cp.Problem, "solve", failing_solve)
    with pytest.raises(LipschitzError, match=status) as info:
        lipsdp(mlp([3, 5, 2]))
    assert info.value.status == status and isinstance(info.value, RuntimeError)


def test_solver_exception_becomes_lipschitz_error(monkeypatch):
    def crashing_solve(self, *args, **kwargs):
        raise cp.SolverError("the solver crashed")

    monkeypatch.setattr(cp.Problem, "solve", crashing_solve)
    with pytest.raises(LipschitzError, match="crashed"):
        lipsdp(mlp([3, 5, 2]))


def test_inaccurate_solution_is_certified_or_refused():
    """Five SCS iterations: either no certificate (an error) or a valid, warned-about bound."""
    net = mlp([4, 10, 10, 2], nn.Tanh, seed=2)
    lower = jacobian_lower_bound(net, torch.randn(4, 4, generator=gen(1)), steps=30)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            bound = lipsdp(net, solver_options={"max_iters": 5}, polish=0)
        except LipschitzError as exc:
            assert exc.status in ("optimal_inaccurate", "optimal")
            return
    assert bound >= lower
    assert any("optimal_inaccurate" in str(w.message) for w in caught)
