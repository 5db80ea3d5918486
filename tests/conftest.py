"""Test-wide set-up: never reach the Hub, keep torch on the machine's two cores, isolate caches."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(autouse=True)
def _isolated_structguard_cache(tmp_path_factory, monkeypatch):
    """Before models trained by a test land in a per-session folder, not in the user's cache."""
    monkeypatch.setenv("HF_STRUCTGUARD_CACHE", str(tmp_path_factory.getbasetemp() / "structguard-cache"))


from hub_server import local_hub  # noqa: E402,F401  (the local HTTP Hub, a fixture for push/pull tests)
