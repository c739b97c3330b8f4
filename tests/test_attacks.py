"""genlab.attacks: projections, the maximum-damage attack, FGSM and PGD against closed-form optima."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from genlab.attacks import fgsm, lbfgs_damage, maximum_damage_attack, pgd, project_l2


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def norms(t):
    return t.flatten(1).norm(dim=1)


# ------------------------------------------------------------------------------------------ projection


def test_projection_keeps_inside_rows_and_puts_outside_rows_on_the_sphere():
    delta = torch.randn(6, 3, 4, 4, generator=gen(1), dtype=torch.float64)
    delta[:3] *= 0.5 / norms(delta[:3]).view(-1, 1, 1, 1)  # norm 0.5: inside
    delta[3:] *= 7.0 / norms(delta[3:]).view(-1, 1, 1, 1)  # norm 7: outside
    out = project_l2(delta, 2.0)
    assert out.shape == delta.shape
    assert torch.equal(out[:3], delta[:3])  # bit for bit
    assert torch.allclose(norms(out[3:]), torch.full((3,), 2.0, dtype=torch.float64), rtol=1e-12)
    cosine = (out[3:].flatten(1) * delta[3:].flatten(1)).sum(1) / (norms(out[3:]) * norms(delta[3:]))
    assert torch.allclose(cosine, torch.ones(3, dtype=torch.float64), rtol=1e-12)
    assert torch.equal(project_l2(torch.zeros(2, 5), 1.0), torch.zeros(2, 5))


def test_projection_per_example_radius():
    delta = torch.ones(3, 4)  # norm 2 each
    out = project_l2(delta, torch.tensor([1.0, 2.0, 3.0]))
    assert torch.allclose(norms(out), torch.tensor([1.0, 2.0, 2.0]))
    assert torch.equal(out[1:], delta[1:])


@pytest.mark.parametrize("radius", [0.0, -1.5, float("nan"), float("inf")])
def test_bad_radius_is_named(radius):
    enc, dec = nn.Linear(4, 2), nn.Linear(2, 4)
    x = torch.randn(2, 4)
    for call in (
        lambda: project_l2(x, radius),
        lambda: maximum_damage_attack(enc, dec, x, radius),
        lambda: lbfgs_damage(enc, dec, x, radius),
    ):
        with pytest.raises(ValueError, match="radius") as info:
            call()
        assert str(radius) in str(info.value)
    with pytest.raises(ValueError, match=r"radius.*\[0\.0\]"):
        project_l2(x, torch.tensor([1.0, 0.0]))


# ------------------------------------------------------------------------------- maximum-damage attack


def linear_autoencoder(seed=0, n=20, k=5):
    torch.manual_seed(seed)
    enc = nn.Linear(n, k).double()
    dec = nn.Linear(k, n + 3).double()
    A = dec.weight.detach() @ enc.weight.detach()
    return enc, dec, float(torch.linalg.matrix_norm(A, 2))


def sigmoid_autoencoder(seed=0, n=12, k=3, gain=3.0):
    torch.manual_seed(seed)

    def mlp(widths):
        layers = []
        for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
            lin = nn.Linear(a, b)
            with torch.no_grad():
                lin.weight.mul_(gain)
            layers += [lin] + ([nn.Sigmoid()] if i < len(widths) - 2 else [])
        return nn.Sequential(*layers).double()

    return mlp([n, 16, 16, k]), mlp([k, 16, 16, n])


@pytest.mark.parametrize("radius", [0.5, 3.0])
def test_linear_autoencoder_reaches_the_top_singular_value(radius):
    """For p(x) = E x + a, g(z) = D z + b the damage is ||D E d||, maximal at radius * ||DE||_2."""
    enc, dec, smax = linear_autoencoder()
    x = torch.randn(4, 20, generator=gen(3), dtype=torch.float64)
    delta, damage = maximum_damage_attack(enc, dec, x, radius, steps=100, restarts=1, generator=gen(4))
    assert torch.all(damage <= radius * smax * (1 + 1e-9))
    assert torch.all(damage >= radius * smax * 0.99)
    assert torch.all(norms(delta) <= radius * (1 + 1e-9))
    # the reported damage is the damage of the returned delta
    assert torch.allclose(damage, norms(dec(enc(x + delta)) - dec(enc(x))), rtol=1e-10)


def test_attack_respects_per_example_radius_and_image_shapes():
    enc_mlp, dec_mlp = sigmoid_autoencoder(n=48)

    def enc(t):
        return enc_mlp(t.flatten(1))

    def dec(z):
        return dec_mlp(z).view(-1, 3, 4, 4)

    x = torch.rand(3, 3, 4, 4, generator=gen(5), dtype=torch.float64)
    radius = torch.tensor([0.1, 1.0, 5.0], dtype=torch.float64)
    delta, damage = maximum_damage_attack(enc, dec, x, radius, steps=40, restarts=2, generator=gen(6))
    assert delta.shape == x.shape and damage.shape == (3,)
    assert torch.all(norms(delta) <= radius * (1 + 1e-9))
    assert torch.all(damage > 0) and not delta.requires_grad and not damage.requires_grad
    assert damage[0] < damage[1] < damage[2]


def test_restarts_never_decrease_damage():
    enc, dec = sigmoid_autoencoder(seed=1)
    x = torch.rand(5, 12, generator=gen(7), dtype=torch.float64)
    previous = None
    for restarts in (1, 2, 4, 8):
        _, damage = maximum_damage_attack(enc, dec, x, 2.0, steps=30, restarts=restarts, generator=gen(8))
        if previous is not None:
            assert torch.all(damage >= previous * (1 - 1e-9))
        previous = damage


def test_pgd_at_least_as_good_as_lbfgs():
    enc, dec = sigmoid_autoencoder(seed=2)
    x = torch.rand(3, 12, generator=gen(9), dtype=torch.float64)
    _, pgd_damage = maximum_damage_attack(enc, dec, x, 1.5, steps=150, restarts=4, generator=gen(10))
    delta, lbfgs = lbfgs_damage(enc, dec, x, 1.5, generator=gen(11))
    assert torch.all(norms(delta) <= 1.5 * (1 + 1e-9))
    assert torch.all(lbfgs > 0)
    assert torch.all(pgd_damage >= lbfgs * (1 - 1e-3))


def test_lbfgs_reaches_the_linear_optimum():
    enc, dec, smax = linear_autoencoder(seed=3)
    x = torch.randn(2, 20, generator=gen(12), dtype=torch.float64)
    _, damage = lbfgs_damage(enc, dec, x, 2.0, generator=gen(13))
    assert torch.all(damage <= 2.0 * smax * (1 + 1e-9)) and torch.all(damage >= 2.0 * smax * 0.99)


def test_attack_leaves_models_alone():
    enc, dec = sigmoid_autoencoder(seed=4)
    enc.train()
    before = [p.detach().clone() for p in enc.parameters()]
    maximum_damage_attack(enc, dec, torch.rand(2, 12, dtype=torch.float64), 1.0, steps=5, restarts=2)
    assert enc.training and all(torch.equal(a, b) for a, b in zip(before, enc.parameters()))
    assert all(p.grad is None for p in enc.parameters())


# ------------------------------------------------------------------------------------- FGSM and PGD


def linear_classifier():
    """Two logits w_c . x + b_c; cross-entropy grows with (w_other - w_y) . x, so its best L-inf
    perturbation is eps * sign(w_other - w_y) and its best L2 one eps * u / ||u||."""
    torch.manual_seed(0)
    model = nn.Linear(10, 2).double()
    return model, nn.CrossEntropyLoss()


def test_fgsm_moves_along_the_weight_sign():
    model, loss = linear_classifier()
    x = torch.full((4, 10), 0.5, dtype=torch.float64)
    y = torch.tensor([0, 1, 0, 1])
    eps = 0.1
    adv = fgsm(model, loss, x, y, eps)
    W = model.weight.detach()
    expected = eps * torch.sign(W[1 - y] - W[y])
    assert torch.allclose(adv - x, expected, atol=1e-12)
    assert loss(model(adv), y) > loss(model(x), y)


def test_fgsm_clamps_to_the_image_range():
    model, loss = linear_classifier()
    x = torch.tensor([[0.0, 1.0] * 5], dtype=torch.float64)
    adv = fgsm(model, loss, x, torch.tensor([0]), 0.3)
    assert adv.min() >= 0 and adv.max() <= 1
    unclamped = fgsm(model, loss, x, torch.tensor([0]), 0.3, clamp=None)
    assert torch.allclose((unclamped - x).abs(), torch.full_like(x, 0.3))


@pytest.mark.parametrize("random_start", [True, False])
def test_pgd_linf_reaches_the_box_corner(random_start):
    model, loss = linear_classifier()
    x = torch.full((3, 10), 0.5, dtype=torch.float64)
    y = torch.tensor([0, 1, 1])
    adv = pgd(
        model, loss, x, y, eps=0.05, alpha=0.02, steps=10, norm="inf", random_start=random_start, generator=gen(1)
    )
    W = model.weight.detach()
    assert torch.allclose(adv - x, 0.05 * torch.sign(W[1 - y] - W[y]), atol=1e-12)


def test_pgd_l2_follows_the_gradient_direction():
    """From zero, every step is along u / ||u||: PGD lands exactly on eps * u / ||u||."""
    model, loss = linear_classifier()
    x = torch.full((3, 10), 0.5, dtype=torch.float64)
    y = torch.tensor([1, 0, 1])
    eps = 0.2
    adv = pgd(model, loss, x, y, eps=eps, alpha=0.05, steps=30, norm="2", random_start=False)
    W = model.weight.detach()
    u = W[1 - y] - W[y]
    assert torch.allclose(adv - x, eps * u / u.norm(dim=1, keepdim=True), atol=1e-12)


def test_pgd_l2_random_start_stays_in_the_ball_and_nears_the_optimum():
    model, loss = linear_classifier()
    x = torch.full((3, 10), 0.5, dtype=torch.float64)
    y = torch.tensor([1, 0, 1])
    eps = 0.2
    adv = pgd(model, loss, x, y, eps=eps, alpha=0.05, steps=100, norm="2", generator=gen(2))
    W = model.weight.detach()
    u = W[1 - y] - W[y]
    assert torch.all(norms(adv - x) <= eps * (1 + 1e-9))
    # the margin gained, u . delta, is within 1% of its maximum eps ||u||
    assert torch.all(((adv - x) * u).sum(1) >= 0.99 * eps * u.norm(dim=1))


def test_pgd_arguments():
    model, loss = linear_classifier()
    x = torch.full((2, 10), 0.5, dtype=torch.float64)
    y = torch.tensor([0, 1])
    assert torch.equal(pgd(model, loss, x, y, eps=0.0, alpha=0.1, steps=3, norm="2"), x)
    with pytest.raises(ValueError, match="norm"):
        pgd(model, loss, x, y, eps=0.1, alpha=0.1, steps=3, norm="1")
    assert math.isclose(float((pgd(model, loss, x, y, 0.1, 0.5, 1, norm="inf") - x).abs().max()), 0.1)


# ------------------------------------------------------------------- FGSM and PGD: modes, and torchattacks


def reference_attacks():
    """The independent reference; its absence is a failure, never a skip, so the cross-check always runs."""
    try:
        import torchattacks
    except ImportError:
        pytest.fail("torchattacks is not installed: `make setup` installs it from requirements/lock.txt")
    return torchattacks


def batchnorm_classifier(seed=0):
    torch.manual_seed(seed)
    net = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Linear(64, 4),
    )
    return net


@pytest.mark.parametrize("attack", ["fgsm", "pgd"])
def test_attacks_take_gradients_in_eval_mode_and_restore_every_mode(attack):
    net = batchnorm_classifier()
    net.train()
    net[5].eval()  # a frozen BatchNorm inside a training model keeps its own mode
    modes = [m.training for m in net.modules()]
    buffers = {k: v.clone() for k, v in net.named_buffers()}
    x, y = torch.rand(6, 1, 12, 12, generator=gen(5)), torch.tensor([0, 1, 2, 3, 0, 1])
    if attack == "fgsm":
        adv = fgsm(net, nn.functional.cross_entropy, x, y, 0.1)
    else:
        adv = pgd(net, nn.functional.cross_entropy, x, y, 0.1, 0.03, 5, generator=gen(6))
    assert [m.training for m in net.modules()] == modes
    assert all(torch.equal(buffers[k], v) for k, v in net.named_buffers())
    assert all(p.grad is None for p in net.parameters())
    # the same as attacking the model in eval mode
    net.eval()
    if attack == "fgsm":
        assert torch.equal(adv, fgsm(net, nn.functional.cross_entropy, x, y, 0.1))
    else:
        assert torch.equal(adv, pgd(net, nn.functional.cross_entropy, x, y, 0.1, 0.03, 5, generator=gen(6)))


def test_pgd_stays_in_the_ball_around_the_original_image():
    """Many steps of a step size close to eps: a projection around the last iterate would drift away."""
    net = batchnorm_classifier(1).eval()
    x, y = torch.rand(8, 1, 12, 12, generator=gen(7)), torch.randint(0, 4, (8,), generator=gen(8))
    adv = pgd(net, nn.functional.cross_entropy, x, y, eps=0.05, alpha=0.04, steps=20, generator=gen(9))
    assert float((adv - x).abs().max()) <= 0.05 + 1e-6
    assert adv.min() >= 0 and adv.max() <= 1 and not adv.requires_grad


def test_fgsm_and_pgd_validate_their_arguments():
    net = batchnorm_classifier()
    x, y = torch.rand(2, 1, 12, 12), torch.tensor([0, 1])
    with pytest.raises(ValueError, match="eps"):
        fgsm(net, nn.functional.cross_entropy, x, y, -0.1)
    for kwargs in ({"eps": -1.0}, {"alpha": -1.0}, {"steps": -1}):
        args = {"eps": 0.1, "alpha": 0.01, "steps": 2, **kwargs}
        with pytest.raises(ValueError, match=next(iter(kwargs))):
            pgd(net, nn.functional.cross_entropy, x, y, **args)


@pytest.fixture(scope="module")
def trained_classifier():
    """A small BatchNorm CNN trained on a task it can learn: which quadrant of the image is brightest."""
    g = gen(11)
    x = torch.rand(2500, 1, 12, 12, generator=g)
    y = nn.functional.avg_pool2d(x, 6).flatten(1).argmax(1)
    net = batchnorm_classifier(2)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
    net.train()
    for _ in range(2):
        for i in range(0, 1500, 50):
            optimizer.zero_grad()
            nn.functional.cross_entropy(net(x[i : i + 50]), y[i : i + 50]).backward()
            optimizer.step()
    net.eval()
    return net, x[1500:], y[1500:]


def _accuracy(net, x, y):
    with torch.no_grad():
        return float((net(x).argmax(1) == y).float().mean())


def test_fgsm_agrees_with_torchattacks(trained_classifier):
    """Same model, same inputs, eps = 8/255: the same adversarial images, so the same robust accuracy."""
    reference = reference_attacks()
    net, x, y = trained_classifier
    assert _accuracy(net, x, y) > 0.6  # the task was learnt: robust accuracy means something
    ours = fgsm(net, nn.functional.cross_entropy, x, y, 8 / 255)
    theirs = reference.FGSM(net, eps=8 / 255)(x, y)
    assert torch.allclose(ours, theirs, atol=1e-6)
    assert _accuracy(net, ours, y) == _accuracy(net, theirs, y) < _accuracy(net, x, y) - 0.1


def test_pgd_agrees_with_torchattacks(trained_classifier):
    """PGD-10 (eps 8/255, step 2/255): identical without a random start; with random starts (drawn
    differently by the two libraries) the robust accuracies agree within 2 percentage points."""
    reference = reference_attacks()
    net, x, y = trained_classifier
    ours = pgd(net, nn.functional.cross_entropy, x, y, 8 / 255, 2 / 255, 10, random_start=False)
    theirs = reference.PGD(net, eps=8 / 255, alpha=2 / 255, steps=10, random_start=False)(x, y)
    assert torch.allclose(ours, theirs, atol=1e-6)
    assert _accuracy(net, ours, y) == _accuracy(net, theirs, y)
    torch.manual_seed(12)
    ours = pgd(net, nn.functional.cross_entropy, x, y, 8 / 255, 2 / 255, 10, random_start=True)
    torch.manual_seed(13)
    theirs = reference.PGD(net, eps=8 / 255, alpha=2 / 255, steps=10, random_start=True)(x, y)
    assert abs(_accuracy(net, ours, y) - _accuracy(net, theirs, y)) <= 0.02
    assert _accuracy(net, ours, y) < _accuracy(net, fgsm(net, nn.functional.cross_entropy, x, y, 8 / 255), y) + 0.01
