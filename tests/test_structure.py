"""Structure S = norm(V)·Aᵀ, the anchor space, alignment measures, regularisers and importance."""

import math

import pytest
import torch
from _unlearning_helpers import tiny_model, tiny_problem
from torch import nn

from hf_structguard.modeling import anchor_space_map
from hf_structguard.structure import (
    AnchorSpace,
    alignment_loss,
    elastic_net,
    importance_penalty,
    mmd_rbf,
    normalized_importance,
    structure,
    structure_importance,
)


def _unit_rows(x):
    return x / x.pow(2).sum(dim=1, keepdim=True).sqrt()


def _pair(n=5, b=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, b, generator=g), torch.randn(n, b, generator=g)


def test_structure_is_normalised_rows_times_anchors():
    g = torch.Generator().manual_seed(0)
    vectors, anchors = torch.randn(3, 6, generator=g), _unit_rows(torch.randn(4, 6, generator=g))
    expected = torch.tensor([[float(_unit_rows(vectors)[i] @ anchors[j]) for j in range(4)] for i in range(3)])
    assert torch.allclose(structure(vectors, anchors), expected, atol=1e-6)


def test_anchor_space_identity_and_seeded_map():
    anchors = _unit_rows(torch.randn(4, 8))
    features = torch.randn(5, 8)
    same = AnchorSpace(anchors, feature_dim=8)
    assert same.feature_map is None and torch.equal(same.map_features(features), features)

    wide = torch.randn(5, 12)
    mapped = AnchorSpace(anchors, feature_dim=12, feature_map_seed=3)
    matrix = anchor_space_map(12, 8, 3)
    assert torch.allclose(mapped.map_features(wide), wide @ matrix)
    assert torch.allclose(mapped.feature_structure(wide), _unit_rows(wide @ matrix) @ anchors.T, atol=1e-6)
    with pytest.raises(ValueError, match="non-empty"):
        AnchorSpace(torch.zeros(0, 8), feature_dim=8)


def test_model_structure_reads_projector_output_or_hidden_layer():
    model = tiny_model().eval()
    x = torch.rand(3, 3, 16, 16)
    with torch.no_grad():
        features = model.features(x)
        # no projector: read from the features themselves
        same = AnchorSpace(_unit_rows(torch.randn(4, 64)), 64)
        assert torch.allclose(same.model_structure(model, features), same.feature_structure(features))
        model.add_projector(64)
        model.eval()
        out = model.projector(features)
        assert torch.allclose(same.model_structure(model, features), _unit_rows(out) @ same.anchors.T, atol=1e-6)

    model = tiny_model().eval()
    model.add_projector(32)  # d = 64 != d_a = 32: read at the hidden layer
    model.eval()
    narrow = AnchorSpace(_unit_rows(torch.randn(4, 32)), 64)
    with torch.no_grad():
        features = model.features(x)
        hidden = model.projector.act(model.projector.bn(model.projector.fc1(features)))
        assert torch.allclose(narrow.model_structure(model, features), _unit_rows(hidden) @ narrow.anchors.T, atol=1e-6)


def test_cosine_alignment_row_and_column_by_hand():
    s_ori, s_unl = _pair()

    def cos(a, b):
        return float(a @ b) / math.sqrt(float(a @ a) * float(b @ b))

    rows = 1 - sum(cos(s_ori[i], s_unl[i]) for i in range(5)) / 5
    cols = 1 - sum(cos(s_ori[:, j], s_unl[:, j]) for j in range(4)) / 4
    assert alignment_loss(s_ori, s_unl).item() == pytest.approx(rows, abs=1e-6)
    assert alignment_loss(s_ori, s_unl, axis="column").item() == pytest.approx(cols, abs=1e-6)
    assert alignment_loss(s_ori, s_ori).item() == pytest.approx(0.0, abs=1e-6)


def test_mse_kl_wasserstein_by_hand():
    s_ori, s_unl = _pair()
    mse = sum((float(a) - float(b)) ** 2 for a, b in zip(s_ori.flatten(), s_unl.flatten())) / s_ori.numel()
    assert alignment_loss(s_ori, s_unl, "mse").item() == pytest.approx(mse, rel=1e-5)

    tau = 0.5
    kl = 0.0
    for i in range(5):
        p = [math.exp(v / tau) for v in s_ori[i].tolist()]
        q = [math.exp(v / tau) for v in s_unl[i].tolist()]
        p = [v / sum(p) for v in p]
        q = [v / sum(q) for v in q]
        kl += sum(pi * math.log(pi / qi) for pi, qi in zip(p, q))
    assert alignment_loss(s_ori, s_unl, "kl", temperature=tau).item() == pytest.approx(kl / 5, rel=1e-5)

    w = sum(abs(a - b) for i in range(5) for a, b in zip(sorted(s_ori[i].tolist()), sorted(s_unl[i].tolist()))) / 20
    assert alignment_loss(s_ori, s_unl, "wasserstein").item() == pytest.approx(w, rel=1e-5)


def test_mmd_by_hand_fixed_and_median_bandwidth():
    x, y = _pair(n=4, b=3)

    def k(a, b, sigma):
        return math.exp(-float((a - b).pow(2).sum()) / (2 * sigma**2))

    def mmd(sigma):
        xx = sum(k(a, b, sigma) for a in x for b in x) / 16
        yy = sum(k(a, b, sigma) for a in y for b in y) / 16
        xy = sum(k(a, b, sigma) for a in x for b in y) / 16
        return xx + yy - 2 * xy

    assert alignment_loss(x, y, "mmd", bandwidth=0.7).item() == pytest.approx(mmd(0.7), rel=1e-4)
    points = torch.cat([x, y])
    distances = sorted(float((points[i] - points[j]).norm()) for i in range(8) for j in range(8) if i != j)
    median = torch.tensor(distances).median().item()  # torch's median: the lower middle value
    assert mmd_rbf(x, y).item() == pytest.approx(mmd(median), rel=1e-4)


def test_alignment_rejects_bad_arguments():
    s_ori, s_unl = _pair()
    with pytest.raises(ValueError, match="measure"):
        alignment_loss(s_ori, s_unl, "euclid")
    with pytest.raises(ValueError, match="axis"):
        alignment_loss(s_ori, s_unl, axis="diagonal")
    with pytest.raises(ValueError, match="shape"):
        alignment_loss(s_ori, s_unl[:2])


def test_penalties_by_hand():
    p = {"a": torch.tensor([1.0, -2.0]), "b": torch.tensor([[0.5]])}
    ref = {"a": torch.tensor([0.0, 0.0]), "b": torch.tensor([[1.5]])}
    imp = {"a": torch.tensor([2.0, 1.0]), "b": torch.tensor([[4.0]])}
    expected = 0.5 * (2 * 1 + 1 * 4 + 4 * 1)
    assert importance_penalty(p.items(), ref, imp).item() == pytest.approx(expected)
    w = torch.tensor([[1.0, -2.0], [0.0, 3.0]])
    assert elastic_net(w).item() == pytest.approx(0.99 * 6 + 0.5 * 0.01 * 14)
    assert elastic_net(w, l1_ratio=0.0).item() == pytest.approx(7.0)


@pytest.fixture
def importance_setup():
    model = tiny_model()
    model.add_projector(32)
    model.backbone.register_parameter("unreachable", nn.Parameter(torch.ones(3)))
    _, _, probes, anchors = tiny_problem(num_probes=12)
    space = AnchorSpace(anchors.embeddings, 64)
    original = tiny_model(seed=5).eval()
    with torch.no_grad():
        s_ori = space.feature_structure(original.features(probes.images))
    return model, space, probes.images, s_ori


def test_batch_importance_matches_hand_gradient_and_restores_state(importance_setup):
    model, space, images, s_ori = importance_setup
    model.eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    importance = structure_importance(
        model, space, images, s_ori, model.backbone_parameters(), alignment_loss, num_samples=12, batch_size=12
    )
    assert set(importance) == {name for name, _ in model.backbone_parameters()}
    assert "classifier.weight" not in importance and not any(k.startswith("projector") for k in importance)
    assert all((v >= 0).all() for v in importance.values())
    assert torch.count_nonzero(importance["backbone.unreachable"]) == 0
    assert importance["backbone.conv1.0.weight"].abs().sum() > 0
    assert not model.training
    for key, value in model.state_dict().items():  # BN running statistics restored
        assert torch.equal(value, before[key]), key

    # one batch holding every probe: |∇ L_align| on the whole set, BatchNorm in train mode
    model.train()
    s_unl = space.model_structure(model, model.features(images))
    loss = alignment_loss(s_ori, s_unl)
    grad = torch.autograd.grad(loss, [model.backbone.conv1[0].weight])[0]
    # the importance pass sees the probes in a permuted order: float32 sums differ by ~1e-6
    assert torch.allclose(importance["backbone.conv1.0.weight"], grad.abs(), atol=1e-5)


def test_batch_importance_weights_batches_by_size(importance_setup):
    model, space, images, s_ori = importance_setup
    # 12 probes in batches of 8: one cycle = batches of 8 and 4; num_samples=12 stops after exactly one cycle
    importance = structure_importance(
        model, space, images, s_ori, model.backbone_parameters(), alignment_loss, num_samples=12, batch_size=8, seed=3
    )
    rows = torch.randperm(12, generator=torch.Generator().manual_seed(3)).split(8)
    weight = model.backbone.conv1[0].weight
    total = torch.zeros_like(weight)
    model.train()
    for batch in rows:
        s_unl = space.model_structure(model, model.features(images[batch]))
        grad = torch.autograd.grad(alignment_loss(s_ori[batch], s_unl), [weight])[0]
        total += len(batch) * grad.abs()
    assert torch.allclose(importance["backbone.conv1.0.weight"], total / 12, atol=1e-6)


def test_per_sample_importance_is_the_mean_of_per_probe_gradients(importance_setup):
    model, space, images, s_ori = importance_setup
    images, s_ori = images[:4], s_ori[:4]
    importance = structure_importance(
        model, space, images, s_ori, model.backbone_parameters(), alignment_loss, mode="per_sample", batch_size=3
    )
    assert torch.count_nonzero(importance["backbone.unreachable"]) == 0
    assert not any(value.requires_grad for value in importance.values())  # no graph into later steps
    model.eval()
    weight = model.backbone.conv1[0].weight
    expected = torch.zeros_like(weight)
    for i in range(4):
        s_unl = space.model_structure(model, model.features(images[i : i + 1]))
        expected += torch.autograd.grad(alignment_loss(s_ori[i : i + 1], s_unl), [weight])[0].abs()
    assert torch.allclose(importance["backbone.conv1.0.weight"], expected / 4, atol=1e-5)
    with pytest.raises(ValueError, match="importance mode"):
        structure_importance(model, space, images, s_ori, model.backbone_parameters(), alignment_loss, mode="exact")


def test_max_normalised_importance_lies_in_unit_interval_and_keeps_ratios():
    importance = {"a": torch.tensor([0.5, 2.0]), "b": torch.tensor([[4.0, 0.0]])}
    scaled = normalized_importance(importance, "max")
    assert torch.equal(scaled["a"], torch.tensor([0.125, 0.5])) and torch.equal(scaled["b"], torch.tensor([[1.0, 0.0]]))
    assert normalized_importance(importance, "none") is importance
    per_tensor = normalized_importance(importance, "tensor_max")
    assert torch.equal(per_tensor["a"], torch.tensor([0.25, 1.0])) and torch.equal(per_tensor["b"], scaled["b"])
    zeros = {"a": torch.zeros(3)}
    assert torch.equal(normalized_importance(zeros, "max")["a"], zeros["a"])  # nothing to scale by
    with pytest.raises(ValueError, match="'none', 'max' or 'tensor_max'"):
        normalized_importance(importance, "mean")
