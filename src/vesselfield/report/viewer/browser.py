"""Open a page in a real headless Chromium, offline, and measure it (tests, benchmarks, screenshots).

Driven by Playwright for Python pointed at the system's Chromium (Debian's ``chromium``
package, ``/usr/bin/chromium``); Playwright's own browser download is never used. Software
WebGL2 needs ``--use-angle=swiftshader --enable-unsafe-swiftshader`` since Chromium 144.

Every request that is not ``file:``, ``data:`` or ``blob:`` is aborted and recorded, so a page that
asks the network fails the checks.
"""

from __future__ import annotations

import os
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from vesselfield.errors import VesselfieldError

__all__ = ["CHROMIUM_FLAGS", "find_chromium", "PageCheck", "browser", "open_page", "canvas_pixels"]

CHROMIUM_FLAGS = (
    "--use-angle=swiftshader", "--enable-unsafe-swiftshader", "--no-sandbox", "--disable-gpu-sandbox",
    "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
    "--disable-quic", "--disable-dev-shm-usage",
)
LOCAL_SCHEMES = ("file:", "data:", "blob:")


def find_chromium() -> str | None:
    """The system Chromium: ``$VESSELFIELD_CHROMIUM``, ``/usr/bin/chromium``, or ``chromium`` /
    ``chromium-browser`` on the PATH; None when there is none."""
    for candidate in (os.environ.get("VESSELFIELD_CHROMIUM"), "/usr/bin/chromium"):
        if candidate and Path(candidate).is_file():
            return candidate
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return None


@dataclass
class PageCheck:
    """What opening a page showed.

    Attributes:
        console_errors: console messages of type ``error``.
        page_errors: uncaught exceptions.
        failed_requests: requests that failed (file: included).
        blocked_requests: non-local requests that were aborted.
        ready: ``window.__vfReady`` became true.
        seconds_to_ready: from navigation start to ready, s (NaN when not ready).
        viewers: ``{id: {"ok", "reason", "colorbars", "meshes", "volumes", "canvas": [w, h]}}``.
        error: ``window.__vfError`` (a caught start-up error), or None.
    """

    console_errors: list = field(default_factory=list)
    page_errors: list = field(default_factory=list)
    failed_requests: list = field(default_factory=list)
    blocked_requests: list = field(default_factory=list)
    ready: bool = False
    seconds_to_ready: float = float("nan")
    viewers: dict = field(default_factory=dict)
    error: str | None = None

    def problems(self) -> list[str]:
        """Every console error, page error, failed or blocked request and start-up error."""
        out = [f"console error: {m}" for m in self.console_errors]
        out += [f"page error: {m}" for m in self.page_errors]
        out += [f"failed request: {m}" for m in self.failed_requests]
        out += [f"network request: {m}" for m in self.blocked_requests]
        if self.error:
            out.append(f"viewer error: {self.error}")
        if not self.ready:
            out.append("the page never signalled ready")
        return out


@contextmanager
def browser(*, executable: str | None = None, width: int = 1200, height: int = 900):
    """A Playwright browser context on the system Chromium (headless, software WebGL2)."""
    from playwright.sync_api import sync_playwright

    exe = executable or find_chromium()
    if exe is None:
        raise VesselfieldError("no Chromium found (install Debian's chromium package or set VESSELFIELD_CHROMIUM)")
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=exe, headless=True, args=list(CHROMIUM_FLAGS))
        try:
            context = b.new_context(viewport={"width": width, "height": height})
            yield context
        finally:
            b.close()


_VIEWER_STATE_JS = """() => {
  const out = {};
  for (const [id, s] of Object.entries(window.__vfViewers || {})) {
    const c = document.querySelector('[data-vf-viewer="' + id + '"] canvas');
    out[id] = {ok: !!s.ok, reason: s.reason || null, colorbars: s.colorbars || [],
               meshes: (s.meshes || []).map(m => m.name), volumes: (s.volumes || []).map(v => v.name),
               canvas: c ? [c.width, c.height] : null, timings_ms: s.timings_ms || {},
               niivueColorbars: s.nv && s.nv.colormapLists ? s.nv.colormapLists.length : 0};
  }
  return out;
}"""


def open_page(context, path, *, timeout_s: float = 60.0, init_script: str | None = None):
    """Open ``path`` from ``file://`` in ``context``; returns ``(page, PageCheck)`` once the page is ready
    (or the timeout passed). Non-local requests are aborted and recorded."""
    check = PageCheck()
    page = context.new_page()
    if init_script:
        page.add_init_script(init_script)

    def route(r):
        url = r.request.url
        if url.startswith(LOCAL_SCHEMES):
            r.continue_()
        else:
            check.blocked_requests.append(url)
            r.abort()

    page.route("**/*", route)
    page.on("console", lambda m: check.console_errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: check.page_errors.append(str(e)))
    page.on("requestfailed", lambda r: check.failed_requests.append(f"{r.url} ({r.failure})")
            if r.url.startswith(LOCAL_SCHEMES) else None)
    t0 = time.perf_counter()
    page.goto(Path(path).resolve().as_uri(), wait_until="load", timeout=timeout_s * 1000)
    try:
        page.wait_for_function("window.__vfReady === true", timeout=timeout_s * 1000, polling=20)
        check.ready = True
        check.seconds_to_ready = time.perf_counter() - t0
    except Exception:  # noqa: BLE001 - a page that never gets ready is reported, not raised
        check.ready = False
    check.viewers = page.evaluate(_VIEWER_STATE_JS)
    check.error = page.evaluate("() => window.__vfError || null")
    return page, check


def canvas_pixels(page, viewer_id: str = "vf-view-1"):
    """(H, W, 3) uint8 screenshot of the viewer's canvas as shown (composited, so WebGL included)."""
    import io

    import numpy as np
    from PIL import Image

    element = page.locator(f'[data-vf-viewer="{viewer_id}"] canvas')
    png = element.screenshot()
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
