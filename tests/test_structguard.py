"""StructGuard: every loss term against a hand computation, switches, anchors, and unlearning digits."""

import copy

import pytest
import torch
import torch.nn.functional as F
from _unlearning_helpers import tiny_model, tiny_problem
from sklearn.datasets import load_digits

from hf_structguard.methods import StructGuard, get_method
from hf_structguard.modeling import anchor_space_map
from hf_structguard.probes import ProbeConfig, generate_probes
from hf_structguard.trainer import UnlearningConfig, run_unlearning


def _method(tmp_path, anchors, probes, model=None, **overrides):
    args = UnlearningConfig(
        output_dir=str(tmp_path),
        method="structguard",
        importance_num_samples=8,
        per_device_train_batch_size=8,
        **overrides,
    )
    model = model or tiny_model()
    original = copy.deepcopy(model).eval().requires_grad_(False)
    method = get_method("structguard")(args, original, anchors=anchors)
    method.probes = probes
    method.forget_images = torch.zeros(6, 3, 16, 16)  # set by the trainer; only its length is read here
    method.prepare(model)
    return method, model, original


def _batches(forget_images, forget_labels, probes, n=8):
    probe_batch = {"pixel_values": probes.images[:n], "labels": probes.targets[:n], "probe_index": torch.arange(n)}
    forget_batch = {"pixel_values": forget_images, "labels": forget_labels, "index": torch.arange(len(forget_labels))}
    return probe_batch, forget_batch


def _unit(x):
    return x / x.pow(2).sum(dim=1, keepdim=True).sqrt()


def _cross_entropy_sum(logits, labels):
    return sum(torch.logsumexp(row, 0) - row[y] for row, y in zip(logits, labels.tolist()))


def _batch_norm_train(x, bn):
    mean = x.mean(0)
    var = ((x - mean) ** 2).mean(0)
    return (x - mean) / torch.sqrt(var + bn.eps) * bn.weight + bn.bias


def test_every_loss_term_matches_a_hand_computation_reference_preset(tmp_path):
    forget_images, forget_labels, probes, anchors = tiny_problem(anchor_dim=32)
    method, model, original = _method(tmp_path, anchors, probes, preset="reference")
    probe_batch, forget_batch = _batches(forget_images, forget_labels, probes)
    model.train()
    terms = method.compute_loss(model, probe_batch, forget_batch, step=0)
    assert set(terms) == {"loss", "deletion", "retention", "alignment", "regularization", "classifier_reg"}

    with torch.no_grad():  # the reference: two separate train-mode forwards, deletion bypasses the projector
        f_f, f_s = model.features(forget_images), model.features(probe_batch["pixel_values"])
        W, b = model.classifier.weight, model.classifier.bias
        p = model.projector
        hidden = torch.relu(_batch_norm_train(f_s @ p.fc1.weight.T + p.fc1.bias, p.bn))
        projected = hidden @ p.fc2.weight.T + p.fc2.bias
        n = 6 + 8
        deletion = -_cross_entropy_sum(f_f @ W.T + b, forget_labels) / n
        retention = _cross_entropy_sum(projected @ W.T + b, probe_batch["labels"]) / n
        # d = 64 != d_a = 32: original features through the seeded map, unlearned read at the hidden layer
        A = anchors.embeddings
        s_ori = _unit(original.features(probe_batch["pixel_values"]) @ anchor_space_map(64, 32, 0)) @ A.T
        s_unl = _unit(hidden) @ A.T
        alignment = 1 - (_unit(s_ori) * _unit(s_unl)).sum(1).mean()
        classifier_reg = 0.99 * W.abs().sum() + 0.5 * 0.01 * (W**2).sum()
    assert terms["deletion"].item() == pytest.approx(deletion.item(), rel=1e-4)
    assert terms["retention"].item() == pytest.approx(retention.item(), rel=1e-4)
    assert terms["alignment"].item() == pytest.approx(alignment.item(), rel=1e-4, abs=1e-6)
    assert terms["regularization"].item() == 0.0  # no importance yet
    assert terms["classifier_reg"].item() == pytest.approx(classifier_reg.item(), rel=1e-5)
    total = deletion + retention + alignment + 0.001 * classifier_reg
    assert terms["loss"].item() == pytest.approx(total.item(), rel=1e-4)


def test_default_preset_terms_run_on_the_deployed_path_with_frozen_batchnorm(tmp_path):
    forget_images, forget_labels, probes, anchors = tiny_problem(anchor_dim=32)
    method, model, original = _method(tmp_path, anchors, probes)
    assert model.config.projector_residual and model.config.classify_through_projector
    probe_batch, forget_batch = _batches(forget_images, forget_labels, probes)
    with torch.no_grad():
        p = model.projector
        p.fc2.weight.normal_()  # move the projector off the identity so that the path it takes matters
    model.train()
    method.set_train_modes(model, step=0)
    buffers = {name: b.clone() for name, b in model.named_buffers()}
    terms = method.compute_loss(model, probe_batch, forget_batch, step=0)
    assert all(torch.equal(b, buffers[name]) for name, b in model.named_buffers())  # running statistics kept
    model.eval()
    with torch.no_grad():
        n = 6 + 8
        # bounded, on the deployed path h(p(g(x))): towards the nearest wrong class, only for the images still
        # recognised (per-sample stopping)
        still = recognised(model, forget_images, forget_labels)
        assert 0 < int(still.sum()) < len(forget_labels), "the tiny model should recognise some, not all"
        deletion = nearest_wrong_losses(model, forget_images, forget_labels)[still].sum() / n
        retention = _cross_entropy_sum(model(probe_batch["pixel_values"]).logits, probe_batch["labels"]) / n
        # a residual projector is read at its output through the same seeded map as the original features
        M, A = anchor_space_map(64, 32, 0), anchors.embeddings
        s_ori = _unit(original.features(probe_batch["pixel_values"]) @ M) @ A.T
        s_unl = _unit(p(model.features(probe_batch["pixel_values"])) @ M) @ A.T
        alignment = 1 - (_unit(s_ori) * _unit(s_unl)).sum(1).mean()
    assert terms["deletion"].item() == pytest.approx(deletion.item(), rel=1e-4)
    assert terms["retention"].item() == pytest.approx(retention.item(), rel=1e-4)
    assert terms["alignment"].item() == pytest.approx(alignment.item(), rel=1e-4, abs=1e-6)


def test_default_deployed_model_predicts_like_before_until_the_first_update(tmp_path):
    forget_images, forget_labels, probes, anchors = tiny_problem(anchor_dim=32)
    before = tiny_model().eval()
    model = copy.deepcopy(before)
    method, model, _ = _method(tmp_path, anchors, probes, model=model)
    model.eval()
    images = torch.cat([forget_images, probes.images])
    with torch.no_grad():
        assert torch.equal(model(images).logits.argmax(1), before(images).logits.argmax(1))
        assert torch.allclose(model(images).logits, before(images).logits, atol=1e-6)
        s_unl = method.space.model_structure(model, model.features(probes.images))
    assert torch.allclose(s_unl, method.s_ori, atol=1e-6)  # the structure starts aligned
    _, reference_model, _ = _method(
        tmp_path, anchors, probes, model=copy.deepcopy(before), preset="reference"
    )
    with torch.no_grad():  # the reference's fresh projector changes the deployed model before any update
        assert not torch.allclose(reference_model.eval()(images).logits, before(images).logits, atol=1e-3)


def test_stopping_cannot_fire_before_an_update(tmp_path):
    """A forget set the Before model already misclassifies: A_f = 0 at step 0, yet training only stops after
    its first optimisation step, and the model that stops has been updated."""
    forget_images, forget_labels, probes, anchors = tiny_problem(anchor_dim=32)
    before = tiny_model().eval()
    with torch.no_grad():
        wrong = (before(forget_images).logits.argmax(1) + 1) % before.config.num_labels
    model, info = run_unlearning(
        copy.deepcopy(before), "structguard", forget_images, wrong, probes, anchors=anchors, output_dir=str(tmp_path),
        per_device_train_batch_size=8, importance_num_samples=8, disable_tqdm=True,
    )  # fmt: skip
    # the first step pushes nothing (per-sample stopping: every image is already misclassified), so retention
    # may bring one back for a step; stopping still waits for an update
    assert info["stopped_at_zero"] and info["stopped_step"] == info["steps"] >= 1
    changed = any(not torch.equal(a, b) for a, b in zip(model.backbone.parameters(), before.backbone.parameters()))
    assert changed


def test_regulariser_is_off_before_importance_and_on_after(tmp_path):
    forget_images, forget_labels, probes, anchors = tiny_problem()
    method, model, original = _method(tmp_path, anchors, probes)
    method.on_step_begin(model, 0, None)
    assert method.importance is None
    method.on_step_begin(model, 1, None)  # the second optimisation step
    assert set(method.importance) == {name for name, _ in model.backbone_parameters()}
    with torch.no_grad():
        for _, param in model.backbone_parameters():
            param.add_(0.01)
    model.train()
    terms = method.compute_loss(model, *_batches(forget_images, forget_labels, probes), step=1)
    reference = dict(original.named_parameters())
    expected = 0.5 * sum(
        (method.importance[name] * (param - reference[name]) ** 2).sum() for name, param in model.backbone_parameters()
    )
    assert terms["regularization"].item() > 0
    assert terms["regularization"].item() == pytest.approx(expected.item(), rel=1e-5)
    state = method.state_dict()
    importance_keys = {f"importance.{name}" for name, _ in model.backbone_parameters()}
    assert set(state) == importance_keys | {"deletion_weights"}  # both are restored on resume
    fresh, _, _ = _method(tmp_path, anchors, probes)
    fresh.load_state_dict(state)
    assert all(torch.equal(fresh.importance[k], method.importance[k]) for k in method.importance)
    assert torch.equal(fresh.deletion_weights, method.deletion_weights)


def test_projector_path_when_feature_and_anchor_dims_match(tmp_path):
    forget_images, forget_labels, probes, anchors = tiny_problem(anchor_dim=64)
    method, model, original = _method(tmp_path, anchors, probes)
    assert model.config.anchor_dim == 64 and model.projector.fc1.out_features == 64
    model.train()
    probe_batch, forget_batch = _batches(forget_images, forget_labels, probes)
    terms = method.compute_loss(model, probe_batch, forget_batch, step=0)
    with torch.no_grad():
        f_s = model.features(torch.cat([forget_images, probe_batch["pixel_values"]]))[6:]
        out = model.projector(f_s)  # structure read at the projector OUTPUT
        s_ori = _unit(original.features(probe_batch["pixel_values"])) @ anchors.embeddings.T
        s_unl = _unit(out) @ anchors.embeddings.T
        expected = 1 - F.cosine_similarity(s_ori, s_unl, dim=1).mean()
    assert terms["alignment"].item() == pytest.approx(expected.item(), rel=1e-4, abs=1e-6)


def test_switches_param_groups_and_seeded_projector(tmp_path):
    forget_images, forget_labels, probes, anchors = tiny_problem()
    method, model, _ = _method(
        tmp_path, anchors, probes, use_alignment=False, use_regularization=False, use_classifier_reg=False
    )
    model.train()
    terms = method.compute_loss(model, *_batches(forget_images, forget_labels, probes), step=5)
    assert set(terms) == {"loss", "deletion", "retention"}
    assert terms["loss"].item() == pytest.approx((terms["deletion"] + terms["retention"]).item())
    method.on_step_begin(model, 1, None)
    assert method.importance is None  # SR off: no importance

    groups = method.param_groups(model)
    assert [g["lr"] for g in groups] == [0.005, 0.009]
    assert {id(p) for p in groups[1]["params"]} == {id(p) for p in model.projector.parameters()}
    assert len(groups[0]["params"]) + len(groups[1]["params"]) == len(list(model.parameters()))

    _, again, _ = _method(tmp_path, anchors, probes)
    _, other, _ = _method(tmp_path, anchors, probes, projector_seed=7)
    assert torch.equal(model.projector.fc1.weight, again.projector.fc1.weight)
    assert not torch.equal(model.projector.fc1.weight, other.projector.fc1.weight)


def test_alignment_measure_and_axis_options_are_used(tmp_path):
    forget_images, forget_labels, probes, anchors = tiny_problem()
    values = {}
    for measure in ("cosine", "mse", "kl", "mmd", "wasserstein"):
        method, model, _ = _method(tmp_path, anchors, probes, alignment_measure=measure)
        model.train()
        values[measure] = method.compute_loss(model, *_batches(forget_images, forget_labels, probes), 0)["alignment"]
        assert torch.isfinite(values[measure]) and values[measure] >= 0
    assert len({round(v.item(), 6) for v in values.values()}) == 5
    method, model, _ = _method(tmp_path, anchors, probes, alignment_axis="column")
    model.train()
    column = method.compute_loss(model, *_batches(forget_images, forget_labels, probes), 0)["alignment"]
    assert column.item() != pytest.approx(values["cosine"].item())


def test_visual_prototype_anchors(tmp_path):
    _, _, probes, anchors = tiny_problem(anchor_dim=32)
    method, model, original = _method(tmp_path, None, probes, anchor_type="visual")
    with torch.no_grad():
        features = original.features(probes.images)
    means = torch.stack([features[probes.targets == c].mean(0) for c in range(4)])
    assert torch.allclose(method.anchor_matrix(), _unit(means), atol=1e-5)
    assert model.config.anchor_dim == 64

    mapped, model, _ = _method(tmp_path, anchors, probes, anchor_type="visual")  # anchor space of the AnchorSet
    assert torch.allclose(mapped.anchor_matrix(), _unit(means @ anchor_space_map(64, 32, 0)), atol=1e-5)
    assert model.config.anchor_dim == 32


def test_semantic_anchors_are_required(tmp_path):
    _, _, probes, _ = tiny_problem()
    with pytest.raises(ValueError, match="needs anchors"):
        _method(tmp_path, None, probes)
    assert get_method("structguard") is StructGuard


@pytest.fixture(scope="module")
def digits_problem():
    """A tiny classifier trained for two epochs on 600 sklearn digits (16×16 RGB), 4 forget images, probes."""
    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32).div(16).unsqueeze(1)
    x = F.interpolate(x, size=16, mode="bilinear", align_corners=False).clamp(0, 1).repeat(1, 3, 1, 1)
    y = torch.tensor(digits.target)
    model = tiny_model(num_labels=10)
    optimizer = torch.optim.Adam(model.parameters(), 3e-3)
    generator = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(2):
        for rows in torch.randperm(600, generator=generator).split(50):
            loss = F.cross_entropy(model(x[rows]).logits, y[rows])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model.eval()
    with torch.no_grad():
        correct = torch.nonzero(model(x[:50]).logits.argmax(1) == y[:50]).flatten()[:4]
    assert len(correct) == 4, "the fixture model should classify some training digits correctly"
    forget_images, forget_labels = x[correct], y[correct]
    config = ProbeConfig(epsilon=3.0, num_steps=10, num_per_image=8)
    probes = generate_probes(model, forget_images, forget_labels, 10, config, progress=False)
    return model, forget_images, forget_labels, probes


@pytest.mark.parametrize("preset", ["default", "reference"])
def test_structguard_unlearns_digits_to_zero_forget_accuracy(digits_problem, tmp_path, preset):
    model, forget_images, forget_labels, probes = digits_problem
    model = copy.deepcopy(model)
    unlearned, info = run_unlearning(
        model,
        "structguard",
        forget_images,
        forget_labels,
        probes,
        output_dir=str(tmp_path),
        anchor_type="visual",
        per_device_train_batch_size=16,
        importance_num_samples=32,
        learning_rate=0.05,
        projector_learning_rate=0.05,
        num_train_epochs=20,
        disable_tqdm=True,
        preset=preset,
    )
    first_stop = {"default": 0, "reference": 32 // 16}[preset]  # the reference never stops during the first pass
    assert info["stopped_at_zero"] and info["forget_accuracy"] == 0.0
    assert info["stopped_step"] == info["steps"] > first_stop
    with torch.no_grad():
        assert (unlearned(forget_images).logits.argmax(1) == forget_labels).sum() == 0
    assert unlearned.projector is not None and not unlearned.training
    logged = [entry for entry in info["log_history"] if "forget_acc" in entry]
    assert len(logged) == info["steps"] and logged[-1]["forget_acc"] == 0.0
    assert all("structural_drift" in entry and "alignment" in entry for entry in logged)


@pytest.mark.parametrize(
    "options",
    [{"importance_mode": "per_sample"}, {"alignment_measure": "mmd", "alignment_axis": "column"}],
)
def test_options_train_end_to_end(tmp_path, options):
    forget_images, forget_labels, probes, anchors = tiny_problem()
    _, info = run_unlearning(
        tiny_model(), "structguard", forget_images, forget_labels, probes, anchors=anchors, output_dir=str(tmp_path),
        per_device_train_batch_size=16, num_train_epochs=1, importance_num_samples=16, disable_tqdm=True, **options,
    )  # fmt: skip
    steps = [entry for entry in info["log_history"] if "regularization" in entry]
    assert info["steps"] == 3 and steps[0]["regularization"] == 0.0 and steps[-1]["regularization"] > 0


def test_presets_are_data_and_user_values_win(tmp_path):
    reference = UnlearningConfig(output_dir=str(tmp_path), method="structguard", preset="reference")
    for name, value in StructGuard.presets["reference"].items():
        assert getattr(reference, name) == value
    default = UnlearningConfig(output_dir=str(tmp_path), method="structguard", batchnorm="joint")
    assert default.batchnorm == "joint" and default.projector_init == "residual"  # the user's value wins
    assert default.probe_step_size is None  # 2.5·ε/iterations
    with pytest.raises(ValueError, match="unknown preset"):
        UnlearningConfig(output_dir=str(tmp_path), method="structguard", preset="paper")
    baseline = default.for_method("l2ul")
    assert baseline.batchnorm == "joint" and baseline.stop_check_from_epoch == 0


def test_nearest_wrong_deletion(tmp_path):
    from hf_structguard.methods.adv import weighted_deletion_retention

    logits = torch.tensor([[3.0, 1.0, 2.0], [0.0, 5.0, 1.0]])
    labels = torch.tensor([0, 2])
    probe_logits, probe_labels = torch.zeros(2, 3), torch.tensor([0, 1])
    deletion, retention = weighted_deletion_retention(logits, labels, probe_logits, probe_labels, "nearest_wrong")
    expected = F.cross_entropy(logits, torch.tensor([2, 1]), reduction="sum") / 4  # highest-scoring wrong class
    assert deletion.item() == pytest.approx(expected.item())
    ascent, _ = weighted_deletion_retention(logits, labels, probe_logits, probe_labels)
    assert ascent.item() == pytest.approx(-F.cross_entropy(logits, labels, reduction="sum").item() / 4)


def test_keep_stats_puts_the_before_running_statistics_back_after_every_step(tmp_path):
    forget_images, forget_labels, probes, anchors = tiny_problem(anchor_dim=32)
    before = tiny_model()
    model, info = run_unlearning(
        copy.deepcopy(before), "structguard", forget_images, forget_labels, probes, anchors=anchors,
        output_dir=str(tmp_path), per_device_train_batch_size=16, num_train_epochs=1, importance_num_samples=16,
        batchnorm="keep_stats", stop_at_zero_forget_accuracy=False, disable_tqdm=True,
    )  # fmt: skip
    original = dict(before.named_buffers())
    stats = [name for name, _ in model.backbone.named_buffers(prefix="backbone") if name.endswith("running_mean")]
    assert stats and all(torch.equal(dict(model.named_buffers())[n], original[n]) for n in stats)
    assert any(not torch.equal(a, b) for a, b in zip(model.backbone.parameters(), before.backbone.parameters()))


def test_deletion_weights_grow_only_for_forget_samples_still_recognised(tmp_path):
    forget_images, forget_labels, probes, anchors = tiny_problem(anchor_dim=32)
    method, model, _ = _method(tmp_path, anchors, probes, deletion_weight_growth=0.5, per_sample_stopping=False)
    model.train()
    method.set_train_modes(model, step=0)
    probe_batch, forget_batch = _batches(forget_images, forget_labels, probes)
    still = recognised(model, forget_images, forget_labels)
    assert 0 < int(still.sum()) < len(forget_labels), "the tiny model should recognise some, not all"
    model.train()
    method.set_train_modes(model, step=0)
    first = method.compute_loss(model, probe_batch, forget_batch, step=0)
    assert torch.equal(method.deletion_weights, torch.where(still, 1.5, 1.0))
    second = method.compute_loss(model, probe_batch, forget_batch, step=1)  # the same model: weights applied
    per_sample = nearest_wrong_losses(model, forget_images, forget_labels)
    total = len(forget_labels) + len(probe_batch["labels"])
    assert first["deletion"].item() == pytest.approx(per_sample.sum().item() / total, rel=1e-4)
    weighted = (per_sample * torch.where(still, 1.5, 1.0)).sum() / total
    assert second["deletion"].item() == pytest.approx(weighted.item(), rel=1e-4)
    assert torch.equal(method.deletion_weights, torch.where(still, 2.25, 1.0))


def test_per_sample_stopping_pushes_only_the_forget_samples_still_recognised(tmp_path):
    forget_images, forget_labels, probes, anchors = tiny_problem(anchor_dim=32)
    probe_batch, forget_batch = _batches(forget_images, forget_labels, probes)
    losses = {}
    for stopping in (False, True):
        method, model, _ = _method(tmp_path, anchors, probes, deletion_weight_growth=0.5, per_sample_stopping=stopping)
        model.train()
        method.set_train_modes(model, step=0)
        losses[stopping] = method.compute_loss(model, probe_batch, forget_batch, step=0)["deletion"].item()
        grown = torch.where(recognised(model, forget_images, forget_labels), 1.5, 1.0)
        assert torch.equal(method.deletion_weights, grown)  # the growth is the same with or without stopping
    still = recognised(model, forget_images, forget_labels)
    per_sample = nearest_wrong_losses(model, forget_images, forget_labels)
    assert 0 < int(still.sum()) < len(forget_labels), "the tiny model should recognise some, not all"
    total = len(forget_labels) + len(probe_batch["labels"])
    assert losses[False] == pytest.approx(per_sample.sum().item() / total, rel=1e-4)
    assert losses[True] == pytest.approx(per_sample[still].sum().item() / total, rel=1e-4)


def test_deletion_margin_keeps_pushing_samples_until_they_are_that_far_past_the_boundary(tmp_path):
    forget_images, forget_labels, probes, anchors = tiny_problem(anchor_dim=32)
    probe_batch, forget_batch = _batches(forget_images, forget_labels, probes)
    model = tiny_model()
    with torch.no_grad():
        logits = copy.deepcopy(model).eval()(forget_images).logits
    labels = forget_labels.view(-1, 1)
    past = logits.scatter(1, labels, float("-inf")).max(1).values - logits.gather(1, labels).squeeze(1)
    misclassified = past[past > 0].sort().values
    assert len(misclassified) >= 2, "the tiny model should misclassify some forget samples"
    margin = float(misclassified[:2].mean())  # between the two samples closest to the boundary
    method, model, _ = _method(tmp_path, anchors, probes, model=model, per_sample_stopping=True,
                               deletion_weight_growth=0.0, deletion_margin=margin)
    model.train()
    method.set_train_modes(model, step=0)
    deletion = method.compute_loss(model, probe_batch, forget_batch, step=0)["deletion"].item()
    per_sample = nearest_wrong_losses(model, forget_images, forget_labels)
    total = len(forget_labels) + len(probe_batch["labels"])
    pushed = past < margin  # the recognised ones and the misclassified one still within the margin
    assert 0 < int((pushed & (past > 0)).sum()) < len(misclassified)
    assert deletion == pytest.approx(per_sample[pushed].sum().item() / total, rel=1e-4)
    with pytest.raises(ValueError, match="only acts with per_sample_stopping"):
        UnlearningConfig(output_dir=str(tmp_path), method="structguard", per_sample_stopping=False, deletion_margin=1.0)


def recognised(model, images, labels):
    with torch.no_grad():
        return model.eval()(images).logits.argmax(1) == labels


def nearest_wrong_losses(model, images, labels):
    """Per-sample CE towards the highest-scoring wrong class, computed independently of the method."""
    with torch.no_grad():
        logits = model.eval()(images).logits
        wrong = logits.scatter(1, labels.view(-1, 1), float("-inf")).argmax(1)
        return F.cross_entropy(logits, wrong, reduction="none")


def test_normalised_importance_takes_lambda_one_over_learning_rate_and_refuses_an_overshooting_one(tmp_path):
    config = UnlearningConfig(
        output_dir=str(tmp_path), method="structguard", importance_normalization="max", learning_rate=0.01
    )
    assert config.regularization_weight == pytest.approx(100.0)
    assert config.for_method("structguard", learning_rate=0.05).regularization_weight == pytest.approx(20.0)
    raw = UnlearningConfig(output_dir=str(tmp_path), method="structguard", importance_normalization="none")
    assert raw.regularization_weight == 1.0  # the paper's λ on the raw importance
    with pytest.raises(ValueError, match="overshoots"):
        UnlearningConfig(
            output_dir=str(tmp_path), method="structguard", importance_normalization="max", regularization_weight=500
        )


def test_forget_ratio_alignment_scaling_weights_alignment_by_the_minibatch_forget_share(tmp_path):
    forget_images, forget_labels, probes, anchors = tiny_problem(anchor_dim=32)
    probe_batch, forget_batch = _batches(forget_images, forget_labels, probes)
    totals = {}
    for scaling in ("constant", "forget_ratio"):
        method, model, _ = _method(tmp_path, anchors, probes, alignment_weight=3.0, alignment_scaling=scaling)
        with torch.no_grad():  # move the projector so that the alignment term is not zero
            model.projector.fc2.weight.add_(0.1)
        model.train()
        method.set_train_modes(model, step=0)
        terms = method.compute_loss(model, probe_batch, forget_batch, step=0)
        assert terms["alignment"].item() > 0
        rest = terms["deletion"] + terms["retention"] + terms["regularization"]
        rest = rest + method.args.classifier_reg_weight * terms["classifier_reg"]
        totals[scaling] = ((terms["loss"] - rest) / terms["alignment"]).item()
    n_f, n_a = len(forget_batch["labels"]), len(probe_batch["labels"])
    assert n_f != n_a
    assert totals["constant"] == pytest.approx(3.0, rel=1e-4)
    assert totals["forget_ratio"] == pytest.approx(3.0 * n_f / n_a, rel=1e-4)
