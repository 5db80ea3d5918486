"""Tests of hf_structguard.probes: targeted L2 PGD probe generation and ProbeSet storage."""

import pytest
import torch
from torch import nn

from hf_structguard.modeling import StructGuardConfig, StructGuardForImageClassification
from hf_structguard.probes import ProbeConfig, ProbeSet, generate_probes

NUM_CLASSES = 4


def synthetic_data(n_per_class=16, size=8, seed=0):
    """Separable classes: each class brightens a different image quadrant."""
    g = torch.Generator().manual_seed(seed)
    images, labels = [], []
    for c in range(NUM_CLASSES):
        x = 0.3 + 0.1 * torch.rand(n_per_class, 3, size, size, generator=g)
        r, q = divmod(c, 2)
        x[:, :, r * size // 2:(r + 1) * size // 2, q * size // 2:(q + 1) * size // 2] += 0.4
        images.append(x)
        labels.append(torch.full((n_per_class,), c))
    return torch.cat(images), torch.cat(labels)


@pytest.fixture(scope="module")
def trained():
    """A tiny CNN trained a few steps on the synthetic data (clean accuracy 100 %)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
                          nn.Flatten(), nn.Linear(32, NUM_CLASSES))
    x, y = synthetic_data()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(60):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    model.eval()
    assert (model(x).argmax(1) == y).all()
    return model, x[::8], y[::8]


def small_config(**kwargs):
    return ProbeConfig(**{"epsilon": 1.0, "step_size": 0.1, "num_steps": 10, "num_per_image": 6, **kwargs})


def test_probes_in_ball_in_range_and_targets(trained):
    model, x, y = trained
    config = small_config(num_per_image=12, batch_size=20)
    probes = generate_probes(model, x, y, NUM_CLASSES, config, progress=False)
    n = len(x) * 12
    assert len(probes) == n and probes.images.shape == (n, *x.shape[1:])
    assert probes.targets.dtype == torch.int64 and probes.source_index.dtype == torch.int64
    assert torch.equal(probes.source_index, torch.arange(len(x)).repeat_interleave(12))
    assert torch.equal(probes.true_labels, y[probes.source_index])
    delta = probes.images - x[probes.source_index]
    assert (delta.flatten(1).norm(dim=1) <= config.epsilon + 1e-4).all()
    assert probes.images.min() >= 0 and probes.images.max() <= 1
    assert (probes.targets != probes.true_labels).all()


def test_targets_uniform_over_other_classes(trained):
    model, x, y = trained
    probes = generate_probes(model, x, y, NUM_CLASSES, small_config(num_per_image=90, num_steps=1), progress=False)
    assert (probes.targets != probes.true_labels).all()
    for i in range(len(x)):
        counts = torch.bincount(probes.targets[probes.source_index == i], minlength=NUM_CLASSES)
        others = [c for c in range(NUM_CLASSES) if c != int(y[i])]
        assert counts[int(y[i])] == 0 and (counts[others] >= 15).all(), counts


def test_same_seed_same_probes(trained):
    model, x, y = trained
    a = generate_probes(model, x, y, NUM_CLASSES, small_config(num_steps=3, batch_size=7), progress=False)
    b = generate_probes(model, x, y, NUM_CLASSES, small_config(num_steps=3, batch_size=7), progress=False)
    c = generate_probes(model, x, y, NUM_CLASSES, small_config(num_steps=3, seed=1), progress=False)
    d = generate_probes(model, x, y, NUM_CLASSES, small_config(num_steps=3, batch_size=256), progress=False)
    assert torch.equal(a.images, b.images) and torch.equal(a.targets, b.targets)
    assert not torch.equal(a.images, c.images)
    assert torch.equal(a.targets, d.targets) and torch.allclose(a.images, d.images, atol=1e-5)  # batch_size-free


def test_attack_raises_target_probability(trained):
    model, x, y = trained
    config = small_config(epsilon=3.0, num_steps=30)
    probes = generate_probes(model, x, y, NUM_CLASSES, config, progress=False)
    with torch.no_grad():
        before = model(x[probes.source_index]).softmax(1).gather(1, probes.targets[:, None])
        after = model(probes.images).softmax(1).gather(1, probes.targets[:, None])
    assert after.mean() > before.mean() + 0.3
    assert (after > before).float().mean() > 0.9


def test_model_mode_restored_and_no_parameter_grads(trained):
    model, x, y = trained
    model.train()
    try:
        generate_probes(model, x[:2], y[:2], NUM_CLASSES, small_config(num_steps=2), progress=False)
        assert model.training
        assert all(p.grad is None for p in model.parameters())
    finally:
        model.eval()


def test_structguard_model_and_save_load(tmp_path):
    model = StructGuardForImageClassification(StructGuardConfig(backbone="test_resnet", num_labels=3))
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([0, 2])
    probes = generate_probes(model, x, y, 3, small_config(num_steps=2, num_per_image=3), progress=False)
    assert len(probes) == 6 and model.training  # a fresh model is in train mode; the mode comes back
    path = tmp_path / "probes.safetensors"
    probes.save(path)
    loaded = ProbeSet.load(path)
    for key, tensor in probes.to_dict().items():
        assert torch.equal(getattr(loaded, key), tensor)
    assert loaded.config == probes.config


@pytest.mark.parametrize("kwargs", [{"epsilon": 0.0}, {"epsilon": -1.0}, {"num_per_image": 0},
                                    {"step_size": 0.0}, {"num_steps": 0}, {"batch_size": 0}])
def test_bad_config_values(kwargs):
    with pytest.raises(ValueError):
        ProbeConfig(**kwargs)


def test_bad_inputs(trained):
    model, x, y = trained
    with pytest.raises(ValueError, match="num_classes"):
        generate_probes(model, x, y, 1, small_config(), progress=False)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        generate_probes(model, x * 3, y, NUM_CLASSES, small_config(), progress=False)
    with pytest.raises(ValueError, match="forget_labels"):
        generate_probes(model, x, y[:-1], NUM_CLASSES, small_config(), progress=False)
    with pytest.raises(ValueError, match="forget_labels"):
        generate_probes(model, x, y + NUM_CLASSES, NUM_CLASSES, small_config(), progress=False)
    with pytest.raises(ValueError, match="outputs 4 classes, not 5"):
        generate_probes(model, x, y, NUM_CLASSES + 1, small_config(), progress=False)


def _probe_fields(**kwargs):
    """The probe fields of an UnlearningConfig that probes_for_config reads."""
    from types import SimpleNamespace

    fields = {"probe_epsilon": 16.0, "probe_step_size": None, "probe_num_steps": 10, "probes_per_image": 6, "seed": 0,
              "probe_min_hit_rate": 90.0}
    return SimpleNamespace(**{**fields, **kwargs})


def test_shrinking_radius_keeps_the_smallest_radius_that_still_reaches_the_target(trained):
    from hf_structguard.probes import MAX_HALVINGS, probe_config_for, probes_for_config, shrink_probe_epsilon, target_hit_rate

    model, x, y = trained
    ladder = [16.0 / 2**j for j in range(MAX_HALVINGS + 1)]
    rates = [target_hit_rate(model, generate_probes(model, x, y, NUM_CLASSES, probe_config_for(_probe_fields(), epsilon=e),
                                                    progress=False)) for e in ladder]
    assert rates[0] == 100.0 and rates[-1] < 90  # the tiny model: far probes all hit, the nearest do not
    for floor in (rates[-1] - 1, (rates[0] + rates[-1]) / 2, 100.0, 100.5):
        passing = next((j for j in range(1, len(ladder)) if rates[j] < floor), len(ladder)) - 1
        chosen = shrink_probe_epsilon(model, x, y, NUM_CLASSES, _probe_fields(probe_min_hit_rate=floor))
        assert chosen.epsilon == ladder[passing] and chosen.step_size == pytest.approx(2.5 * ladder[passing] / 10)
    cache = {}
    fixed = probes_for_config(model, x, y, NUM_CLASSES, _probe_fields(probe_min_hit_rate=0.0), cache)
    shrunk = probes_for_config(model, x, y, NUM_CLASSES, _probe_fields(probe_min_hit_rate=rates[-1] - 1), cache)
    assert fixed.config.epsilon == 16.0 and shrunk.config.epsilon == ladder[-1] and len(cache) == 2
    assert (shrunk.images - x[shrunk.source_index]).flatten(1).norm(dim=1).max() <= ladder[-1] + 1e-5
