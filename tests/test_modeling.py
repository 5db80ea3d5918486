"""Tests of hf_structguard.modeling: config, model, projector, save/load round trips and build_model."""

import json

import pytest
import safetensors.torch
import timm
import torch
from datasets import Dataset
from timm.models import save_for_hf
from transformers import AutoConfig, AutoModelForImageClassification, Trainer, TrainingArguments

from hf_structguard.modeling import (
    Projector,
    StructGuardConfig,
    StructGuardForImageClassification,
    StructGuardOutput,
    anchor_space_map,
    build_model,
)

MEAN, STD = [0.5, 0.4, 0.3], [0.2, 0.25, 0.3]
NAMES = ["ant", "bee", "cow"]
TINY_RESNET18 = {"layers": [1, 1, 1, 1], "channels": [8, 16, 32, 64]}  # resnet18's single-conv stem, few weights


def small_config(**kwargs):
    kwargs.setdefault("backbone", "test_resnet")
    return StructGuardConfig(num_labels=3, image_size=32, mean=MEAN, std=STD, **kwargs)


def images(n=4, seed=0):
    return torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def save_timm_checkpoint(folder, arch="test_resnet", num_classes=3, cifar_stem=False, safe=True, **kwargs):
    """A tiny random timm classifier saved in timm's Hub layout; returns the timm model (eval mode)."""
    torch.manual_seed(0)
    model = timm.create_model(arch, pretrained=False, num_classes=num_classes, **kwargs)
    if cifar_stem:
        model.conv1 = torch.nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        model.maxpool = torch.nn.Identity()
    save_for_hf(model, folder, model_config={"label_names": NAMES[:num_classes]},
                data_config={"input_size": (3, 32, 32), "mean": MEAN, "std": STD}, safe_serialization=safe)
    return model.eval()


def normalise(x):
    return (x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)


def test_config_defaults_and_validation():
    config = StructGuardConfig(num_labels=10)
    assert config.model_type == "structguard" and config.backbone == "resnet18" and config.image_size == 32
    assert len(config.mean) == 3 and config.projector_dim is None and config.classify_through_projector
    assert isinstance(AutoConfig.for_model("structguard"), StructGuardConfig)
    with pytest.raises(ValueError, match="mean and std"):
        StructGuardConfig(mean=[0.5])
    with pytest.raises(ValueError, match="projector_dim"):
        StructGuardConfig(projector_dim=8)


def test_forward_shapes_embeddings_and_loss():
    model = StructGuardForImageClassification(small_config()).eval()
    x = images()
    out = model(x)
    assert isinstance(out, StructGuardOutput)
    assert out.logits.shape == (4, 3) and out.loss is None and out.embeddings is None
    out = model(x, labels=torch.tensor([0, 1, 2, 0]), output_embeddings=True)
    assert out.embeddings.shape == (4, model.config.num_features)
    assert torch.allclose(out.loss, torch.nn.functional.cross_entropy(out.logits, torch.tensor([0, 1, 2, 0])))
    assert torch.allclose(out.embeddings, model.features(x))
    assert torch.allclose(out.logits, model.classifier(out.embeddings), atol=1e-6)
    assert [n for n, _ in model.backbone_parameters()] == [n for n, _ in model.named_parameters() if n.startswith("backbone.")]


def test_fresh_model_keeps_timm_initialisation():
    torch.manual_seed(0)
    model = StructGuardForImageClassification(small_config())
    torch.manual_seed(0)
    reference = timm.create_model("test_resnet", pretrained=False, num_classes=0)
    for (name, a), b in zip(model.backbone.state_dict().items(), reference.state_dict().values()):
        assert torch.equal(a, b), name


def test_projector_paths_and_add_projector(tmp_path):
    model = StructGuardForImageClassification(small_config())
    with pytest.raises(ValueError, match="no projector"):
        model(images(), use_projector=True)
    d = model.config.num_features
    with pytest.raises(ValueError, match="hidden_dim must equal"):
        model.add_projector(anchor_dim=16, hidden_dim=8)
    model.add_projector(anchor_dim=16)
    assert (model.config.projector_dim, model.config.anchor_dim) == (16, 16)
    assert isinstance(model.projector, Projector)
    model.eval()
    x = images()
    z = model.features(x)
    out, hidden = model.projector(z, return_hidden=True)
    assert out.shape == (4, d) and hidden.shape == (4, 16) and (hidden >= 0).all()
    through = model(x).logits
    assert torch.allclose(through, model.classifier(out), atol=1e-6)
    assert torch.allclose(model(x, use_projector=False).logits, model.classifier(z), atol=1e-6)
    model.config.classify_through_projector = False
    assert torch.allclose(model(x).logits, model.classifier(z), atol=1e-6)
    model.config.classify_through_projector = True

    model.save_pretrained(tmp_path)
    reloaded = AutoModelForImageClassification.from_pretrained(tmp_path)
    assert isinstance(reloaded, StructGuardForImageClassification) and reloaded.projector is not None
    assert reloaded.config.projector_dim == 16 and reloaded.config.anchor_dim == 16
    assert torch.equal(reloaded(x).logits, through)


@pytest.mark.parametrize("backbone,kwargs,cifar_stem", [("test_resnet", {}, False), ("resnet18", TINY_RESNET18, True)])
def test_save_pretrained_round_trip(tmp_path, backbone, kwargs, cifar_stem):
    config = small_config(backbone=backbone, backbone_kwargs=kwargs, cifar_stem=cifar_stem)
    model = StructGuardForImageClassification(config)
    model.train()
    model(images(8))  # move BatchNorm statistics away from their initial values
    model.eval()
    if cifar_stem:
        assert model.backbone.conv1.kernel_size == (3, 3) and model.backbone.conv1.stride == (1, 1)
        assert isinstance(model.backbone.maxpool, torch.nn.Identity)
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists()
    reloaded = StructGuardForImageClassification.from_pretrained(tmp_path)
    assert reloaded.config.cifar_stem == cifar_stem
    # aligned memory, not views at odd offsets of the file: kernels then sum in the saved model's order
    assert all(t.data_ptr() % 64 == 0 for t in (*reloaded.parameters(), *reloaded.buffers()))
    x = images()
    assert torch.equal(reloaded(x).logits, model(x).logits)
    for name, tensor in model.state_dict().items():
        assert torch.equal(reloaded.state_dict()[name], tensor), name
    assert torch.equal(build_model(str(tmp_path))(x).logits, model(x).logits)


def test_build_from_timm_checkpoint_keeps_classifier(tmp_path):
    timm_model = save_timm_checkpoint(tmp_path / "ckpt")
    model = build_model(f"local-dir:{tmp_path / 'ckpt'}", num_labels=3)
    assert not model.training
    assert model.config.backbone == "test_resnet" and model.config.image_size == 32
    assert model.config.mean == pytest.approx(MEAN) and model.config.std == pytest.approx(STD)
    assert [model.config.id2label[i] for i in range(3)] == NAMES
    x = images()
    with torch.no_grad():
        assert torch.allclose(model(x).logits, timm_model(normalise(x)), atol=1e-5)


def test_build_from_timm_name_random_init():
    model = build_model("test_resnet", num_labels=3, class_names=NAMES, image_size=32, pretrained=False)
    assert model.config.num_labels == 3 and model.config.id2label[1] == "bee" and model.config.image_size == 32
    assert model(images()).logits.shape == (4, 3)
    with pytest.raises(ValueError, match="num_labels=2 but 3 class_names"):
        build_model("test_resnet", num_labels=2, class_names=NAMES, pretrained=False)
    with pytest.raises(ValueError, match="neither a folder"):
        build_model("not_a_timm_model_xyz", pretrained=False)


def test_class_count_mismatch(tmp_path):
    save_timm_checkpoint(tmp_path / "ckpt")
    with pytest.raises(ValueError, match="has 3 classes but the dataset has 10"):
        build_model(f"local-dir:{tmp_path / 'ckpt'}", num_labels=10)
    StructGuardForImageClassification(small_config()).save_pretrained(tmp_path / "sg")
    with pytest.raises(ValueError, match="has 3 classes but the dataset has 5"):
        build_model(str(tmp_path / "sg"), num_labels=5)


def test_cifar_stem_checkpoint_needs_flag(tmp_path):
    timm_model = save_timm_checkpoint(tmp_path / "ckpt", arch="resnet18", cifar_stem=True, **TINY_RESNET18)
    assert "cifar" not in json.dumps(json.loads((tmp_path / "ckpt" / "config.json").read_text())).lower()
    with pytest.raises(ValueError, match=r"conv1\.weight: checkpoint \(64, 3, 3, 3\) vs model \(64, 3, 7, 7\).*cifar_stem=True"):
        build_model(f"local-dir:{tmp_path / 'ckpt'}")
    model = build_model(f"local-dir:{tmp_path / 'ckpt'}", cifar_stem=True)
    assert model.config.backbone_kwargs == {**TINY_RESNET18, "in_chans": 3, "global_pool": "avg"}
    x = images()
    with torch.no_grad():
        assert torch.allclose(model(x).logits, timm_model(normalise(x)), atol=1e-5)
    model.save_pretrained(tmp_path / "sg")
    reloaded = build_model(str(tmp_path / "sg"))
    assert reloaded.config.cifar_stem and torch.equal(reloaded(x).logits, model(x).logits)
    with pytest.raises(ValueError, match="cifar_stem=True"):
        build_model(str(tmp_path / "sg"), cifar_stem=False)


def test_pickle_checkpoints_need_allow_pickle(tmp_path):
    timm_model = save_timm_checkpoint(tmp_path / "ckpt", safe=False)
    assert not list((tmp_path / "ckpt").glob("*.safetensors"))
    with pytest.raises(ValueError, match="allow_pickle=True"):
        build_model(f"local-dir:{tmp_path / 'ckpt'}")
    model = build_model(f"local-dir:{tmp_path / 'ckpt'}", allow_pickle=True)
    x = images()
    with torch.no_grad():
        assert torch.allclose(model(x).logits, timm_model(normalise(x)), atol=1e-5)

    saved = tmp_path / "sg"
    model.save_pretrained(saved)
    state = safetensors.torch.load_file(saved / "model.safetensors")
    (saved / "model.safetensors").unlink()
    torch.save(state, saved / "pytorch_model.bin")
    with pytest.raises(ValueError, match="allow_pickle=True"):
        build_model(str(saved))
    assert torch.equal(build_model(str(saved), allow_pickle=True)(x).logits, model(x).logits)


def test_anchor_space_map_is_seeded_and_normalised():
    a = anchor_space_map(64, 16, seed=3)
    assert a.shape == (64, 16) and a.dtype == torch.float32
    assert torch.allclose(a.norm(dim=0), torch.ones(16), atol=1e-6)
    assert torch.equal(a, anchor_space_map(64, 16, seed=3))
    assert not torch.equal(a, anchor_space_map(64, 16, seed=4))
    with pytest.raises(ValueError):
        anchor_space_map(0, 16)


def test_trainer_one_step(tmp_path):
    model = StructGuardForImageClassification(small_config())
    before = model.classifier.weight.detach().clone()
    data = Dataset.from_dict({"pixel_values": images(8).numpy(), "labels": [0, 1, 2, 0, 1, 2, 0, 1]})
    data = data.with_format("torch")
    args = TrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=8, max_steps=1, use_cpu=True,
                             report_to=[], save_strategy="no", learning_rate=0.1, disable_tqdm=True)
    result = Trainer(model=model, args=args, train_dataset=data).train()
    assert result.global_step == 1 and result.training_loss > 0
    assert not torch.equal(model.classifier.weight.detach().cpu(), before)
