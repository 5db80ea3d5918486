"""Test-wide set-up: never reach the Hub, one torch thread per physical core, isolate caches."""

import os
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Before models trained by tests land in a throw-away folder, never in the user's cache.
os.environ["HF_STRUCTGUARD_CACHE"] = tempfile.mkdtemp(prefix="structguard-cache-")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

import psutil  # noqa: E402  (an accelerate dependency)

# One thread per physical core: on a machine whose 2 vCPUs are hyperthread siblings, two threads ran these
# small models 2-3x slower; on 2 real cores two threads are faster.
torch.set_num_threads(psutil.cpu_count(logical=False) or 1)


from hub_server import local_hub  # noqa: E402,F401  (the local HTTP Hub, a fixture for push/pull tests)
