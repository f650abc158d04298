"""A minimal Chrome DevTools Protocol client over aiohttp websockets, for the browser test.

Why not Playwright: its Python package pins a browser build per release and talks to Chromium
through a bundled Node.js driver; here we drive Debian's ``chromium`` directly, and aiohttp (a
runtime dependency already) speaks the protocol's JSON over a websocket in about a hundred
lines. The only protocol domains used are Target, Page, Network, Runtime and DOM.

One browser process per :class:`Browser`; :meth:`Browser.new_page` opens a tab attached in
"flattened" mode, so every command and event of the tab carries its session id over the one
browser websocket.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp

#: The flags the brief asks for, plus the ones that keep a fresh profile from phoning home.
CHROMIUM_ARGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-default-apps",
    "--disable-extensions",
    "--disable-dev-shm-usage",
    "--metrics-recording-only",
    "--password-store=basic",
    "--remote-debugging-port=0",
)

_LISTENING = re.compile(r"DevTools listening on (ws://\S+)")


class CDPError(Exception):
    """The browser answered a command with an error, or a page script threw."""


class Page:
    """One tab: send commands, read its events, evaluate scripts."""

    def __init__(self, browser: Browser, session_id: str) -> None:
        self._browser = browser
        self.session_id = session_id
        self.events: list[tuple[str, dict[str, Any]]] = []
        self._changed = asyncio.Event()

    def _event(self, method: str, params: dict[str, Any]) -> None:
        self.events.append((method, params))
        self._changed.set()

    async def send(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        return await self._browser.send(method, params, session_id=self.session_id)

    async def evaluate(self, expression: str) -> Any:
        """The value of ``expression`` (awaited if it is a promise), as JSON-able data."""
        reply = await self.send(
            "Runtime.evaluate",
            {"expression": expression, "awaitPromise": True, "returnByValue": True},
        )
        if "exceptionDetails" in reply:
            details = reply["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text")
            raise CDPError(f"script failed: {text}")
        return reply["result"].get("value")

    async def wait_for(self, expression: str, *, timeout: float = 20.0) -> Any:
        """Poll ``expression`` until it is truthy; return its value."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            value = await self.evaluate(expression)
            if value:
                return value
            if loop.time() > deadline:
                raise TimeoutError(f"timed out waiting for {expression}")
            await asyncio.sleep(0.05)

    async def wait_event(
        self,
        method: str,
        predicate: Callable[[dict[str, Any]], bool] = lambda _: True,
        *,
        timeout: float = 20.0,
        start: int = 0,
    ) -> dict[str, Any]:
        """The first event ``method`` at or after position ``start`` that matches."""
        async with asyncio.timeout(timeout):
            seen = start
            while True:
                for name, params in self.events[seen:]:
                    if name == method and predicate(params):
                        return params
                seen = len(self.events)
                self._changed.clear()
                await self._changed.wait()

    async def navigate(self, url: str) -> None:
        mark = len(self.events)
        reply = await self.send("Page.navigate", {"url": url})
        if reply.get("errorText"):
            raise CDPError(f"navigation to {url} failed: {reply['errorText']}")
        await self.wait_event("Page.loadEventFired", start=mark)

    async def set_files(self, selector: str, paths: list[Path]) -> None:
        """Choose ``paths`` in the file input ``selector``, as a user would (fires change)."""
        reply = await self.send(
            "Runtime.evaluate",
            {"expression": f"document.querySelector({json.dumps(selector)})"},
        )
        object_id = reply["result"].get("objectId")
        if object_id is None:
            raise CDPError(f"no element {selector}")
        await self.send(
            "DOM.setFileInputFiles",
            {"files": [str(p) for p in paths], "objectId": object_id},
        )


class Browser:
    """A headless Chromium process and its DevTools websocket."""

    def __init__(self) -> None:
        self._proc: asyncio.subprocess.Process | None = None
        self._http: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._pages: dict[str, Page] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self.stderr: list[str] = []

    @classmethod
    async def launch(cls, executable: str, profile_dir: Path) -> Browser:
        self = cls()
        self._proc = await asyncio.create_subprocess_exec(
            executable,
            *CHROMIUM_ARGS,
            f"--user-data-dir={profile_dir}",
            "about:blank",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        assert self._proc.stderr is not None
        url = None
        async with asyncio.timeout(60):
            while url is None:
                line = await self._proc.stderr.readline()
                if not line:
                    raise CDPError("chromium exited: " + " | ".join(self.stderr[-10:]))
                text = line.decode("utf-8", "replace").rstrip()
                self.stderr.append(text)
                match = _LISTENING.search(text)
                if match:
                    url = match.group(1)
        self._tasks.append(asyncio.create_task(self._drain_stderr()))
        self._http = aiohttp.ClientSession()
        self._ws = await self._http.ws_connect(url, max_msg_size=0)
        self._tasks.append(asyncio.create_task(self._read()))
        return self

    async def _drain_stderr(self) -> None:
        assert self._proc is not None and self._proc.stderr is not None
        while line := await self._proc.stderr.readline():
            self.stderr.append(line.decode("utf-8", "replace").rstrip())

    async def _read(self) -> None:
        assert self._ws is not None
        async for message in self._ws:
            if message.type != aiohttp.WSMsgType.TEXT:
                continue
            data = json.loads(message.data)
            if "id" in data:
                future = self._pending.pop(data["id"], None)
                if future is not None and not future.done():
                    future.set_result(data)
            elif "method" in data:
                page = self._pages.get(data.get("sessionId", ""))
                if page is not None:
                    page._event(data["method"], data.get("params", {}))
        for future in self._pending.values():
            if not future.done():
                future.set_exception(CDPError("browser connection closed"))

    async def send(
        self, method: str, params: dict[str, Any] | None = None, *, session_id: str | None = None
    ) -> dict[str, Any]:
        assert self._ws is not None
        ident = next(self._ids)
        message: dict[str, Any] = {"id": ident, "method": method, "params": params or {}}
        if session_id is not None:
            message["sessionId"] = session_id
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[ident] = future
        await self._ws.send_str(json.dumps(message))
        async with asyncio.timeout(30):
            reply = await future
        if "error" in reply:
            raise CDPError(f"{method}: {reply['error'].get('message')}")
        result: dict[str, Any] = reply.get("result", {})
        return result

    async def new_page(self) -> Page:
        target = await self.send("Target.createTarget", {"url": "about:blank"})
        attached = await self.send(
            "Target.attachToTarget", {"targetId": target["targetId"], "flatten": True}
        )
        page = Page(self, attached["sessionId"])
        self._pages[page.session_id] = page
        for domain in ("Page", "Network", "Runtime", "Log"):
            await page.send(f"{domain}.enable")
        return page

    async def close(self) -> None:
        if self._ws is not None and not self._ws.closed:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.send("Browser.close"), 5)
            await self._ws.close()
        if self._http is not None:
            await self._http.close()
        if self._proc is not None:
            try:
                await asyncio.wait_for(self._proc.wait(), 10)
            except TimeoutError:
                self._proc.kill()  # our own child, by its handle
                await self._proc.wait()
        for task in self._tasks:
            task.cancel()
