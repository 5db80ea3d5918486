"""Test-wide set-up: never reach the Hub, one torch thread, isolate caches."""

import os
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Before models trained by tests land in a throw-away folder, never in the user's cache.
os.environ["HF_STRUCTGUARD_CACHE"] = tempfile.mkdtemp(prefix="structguard-cache-")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

# One thread: on these 2-vCPU machines two threads run these small models 2-3x slower.
torch.set_num_threads(1)


from hub_server import local_hub  # noqa: E402,F401  (the local HTTP Hub, a fixture for push/pull tests)
