"""Baselines (docs/methods.md#methods): NegGrad, Adv, L2UL, RAWP, Fisher, Oracle on a tiny random timm model and on digits."""

import copy

import pytest
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch.utils.data import TensorDataset

from hf_structguard.methods import METHOD_REGISTRY, get_method
from hf_structguard.methods.adv import weighted_deletion_retention
from hf_structguard.methods.fisher import fisher_diagonal, fisher_noise_std
from hf_structguard.methods.l2ul import mas_importance, minmax_normalise
from hf_structguard.methods.base import BASELINE_DEFAULTS
from hf_structguard.methods.rawp import adversarial_weight_perturbation
from hf_structguard.modeling import build_model
from hf_structguard.probes import ProbeConfig, generate_probes
from hf_structguard.trainer import UnlearningConfig, run_unlearning

NUM_CLASSES = 4
BASELINES = ("neggrad", "adv", "l2ul", "rawp", "fisher", "oracle")


def tiny_model(num_classes=NUM_CLASSES, seed=0):
    torch.manual_seed(seed)
    return build_model("test_resnet", num_labels=num_classes, pretrained=False, image_size=16)


def batch(n, seed, num_classes=NUM_CLASSES):
    generator = torch.Generator().manual_seed(seed)
    return {
        "pixel_values": torch.rand(n, 3, 16, 16, generator=generator),
        "labels": torch.randint(0, num_classes, (n,), generator=generator),
    }


def hand_ce(logits, labels):
    """Mean cross-entropy written out: −mean log softmax at the label."""
    log_probs = logits - logits.exp().sum(dim=1, keepdim=True).log()
    return -log_probs[torch.arange(len(labels)), labels].mean()


def make_method(name, model, tmp_path, forget=None, **kwargs):
    args = UnlearningConfig(method=name, output_dir=str(tmp_path), **kwargs.pop("config", {}))
    original = copy.deepcopy(model).eval().requires_grad_(False)
    method = get_method(name)(args, original, **kwargs)
    if forget is not None:
        method.forget_images, method.forget_labels = forget["pixel_values"], forget["labels"]
    method.prepare(model)
    return method


@pytest.fixture
def model():
    return tiny_model().eval()  # eval mode: BatchNorm uses running statistics, so hand computations match


@pytest.fixture
def forget():
    return batch(6, seed=1)


@pytest.fixture
def probes():
    return batch(10, seed=2)


def test_registry_and_defaults(tmp_path):
    assert set(BASELINES) <= set(METHOD_REGISTRY)
    for name in BASELINES:
        args = UnlearningConfig(method=name, output_dir=str(tmp_path))
        assert (args.learning_rate, args.momentum, args.weight_decay) == (1e-3, 0.9, 1e-4)
        assert (args.probe_epsilon, args.probes_per_image) == (4.0, 20)
        assert get_method(name).defaults == BASELINE_DEFAULTS
    assert get_method("oracle").needs_retain and not get_method("adv").needs_retain


def test_weighted_deletion_retention_shares():
    forget_logits, probe_logits = torch.randn(3, 5), torch.randn(7, 5)
    forget_labels, probe_labels = torch.tensor([0, 1, 2]), torch.randint(0, 5, (7,))
    deletion, retention = weighted_deletion_retention(forget_logits, forget_labels, probe_logits, probe_labels)
    torch.testing.assert_close(deletion, -0.3 * hand_ce(forget_logits, forget_labels))
    torch.testing.assert_close(retention, 0.7 * hand_ce(probe_logits, probe_labels))


def test_neggrad_loss_and_step(model, forget, probes, tmp_path):
    method = make_method("neggrad", model, tmp_path)
    terms = method.compute_loss(model, probes, forget, step=0)
    with torch.no_grad():
        expected = -hand_ce(model(forget["pixel_values"]).logits, forget["labels"])
    torch.testing.assert_close(terms["loss"], expected)
    terms["loss"].backward()
    torch.optim.SGD(model.parameters(), lr=0.05).step()
    with torch.no_grad():
        after = hand_ce(model(forget["pixel_values"]).logits, forget["labels"])
    assert after > -expected  # one step raises the forget cross-entropy


def test_adv_loss_and_step(model, forget, probes, tmp_path):
    method = make_method("adv", model, tmp_path)
    terms = method.compute_loss(model, probes, forget, step=0)
    with torch.no_grad():
        ce_f = hand_ce(model(forget["pixel_values"]).logits, forget["labels"])
        ce_s = hand_ce(model(probes["pixel_values"]).logits, probes["labels"])
    torch.testing.assert_close(terms["deletion"], -6 / 16 * ce_f)
    torch.testing.assert_close(terms["retention"], 10 / 16 * ce_s)
    torch.testing.assert_close(terms["loss"], terms["deletion"] + terms["retention"])
    terms["loss"].backward()
    torch.optim.SGD(model.parameters(), lr=0.01).step()
    assert method.compute_loss(model, probes, forget, step=1)["loss"] < terms["loss"]


def test_mas_importance_matches_analytic_classifier_gradient(model, forget):
    omega = mas_importance(model, forget["pixel_values"], batch_size=4)  # 2 chunks
    with torch.no_grad():
        out = model(forget["pixel_values"], output_embeddings=True)
    direction = out.logits / out.logits.norm(dim=1, keepdim=True)  # d‖z‖/dz
    torch.testing.assert_close(omega["classifier.bias"], direction.mean(0).abs())
    torch.testing.assert_close(omega["classifier.weight"], (direction.T @ out.embeddings / len(direction)).abs())
    assert set(omega) == {name for name, _ in model.named_parameters()}


def test_minmax_normalise_range_and_constant_guard():
    normalised = minmax_normalise(torch.tensor([[2.0, 4.0], [3.0, 6.0]]))
    torch.testing.assert_close(normalised, torch.tensor([[0.0, 0.5], [0.25, 1.0]]))
    assert torch.equal(minmax_normalise(torch.full((3,), 7.0)), torch.zeros(3))  # max = min → Ω̂ = 0


def test_l2ul_penalty_zero_at_theta0_and_pulls_back(model, forget, probes, tmp_path):
    method = make_method("l2ul", model, tmp_path, forget=forget)
    for omega_hat in method.omega_hat.values():
        assert omega_hat.min() >= 0 and omega_hat.max() <= 1
        assert omega_hat.max() == 1 or not omega_hat.any()
    assert method.parameter_penalty(model) == 0
    adv_terms = get_method("adv").compute_loss(method, model, probes, forget, 0)
    torch.testing.assert_close(method.compute_loss(model, probes, forget, 0)["loss"], adv_terms["loss"])

    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    expected = sum(
        ((1 - method.omega_hat[n]) * (p - method.theta0[n]) ** 2).sum() / 2 for n, p in model.named_parameters()
    )
    penalty = method.parameter_penalty(model)
    torch.testing.assert_close(penalty, expected)
    penalty.backward()
    torch.optim.SGD(model.parameters(), lr=0.5).step()
    assert method.parameter_penalty(model) < penalty  # the (1 − Ω̂)-weighted distance to θ₀ shrinks


def test_rawp_gradient_at_perturbed_weights_and_weights_restored(model, forget, probes, tmp_path):
    model.train()
    method = make_method("rawp", model, tmp_path)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    # hand computation on a copy: v_l = γ‖w_l‖ g_l/‖g_l‖ for weight tensors with ≥ 2 dims
    reference = copy.deepcopy(model)
    loss = -hand_ce(reference(forget["pixel_values"]).logits, forget["labels"])
    names, params = zip(*reference.named_parameters())
    grads = dict(zip(names, torch.autograd.grad(loss, params)))
    reference.load_state_dict(state)  # undo the BatchNorm update of that forward pass
    with torch.no_grad():
        for name, p in reference.named_parameters():
            if p.ndim > 1 and grads[name].norm() > 0:  # zero-gradient layers (zero-init BN before them) stay
                p.add_(method.gamma * p.norm() * grads[name] / grads[name].norm())
    perturbed_loss = -hand_ce(reference(forget["pixel_values"]).logits, forget["labels"])
    perturbed_loss.backward()

    terms = method.compute_loss(model, probes, forget, step=0)
    torch.testing.assert_close(terms["loss"], perturbed_loss)
    for name, p in model.named_parameters():
        assert torch.equal(p, state[name])  # weights untouched by the perturbation
    for buffer, ref in zip(model.buffers(), reference.buffers()):
        torch.testing.assert_close(buffer, ref)  # running stats: only the perturbed pass updated them
    terms["loss"].backward()
    for (name, p), ref in zip(model.named_parameters(), reference.parameters()):
        torch.testing.assert_close(p.grad, ref.grad, msg=name)
    torch.optim.SGD(model.parameters(), lr=0.1).step()
    for name, p in model.named_parameters():
        torch.testing.assert_close(p, state[name] - 0.1 * reference.get_parameter(name).grad)


def test_rawp_perturbation_is_layerwise_relative(model, forget):
    perturbation = adversarial_weight_perturbation(model, forget, gamma=5e-3)
    weights = dict(model.named_parameters())
    assert perturbation and all(weights[name].ndim > 1 for name in perturbation)
    for name, v in perturbation.items():
        expected = 5e-3 * weights[name].norm() if v.any() else torch.tensor(0.0)
        torch.testing.assert_close(v.norm(), expected, msg=name)


def test_fisher_diagonal_matches_analytic_bias_fisher(model, forget):
    fisher = fisher_diagonal(model, forget["pixel_values"][:3])
    with torch.no_grad():
        probs = model(forget["pixel_values"][:3]).logits.softmax(dim=1)
    # ∂ log p_c/∂b = e_c − p, so Σ_c p_c (e_c − p)_j² = p_j (1 − p_j)
    torch.testing.assert_close(fisher["classifier.bias"], (probs * (1 - probs)).mean(0))
    assert all((value >= 0).all() for value in fisher.values())


def test_fisher_noise_scales_inversely_and_is_seeded(model, forget, tmp_path):
    std = fisher_noise_std(torch.tensor([1e-6, 1e-3, 1e-2, 1.0, 16.0]), alpha=0.1, max_inverse_fisher=1e3)
    torch.testing.assert_close(std, 0.1 * torch.tensor([1e-3, 1e-3, 1e-2, 1.0, 16.0]).pow(-0.25))
    assert (std[1:].diff() < 0).all()

    original = {n: p.detach().clone() for n, p in model.named_parameters()}
    fisher = fisher_diagonal(model, forget["pixel_values"])
    scrubbed = []
    for seed in (0, 0, 1):
        noisy = copy.deepcopy(model)
        method = make_method("fisher", noisy, tmp_path, forget=forget, config={"seed": seed})
        scrubbed.append({n: p.detach().clone() for n, p in noisy.named_parameters()})
    for n in original:  # same seed, same noise (up to float noise of CPU backward passes in the Fisher)
        torch.testing.assert_close(scrubbed[0][n], scrubbed[1][n], rtol=1e-6, atol=1e-7)
    assert not torch.equal(scrubbed[0]["classifier.weight"], scrubbed[2]["classifier.weight"])
    # standardised noise ~ N(0, 1); where Fisher is larger the noise is smaller
    noise = torch.cat([(scrubbed[0][n] - original[n]).flatten() for n in original])
    stds = torch.cat([fisher_noise_std(fisher[n], method.alpha, method.max_inverse_fisher).flatten() for n in original])
    z = noise / stds
    assert abs(z.mean()) < 0.05 and abs(z.std() - 1) < 0.05
    high = stds < stds.median()
    assert noise[high].abs().mean() < noise[~high].abs().mean()
    # the trainer step after the scrub changes nothing: zero loss, learning rate 0
    groups = method.param_groups(noisy)
    assert [group["lr"] for group in groups] == [0.0]
    assert method.compute_loss(noisy, None, None, 0)["loss"] == 0


def test_oracle_needs_retain_data(model, tmp_path):
    with pytest.raises(ValueError, match="retain"):
        make_method("oracle", model, tmp_path)
    with pytest.raises(ValueError, match="retain_dataset"):
        make_method("oracle", model, tmp_path, retain_dataset=[torch.rand(3, 3, 16, 16)])


def test_oracle_loss_and_deterministic_retain_batches(model, forget, probes, tmp_path):
    retain = batch(20, seed=3)
    pair = (retain["pixel_values"], retain["labels"])
    method = make_method("oracle", model, tmp_path, retain_dataset=pair, config={"forget_batch_size": 8})
    as_dataset = make_method(
        "oracle", model, tmp_path, retain_dataset=TensorDataset(*pair), config={"forget_batch_size": 8}
    )
    retain_batch = method.retain_batch(3)
    assert len(retain_batch["labels"]) == 8
    assert torch.equal(retain_batch["pixel_values"], method.retain_batch(3)["pixel_values"])
    assert torch.equal(retain_batch["pixel_values"], as_dataset.retain_batch(3)["pixel_values"])
    terms = method.compute_loss(model, probes, forget, step=3)
    with torch.no_grad():
        ce_r = hand_ce(model(retain_batch["pixel_values"]).logits, retain_batch["labels"])
        ce_f = hand_ce(model(forget["pixel_values"]).logits, forget["labels"])
    torch.testing.assert_close(terms["loss"], ce_r - ce_f)


# ---- end to end on digits ----


@pytest.fixture(scope="module")
def digits_setup():
    """A test_resnet trained briefly on 480 digits (16 px), 8 forget samples, 2 probes per forget image."""
    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32)[:, None] / 16.0
    images = F.interpolate(images, size=16, mode="bilinear").clamp(0, 1).repeat(1, 3, 1, 1)
    labels = torch.tensor(digits.target)
    train_x, train_y = images[:480], labels[:480]
    model = tiny_model(num_classes=10)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    generator = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(6):
        order = torch.randperm(len(train_x), generator=generator)
        for rows in order.split(32):
            optimizer.zero_grad()
            model(train_x[rows], labels=train_y[rows]).loss.backward()
            optimizer.step()
    model.eval()
    forget_x, forget_y = train_x[:8], train_y[:8]
    config = ProbeConfig(epsilon=2.0, step_size=0.3, num_steps=10, num_per_image=2)
    probes = generate_probes(model, forget_x, forget_y, 10, config, progress=False)
    return model.state_dict(), forget_x, forget_y, probes, (train_x[8:], train_y[8:])


def run(digits_setup, name, tmp_path):
    state, forget_x, forget_y, probes, retain = digits_setup
    model = tiny_model(num_classes=10)
    model.load_state_dict(state)
    with torch.no_grad():
        assert (model.eval()(forget_x).logits.argmax(1) == forget_y).float().mean() >= 0.75
    return run_unlearning(
        model,
        name,
        forget_x,
        forget_y,
        probes,
        retain_dataset=retain if name == "oracle" else None,
        output_dir=str(tmp_path),
        learning_rate=0.02,
        per_device_train_batch_size=16,
        num_train_epochs=300,  # a cap: each method stops at A_f = 0 before it (adv needs > 80 steps on 1 thread)
        stop_check_from_epoch=0,
        disable_tqdm=True,
    )


@pytest.mark.parametrize("name", ["neggrad", "adv", "l2ul", "rawp", "oracle"])
def test_baseline_reaches_zero_forget_accuracy(digits_setup, name, tmp_path):
    model, info = run(digits_setup, name, tmp_path)
    assert info["stopped_at_zero"] and info["forget_accuracy"] == 0.0
    with torch.no_grad():
        assert (model(digits_setup[1]).logits.argmax(1) == digits_setup[2]).sum() == 0
    assert "deletion" in info["log_history"][0]


def test_fisher_is_one_noise_injection(digits_setup, tmp_path):
    state, forget_x, forget_y, _, _ = digits_setup
    model, info = run(digits_setup, "fisher", tmp_path)
    assert info["steps"] == 1 and not info["stopped_at_zero"]  # one scrub, no iterations towards A_f = 0
    scrubbed = tiny_model(num_classes=10)
    scrubbed.load_state_dict(state)
    make_method("fisher", scrubbed, tmp_path, forget={"pixel_values": forget_x, "labels": forget_y})
    for (name, p), q in zip(model.named_parameters(), scrubbed.parameters()):
        torch.testing.assert_close(p, q, msg=name)  # the trainer step did not change the scrubbed weights
        assert not torch.equal(p, state[name])
    with torch.no_grad():
        accuracy = 100.0 * (model(forget_x).logits.argmax(1) == forget_y).float().mean().item()
    assert info["forget_accuracy"] == pytest.approx(accuracy)
