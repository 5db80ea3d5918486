"""The retrieval Space (spaces/structguard-retrieval): served on 127.0.0.1 and queried with gradio_client.

A tiny synthetic run folder (random test_resnet models on the digits default, a random anchor set) stands in
for the output of scripts/run.py.
"""

from __future__ import annotations

import copy
import importlib.util
import socket
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from hf_structguard.anchors import AnchorSet
from hf_structguard.data import load_image_data, select_forget_set
from hf_structguard.evaluation import write_results
from hf_structguard.modeling import StructGuardConfig, StructGuardForImageClassification

SPACE_DIR = Path(__file__).resolve().parents[1] / "spaces" / "structguard-retrieval"
GALLERY_SIZE = 120
ANCHOR_DIM = 8
METRICS = {"A_test": 91.25, "A_r": 97.5, "A_f": 0.0,
           "retrieval": {"retain": {"R@1": 93.1, "R@5": 98.2, "R@10": 99.0, "mAP": 71.4},
                         "forget": {"R@1": 12.5, "R@5": 31.25, "R@10": 50.0, "mAP": 9.87}}}


def load_app():
    """The Space's app.py as a module (it puts its own folder on sys.path for its helper module)."""
    if "structguard_space_app" not in sys.modules:
        spec = importlib.util.spec_from_file_location("structguard_space_app", SPACE_DIR / "app.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
    return sys.modules["structguard_space_app"]


def make_tiny_run(folder: Path) -> Path:
    """A run folder laid out like the pipeline's: results.json, before/, structguard/, anchors/, forget_set.json."""
    data = load_image_data(None)
    names = data.class_names
    torch.manual_seed(0)
    config = StructGuardConfig(
        backbone="test_resnet", num_labels=len(names), id2label=dict(enumerate(names)),
        label2id={n: i for i, n in enumerate(names)}, image_size=16,
    )
    before = StructGuardForImageClassification(config).eval()
    unlearned = copy.deepcopy(before)
    unlearned.add_projector(ANCHOR_DIM)  # d = 96 != d_a = 8: structure read at the projector's hidden layer
    with torch.no_grad():
        for parameter in unlearned.backbone.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    before.save_pretrained(folder / "before")
    unlearned.save_pretrained(folder / "structguard")
    AnchorSet(
        class_names=names,
        embeddings=F.normalize(torch.randn(len(names), ANCHOR_DIM), dim=1),
        descriptions=[f"digit {n}: a single closed oval loop; hollow centre; taller than it is wide; no straight "
                      "strokes; no crossing lines; thin even pen width" for n in names],  # real lengths
        metadata={"encoder": "random (test)", "join": "; ", "anchors_per_class": "single"},
    ).save(folder / "anchors")
    forget = select_forget_set(len(data.train), k=8, seed=0)
    forget.to_json(folder / "forget_set.json")
    run_config = {"data": {"dataset": None, "train_split": "train", "test_split": "test"},
                  "dataset_source": data.source, "class_names": names}
    write_results(folder / "results.json", run_config, {"k": forget.k, "mode": forget.mode},
                  {"before": {**METRICS, "A_f": 100.0}, "structguard": METRICS})
    return folder


def free_port() -> int:
    with socket.socket() as handle:
        handle.bind(("127.0.0.1", 0))
        return handle.getsockname()[1]


def launch(demo) -> str:
    """Serve ``demo`` on 127.0.0.1 in the background; returns its URL."""
    load_app().serve(demo, server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True)
    return demo.local_url


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    return make_tiny_run(tmp_path_factory.mktemp("space-run"))


@pytest.fixture(scope="module")
def served(tiny_run):
    from gradio_client import Client

    demo = load_app().build_demo(tiny_run, gallery_size=GALLERY_SIZE)
    url = launch(demo)
    try:
        yield demo, Client(url, verbose=False)
    finally:
        demo.close()


def gallery_captions(gallery) -> list[str]:
    assert len(gallery) == 5
    for item in gallery:
        assert Path(item["image"]).is_file()  # the client downloads each image
    return [item["caption"] for item in gallery]


def test_forgotten_query_returns_both_galleries(served):
    demo, client = served
    query, info, before, after, table, plot = client.predict("Forgotten", 0, None, "structguard", api_name="/query")
    assert Path(query).is_file()
    for captions in (gallery_captions(before), gallery_captions(after)):
        assert all(c.startswith("✓ same class: ") or c.endswith(" (other class)") for c in captions)
    assert "Forgotten training image" in info and "structguard predicts" in info
    assert table["headers"][:4] == ["anchor", "class", "description", "Before"]
    assert 3 <= len(table["data"]) <= 6 and table["data"][0][2].startswith("digit ")
    assert plot is not None


def test_retained_query_never_retrieves_itself(served):
    demo, client = served
    backend = demo.backend
    result = backend.query("Retained", 3, None, "structguard")
    query_row = int(backend.gallery_rows[3])
    assert len(result.galleries["before"]) == 5 == len(result.galleries["structguard"])
    # the query's own pixels are not among the results (retrieval excludes the query's gallery position)
    own = backend.data.train[query_row][backend.data.image_column].convert("RGB").tobytes()
    shown = [image for image, _ in result.galleries["before"]]
    assert all(image.resize((8, 8)).tobytes() != own for image in shown)
    assert set(result.affinities) == {"before", "structguard"} and result.affinities["before"].shape == (10,)


def test_gallery_is_embedded_once_and_queries_are_fast(served):
    backend = served[0].backend
    cached = dict(backend._gallery_embeddings)
    assert cached["before"].shape == (GALLERY_SIZE, 96)
    timings = []
    for index in range(3):  # best of three: the machine is shared
        started = time.perf_counter()
        backend.query("Retained", index, None, "structguard")
        timings.append(time.perf_counter() - started)
    assert min(timings) < 1.0
    assert all(backend._gallery_embeddings[name] is cached[name] for name in cached)


def test_upload_query(served):
    backend = served[0].backend
    from PIL import Image

    result = backend.query("Upload", None, Image.new("L", (20, 20), 128), "structguard")
    assert "Before model's prediction" in result.description
    assert all(c.startswith(("✓", "✗")) for _, c in result.galleries["structguard"])


def test_summary_metrics(served):
    _, client = served
    summary = client.predict(api_name="/summary")
    for text in ("R@1", "R@10", "mAP", "A_f", "| structguard |", "93.10", "9.87", "0.00", "100.00"):
        assert text in summary


def test_bad_query_gives_clear_error(served):
    _, client = served
    with pytest.raises(Exception, match="Image number must be in 0..7"):
        client.predict("Forgotten", 99, None, "structguard", api_name="/query")


def test_unreadable_upload_gives_clear_error(served, tmp_path):
    from gradio_client import handle_file

    _, client = served
    bad = tmp_path / "photo.png"
    bad.write_bytes(b"this is not a picture")
    with pytest.raises(Exception, match=r"Cannot read photo\.png as an image .*upload a PNG, JPEG"):
        client.predict("Upload", 0, handle_file(str(bad)), "structguard", api_name="/query")


def test_missing_model_folder_is_reported(tiny_run, tmp_path):
    from gradio_client import Client

    run = tmp_path / "run"
    run.mkdir()
    for name in ("results.json", "forget_set.json"):
        (run / name).write_bytes((tiny_run / name).read_bytes())
    (run / "before").symlink_to(tiny_run / "before")
    (run / "anchors").symlink_to(tiny_run / "anchors")
    demo = load_app().build_demo(run, gallery_size=GALLERY_SIZE)  # no structguard/ folder
    assert f"Cannot load the unlearned (structguard) model from {run / 'structguard'}" in demo.backend.status_markdown()
    url = launch(demo)
    try:
        client = Client(url, verbose=False)
        with pytest.raises(Exception, match=r"Cannot load the unlearned \(structguard\) model.*does not exist"):
            client.predict("Forgotten", 0, None, "structguard", api_name="/query")
    finally:
        demo.close()


def test_missing_run_folder_and_dataset_are_reported(tmp_path):
    backend = load_app().build_demo(tmp_path / "nowhere").backend
    assert "Run folder" in backend.problems[0] and "scripts/run.py" in backend.problems[0]
    with pytest.raises(ValueError, match="Cannot load the Before model"):
        backend.query("Retained", 0, None, "unlearned")
    backend = load_app().build_demo(None, before_model="a", unlearned_model="b", dataset=str(tmp_path / "no-data")).backend
    assert any(p.startswith(f"Cannot load the dataset {tmp_path / 'no-data'}") for p in backend.problems)
