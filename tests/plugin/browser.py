"""A real headless browser for the dashboard's test: Debian's Chromium driven over the DevTools
protocol (a websocket, aiohttp's client), with no browser download and no driver.

    with Chromium.launch(tmp_path) as b:
        b.navigate("http://127.0.0.1:8765/")
        b.evaluate("document.title")
        b.screenshot(tmp_path / "page.png")

``find_chromium()`` is None when no browser is installed (``apt-get install chromium``; ``.ci/run``
installs it).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import shutil
import signal
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp

from aicenter_testbed.waiting import wait_for

NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_chromium() -> str | None:
    """$AICENTER_CHROMIUM, else the first of chromium, chromium-browser, google-chrome on PATH."""
    explicit = os.environ.get("AICENTER_CHROMIUM")
    if explicit:
        return explicit if Path(explicit).exists() else None
    return next((p for p in map(shutil.which, NAMES) if p), None)


class BrowserError(AssertionError):
    pass


class Chromium:
    def __init__(self, proc: subprocess.Popen, port: int, log: Path) -> None:
        self.proc, self.port, self.log = proc, port, log
        self.ws_url = self._page_ws()

    @classmethod
    def launch(cls, workdir: Path, width: int = 1500, height: int = 1100, timeout: float = 60) -> Chromium:
        exe = find_chromium()
        if exe is None:
            raise BrowserError("no Chromium found")
        profile = workdir / "chromium-profile"
        profile.mkdir(parents=True, exist_ok=True)
        log = workdir / "chromium.log"
        args = [
            exe,
            "--headless=new",
            "--no-sandbox",  # root in a container: the sandbox needs user namespaces
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-extensions",
            "--disable-background-networking",
            "--hide-scrollbars",
            "--remote-debugging-address=127.0.0.1",
            "--remote-debugging-port=0",
            f"--user-data-dir={profile}",
            f"--window-size={width},{height}",
            "about:blank",
        ]
        with log.open("wb") as out:
            proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        port_file = profile / "DevToolsActivePort"

        def port() -> int | None:
            if proc.poll() is not None:
                raise BrowserError(f"chromium exited {proc.returncode}: {log.read_text()[-2000:]}")
            if port_file.exists():
                first = port_file.read_text().split("\n", 1)[0].strip()
                return int(first) if first.isdigit() else None
            return None

        try:
            p = wait_for(port, timeout, f"chromium's DevTools port (log {log})")
            return cls(proc, p, log)
        except BaseException:
            cls._end(proc)
            raise

    def __enter__(self) -> Chromium:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._end(self.proc)

    @staticmethod
    def _end(proc: subprocess.Popen) -> None:
        """End the browser we started: its process group (renderer and GPU helpers) by our pid."""
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)

    def _page_ws(self) -> str:
        def page() -> str | None:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/json/list", timeout=5) as r:
                targets = json.loads(r.read())
            return next((t["webSocketDebuggerUrl"] for t in targets if t.get("type") == "page"), None)

        return wait_for(page, 30, "a page target in chromium")

    # -- the protocol ------------------------------------------------------------------------------

    def session(self, *calls: tuple[str, dict[str, Any]], timeout: float = 60) -> list[dict[str, Any]]:
        """Send the calls in order on one connection (per-connection state such as a device-metrics
        override lasts for the calls of one session) and return their results."""

        async def go() -> list[dict[str, Any]]:
            out = []
            async with (
                aiohttp.ClientSession() as http,
                http.ws_connect(
                    self.ws_url, max_msg_size=0, timeout=aiohttp.ClientWSTimeout(ws_close=5)
                ) as ws,
            ):
                for i, (method, params) in enumerate(calls, 1):
                    await ws.send_json({"id": i, "method": method, "params": params})
                    while True:
                        msg = await ws.receive(timeout=timeout)
                        if msg.type != aiohttp.WSMsgType.TEXT:
                            raise BrowserError(f"DevTools connection: {msg.type} {msg.data!r}")
                        doc = json.loads(msg.data)
                        if doc.get("id") == i:
                            break
                    if "error" in doc:
                        raise BrowserError(f"{method}: {doc['error']}")
                    out.append(doc.get("result") or {})
            return out

        return asyncio.run(go())

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        return self.session((method, params))[0]

    def navigate(self, url: str) -> None:
        self.call("Page.navigate", url=url)

    def evaluate(self, expression: str) -> Any:
        """The expression's value (JSON-serialisable), awaited when it is a promise."""
        res = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in res:
            raise BrowserError(f"{expression[:200]}: {res['exceptionDetails']}")
        return res["result"].get("value")

    def screenshot(self, path: Path, width: int = 1500) -> Path:
        """A PNG of the whole page (not only the window), ``width`` CSS pixels wide."""
        height = int(self.evaluate("Math.ceil(document.documentElement.scrollHeight)") or 800)
        height = max(600, min(height, 12000))
        _, shot = self.session(
            (
                "Emulation.setDeviceMetricsOverride",
                {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
            ),
            ("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True}),
        )
        path.write_bytes(base64.b64decode(shot["data"]))
        return path
