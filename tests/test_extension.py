"""The browser extension, end to end in real headless Chromium (Debian's ``chromium``) with the unpacked extension
loaded, talking to a real API and scoring worker (the embedded stack). Pages and images come from a server on
127.0.0.1; the handlers run are the ones the context menu and the popup call."""

from __future__ import annotations

import base64
import io
import json
import re
import socket
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
from PIL import Image
from playwright.sync_api import BrowserContext, Page, Worker, expect, sync_playwright
from sqlalchemy import select, update

from backend.moderation.reviews import label_image, undo_last_decision
from backend.storage.db import session_scope
from backend.storage.schema import Check, ModelVersion
from testbed.images import LocalServer, distinct_photos, photo_bytes
from testbed.provenance_files import make_authority, signed_jpeg
from testbed.stack import Stack, free_port
from tests.actors import as_user
from tests.fixtures_models import upsample_trace
from tests.fixtures_videos import make_clip

REPO = Path(__file__).resolve().parents[1]
EXTENSION_DIR = REPO / "extension"
UNPACKED = EXTENSION_DIR / "src"
ARTIFACTS = REPO / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
ADMIN_URL = "http://127.0.0.1:8501"
VERDICT_TEXT = re.compile(r"^(No AI traces|AI traces|Uncertain) \d{1,3}%$")
# More pixels than the server's 40 MP cap, so the extension has to shrink it before the check goes through.
BIG_SIZE = (7000, 6000)
SVG_DRAWING = b'<svg xmlns="http://www.w3.org/2000/svg" width="200" height="150"><rect width="200" height="150" fill="teal"/></svg>'


@dataclass
class Browser:
    context: BrowserContext
    extension_id: str

    @property
    def worker(self) -> Worker:
        """The extension's background service worker (woken by an extension event if Chromium stopped it)."""
        if not self.context.service_workers:
            page = self.context.new_page()
            page.goto(self.extension_url("options.html"))
            page.evaluate("chrome.runtime.sendMessage({type: 'wake'}).catch(() => null)")
            page.close()
        return self.context.service_workers[0] if self.context.service_workers \
            else self.context.wait_for_event("serviceworker", timeout=15_000)

    def extension_url(self, page: str) -> str:
        return f"chrome-extension://{self.extension_id}/{page}"

    def save_settings(self, **values: Any) -> None:
        self.worker.evaluate("(values) => saveSettings({...DEFAULT_SETTINGS, ...values})", values)

    def tab_id(self, url: str) -> int:
        tab_id: int = self.worker.evaluate(
            "async (url) => (await chrome.tabs.query({})).find((tab) => tab.url === url).id", url)
        return tab_id

    def click_menu(self, page: Page, src_url: str, menu: str = "MENU_ID") -> dict[str, Any]:
        """What choosing "Check image with fakewatch" (menu="VIDEO_MENU_ID": "Check video with fakewatch") on the
        element at src_url runs."""
        tab_id = self.tab_id(page.url)
        result: dict[str, Any] = self.worker.evaluate(
            f"""([tabId, srcUrl, pageUrl]) => handleMenuClick(
                   {{menuItemId: {menu}, srcUrl, pageUrl, frameId: 0}}, {{id: tabId, url: pageUrl}})""",
            [tab_id, src_url, page.url])
        return result


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright, tempfile.TemporaryDirectory() as profile:
        context = playwright.chromium.launch_persistent_context(
            profile, executable_path=CHROMIUM, headless=False, viewport={"width": 1280, "height": 820},
            args=[*CHROMIUM_ARGS, f"--disable-extensions-except={UNPACKED}", f"--load-extension={UNPACKED}"])
        worker = context.service_workers[0] if context.service_workers \
            else context.wait_for_event("serviceworker", timeout=30_000)
        yield Browser(context, worker.url.split("/")[2])
        context.close()


@pytest.fixture
def configured(browser: Browser, embedded_stack: Stack) -> Browser:
    """The extension pointed at the running stack with its key, and no results remembered from other tests."""
    browser.save_settings(serverUrl=embedded_stack.api_url, apiKey=embedded_stack.api_key, adminUrl=ADMIN_URL)
    browser.worker.evaluate("chrome.storage.session.clear()")
    return browser


def encode(image: Image.Image, fmt: str = "JPEG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return buffer.getvalue()


@cache
def generated_image(seed: int) -> bytes:
    """A 'generated' picture the way the test detector learnt them: a photo crop upsampled from half size."""
    photo = np.asarray(Image.open(io.BytesIO(photo_bytes("coffee"))))
    crop = photo[20 + seed * 11 : 116 + seed * 11, 40 + seed * 17 : 136 + seed * 17]
    return encode(Image.fromarray(upsample_trace(np.ascontiguousarray(crop))).resize((288, 288), Image.Resampling.NEAREST), "PNG")


@cache  # seconds to make; every test page serves it
def big_photo() -> bytes:
    return encode(Image.open(io.BytesIO(photo_bytes("rocket"))).resize(BIG_SIZE), "JPEG")


PAGE_TEMPLATE = """<!doctype html><html><head><meta charset="utf-8"><title>fakewatch extension test</title>
<style>body{{font:14px system-ui;margin:20px}} .grid{{display:flex;flex-wrap:wrap;gap:14px}}
figure{{margin:0}} .grid img{{width:220px;height:165px;object-fit:cover;display:block}}
figcaption{{color:#555;font-size:12px}}</style></head><body>
<h1>Photos and generated pictures</h1>
<div class="grid">
{figures}
</div>
<img class="pixel" src="{prefix}/pixel.gif" width="1" height="1" alt="">
<img class="icon" src="{prefix}/icon.png" width="16" height="16" alt="icon">
<img class="stretched-pixel" src="{prefix}/pixel2.gif" style="width:120px;height:120px" alt="">
<img class="hidden" src="{prefix}/hidden.jpg" style="display:none" alt="">
<img class="drawing" src="{prefix}/drawing.svg" width="200" height="150" alt="drawing">
<div style="height:2400px"></div>
<img class="native-lazy" loading="lazy" src="{prefix}/lazy.jpg" width="220" height="165" alt="below the fold">
<script>
fetch("{prefix}/for-blob.jpg").then((r) => r.blob()).then((blob) => {{
  const image = document.getElementById("blob-image");
  image.onload = () => document.body.dataset.ready = "1";
  image.src = URL.createObjectURL(blob);
}});
</script>
</body></html>"""


@dataclass
class ServedPage:
    url: str
    eligible: list[str]  # the addresses a scan must check, as the page resolves them
    big_url: str
    svg_url: str
    not_image_url: str


def figure(src: str, caption: str, extra: str = "") -> str:
    return f'<figure><img src="{src}" {extra} alt="{caption}"><figcaption>{caption}</figcaption></figure>'


def serve_test_page(server: LocalServer, name: str) -> ServedPage:
    """A page with real photos, generated pictures, and every kind of image a scan must check or skip."""
    prefix = f"/ext-{name}"
    photos = distinct_photos(4, size=300)
    fake = [generated_image(seed) for seed in range(2)]
    data_url = "data:image/jpeg;base64," + base64.b64encode(distinct_photos(6, size=200)[5]).decode()
    one_pixel = encode(Image.new("RGB", (1, 1), "white"), "GIF")
    files: dict[str, tuple[str, bytes]] = {
        **{f"/photo{index}.jpg": ("image/jpeg", data) for index, data in enumerate(photos)},
        **{f"/generated{index}.png": ("image/png", data) for index, data in enumerate(fake)},
        "/small.jpg": ("image/jpeg", photo_bytes("chelsea", size=180)),
        "/large.jpg": ("image/jpeg", photo_bytes("chelsea", size=360)),
        "/lazy-js.jpg": ("image/jpeg", photo_bytes("astronaut", size=240)),
        "/lazy.jpg": ("image/jpeg", photo_bytes("coffee", size=250)),
        "/for-blob.jpg": ("image/jpeg", photo_bytes("rocket", size=256)),
        "/big.jpg": ("image/jpeg", big_photo()),
        "/pixel.gif": ("image/gif", one_pixel),
        "/pixel2.gif": ("image/gif", one_pixel),
        "/icon.png": ("image/png", encode(Image.new("RGB", (16, 16), "red"), "PNG")),
        "/hidden.jpg": ("image/jpeg", photo_bytes("astronaut", size=100)),
        "/drawing.svg": ("image/svg+xml", SVG_DRAWING),
        "/not-image.jpg": ("text/html", b"<!doctype html><p>Moved.</p>"),
    }
    for path, (content_type, body) in files.items():
        server.routes[prefix + path] = (200, {"Content-Type": content_type}, body)
    figures = [figure(f"{prefix}/photo{index}.jpg", "photo") for index in range(len(photos))]
    figures += [figure(f"{prefix}/generated{index}.png", "generated") for index in range(len(fake))]
    figures += [
        figure(data_url, "data: URL"),
        figure(f"{prefix}/small.jpg", "srcset", f'srcset="{prefix}/small.jpg 1x, {prefix}/large.jpg 2x"'),
        figure("data:image/gif;base64,R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7", "lazy (data-src)",
               f'data-src="{prefix}/lazy-js.jpg"'),
        figure("", "blob: URL", 'id="blob-image"').replace(' src=""', ""),
        figure(f"{prefix}/big.jpg", f"{BIG_SIZE[0]}x{BIG_SIZE[1]} photo"),
    ]
    server.routes[prefix + "/page.html"] = (200, {"Content-Type": "text/html; charset=utf-8"},
                                             PAGE_TEMPLATE.format(figures="\n".join(figures), prefix=prefix).encode())
    base = server.url(prefix)
    eligible = [f"{base}/photo{index}.jpg" for index in range(len(photos))]
    eligible += [f"{base}/generated{index}.png" for index in range(len(fake))]
    eligible += [data_url, f"{base}/small.jpg", f"{base}/lazy-js.jpg", "blob:", f"{base}/big.jpg", f"{base}/lazy.jpg"]
    return ServedPage(url=server.url(prefix + "/page.html"), eligible=eligible, big_url=f"{base}/big.jpg",
                    svg_url=f"{base}/drawing.svg", not_image_url=f"{base}/not-image.jpg")


def open_page(browser: Browser, page_info: ServedPage) -> Page:
    page = browser.context.new_page()
    page.goto(page_info.url)
    page.wait_for_function("document.body.dataset.ready === '1'", timeout=15_000)
    return page


def badges(page: Page) -> list[dict[str, str]]:
    found: list[dict[str, str]] = page.evaluate(
        """() => Array.from(document.querySelectorAll('[data-fakewatch-badge]'), (host) => ({
               state: host.dataset.state, text: host.shadowRoot.querySelector('.badge').textContent,
               src: host.dataset.src, tip: host.shadowRoot.querySelector('.tip')?.textContent || '',
               link: host.shadowRoot.querySelector('.tip a')?.href || ''}))""")
    return found


def badge_for(page: Page, src: str) -> dict[str, str]:
    page.wait_for_function(
        """(src) => Array.from(document.querySelectorAll('[data-fakewatch-badge]'))
               .some((host) => host.dataset.src === src && host.dataset.state !== 'pending')""", arg=src, timeout=10_000)
    return next(badge for badge in badges(page) if badge["src"] == src)


@dataclass
class StoredCheck:
    source: str
    status: str
    source_url: str | None
    pixels: int


def wait_until(condition: Callable[[], bool], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.1)


def checks_for_page(stack: Stack, page_url: str) -> list[StoredCheck]:
    with stack.session() as session:
        rows = session.scalars(select(Check).where(Check.page_url == page_url))
        return [StoredCheck(row.source, row.status, row.source_url, _pixels(row)) for row in rows]


def _pixels(check: Check) -> int:
    assert check.image is not None
    return check.image.width * check.image.height


def short_src(url: str) -> str:
    """How a badge names its image: data: and blob: addresses by their scheme alone."""
    return next((scheme for scheme in ("data:", "blob:") if url.startswith(scheme)), url)


def test_context_menu_check_badges_the_image_and_stores_the_check(
        configured: Browser, embedded_stack: Stack, image_server: LocalServer) -> None:
    page_info = serve_test_page(image_server, "menu")
    page = open_page(configured, page_info)
    src = page_info.eligible[0]
    page.evaluate("""() => { window.seenStates = [];
        new MutationObserver((records) => records.forEach((record) => window.seenStates.push(
            `${record.target.dataset.state}:${record.target.dataset.text}`)))
            .observe(document.documentElement, {subtree: true, attributeFilter: ['data-state']}); }""")

    result = configured.click_menu(page, src)

    assert "check" in result, result
    check = result["check"]
    badge = badge_for(page, src)
    assert badge["state"] == check["verdict"] and VERDICT_TEXT.match(badge["text"]), badge
    assert badge["text"].endswith(f"{round(check['confidence'] * 100)}%")
    assert check["model_version"] in badge["tip"] and "Not reviewed by a moderator yet." in badge["tip"]
    assert badge["link"] == f"{ADMIN_URL}/image?sha256={check['image']['sha256']}"
    # While waiting the badge showed progress, then the verdict.
    seen = page.evaluate("window.seenStates")
    assert seen[0] == "pending:Reading image…" and "pending:Uploading…" in seen, seen
    assert seen[-1] == f"{check['verdict']}:{badge['text']}", seen
    with embedded_stack.session() as session:
        row = session.get(Check, check["id"])
        assert row is not None and row.status == "done"
        assert row.page_url == page_info.url and row.source == "extension" and row.source_url == src
    assert embedded_stack.get_check(check["id"])["image"]["sha256"] == check["image"]["sha256"]
    page.close()


def test_a_declared_ai_image_is_badged_with_its_evidence_instead_of_a_confidence(
        configured: Browser, embedded_stack: Stack, image_server: LocalServer) -> None:
    # A manifest that says trainedAlgorithmicMedia, made by ChatGPT, from a signer nobody trusts: the claim counts.
    made = signed_jpeg(make_authority("Test Generator Signer"), "trainedAlgorithmicMedia", software_agent="ChatGPT")
    image_server.routes["/ext-provenance/made.jpg"] = (200, {"Content-Type": "image/jpeg"}, made)
    image_server.routes["/ext-provenance/page.html"] = (
        200, {"Content-Type": "text/html; charset=utf-8"},
        b'<!doctype html><body data-ready="1"><img src="/ext-provenance/made.jpg" width="240"></body>')
    page = configured.context.new_page()
    page.goto(image_server.url("/ext-provenance/page.html"))
    src = image_server.url("/ext-provenance/made.jpg")

    result = configured.click_menu(page, src)

    assert "check" in result, result
    check = result["check"]
    assert (check["verdict"], check["verdict_source"], check["confidence"]) == ("fake", "provenance", None)
    badge = badge_for(page, src)
    assert (badge["state"], badge["text"]) == ("fake", "Fake · Content Credentials"), badge
    assert badge["tip"].startswith("AI: Content Credentials, OpenAI"), badge
    assert "Decided by provenance evidence, not by the model." in badge["tip"]
    assert f"Probability of fake: {check['score']:.2f}" in badge["tip"]  # the model's score is still shown
    page.close()


def test_scan_this_page_badges_every_eligible_image_and_reuses_results(
        configured: Browser, embedded_stack: Stack, image_server: LocalServer) -> None:
    page_info = serve_test_page(image_server, "scan")
    page = open_page(configured, page_info)
    popup = configured.context.new_page()
    popup.goto(configured.extension_url(f"popup.html?tab={configured.tab_id(page.url)}"))

    popup.get_by_role("button", name="Scan this page").click()

    # Extension pages forbid eval, so wait through locators rather than wait_for_function.
    expect(popup.locator("#summary")).to_have_text(re.compile(r"^Done"), timeout=120_000)
    summary = popup.locator("#summary").text_content() or ""
    found = badges(page)
    assert sorted(short_src(badge["src"]) for badge in found) == sorted(map(short_src, page_info.eligible))
    assert found and all(badge["state"] in ("real", "fake", "uncertain") and VERDICT_TEXT.match(badge["text"])
                         for badge in found), found
    flagged = sum(badge["state"] != "real" for badge in found)
    assert summary.startswith(f"Done: {len(found)} images · checked {len(found)} · flagged {flagged} · failed 0"), summary
    assert "5 skipped" in summary, summary  # the 1x1 pixel, the icon, the stretched pixel, the hidden image, the SVG
    assert "Resized before checking" in next(badge["tip"] for badge in found if badge["src"] == page_info.big_url)
    ARTIFACTS.mkdir(exist_ok=True)
    page.locator("[data-fakewatch-badge] .badge").nth(1).hover()  # open one tooltip for the picture
    page.screenshot(path=str(ARTIFACTS / "extension-badges.png"))

    stored = checks_for_page(embedded_stack, page_info.url)
    assert len(stored) == len(found) and all(row.source == "extension" and row.status == "done" for row in stored)
    assert next(row for row in stored if row.source_url == page_info.big_url).pixels <= 40_000_000

    popup.get_by_role("button", name="Scan this page").click()
    expect(popup.locator("#summary")).to_contain_text(f"Done: {len(found)} images · checked {len(found)}", timeout=60_000)
    expect(popup.locator("#summary")).to_contain_text(f"· {len(found)} reused")
    assert len(checks_for_page(embedded_stack, page_info.url)) == len(stored)
    popup.close()
    page.close()


def test_drawings_and_non_images_get_a_clear_message(configured: Browser, image_server: LocalServer) -> None:
    page_info = serve_test_page(image_server, "kinds")
    page = open_page(configured, page_info)

    # A page that links an HTML document as an image (the browser shows a broken image).
    page.evaluate("""(src) => document.body.prepend(Object.assign(document.createElement('img'),
                      {src, width: 200, height: 150, alt: 'moved'}))""", page_info.not_image_url)

    svg = configured.click_menu(page, page_info.svg_url)
    not_image = configured.click_menu(page, page_info.not_image_url)

    assert svg["error"]["code"] == "svg" and not_image["error"]["code"] == "not_image"
    assert {key: badge_for(page, page_info.svg_url)[key] for key in ("state", "text")} == {
        "state": "error", "text": "SVG drawing: not checked"}
    assert "not a photo" in badge_for(page, page_info.svg_url)["tip"]
    assert {key: badge_for(page, page_info.not_image_url)[key] for key in ("state", "text")} == {
        "state": "error", "text": "Not an image"}
    assert "text/html" in badge_for(page, page_info.not_image_url)["tip"]
    page.close()


def test_unreachable_server_and_rejected_key_show_error_badges(
        configured: Browser, embedded_stack: Stack, image_server: LocalServer) -> None:
    page_info = serve_test_page(image_server, "errors")
    page = open_page(configured, page_info)
    closed_port = free_port()  # bound then released: nothing listens there

    configured.save_settings(serverUrl=f"http://127.0.0.1:{closed_port}", apiKey=embedded_stack.api_key)
    unreachable = configured.click_menu(page, page_info.eligible[0])
    assert unreachable["error"]["code"] == "unreachable"
    badge = badge_for(page, page_info.eligible[0])
    assert (badge["state"], badge["text"]) == ("error", "Server unreachable")
    assert f"127.0.0.1:{closed_port}" in badge["tip"] and badge["link"] == ""

    configured.save_settings(serverUrl=embedded_stack.api_url, apiKey="fw_not-a-real-key")
    rejected = configured.click_menu(page, page_info.eligible[1])
    assert rejected["error"]["code"] == "unauthorized"
    assert badge_for(page, page_info.eligible[1])["text"] == "API key rejected"
    assert checks_for_page(embedded_stack, page_info.url) == []
    page.close()


def test_options_save_reload_and_test_connection(configured: Browser, embedded_stack: Stack) -> None:
    page = configured.context.new_page()
    page.goto(configured.extension_url("options.html"))
    page.fill("#serverUrl", embedded_stack.api_url + "/")
    page.fill("#apiKey", f"  {embedded_stack.api_key} ")
    page.fill("#adminUrl", "http://127.0.0.1:9999")
    page.fill("#minSize", "80")
    page.click("#save")
    expect(page.locator("#status.ok")).to_contain_text("Saved. Connected: key accepted")
    page.reload()
    assert page.input_value("#serverUrl") == embedded_stack.api_url
    assert page.input_value("#apiKey") == embedded_stack.api_key
    assert page.input_value("#adminUrl") == "http://127.0.0.1:9999" and page.input_value("#minSize") == "80"
    assert not page.is_checked("#autoScan")
    stored = configured.worker.evaluate("chrome.storage.local.get(null)")
    assert stored["serverUrl"] == embedded_stack.api_url and stored["apiKey"] == embedded_stack.api_key

    page.click("#test")
    active = requests.get(f"{embedded_stack.api_url}/readyz", headers=embedded_stack.headers(),
                          timeout=30).json()["model_version"]
    expect(page.locator("#status.ok")).to_have_text(f"Connected: key accepted, active model {active}.")
    page.fill("#apiKey", "fw_wrong")
    page.click("#test")
    expect(page.locator("#status.problem")).to_contain_text("API key rejected")
    page.fill("#serverUrl", f"http://127.0.0.1:{free_port()}")
    page.click("#test")
    expect(page.locator("#status.problem")).to_contain_text("Server unreachable")
    page.fill("#serverUrl", "ftp://example.invalid")
    page.click("#save")
    expect(page.locator("#status.problem")).to_contain_text("must start with http:// or https://")
    assert configured.worker.evaluate("chrome.storage.local.get('serverUrl')")["serverUrl"] == embedded_stack.api_url
    page.close()


def test_test_connection_names_the_reason_a_server_is_not_ready(configured: Browser, embedded_stack: Stack) -> None:
    """With no active model version the server is up but not ready: the keyed test says why, in the server's words."""
    page = configured.context.new_page()
    page.goto(configured.extension_url("options.html"))
    with session_scope(embedded_stack.settings) as session:
        active = session.scalars(select(ModelVersion).where(ModelVersion.active.is_(True))).one()
        active.active = False
    try:
        page.click("#test")
        expect(page.locator("#status.problem")).to_contain_text(
            "Key accepted, but the server is not ready: no active model version")
    finally:
        with session_scope(embedded_stack.settings) as session:
            session.execute(update(ModelVersion).where(ModelVersion.id == active.id).values(active=True))
    page.click("#test")
    expect(page.locator("#status.ok")).to_contain_text(f"active model {active.name}.")
    page.close()


def test_a_save_that_fixes_the_url_is_not_overwritten_by_an_earlier_test(configured: Browser,
                                                                          embedded_stack: Stack) -> None:
    """A test against a server that never answers is still waiting when the URL is fixed and saved: when it
    finally fails, its "Server unreachable" does not replace what the save found."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # never accepted, never answered: the browser's request waits
    page = configured.context.new_page()
    page.goto(configured.extension_url("options.html"))
    try:
        page.fill("#serverUrl", f"http://127.0.0.1:{silent.getsockname()[1]}")
        page.click("#test")
        expect(page.locator("#status")).to_have_text("Testing…")
        page.fill("#serverUrl", embedded_stack.api_url)
        page.click("#save")
        expect(page.locator("#status.ok")).to_contain_text("Saved. Connected: key accepted")
    finally:
        silent.close()  # the waiting test fails now
    page.wait_for_timeout(2000)
    expect(page.locator("#status.ok")).to_contain_text("Saved. Connected: key accepted")
    page.close()


def test_scan_automatically_switch_badges_new_pages(configured: Browser, embedded_stack: Stack,
                                                    image_server: LocalServer) -> None:
    registered = "async () => (await chrome.scripting.getRegisteredContentScripts()).map((script) => script.id)"
    assert configured.worker.evaluate(registered) == []
    options = configured.context.new_page()
    options.goto(configured.extension_url("options.html"))
    options.check("#autoScan")
    options.click("#save")
    wait_until(lambda: configured.worker.evaluate(registered) == ["fakewatch-autoscan"])
    page_info = serve_test_page(image_server, "auto")
    page = open_page(configured, page_info)
    page.wait_for_function(
        f"""() => Array.from(document.querySelectorAll('[data-fakewatch-badge]'))
                .filter((host) => /^(real|fake|uncertain)$/.test(host.dataset.state)).length === {len(page_info.eligible)}""",
        timeout=120_000)
    options.uncheck("#autoScan")
    options.click("#save")
    wait_until(lambda: configured.worker.evaluate(registered) == [])
    page.close()
    options.close()


def test_firefox_package_passes_mozilla_lint(tmp_path: Path) -> None:
    web_ext = EXTENSION_DIR / "node_modules" / ".bin" / "web-ext"
    assert web_ext.exists(), "Mozilla's linter is missing: run `npm ci --prefix extension` (needs node and npm)."
    subprocess.run([sys.executable, str(EXTENSION_DIR / "package.py"), "--dist", str(tmp_path)],
                   check=True, capture_output=True, timeout=60)
    chrome = json.loads(zipfile.ZipFile(tmp_path / "fakewatch-chrome-0.1.0.zip").read("manifest.json"))
    firefox = json.loads(zipfile.ZipFile(tmp_path / "fakewatch-firefox-0.1.0.zip").read("manifest.json"))
    assert chrome["background"] == {"service_worker": "background.js"}
    assert firefox["background"]["scripts"][-1] == "background.js" and "service_worker" not in firefox["background"]
    assert "<all_urls>" not in chrome["host_permissions"]

    lint = subprocess.run([str(web_ext), "lint", "--source-dir", str(tmp_path / "firefox"), "--output", "json"],
                          check=False, capture_output=True, text=True, timeout=180, cwd=EXTENSION_DIR)
    report = json.loads(lint.stdout)
    assert report["summary"]["errors"] == 0, report["errors"]
    assert report["summary"]["warnings"] == 0, report["warnings"]


def test_a_moderators_label_is_the_badge_and_a_relabel_or_undo_changes_it(
        configured: Browser, embedded_stack: Stack, image_server: LocalServer) -> None:
    page_info = serve_test_page(image_server, "reviewed")
    page = open_page(configured, page_info)
    src = page_info.eligible[1]
    first = configured.click_menu(page, src)["check"]
    assert VERDICT_TEXT.match(badge_for(page, src)["text"])
    rects = page.evaluate("""(src) => [...document.querySelectorAll('[data-fakewatch-badge]')]
        .find((host) => host.dataset.src === src).shadowRoot.querySelectorAll('.tip svg.heatmap rect').length""", src)
    assert first["regions"] and rects == len(first["regions"])  # the per-crop heat map, small, in the tooltip
    with embedded_stack.session() as session:
        row = session.get(Check, first["id"])
        assert row is not None and row.image_id is not None
        image_id = row.image_id
        label_image(session, image_id, "real", as_user("mona"))
    seen = []
    for relabel in ("fake", None):
        again = configured.click_menu(page, src)["check"]
        assert again["verdict_source"] == "review" and again["confidence"] is None
        seen.append(badge_for(page, src)["text"])
        with embedded_stack.session() as session:
            if relabel:
                label_image(session, image_id, relabel, as_user("mona"))
            else:
                undo_last_decision(session, as_user("mona"))
                undo_last_decision(session, as_user("mona"))
    assert seen == ["Reviewed: real", "Reviewed: fake"]
    after_undo = configured.click_menu(page, src)["check"]
    assert after_undo["verdict_source"] == "model" and VERDICT_TEXT.match(badge_for(page, src)["text"])
    page.close()


# --- videos: the clip's address as a URL check, a stream's frame on screen ----------------------------------------

VIDEO_PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>fakewatch video test</title></head><body>
<h1>Videos</h1>
<video id="direct" muted preload="auto" width="320" height="240"><source src="{prefix}/clip.webm" type="video/webm"></video>
<video id="stream" muted preload="auto" width="320" height="240"></video>
<video id="foreign" src="{foreign}" muted preload="auto" width="320" height="240"></video>
<script>
const waiting = new Set(["direct", "stream", "foreign"]);
function shown(id) {{ waiting.delete(id); if (waiting.size === 0) document.body.dataset.ready = "1"; }}
function seekOnLoad(video, seconds) {{
  video.addEventListener("loadeddata", () => {{
    video.addEventListener("seeked", () => shown(video.id), {{once: true}});
    video.currentTime = seconds;
  }}, {{once: true}});
}}
seekOnLoad(document.getElementById("direct"), 0.5);
seekOnLoad(document.getElementById("foreign"), 0.5);
const stream = document.getElementById("stream");
seekOnLoad(stream, 1.2);
fetch("{prefix}/clip.webm").then((r) => r.blob()).then((blob) => {{ stream.src = URL.createObjectURL(blob); }});
</script></body></html>"""
VIDEO_VERDICT = r"(No AI traces|AI traces|Uncertain) \d{1,3}%|Uncertain · out of scope"


@dataclass
class VideoPage:
    page: Page
    clip_url: str
    foreign_url: str

    def blob_url(self) -> str:
        url: str = self.page.evaluate("document.getElementById('stream').currentSrc")
        assert url.startswith("blob:"), url
        return url

    def badge_over(self, video_id: str, src: str) -> dict[str, str]:
        """The video's finished badge, asserted to sit over the video itself."""
        badge = badge_for(self.page, src)
        inside: bool = self.page.evaluate(
            """([id, src]) => {
                const host = Array.from(document.querySelectorAll('[data-fakewatch-badge]'))
                    .find((candidate) => candidate.dataset.src === src).getBoundingClientRect();
                const video = document.getElementById(id).getBoundingClientRect();
                return host.left >= video.left && host.top >= video.top && host.left < video.right
                    && host.top < video.bottom; }""", [video_id, src])
        assert inside, f"the badge for {video_id} is not over the video"
        return badge


def open_video_page(browser: Browser, server: LocalServer, name: str) -> VideoPage:
    prefix = f"/ext-video-{name}"
    # VP9 in WebM: every Chromium build plays it, and the server decodes it with PyAV.
    clip = make_clip("vp9-webm", seconds=3.0, fps=10, width=320, height=240)
    server.routes[prefix + "/clip.webm"] = (200, {"Content-Type": "video/webm"}, clip)
    # The same clip from another origin (localhost is not 127.0.0.1 to the browser) without CORS headers.
    foreign = f"http://localhost:{server.port}{prefix}/clip.webm"
    server.routes[prefix + "/page.html"] = (200, {"Content-Type": "text/html; charset=utf-8"},
                                            VIDEO_PAGE.format(prefix=prefix, foreign=foreign).encode())
    page = browser.context.new_page()
    page.goto(server.url(prefix + "/page.html"))
    page.wait_for_function("document.body.dataset.ready === '1'", timeout=20_000)
    return VideoPage(page, server.url(prefix + "/clip.webm"), foreign)


def test_a_videos_address_is_checked_as_a_clip_and_a_streams_frame_on_screen(
        configured: Browser, embedded_stack: Stack, image_server: LocalServer) -> None:
    video = open_video_page(configured, image_server, "menu")

    direct = configured.click_menu(video.page, video.clip_url, menu="VIDEO_MENU_ID")

    assert "check" in direct, direct
    check = direct["check"]
    assert check["media"] == "video" and check["duration_s"] == pytest.approx(3.0, abs=0.2)
    frames = len(check["frames"])
    assert frames >= 3
    badge = video.badge_over("direct", video.clip_url)
    assert badge["state"] == check["verdict"], badge
    assert re.fullmatch(rf"({VIDEO_VERDICT}) · {frames} frames", badge["text"]), badge
    assert f"{frames} sampled frames scored" in badge["tip"]
    stored = embedded_stack.get_check(check["id"])
    assert stored["media"] == "video" and stored["page_url"] == video.page.url

    blob_url = video.blob_url()
    streamed = configured.click_menu(video.page, blob_url, menu="VIDEO_MENU_ID")

    assert "check" in streamed, streamed
    assert streamed["frame"]["time_s"] == pytest.approx(1.2, abs=0.15)
    assert streamed["check"]["media"] == "image"
    assert (streamed["check"]["image"]["width"], streamed["check"]["image"]["height"]) == (320, 240)
    badge = video.badge_over("stream", blob_url)
    assert badge["state"] == streamed["check"]["verdict"], badge
    assert re.fullmatch(rf"({VIDEO_VERDICT}) · frame at 0:01 checked", badge["text"]), badge
    assert "blob: or MediaSource" in badge["tip"] and "Only the frame on screen at 0:01" in badge["tip"]
    video.page.close()


def test_a_cross_origin_videos_frame_cannot_be_read_and_the_badge_says_so(
        configured: Browser, embedded_stack: Stack, image_server: LocalServer) -> None:
    video = open_video_page(configured, image_server, "foreign")
    tab_id = configured.tab_id(video.page.url)

    # What a video the server could not download falls back to: the frame on screen, here a tainted canvas.
    result = configured.worker.evaluate(
        """async ([tabId, srcUrl, pageUrl]) => {
               await injectContentScript(tabId, 0);
               return checkVideoFrame({tabId, frameId: 0, srcUrl, pageUrl}, await loadSettings(), []); }""",
        [tab_id, video.foreign_url, video.page.url])

    assert result["error"]["code"] == "tainted_frame", result
    badge = video.badge_over("foreign", video.foreign_url)
    assert (badge["state"], badge["text"]) == ("error", "Frame not readable: cross-origin video"), badge
    assert "another site" in badge["tip"]
    assert checks_for_page(embedded_stack, video.page.url) == []
    video.page.close()
