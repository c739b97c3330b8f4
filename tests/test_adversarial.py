"""The chapter "Adversarial attacks and defenses": its ResNet, defenses, experiment helpers and hidden-test checks."""

from __future__ import annotations

import copy
from pathlib import Path

import nbformat
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import genlab
from autograder import probing
from autograder.checks import adversarial as checks
from autograder.release import strip_reference
from genlab.attacks import fgsm, pgd
from genlab.data import TensorData
from genlab.defenses import accuracy_under_attack, adversarial_batch, fgsm_loss, fgsm_rs_loss
from genlab.experiments.adversarial import (
    augment,
    class_names,
    data_statistics,
    make_plan,
    one_cycle,
    percent_table,
    split_halves,
    train_classifier,
    worst_of_restarts,
)
from genlab.models.resnet import CIFAR10_MEAN, CIFAR10_STD, CifarResNet, Normalize, resnet18
from tests.verdicts import Notebook, assert_stable, coverage_gaps

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "source" / "adversarial" / "adversarial.ipynb"


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def bn_net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 36, 5))
    with torch.no_grad():
        net[1].running_mean.uniform_(-1, 1)
        net[1].running_var.uniform_(0.5, 2)
    return net.double()


def images(n: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, 6, 6, generator=gen(seed), dtype=torch.float64)


# ============================================================================================ the ResNet


def test_resnet18_is_the_cifar_variant():
    model = resnet18()
    assert sum(p.numel() for p in model.parameters()) == 11_173_962  # the CIFAR ResNet-18 with ten classes
    stem = model.stem[0]
    assert stem.kernel_size == (3, 3) and stem.stride == (1, 1) and stem.in_channels == 3 and stem.out_channels == 64
    assert not any(isinstance(m, (nn.MaxPool2d, nn.AdaptiveMaxPool2d)) for m in model.modules())
    assert [len(s) for s in model.stages] == [2, 2, 2, 2]
    assert [s[0].conv1.out_channels for s in model.stages] == [64, 128, 256, 512]
    assert [s[0].conv1.stride for s in model.stages] == [(1, 1), (2, 2), (2, 2), (2, 2)]
    assert model.head.in_features == 512 and model.head.out_features == 10


def test_resnet_width_and_blocks_scale_the_network():
    small = CifarResNet((1, 1, 1, 1), width=8)
    assert [s[0].conv1.out_channels for s in small.stages] == [8, 16, 32, 64]
    assert small.head.in_features == 64
    x = torch.rand(3, 3, 32, 32)
    assert small(x).shape == (3, 10)
    assert small.features(x).shape == (3, 64)
    assert CifarResNet(width=4, num_classes=7, in_channels=1, mean=(0.5,), std=(0.25,))(
        torch.rand(2, 1, 28, 28)
    ).shape == (2, 7)


def test_the_network_normalises_its_inputs_itself():
    torch.manual_seed(0)
    model = CifarResNet((1, 1, 1, 1), width=4).eval()
    x = torch.rand(2, 3, 32, 32)
    mean = torch.tensor(CIFAR10_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR10_STD).view(1, 3, 1, 1)
    model.normalize = nn.Identity()
    by_hand = model((x - mean) / std)
    model.normalize = Normalize(CIFAR10_MEAN, CIFAR10_STD)
    assert torch.allclose(model(x), by_hand, atol=1e-6)
    assert {n for n, _ in model.named_buffers()} >= {"normalize.mean", "normalize.std"}  # they move with .to()


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"width": 0}, "width"),
        ({"width": 2.5}, "width"),
        ({"blocks": (2, 2, 2)}, "blocks"),
        ({"blocks": (2, 0, 2, 2)}, "blocks"),
        ({"num_classes": 1}, "num_classes"),
        ({"mean": (0.5,)}, "mean"),
    ],
)
def test_resnet_bad_arguments_are_named(kwargs, name):
    blocks = kwargs.pop("blocks", (2, 2, 2, 2))
    with pytest.raises(ValueError, match=name):
        CifarResNet(blocks, **kwargs)


def test_normalize_rejects_bad_statistics_and_shapes():
    with pytest.raises(ValueError, match="std must be positive"):
        Normalize((0.5, 0.5), (0.2, 0.0))
    with pytest.raises(ValueError, match="one value per channel"):
        Normalize((0.5, 0.5), (0.2,))
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        Normalize(CIFAR10_MEAN, CIFAR10_STD)(torch.rand(2, 1, 8, 8))


# ============================================================================================ defenses


def test_accuracy_under_attack_counts_over_all_examples_in_eval_mode():
    toy = nn.Sequential(nn.Flatten(), nn.Linear(2, 2, bias=False))
    with torch.no_grad():
        toy[1].weight.copy_(torch.eye(2))
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0], [0.2, 0.9]]).view(5, 1, 1, 2)
    y = torch.tensor([0, 1, 1, 1, 0])
    batches = [(x[:4], y[:4]), (x[4:], y[4:])]
    assert accuracy_under_attack(toy, batches) == pytest.approx(3 / 5)
    assert accuracy_under_attack(toy, batches, lambda m, a, b: a.flip(-1)) == pytest.approx(2 / 5)
    net = bn_net().train()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    accuracy_under_attack(
        net, [(images(4), torch.tensor([0, 1, 2, 3]))], lambda m, a, b: fgsm(m, F.cross_entropy, a, b, 0.1)
    )
    assert net.training and all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    with pytest.raises(ValueError, match="no examples"):
        accuracy_under_attack(toy, [])


def test_fgsm_loss_is_the_weighted_sum_with_the_adversarial_term_detached():
    net = bn_net(1).train()
    x, y = images(6, 1), torch.tensor([0, 1, 2, 3, 4, 0])
    twin = copy.deepcopy(net)  # the train-mode forward passes move the running statistics: compare from the same state
    loss = fgsm_loss(net, F.cross_entropy, x, y, 0.05, alpha=0.3)
    assert net.training
    adv = fgsm(twin, F.cross_entropy, x, y, 0.05)
    expected = 0.3 * F.cross_entropy(twin(x), y) + 0.7 * F.cross_entropy(twin(adv), y)
    assert torch.allclose(loss, expected)
    # the default attack is FGSM and the default weight 1/2
    twin = copy.deepcopy(net)
    default = fgsm_loss(net, F.cross_entropy, x, y, 0.05)
    adv = fgsm(twin, F.cross_entropy, x, y, 0.05)
    assert torch.allclose(default, 0.5 * F.cross_entropy(twin(x), y) + 0.5 * F.cross_entropy(twin(adv), y))
    # no gradient reaches the weights through the attack: the weights' gradient is the one of the formula
    attached = lambda m, lf, a, b, eps: (a + eps * torch.tanh(m(a)[:, :1]).view(-1, 1, 1, 1)).clamp(0, 1)
    twin = copy.deepcopy(net)
    fgsm_loss(net, F.cross_entropy, x, y, 0.1, 0.5, attack=attached).backward()
    twin.eval()
    fixed = attached(twin, None, x, y, 0.1).detach()
    twin.train()
    (0.5 * F.cross_entropy(twin(x), y) + 0.5 * F.cross_entropy(twin(fixed), y)).backward()
    assert all(torch.allclose(a.grad, b.grad) for a, b in zip(net.parameters(), twin.parameters()))


@pytest.mark.parametrize("alpha", [-0.1, 1.5])
def test_fgsm_loss_alpha_is_a_weight(alpha):
    with pytest.raises(ValueError, match="alpha"):
        fgsm_loss(bn_net(), F.cross_entropy, images(2), torch.tensor([0, 1]), 0.1, alpha)


def test_adversarial_batch_adds_detached_examples_built_in_eval_mode():
    net = bn_net(2).train()
    modes = []

    def attack(model, x, y):
        modes.append((model.training, torch.is_grad_enabled()))
        return (x + 0.1 * torch.tanh(model(x)[:, :1]).view(-1, 1, 1, 1)).clamp(0, 1)

    x, y = images(3, 2), torch.tensor([4, 0, 1])
    with torch.no_grad():  # the attack still gets gradients
        images2, labels2 = adversarial_batch(net, x, y, attack)
    assert modes == [(False, True)] and net.training
    assert images2.shape == (6, 3, 6, 6) and not images2.requires_grad
    assert torch.equal(images2[:3], x) and torch.equal(labels2, torch.tensor([4, 0, 1, 4, 0, 1]))


def test_fgsm_rs_loss_is_one_pgd_step_from_a_random_start():
    calls = []

    def attack(model, loss_fn, x, y, **kwargs):
        calls.append((model.training, kwargs))
        return x.flip(0)

    net = bn_net(3).train()
    x, y = images(4, 3), torch.tensor([0, 1, 2, 3])
    loss = fgsm_rs_loss(net, F.cross_entropy, x, y, 8 / 255, 10 / 255, attack=attack)
    assert calls == [(False, {"eps": 8 / 255, "alpha": 10 / 255, "steps": 1, "random_start": True})]
    assert net.training and torch.allclose(loss, F.cross_entropy(net(x.flip(0)), y))
    # with genlab's PGD: the examples stay in the box and in [0, 1]
    torch.manual_seed(0)
    assert torch.isfinite(fgsm_rs_loss(net, F.cross_entropy, x, y, 8 / 255, 10 / 255))
    for eps, alpha, name in ((0.0, 0.1, "eps"), (0.1, -1.0, "alpha")):
        with pytest.raises(ValueError, match=name):
            fgsm_rs_loss(net, F.cross_entropy, x, y, eps, alpha)


# ============================================================================================ experiment helpers


def test_augment_shifts_by_at_most_the_padding_and_flips():
    x = torch.rand(64, 3, 8, 8, generator=gen(1))
    out = augment(x, pad=2, generator=gen(2))
    assert out.shape == x.shape and out.dtype == x.dtype
    padded = F.pad(x, (2, 2, 2, 2))
    flips = 0
    for i in range(len(x)):
        found = [
            (dy, dx, f)
            for f in (False, True)
            for dy in range(5)
            for dx in range(5)
            if torch.equal((lambda c: c.flip(-1) if f else c)(padded[i, :, dy : dy + 8, dx : dx + 8]), out[i])
        ]
        assert found, f"image {i} is not a crop of the padded image"
        flips += found[0][2]
    assert 16 <= flips <= 48  # about half of 64 (p = 1e-4 to fail by chance)
    assert torch.equal(augment(x, pad=2, generator=gen(2)), out)  # reproducible with a generator
    unpadded = augment(x, pad=0, generator=gen(3))  # no room to shift: each image as it is, or mirrored
    assert all(torch.equal(u, a) or torch.equal(u, a.flip(-1)) for u, a in zip(unpadded, x))
    with pytest.raises(ValueError, match="pad"):
        augment(x, pad=-1)
    with pytest.raises(ValueError, match="batch of images"):
        augment(x[0])


def test_one_cycle_rises_to_the_peak_and_falls_to_zero():
    lrs = [one_cycle(i, 100, 0.2) for i in range(100)]
    assert lrs[0] == pytest.approx(0.2 / 40) and max(lrs) == pytest.approx(0.2) and lrs.index(max(lrs)) == 39
    assert lrs[-1] == 0.0 and all(a <= b for a, b in zip(lrs[:40], lrs[1:40]))
    with pytest.raises(ValueError, match="total"):
        one_cycle(0, 0, 0.1)


def test_split_halves_and_statistics():
    data = TensorData(x=torch.randint(0, 256, (7, 3, 4, 4), dtype=torch.uint8), y=torch.arange(7), name="cifar10")
    a, b = split_halves(data)
    assert len(a) == 4 and len(b) == 3 and torch.equal(torch.cat([a.y, b.y]), data.y)
    mean, std = data_statistics(data)
    x = data.x.double() / 255
    assert mean == pytest.approx(x.mean((0, 2, 3)).tolist(), abs=1e-4)
    assert std == pytest.approx(x.std((0, 2, 3)).tolist(), abs=1e-4)
    with pytest.raises(ValueError, match="at least 2"):
        split_halves(data.subset(1))
    with pytest.raises(ValueError, match="uint8"):
        data_statistics(TensorData(x=torch.rand(2, 3, 4, 4), y=None, name="cifar10"))


def test_class_names_follow_the_stand_in():
    x = torch.zeros(1, 3, 32, 32, dtype=torch.uint8)
    assert class_names(TensorData(x, torch.zeros(1), "cifar10"))[0] == "airplane"
    assert (
        class_names(TensorData(x, torch.zeros(1), "cifar10", stand_in="fashion-mnist padded to 3x32x32"))[0]
        == "T-shirt"
    )
    with pytest.raises(ValueError, match="no class names"):
        class_names(TensorData(x, torch.zeros(1), "celeba"))


def test_worst_of_restarts_is_at_least_as_strong_as_every_run():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3)).double()
    x, y = torch.rand(200, 1, 2, 2, dtype=torch.float64), torch.randint(0, 3, (200,))
    noisy = lambda m, a, b: (a + 0.6 * torch.randn_like(a)).clamp(0, 1)
    torch.manual_seed(0)  # the same three draws as the restarts below
    runs = [model(noisy(model, x, y)).argmax(1) != y for _ in range(3)]
    torch.manual_seed(0)
    best = worst_of_restarts(noisy, 3)(model, x, y)
    fooled = model(best).argmax(1) != y
    assert torch.equal(fooled, runs[0] | runs[1] | runs[2])
    with pytest.raises(ValueError, match="restarts"):
        worst_of_restarts(noisy, 0)


def test_table_shows_as_text_html_markdown_and_csv(tmp_path):
    table = percent_table([{"model": "a", "clean": 0.9}, {"model": "b<c", "clean": 0.25, "note": "x"}], title="T")
    text = repr(table)
    assert "T" in text and "90.0%" in text and "25.0%" in text
    html_text = table._repr_html_()
    assert "<table" in html_text and "b&lt;c" in html_text and "<caption>T</caption>" in html_text
    assert table.markdown().splitlines()[0] == "| model | clean | note |"
    assert table.markdown().splitlines()[2] == "| a | 90.0% |  |"
    assert table.to_csv(tmp_path / "t.csv").read_text().splitlines()[1] == "a,0.9,"
    with pytest.raises(ValueError, match="at least one row"):
        percent_table([])


def test_train_classifier_learns_and_follows_the_schedule():
    torch.manual_seed(0)
    x = torch.rand(64, 3, 8, 8)
    y = (x[:, 0].mean((1, 2)) > 0.5).long()
    data = TensorData(x=(x * 255).to(torch.uint8), y=y, name="cifar10")
    model = nn.Sequential(nn.Flatten(), nn.Linear(192, 2))
    seen = []

    def on_epoch_end(epoch, history):
        model.eval()  # an evaluation that leaves eval mode: the harness must put train mode back
        seen.append(epoch)

    history = train_classifier(
        model,
        data,
        lambda m, b: F.cross_entropy(m(b[0]), b[1]),
        epochs=4,
        batch_size=16,
        lr_max=0.5,
        on_epoch_end=on_epoch_end,
    )
    assert seen == [0, 1, 2, 3]
    assert history.epochs["loss"][-1] < history.epochs["loss"][0]
    assert history.steps["lr"] == pytest.approx([one_cycle(i, 16, 0.5) for i in range(16)])


def _sizes_cell() -> str:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    return next(c.source for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == "sizes")


@pytest.mark.parametrize("profile, grading", [("smoke", False), ("full", False), ("full-dry", False), ("smoke", True)])
def test_the_notebook_and_the_runner_share_the_plan(profile, grading):
    P = genlab.Profile(profile, grading=grading)
    names: dict = {"P": P}
    exec(_sizes_cell(), names)
    plan = make_plan(profile, grading=grading)
    for field, value in vars(plan).items():
        if field in ("profile", "grading"):
            continue
        assert names[field.upper()] == value, f"{field}: notebook {names[field.upper()]!r}, runner {value!r}"
    with pytest.raises(ValueError, match="profile"):
        make_plan("huge")


# ============================================================================================ reference markers


@pytest.mark.parametrize(
    "module, names",
    [
        ("attacks", ["fgsm", "pgd"]),
        ("defenses", ["accuracy_under_attack", "fgsm_loss", "adversarial_batch"]),
    ],
)
def test_graded_bodies_are_withheld_from_the_student_edition(module, names):
    source = (ROOT / "src" / "genlab" / f"{module}.py").read_text()
    namespace: dict = {"__name__": f"student_{module}"}
    exec(compile(strip_reference(source), f"student/{module}.py", "exec"), namespace)
    args = {
        "fgsm": (bn_net(), F.cross_entropy, images(2), torch.tensor([0, 1]), 0.1),
        "pgd": (bn_net(), F.cross_entropy, images(2), torch.tensor([0, 1]), 0.1, 0.01, 2),
        "accuracy_under_attack": (bn_net(), []),
        "fgsm_loss": (bn_net(), F.cross_entropy, images(2), torch.tensor([0, 1]), 0.1),
        "adversarial_batch": (bn_net(), images(2), torch.tensor([0, 1]), lambda m, a, b: a),
    }
    for name in names:
        with pytest.raises(NotImplementedError, match="graded exercise"):
            namespace[name](*args[name])
    # what the student edition keeps: fgsm_rs_loss is given, and computes no graded function
    assert "fgsm_rs_loss" not in names


# ============================================================================================ the checks
# Each probe runs here in-process: the "student" run and the reference run, then the comparison.


def test_every_probe_is_verified_against_its_package_reference():
    found = probing.checks_of(checks)
    assert {c.exercise for c in found.values()} == {
        "fgsm",
        "pgd",
        "accuracy_under_attack",
        "fgsm_loss",
        "adversarial_batch",
    }
    assert found["probe_fgsm"].reference is fgsm and found["probe_pgd"].reference is pgd


@pytest.mark.parametrize("name", sorted(probing.checks_of(checks)))
def test_checks_accept_the_reference(name):
    check = getattr(checks, name)
    check(check.reference)


# --- correct answers in other styles


def fgsm_backward(model, loss_fn, x, y, eps):
    """PyTorch tutorial style: loss.backward() and x.grad, train() restored explicitly."""
    training = model.training
    model.eval()
    x = x.clone().detach()
    x.requires_grad = True
    loss = loss_fn(model(x), y)
    model.zero_grad()
    loss.backward()
    perturbed = torch.clamp(x + eps * x.grad.data.sign(), 0, 1)
    if training:
        model.train()
    return perturbed.detach()


def fgsm_min_max(model, loss_fn, x, y, eps):
    """torch.where for the sign, min/max for the clamp, eval mode through a context manager."""
    from genlab.attacks import _eval_mode

    with _eval_mode(model):
        x_in = x.detach().requires_grad_()
        (g,) = torch.autograd.grad(loss_fn(model(x_in), y), [x_in])
    step = torch.where(g > 0, 1.0, torch.where(g < 0, -1.0, 0.0)).to(x.dtype)
    return torch.minimum(torch.maximum(x + eps * step, torch.zeros_like(x)), torch.ones_like(x)).detach()


def pgd_delta(model, loss_fn, x, y, eps, alpha, steps, random_start=True):
    """Optimise delta with backward() and .grad, in-place updates under no_grad."""
    training = model.training
    model.eval()
    delta = torch.zeros_like(x)
    if random_start:
        delta.uniform_(-eps, eps)
        delta = (x + delta).clamp(0, 1) - x
    for _ in range(steps):
        delta.requires_grad_(True)
        loss_fn(model(x + delta), y).backward()
        with torch.no_grad():
            delta = (delta + alpha * delta.grad.sign()).clamp(-eps, eps)
            delta = (x + delta).clamp(0, 1) - x
    model.train(training)
    return (x + delta).detach()


def pgd_torchattacks_style(model, loss_fn, x, y, eps, alpha, steps, random_start=True):
    """torchattacks' loop: x_adv.requires_grad = True on a detached copy, then delta clipping."""
    training = model.training
    model.eval()
    images = x.clone().detach()
    adv = images.clone().detach()
    if random_start:
        adv = (adv + torch.empty_like(adv).uniform_(-eps, eps)).clamp(0, 1).detach()
    for _ in range(steps):
        adv.requires_grad = True
        grad = torch.autograd.grad(loss_fn(model(adv), y), adv, retain_graph=False, create_graph=False)[0]
        adv = adv.detach() + alpha * grad.sign()
        delta = torch.clamp(adv - images, min=-eps, max=eps)
        adv = torch.clamp(images + delta, min=0, max=1).detach()
    if training:
        model.train()
    return adv


def accuracy_inference_mode(model, batches, attack=None):
    """A tensor result, torch.inference_mode for the predictions."""
    model.eval()
    hits = []
    for x, y in batches:
        x_eval = x if attack is None else attack(model, x, y)
        with torch.inference_mode():
            hits.append(model(x_eval).argmax(dim=-1).eq(y))
    return torch.cat(hits).double().mean()


@torch.no_grad()
def _predict(model, x):
    return model(x).argmax(1)


def accuracy_with_helper(model, batches, attack=None):
    """A no_grad-decorated helper for the predictions; counts with a running sum."""
    model.eval()
    correct = total = 0
    for x, y in batches:
        if attack:
            x = attack(model, x, y)
        correct += (_predict(model, x) == y).sum().item()
        total += y.numel()
    return float(correct) / total


def fgsm_loss_cat(model, loss_fn, x, y, eps, alpha=0.5, attack=fgsm):
    """One forward pass over [x; x_adv], split afterwards (no BatchNorm in the probe's network)."""
    model.eval()
    x_adv = attack(model, loss_fn, x, y, eps).detach()
    model.train()
    logits = model(torch.cat([x, x_adv]))
    return alpha * loss_fn(logits[: len(x)], y) + (1 - alpha) * loss_fn(logits[len(x) :], y)


def fgsm_loss_lerp(model, loss_fn, x, y, eps, alpha=0.5, attack=fgsm):
    """torch.lerp and a no_grad-free attack call with the mode restored in a finally block."""
    training = model.training
    try:
        model.eval()
        x_adv = attack(model, loss_fn, x, y, eps)
    finally:
        model.train(training)
    return torch.lerp(loss_fn(model(x_adv.detach()), y), loss_fn(model(x), y), alpha)


def adversarial_batch_adv_first(model, x, y, attack):
    """Adversarial examples first, labels by repeat: trains exactly alike."""
    model.eval()
    x_adv = attack(model, x, y).detach()
    model.train()
    return torch.cat((x_adv, x), dim=0), y.repeat(2)


def adversarial_batch_stack(model, x, y, attack):
    """torch.stack then flatten, the mode restored from a saved flag."""
    was = model.training
    model.train(False)
    x_adv = attack(model, x, y).detach().clone()
    model.train(was)
    return torch.stack([x, x_adv]).flatten(0, 1), torch.stack([y, y]).flatten()


def accuracy_numpy(model, batches, attack=None):
    """NumPy's mean of the hits: a numpy.float64 (a float subclass) comes back."""
    import numpy as np

    model.eval()
    hits = []
    for x, y in batches:
        x_eval = x if attack is None else attack(model, x, y)
        with torch.no_grad():
            hits.append((model(x_eval).argmax(1) == y).cpu().numpy())
    return np.mean(np.concatenate(hits))


def pgd_rand_like_start(model, loss_fn, x, y, eps, alpha, steps, random_start=True):
    was = model.training
    model.eval()
    x_adv = x.detach().clone()
    if random_start:
        x_adv = torch.clamp(x_adv + (torch.rand_like(x) * 2 - 1) * eps, 0, 1)
    for _ in range(steps):
        x_adv = x_adv.detach().requires_grad_()
        grad = torch.autograd.grad(loss_fn(model(x_adv), y), x_adv)[0]
        x_adv = torch.min(torch.max(x_adv + alpha * grad.sign(), x - eps), x + eps).clamp(0, 1)
    model.train(was)
    return x_adv.detach()


def adversarial_batch_enable_grad(model, x, y, attack):
    was = model.training
    model.eval()
    with torch.enable_grad():
        x_adv = attack(model, x, y).detach()
    model.train(was)
    return torch.cat([x, x_adv], dim=0), torch.cat([y, y], dim=0)


CORRECT_STYLES = {
    "fgsm-backward": ("probe_fgsm", fgsm_backward),
    "fgsm-where-min-max": ("probe_fgsm", fgsm_min_max),
    "pgd-delta": ("probe_pgd", pgd_delta),
    "pgd-torchattacks-style": ("probe_pgd", pgd_torchattacks_style),
    "pgd-rand-like-start": ("probe_pgd", pgd_rand_like_start),
    "accuracy-inference-mode-tensor": ("probe_accuracy_under_attack", accuracy_inference_mode),
    "accuracy-no-grad-helper": ("probe_accuracy_under_attack", accuracy_with_helper),
    "accuracy-numpy": ("probe_accuracy_under_attack", accuracy_numpy),
    "fgsm-loss-one-forward": ("probe_fgsm_loss", fgsm_loss_cat),
    "fgsm-loss-lerp": ("probe_fgsm_loss", fgsm_loss_lerp),
    "adversarial-batch-adversarial-first": ("probe_adversarial_batch", adversarial_batch_adv_first),
    "adversarial-batch-stack": ("probe_adversarial_batch", adversarial_batch_stack),
    "adversarial-batch-enable-grad": ("probe_adversarial_batch", adversarial_batch_enable_grad),
}
CHECKS = sorted(n for n in probing.checks_of(checks) if n.startswith("probe_"))
CORRECT = {name: {"reference": getattr(checks, name).reference} for name in CHECKS}
for _style, (_check, _answer) in CORRECT_STYLES.items():
    CORRECT[_check][_style] = _answer


@pytest.mark.parametrize("name", CHECKS)
def test_checks_accept_correct_answers_in_other_styles(name):
    for style in CORRECT[name].values():
        getattr(checks, name)(style)


# --- the typical mistakes (and a few more)


def fgsm_variant(*, direction=1.0, use_sign=True, clamp=True, eval_mode=True, restore=True, detach=True):
    def attack(model, loss_fn, x, y, eps):
        was = model.training
        if eval_mode:
            model.eval()
        x_in = x.clone().detach().requires_grad_(True)
        (g,) = torch.autograd.grad(loss_fn(model(x_in), y), x_in)
        adv = (x_in if not detach else x) + direction * eps * (g.sign() if use_sign else g)
        if clamp:
            adv = adv.clamp(0, 1)
        if restore:
            model.train(was)
        return adv.detach() if detach else adv

    return attack


def pgd_variant(*, around="original", clip=None, detach=True, eval_mode=True, start="uniform"):
    def attack(model, loss_fn, x, y, eps, alpha, steps, random_start=True):
        was = model.training
        if eval_mode:
            model.eval()
        x_adv = x.clone().detach()
        if random_start and start == "uniform":
            x_adv = (x_adv + torch.empty_like(x).uniform_(-eps, eps)).clamp(0, 1)
        elif random_start and start == "normal":
            x_adv = (x_adv + eps * torch.randn_like(x)).clamp(0, 1)
        elif random_start and start == "default-device":
            x_adv = (x_adv + (2 * torch.rand(x.shape, dtype=x.dtype) - 1) * eps).clamp(0, 1)
        for _ in range(steps):
            if detach:
                x_adv = x_adv.detach()
            x_adv.requires_grad_(True)
            (g,) = torch.autograd.grad(loss_fn(model(x_adv), y), x_adv)
            previous = x_adv
            x_adv = x_adv + alpha * g.sign()
            if around == "original":
                bound = eps if clip is None else alpha
                x_adv = x + (x_adv - x).clamp(-bound, bound)
            elif around == "iterate":
                x_adv = torch.max(torch.min(x_adv, previous + eps), previous - eps)
            x_adv = x_adv.clamp(0, 1)
        model.train(was)
        return x_adv.detach() if detach else x_adv

    return attack


def accuracy_variant(*, eval_mode=True, no_grad=True, mean_of_means=False, percent=False, attack_in_no_grad=False):
    def accuracy(model, batches, attack=None):
        if eval_mode:
            model.eval()
        correct, total, per_batch = 0, 0, []
        for x, y in batches:
            if attack is not None:
                if attack_in_no_grad:
                    with torch.no_grad():
                        x = attack(model, x, y)
                else:
                    x = attack(model, x, y)
            if no_grad:
                with torch.no_grad():
                    predicted = model(x).argmax(1)
            else:
                predicted = model(x).argmax(1)
            c = int((predicted == y).sum())
            correct, total = correct + c, total + len(y)
            per_batch.append(c / len(y))
        value = sum(per_batch) / len(per_batch) if mean_of_means else correct / total
        return 100 * value if percent else value

    return accuracy


def fgsm_loss_variant(*, swap=False, eval_attack=True, detach=True, eval_loss=False, default_alpha=0.5):
    def loss(model, loss_fn, x, y, eps, alpha=default_alpha, attack=fgsm):
        was = model.training
        if eval_attack:
            model.eval()
        x_adv = attack(model, loss_fn, x, y, eps)
        if detach:
            x_adv = x_adv.detach()
        model.train(was)
        if eval_loss:
            model.eval()
        a = 1 - alpha if swap else alpha
        return a * loss_fn(model(x), y) + (1 - a) * loss_fn(model(x_adv), y)

    return loss


def adversarial_batch_variant(*, eval_mode=True, detach=True, no_grad=False, labels="cat", only_adversarial=False):
    def batch(model, x, y, attack):
        was = model.training
        if eval_mode:
            model.eval()
        if no_grad:
            with torch.no_grad():
                x_adv = attack(model, x, y)
        else:
            x_adv = attack(model, x, y)
        model.train(was)
        if detach:
            x_adv = x_adv.detach()
        if only_adversarial:
            return x_adv, y
        return torch.cat([x, x_adv]), (torch.cat([y, y]) if labels == "cat" else torch.cat([y, y.flip(0)]))

    return batch


MISTAKES = {
    "fgsm-descends-the-loss": ("probe_fgsm", fgsm_variant(direction=-1.0), "against the gradient"),
    "fgsm-without-sign": ("probe_fgsm", fgsm_variant(use_sign=False), "sign of the\\s+gradient"),
    "fgsm-without-clamp": ("probe_fgsm", fgsm_variant(clamp=False), "clamp the adversarial image"),
    "fgsm-in-train-mode": ("probe_fgsm", fgsm_variant(eval_mode=False), "BatchNorm running statistics.*eval mode"),
    "fgsm-mode-not-restored": ("probe_fgsm", fgsm_variant(restore=False), "left with .* modules in eval mode"),
    "fgsm-not-detached": ("probe_fgsm", fgsm_variant(detach=False), "detached tensor"),
    "pgd-projects-around-the-iterate": ("probe_pgd", pgd_variant(around="iterate"), "ORIGINAL image"),
    "pgd-no-projection": ("probe_pgd", pgd_variant(around="nowhere"), "more than eps"),
    "pgd-clips-with-the-step-size": ("probe_pgd", pgd_variant(clip="alpha"), "not to \\[-alpha, alpha\\]"),
    "pgd-not-detached": ("probe_pgd", pgd_variant(detach=False), "Detach the iterate"),
    "pgd-in-train-mode": ("probe_pgd", pgd_variant(eval_mode=False), "ran in train mode"),
    "pgd-ignores-random-start": ("probe_pgd", pgd_variant(start="none"), "as without a random start"),
    "pgd-normal-random-start": ("probe_pgd", pgd_variant(start="normal"), "not randn"),
    "pgd-start-on-the-default-device": ("probe_pgd", pgd_variant(start="default-device"), "device"),
    "accuracy-in-train-mode": ("probe_accuracy_under_attack", accuracy_variant(eval_mode=False), "model.eval"),
    "accuracy-without-no-grad": ("probe_accuracy_under_attack", accuracy_variant(no_grad=False), "torch.no_grad"),
    "accuracy-attack-inside-no-grad": (
        "probe_accuracy_under_attack",
        accuracy_variant(attack_in_no_grad=True),
        "needs gradients",
    ),
    "accuracy-mean-of-batch-means": (
        "probe_accuracy_under_attack",
        accuracy_variant(mean_of_means=True),
        "per-batch accuracies",
    ),
    "accuracy-in-percent": ("probe_accuracy_under_attack", accuracy_variant(percent=True), "not a percentage"),
    "fgsm-loss-alpha-on-the-adversarial-term": (
        "probe_fgsm_loss",
        fgsm_loss_variant(swap=True),
        "alpha multiplies the adversarial term",
    ),
    "fgsm-loss-attack-in-train-mode": ("probe_fgsm_loss", fgsm_loss_variant(eval_attack=False), "train mode"),
    "fgsm-loss-not-detached": ("probe_fgsm_loss", fgsm_loss_variant(detach=False), "Detach the adversarial"),
    "fgsm-loss-computed-in-eval-mode": ("probe_fgsm_loss", fgsm_loss_variant(eval_loss=True), "in eval mode"),
    "fgsm-loss-wrong-default": ("probe_fgsm_loss", fgsm_loss_variant(default_alpha=0.3), "default(s|) to 0.5"),
    "adversarial-batch-in-train-mode": (
        "probe_adversarial_batch",
        adversarial_batch_variant(eval_mode=False),
        "train mode",
    ),
    "adversarial-batch-not-detached": (
        "probe_adversarial_batch",
        adversarial_batch_variant(detach=False),
        "Detach the adversarial",
    ),
    "adversarial-batch-attack-in-no-grad": (
        "probe_adversarial_batch",
        adversarial_batch_variant(no_grad=True),
        "needs gradients",
    ),
    "adversarial-batch-labels-misaligned": (
        "probe_adversarial_batch",
        adversarial_batch_variant(labels="flip"),
        "line up",
    ),
    "adversarial-batch-replaces-the-batch": (
        "probe_adversarial_batch",
        adversarial_batch_variant(only_adversarial=True),
        "expected shape",
    ),
}


def fgsm_on_the_callers_x(model, loss_fn, x, y, eps):
    """Differentiates the caller's x itself: its requires_grad and .grad change."""
    was = model.training
    model.eval()
    x.requires_grad_(True)
    loss_fn(model(x), y).backward()
    adv = (x + eps * x.grad.sign()).clamp(0, 1).detach()
    model.train(was)
    return adv


MISTAKES["fgsm-on-the-callers-x"] = ("probe_fgsm", fgsm_on_the_callers_x, "changed what it was given")
WRONG: dict[str, dict] = {name: {} for name in CHECKS}
for _name, (_check, _answer, _pattern) in MISTAKES.items():
    WRONG[_check][_name] = (_answer, _pattern)


def test_every_check_has_correct_styles_and_wrong_answers():
    assert all(len(CORRECT[name]) > 1 and WRONG[name] for name in CHECKS)
    assert len(CORRECT_STYLES) >= 5


@pytest.mark.parametrize("name", sorted(MISTAKES))
def test_checks_reject_typical_mistakes_with_a_hint(name):
    check, wrong, hint = MISTAKES[name]
    with pytest.raises(probing.Failed, match=hint):
        getattr(checks, check)(wrong)


@pytest.mark.slow
@pytest.mark.parametrize("name", CHECKS)
def test_verdicts_do_not_depend_on_the_seed(name):
    assert_stable(probing.checks_of(checks)[name], CORRECT[name], WRONG[name])


def test_every_condition_of_the_texts_is_drawn():
    assert coverage_gaps(checks) == {}


def test_a_crash_in_the_students_code_is_reported_with_the_call():
    def broken(model, loss_fn, x, y, eps):
        raise RuntimeError("oops")

    with pytest.raises(probing.Failed, match=r"fgsm\(model, loss_fn, x, y, eps=.*raised RuntimeError: oops"):
        checks.probe_fgsm(broken)


def test_probe_records_fit_the_payload_limit():
    payload = checks.probe_pgd.run(pgd, seed=1)
    assert payload["crash"] is None
    assert len(probing.encode(payload)) < probing.MAX_RECORD_BYTES / 100


CELLS = Notebook("adversarial", names={"CE": F.cross_entropy})


def test_the_source_solutions_pass_every_test_cell():
    assert CELLS.failing({}) == set()


@pytest.mark.parametrize("mistake", CELLS.mistakes, ids=lambda m: m.name)
def test_each_manifest_mistake_fails_exactly_its_test_cells(mistake):
    assert CELLS.failing({mistake.cell: mistake.code}) == set(mistake.fails)


def test_a_batch_that_is_not_a_pair_is_named():
    with pytest.raises(probing.Failed, match="Return a pair"):
        checks.probe_adversarial_batch(lambda model, x, y, attack: torch.cat([x, attack(model, x, y).detach()]))
