"""The retrieval Space in a real browser: headless Chromium runs one query in the page, both galleries must
render five images with captions, and a screenshot is saved to test-artifacts/space.png.

Chromium is driven through the Chrome DevTools protocol over ``--remote-debugging-pipe`` (NUL-separated JSON
on file descriptors 3 and 4), so no Python browser driver is needed. Debian's ``chromium`` package is
installed with apt when missing (needs root); otherwise the test is skipped with the reason.
"""

from __future__ import annotations

import base64
import json
import os
import select
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from test_space import GALLERY_SIZE, launch, load_app, make_tiny_run

pytestmark = pytest.mark.browser

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--no-proxy-server",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage", "--hide-scrollbars", "--window-size=1280,900",
]
GALLERIES_READY = """(() => {
  const ready = id => [...document.querySelectorAll(`#${id} img`)].filter(i => i.complete && i.naturalWidth > 0).length;
  const captions = id => [...document.querySelectorAll(`#${id} .caption-label, #${id} figcaption, #${id} span`)]
      .map(e => e.textContent.trim()).filter(t => t.startsWith("✓") || t.startsWith("✗"));
  return {before: ready("before-gallery"), after: ready("after-gallery"),
          beforeCaptions: [...new Set(captions("before-gallery"))].length,
          afterCaptions: [...new Set(captions("after-gallery"))].length,
          info: document.querySelector("#query-info")?.innerText || ""};
})()"""


def chromium_executable() -> str:
    """Path of Debian's chromium, installing it with apt-get when it is missing (skip when that is impossible)."""
    found = shutil.which("chromium") or ("/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None)
    if found:
        return found
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.skip("chromium is missing and cannot be installed here (needs root and apt-get): apt-get install chromium")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update"], ["apt-get", "install", "-y", "chromium", "chromium-driver"]):
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=1200)
        if done.returncode != 0:
            pytest.skip(f"could not install chromium ({' '.join(command)} failed): {done.stderr[-500:]}")
    return shutil.which("chromium") or "/usr/bin/chromium"


class DevTools:
    """A headless Chromium controlled over the DevTools pipe; ``call`` sends one command to the page."""

    def __init__(self, executable: str, profile: Path):
        to_browser_read, self._to_browser = os.pipe()
        self._from_browser, from_browser_write = os.pipe()
        # The pipe protocol reads commands on fd 3 and writes replies on fd 4: a small Python launcher moves
        # the pipes there and execs chromium (no preexec_fn: the test process runs server threads).
        launcher = (
            "import os, sys; os.dup2(int(sys.argv[1]), 3); os.dup2(int(sys.argv[2]), 4); "
            "os.execv(sys.argv[3], sys.argv[3:])"
        )
        self.process = subprocess.Popen(
            [sys.executable, "-c", launcher, str(to_browser_read), str(from_browser_write), executable,
             *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--remote-debugging-pipe", "about:blank"],
            pass_fds=(to_browser_read, from_browser_write),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        os.close(to_browser_read)
        os.close(from_browser_write)
        self._buffer = b""
        self._next_id = 0
        self.session = None
        pages = [t for t in self.call("Target.getTargets")["targetInfos"] if t["type"] == "page"]
        target = pages[0]["targetId"] if pages else self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]

    def call(self, method: str, timeout: float = 60.0, **params) -> dict:
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params}
        if self.session:
            message["sessionId"] = self.session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._read(deadline)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method} failed: {reply['error']}")
                return reply.get("result", {})

    def _read(self, deadline: float) -> dict:
        while b"\0" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([self._from_browser], [], [], remaining)[0]:
                raise TimeoutError("chromium did not answer in time")
            chunk = os.read(self._from_browser, 1 << 20)
            if not chunk:
                raise RuntimeError(f"chromium exited (code {self.process.poll()})")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def evaluate(self, expression: str):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"page script failed: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, check, timeout: float, what: str):
        deadline = time.monotonic() + timeout
        value = None
        while time.monotonic() < deadline:
            value = self.evaluate(expression)
            if check(value):
                return value
            time.sleep(0.25)
        raise AssertionError(f"timed out waiting for {what}; last state: {value}")

    def click(self, selector: str) -> None:
        """A real mouse click (press and release) in the middle of the element."""
        box = self.evaluate(
            f"(() => {{ const e = document.querySelector({json.dumps(selector)}); e.scrollIntoView({{block: 'center'}});"
            " const r = e.getBoundingClientRect(); return {x: r.x + r.width / 2, y: r.y + r.height / 2}; })()"
        )
        for kind in ("mousePressed", "mouseReleased"):
            self.call("Input.dispatchMouseEvent", type=kind, x=box["x"], y=box["y"], button="left", clickCount=1)

    def screenshot(self, path: Path) -> None:
        """Full-page PNG screenshot."""
        height = self.evaluate("Math.ceil(document.documentElement.scrollHeight)")
        self.call("Emulation.setDeviceMetricsOverride", width=1280, height=min(int(height), 4000),
                  deviceScaleFactor=1, mobile=False)
        self.evaluate("window.scrollTo(0, 0)")
        time.sleep(0.5)
        data = self.call("Page.captureScreenshot", format="png")["data"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))

    def close(self) -> None:
        try:
            self.call("Browser.close", timeout=5)
        except (RuntimeError, TimeoutError, OSError):
            pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        os.close(self._to_browser)
        os.close(self._from_browser)


# Every column of the affinity table (header cells) lies inside the table's box and is wide enough to read: at
# 1280 px next to the plot the Before / unlearned / change columns were scrolled out of sight.
TABLE_EXTENT = (
    "(() => { const root = document.querySelector('#affinity-table'); if (!root) return null;"
    " const box = root.getBoundingClientRect();"
    " const heads = [...root.querySelectorAll('thead th')].map(th => { const r = th.getBoundingClientRect();"
    " return {text: th.innerText.trim(), right: r.right, width: r.width}; });"
    " return {right: Math.min(box.right, window.innerWidth), heads: heads,"
    " rows: root.querySelectorAll('tbody tr').length}; })()"
)


def test_query_in_headless_chromium(tmp_path):
    executable = chromium_executable()
    demo = load_app().build_demo(make_tiny_run(tmp_path / "run"), gallery_size=GALLERY_SIZE)
    url = launch(demo)
    browser = DevTools(executable, tmp_path / "profile")
    try:
        browser.call("Page.enable")
        browser.call("Page.navigate", url=url)
        browser.wait_for("!!document.querySelector('#run-query')", bool, 60, "the page to load")
        browser.click("#run-query")
        state = browser.wait_for(
            GALLERIES_READY, lambda s: s["before"] == 5 and s["after"] == 5 and s["info"], 60, "both galleries"
        )
        assert state["beforeCaptions"] >= 1 and state["afterCaptions"] >= 1, state
        assert "Forgotten training image" in state["info"]
        table = browser.wait_for(TABLE_EXTENT, lambda t: t and t["rows"] >= 1, 60, "the affinity table")
        assert [head["text"] for head in table["heads"]][-3:] == ["Before", "structguard", "change"], table
        for head in table["heads"]:
            assert head["right"] <= table["right"] + 1 and head["width"] >= 40, (head, table["right"])
        browser.screenshot(ARTIFACTS / "space.png")
    finally:
        browser.close()
        demo.close()
    assert (ARTIFACTS / "space.png").stat().st_size > 10_000
