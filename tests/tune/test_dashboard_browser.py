"""The dashboard's way in, checked in a real browser: on a Ray 2.60 head with token
authentication, the page shows the "Authentication Token Required" dialog until the token that
lt-ray's hint names is given, and the cluster view after. Headless chromium is driven over the
DevTools protocol (aiohttp's websocket client, a Ray dependency); skipped without chromium.
Screenshots land in the test's tmp folder (and in $LT_RAY_SCREENSHOTS when set)."""

from __future__ import annotations

import asyncio
import base64
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from procutil import free_port, kill_session

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [pytest.mark.ray, pytest.mark.timeout(300),
              pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed")]
TOKEN = "0123456789abcdef0123456789abcdef"
DIALOG = "Authentication Token Required"


async def _page_text_and_screenshot(debug_port: int, url: str, token: str | None,
                                    shot: Path) -> str:
    import aiohttp

    async with aiohttp.ClientSession() as http:
        pages: list = []
        for _ in range(150):
            try:
                async with http.get(f"http://127.0.0.1:{debug_port}/json") as r:
                    pages = [p for p in await r.json() if p["type"] == "page"]
            except aiohttp.ClientError:
                pass
            if pages:
                break
            await asyncio.sleep(0.2)
        ws = await http.ws_connect(pages[0]["webSocketDebuggerUrl"], max_msg_size=0)
        ids = iter(range(1, 10**6))

        async def call(method: str, **params) -> dict:
            my = next(ids)
            await ws.send_json({"id": my, "method": method, "params": params})
            while True:
                msg = await ws.receive_json()
                if msg.get("id") == my:
                    return msg.get("result", {})

        if token is not None:  # what pasting it into the dialog stores
            await call("Network.setCookie", name="ray-authentication-token", value=token,
                       domain="127.0.0.1", path="/")
        await call("Page.navigate", url=url)
        text = ""
        for _ in range(60):  # until the app has rendered the overview
            await asyncio.sleep(0.5)
            got = await call("Runtime.evaluate", expression="document.body.innerText")
            text = got.get("result", {}).get("value", "") or ""
            if (DIALOG if token is None else "Node Status") in text:
                break
        png = await call("Page.captureScreenshot", format="png")
        shot.write_bytes(base64.b64decode(png["data"]))
        return text


def _browse(url: str, token: str | None, shot: Path) -> str:
    port = free_port()
    browser = subprocess.Popen(
        [CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu",
         f"--remote-debugging-port={port}", "--remote-debugging-address=127.0.0.1",
         f"--user-data-dir={shot.parent / ('profile-' + shot.stem)}", "--window-size=1400,900",
         "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        return asyncio.run(_page_text_and_screenshot(port, url, token, shot))
    finally:
        kill_session(browser.pid)


def test_dashboard_token_hint_is_the_way_in(tmp_path):
    gcs, dash = free_port(), free_port()
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": TOKEN}
    ray_bin = str(Path(sys.executable).parent / "ray")
    head = subprocess.Popen(
        [ray_bin, "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={gcs}",
         "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}", "--num-cpus=1",
         "--include-dashboard=true", f"--temp-dir=/tmp/dash{os.getpid()}"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{dash}/"
    try:
        deadline = time.time() + 120
        while True:  # the dashboard answers (401 without the token: auth is on)
            try:
                urllib.request.urlopen(url + "api/version", timeout=2)
                pytest.fail("the dashboard answered without a token: auth is off")
            except urllib.error.HTTPError as exc:
                assert exc.code == 401
                break
            except OSError:
                assert time.time() < deadline, "the dashboard did not come up"
                time.sleep(1)
        hint = subprocess.run(  # Ray reads the auth mode once per process: a fresh one
            [sys.executable, "-c", "from lt_ray.tune.ray_runtime import dashboard_access as d; "
             "print(d())"], env=env, capture_output=True, text=True, timeout=60).stdout
        assert "$RAY_AUTH_TOKEN" in hint and "ray get-auth-token" in hint and DIALOG in hint

        shots = Path(os.environ.get("LT_RAY_SCREENSHOTS", tmp_path))
        shots.mkdir(parents=True, exist_ok=True)
        locked = _browse(url, None, shots / "dashboard-no-token.png")
        assert DIALOG in locked and "ray get-auth-token" in locked
        opened = _browse(url, TOKEN, shots / "dashboard-with-token.png")
        assert DIALOG not in opened and "Node Status" in opened and "Recent jobs" in opened
        assert (shots / "dashboard-with-token.png").stat().st_size > 10_000
    finally:
        kill_session(head.pid)
