"""Test-wide set-up: never reach the Hub, keep torch on the machine's two cores, isolate caches."""

import os
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Before models trained by tests land in a throw-away folder, never in the user's cache.
os.environ["HF_STRUCTGUARD_CACHE"] = tempfile.mkdtemp(prefix="structguard-cache-")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

torch.set_num_threads(min(2, os.cpu_count() or 1))

import pytest  # noqa: E402


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models run far faster on one thread: two wait on each other when other processes share the cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


from hub_server import local_hub  # noqa: E402,F401  (the local HTTP Hub, a fixture for push/pull tests)
