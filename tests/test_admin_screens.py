"""Screenshots of every console page from a real headless Chromium against a running console (`fakewatch admin`
as a subprocess, XSRF protection on), over a database seeded through the services.

Screenshots go to test-artifacts/admin-*.png; with FAKEWATCH_UPDATE_DOCS_IMAGES=1 they also replace the
README's docs/images/admin-*.png (opt-in, so an ordinary test run leaves the work tree clean)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
from playwright.sync_api import Browser, BrowserContext, Page, expect, sync_playwright
from starlette.requests import Request

from admin.web import SESSION_PATH, TICKETS, session_cookie
from backend.batches.lifecycle import create_batch
from backend.batches.lists import entries_from_text, validate_entries
from backend.checks.service import store_image
from backend.identity.users import create_user
from backend.moderation.reviews import label_image
from backend.settings import Settings
from backend.storage.db import get_engine, session_scope
from backend.storage.migrate import upgrade_database
from backend.training.runs import claim_run, finish_run, request_training
from core.enums import Role
from core.retraining import Comparison
from testbed.images import LocalServer, distinct_photos
from testbed.provenance_files import fixture as provenance_fixture
from testbed.stack import free_port, isolated_settings, wait_for_url
from tests.actors import OPERATOR, as_user
from tests.test_admin import MODERATOR, PASSWORD, add_moderator, image_id_of, scored_check, seed_queue

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
DOCS_IMAGES = ROOT / "docs" / "images"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
VIEWPORT = {"width": 1440, "height": 1000}
# The two screens the console's layouts must hold on: a small laptop and a full-HD monitor.
LAYOUTS = {"1366x768": {"width": 1366, "height": 768}, "1920x1080": {"width": 1920, "height": 1080}}
# Every visible button whose label does not fit: text cut with an ellipsis (Streamlit's "Fa..." for "Fake"), or
# a box narrower than one of the label's words, which then breaks mid-word ("F/a/k/e"). Words are measured in
# the label's own font.
CUT_BUTTONS_JS = """() => {
    const width = (text, element) => {
        const probe = document.createElement('span');
        const style = getComputedStyle(element);
        probe.style.cssText = 'position:absolute;visibility:hidden;white-space:nowrap;font:' + style.font
            + ';letter-spacing:' + style.letterSpacing;
        probe.textContent = text;
        document.body.appendChild(probe);
        const measured = probe.getBoundingClientRect().width;
        probe.remove();
        return measured;
    };
    return [...document.querySelectorAll('button')]
        .filter((button) => button.offsetParent !== null && button.innerText.trim())
        .filter((button) => [...button.querySelectorAll('[data-testid=stMarkdownContainer]')].some((label) => {
            const text = label.querySelector('p') || label;
            const room = label.getBoundingClientRect().width;
            return label.scrollWidth > label.clientWidth + 1
                || label.innerText.split(/\\s+/).filter(Boolean).some((word) => width(word, text) > room + 1);
        }))
        .map((button) => (button.querySelector('[data-testid=stMarkdownContainer]') || button).innerText.trim());
}"""
# Every visible table that does not fit its box (a grid that scrolls sideways cuts its last columns: "balan…"),
# named by its headers; and every cell of the visible grids that reads Python's "None".
CUT_TABLES_JS = """() => [...document.querySelectorAll('[data-testid=stDataFrame]')]
    .filter((frame) => frame.offsetParent !== null)
    .filter((frame) => { const scroller = frame.querySelector('.dvn-scroller');
                         return scroller && scroller.scrollWidth > scroller.clientWidth + 1; })
    .map((frame) => [...frame.querySelectorAll('canvas th')].map((header) => header.innerText).join(', '))"""
NONE_CELLS_JS = r"""() => [...document.querySelectorAll(`[data-testid=stDataFrame] canvas td,
    [data-testid=stTable] td, [data-testid=stMarkdownContainer], [data-testid=stText]`)]
    .filter((cell) => /(^|\s)None(\s|$)/.test(cell.innerText)).map((cell) => cell.innerText.slice(0, 80))"""
TIMEOUT_MS = 30_000
MAX_SHOT_PX = 4000


@dataclass
class Console:
    url: str
    log: Path


ADMIN = "ada"  # an admin, who may promote a candidate and read the audit trail
CANDIDATE = "candidate-v2"
# A finished run's comparison on 8 held-out images: too few, so promoting its candidate is refused.
COMPARISON = {"active_version": "test-model-v1", "candidate_version": CANDIDATE, "sets": [
    {"name": "held-out reviewed images", "count": 8,
     "active": {"roc_auc": 0.8, "accuracy": 0.75, "balanced_accuracy": 0.74, "fpr_at_threshold": 0.1},
     "candidate": {"roc_auc": 0.9, "accuracy": 0.75, "balanced_accuracy": 0.76, "fpr_at_threshold": 0.05,
                   "counts": {"real": 4, "fake": 4, "total": 8}}}]}


def seed_training_run(settings: Settings) -> None:
    """A finished retraining run whose candidate waits beside the active version (its file is never loaded)."""
    folder = settings.models_dir / CANDIDATE
    folder.mkdir(parents=True)
    (folder / "model.keras").write_bytes(b"not loaded")
    (folder / "model.json").write_text(json.dumps({"name": CANDIDATE, "threshold": 0.5, "band": 0.1}))
    with session_scope(settings) as session:
        for n, photo in enumerate(distinct_photos(6, size=64)):  # reviewed images outside the queue to train on
            label_image(session, store_image(session, photo, settings).id, "fake" if n % 2 else "real",
                        as_user(MODERATOR))
        run = request_training(session, settings, actor=as_user(MODERATOR), epochs=1)
        claim_run(session, run.id)
        finish_run(session, run.id, folder / "model.keras", Comparison.from_dict(COMPARISON))


def seed_provenance_image(settings: Settings) -> None:
    """An image whose Content Credentials say AI, checked once (no page address) and labelled, so it stays out of
    the queue: its Image page has provenance tables and cells that have no value."""
    check_id = scored_check(settings, provenance_fixture("C.jpg"), 0.1)
    with session_scope(settings) as session:
        label_image(session, image_id_of(settings, check_id), "fake", as_user(MODERATOR))


def seed_console_database(settings: Settings, image_server: LocalServer) -> None:
    """Users, flagged checks, reviews (for the agreement chart and a training run), a batch and a finished
    training run, all through the services."""
    upgrade_database(settings.database)
    seeded = seed_queue(add_moderator(settings))
    with session_scope(settings) as session:
        create_user(session, ADMIN, PASSWORD, Role.ADMIN, actor=OPERATOR)
        label_image(session, image_id_of(settings, seeded.real), "real", as_user(MODERATOR))
        urls = "\n".join(image_server.url(f"/crawl/{n}.jpg") for n in range(5))
        create_batch(session, validate_entries(entries_from_text(urls + "\nnot a url"), settings.batch_max_urls),
                     name="crawl of example pages")
    seed_training_run(settings)
    seed_provenance_image(settings)
    get_engine(settings.database).dispose()


@contextmanager
def running_console(data_dir: Path) -> Iterator[Console]:
    """`fakewatch admin` on the database under ``data_dir``, as a subprocess, until the block ends."""
    env = {"FAKEWATCH_DATA_DIR": str(data_dir)}
    port = free_port()
    log = data_dir / "admin.log"
    child_env = {key: value for key, value in os.environ.items()
                 if key not in ("FAKEWATCH_DATABASE_URL", "FAKEWATCH_BROKER_URL")} | env
    with log.open("ab") as output:
        process = subprocess.Popen([sys.executable, "-m", "fakewatch.cli", "admin", "--host", "127.0.0.1", "--port",
                                    str(port)], env=child_env, stdout=output, stderr=subprocess.STDOUT,
                                   start_new_session=True, cwd=data_dir.parent)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_url(f"{url}/_stcore/health", process, log.read_text)
        yield Console(url=url, log=log)
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory, image_server: LocalServer) -> Iterator[Console]:
    data_dir = tmp_path_factory.mktemp("console") / "var"
    seed_console_database(isolated_settings(data_dir=data_dir), image_server)
    with running_console(data_dir) as running:
        yield running


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    expect.set_options(timeout=TIMEOUT_MS)  # a busy machine: the console's first runs take more than 5 s
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS, headless=True)
        yield chromium
        chromium.close()
    expect.set_options(timeout=5_000)  # Playwright's default, for the modules that follow


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport=VIEWPORT)  # type: ignore[arg-type]
    context.set_default_timeout(TIMEOUT_MS)
    tab = context.new_page()
    yield tab
    context.close()


def log_in(page: Page, url: str, name: str = MODERATOR) -> None:
    page.goto(url)
    page.get_by_role("textbox", name="Name").fill(name)
    page.get_by_role("textbox", name="Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()


def settle(page: Page, heading: str) -> None:
    """Wait for the page's title, for its images and charts, and for the script run to end."""
    expect(page.get_by_role("heading", name=heading, exact=True)).to_be_visible(timeout=TIMEOUT_MS)
    page.wait_for_function("() => [...document.images].every(image => image.complete)")
    page.wait_for_timeout(1500)  # Vega charts draw after the script run ends
    expect(page.get_by_test_id("stException")).to_have_count(0)


def capture(page: Page, name: str, viewport: dict[str, int] | None = None) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"admin-{name}.png"
    if viewport is not None:  # a shot of the screen as it is, at this size (no stretching to the page's height)
        page.screenshot(path=str(path))
        assert path.stat().st_size > 10_000
        return path
    # Streamlit scrolls its main block, not the document, so a full-page shot needs a window as tall as the page.
    height = page.evaluate("() => document.querySelector('[data-testid=stMain]')?.scrollHeight ?? 0")
    page.set_viewport_size({"width": VIEWPORT["width"], "height": min(max(VIEWPORT["height"], height), MAX_SHOT_PX)})
    page.wait_for_timeout(500)
    page.screenshot(path=str(path))
    page.set_viewport_size(VIEWPORT)  # type: ignore[arg-type]
    if os.environ.get("FAKEWATCH_UPDATE_DOCS_IMAGES") == "1":
        DOCS_IMAGES.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, DOCS_IMAGES / path.name)
    assert path.stat().st_size > 10_000
    return path


def open_page(page: Page, title: str) -> None:
    """Follow the sidebar link: a client-side switch that keeps the logged-in session."""
    page.get_by_test_id("stSidebarNav").get_by_role("link", name=title).click()
    settle(page, title)


def test_a_page_url_without_login_shows_only_the_login_form(console: Console, page: Page) -> None:
    page.goto(f"{console.url}/dashboard")
    expect(page.get_by_role("button", name="Log in")).to_be_visible()
    expect(page.get_by_role("heading", name="Dashboard", exact=True)).to_have_count(0)
    expect(page.get_by_test_id("stSidebarNav")).to_have_count(0)
    page.get_by_role("textbox", name="Name").fill(MODERATOR)
    page.get_by_role("textbox", name="Password").fill("wrong password")
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_text("Wrong name or password.")).to_be_visible()
    capture(page, "login")


def test_screenshots_of_every_page(console: Console, page: Page) -> None:
    log_in(page, console.url)
    settle(page, "Review queue")
    expect(page.get_by_text("image(s) waiting")).to_contain_text("3 image(s) waiting")
    # One Fake per card; the first card's carries its keyboard shortcut in its name.
    expect(page.get_by_role("button", name=re.compile(r"^Fake"))).to_have_count(3)
    capture(page, "queue")

    page.get_by_role("link", name="Image details").first.click()
    settle(page, "Image")
    expect(page.get_by_text("Not reviewed yet.")).to_be_visible()
    capture(page, "image")

    open_page(page, "Batches")
    expect(page.get_by_text("crawl of example pages").first).to_be_visible()
    capture(page, "batches")

    open_page(page, "Dashboard")
    expect(page.get_by_test_id("stMetric")).to_have_count(4)
    capture(page, "dashboard")

    open_page(page, "Models")
    expect(page.get_by_text("Active version:")).to_contain_text("test-model-v1")
    capture(page, "models")


def test_one_click_labels_in_the_browser(console: Console, page: Page) -> None:
    log_in(page, console.url)
    settle(page, "Review queue")
    waiting = page.get_by_text("image(s) waiting")
    before = int(waiting.inner_text().split()[0])
    page.get_by_role("button", name="Real", exact=True).first.click()
    expect(waiting).to_contain_text(f"{before - 1} image(s) waiting")
    page.get_by_role("button", name="Undo my last decision").click()
    expect(waiting).to_contain_text(f"{before} image(s) waiting")


def cut_buttons(page: Page) -> list[str]:
    cut: list[str] = page.evaluate(CUT_BUTTONS_JS)
    return cut


@pytest.mark.parametrize("size", list(LAYOUTS))
def test_layouts_hold_at_laptop_and_full_hd_sizes(console: Console, browser: Browser, size: str) -> None:
    """Every page at 1366x768 and 1920x1080: a screenshot each, and no button label cut ("Fa..." for "Fake")."""
    context = browser.new_context(viewport=LAYOUTS[size])  # type: ignore[arg-type]
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    try:
        log_in(page, console.url)
        settle(page, "Review queue")
        expect(page.get_by_role("button", name=re.compile(r"^Fake")).first).to_be_visible()
        assert cut_buttons(page) == [], f"cut button labels on the queue at {size}"
        capture(page, f"queue-{size}", LAYOUTS[size])
        assert cut_tables(page) == [], f"tables cut on the queue at {size}"
        page.get_by_role("link", name="Image details").first.click()
        settle(page, "Image")
        assert cut_buttons(page) == [], f"cut button labels on the Image page at {size}"
        assert cut_tables(page) == [], f"tables cut on the Image page at {size}"
        capture(page, f"image-{size}", LAYOUTS[size])
        for title in ("Batches", "Dashboard", "Models"):
            open_page(page, title)
            assert cut_buttons(page) == [], f"cut button labels on {title} at {size}"
            # Left open (issue 25): the Batches page's results table is still wider than a laptop's screen.
            if title != "Batches":
                assert cut_tables(page) == [], f"tables cut on {title} at {size}"
            capture(page, f"{title.lower()}-{size}", LAYOUTS[size])
        expect(page.get_by_text("Candidate vs active")).to_be_visible()  # its table was among those measured
    finally:
        context.close()


def cut_tables(page: Page) -> list[str]:
    page.wait_for_function("() => [...document.querySelectorAll('[data-testid=stDataFrame]')]"
                           ".every((frame) => frame.querySelector('canvas th'))")  # every grid drawn
    cut: list[str] = page.evaluate(CUT_TABLES_JS)
    return cut


def test_cut_tables_are_detected(console: Console, page: Page) -> None:
    """The table check can fail: the versions table squeezed to 300 px scrolls sideways, and is reported."""
    page.set_viewport_size(LAYOUTS["1366x768"])  # type: ignore[arg-type]
    log_in(page, console.url)
    settle(page, "Review queue")
    open_page(page, "Models")
    assert cut_tables(page) == []
    page.wait_for_selector("[data-testid=stDataFrameResizable]")
    page.evaluate("""() => { const box = document.querySelector('[data-testid=stDataFrameResizable]');
        box.style.width = '300px'; box.style.maxWidth = '300px'; window.dispatchEvent(new Event('resize')); }""")
    page.wait_for_timeout(500)
    assert len(cut_tables(page)) == 1


def test_cut_labels_are_detected(console: Console, page: Page) -> None:
    """The check above can fail: a button squeezed to 40 px is reported."""
    log_in(page, console.url)
    settle(page, "Review queue")
    page.evaluate("""() => { const button = [...document.querySelectorAll('button')]
        .find((b) => b.innerText.includes('Undo my last decision'));
        button.style.width = '40px'; button.style.minWidth = '0'; button.style.maxWidth = '40px'; }""")
    assert cut_buttons(page) == ["Undo my last decision"]


def wait_for_cookie(context: BrowserContext, present: bool = True) -> Any:
    """The login cookie once the browser holds it (present), or None once it is gone (not present)."""
    for _ in range(50):
        cookie = next((c for c in context.cookies() if c["name"] == "fakewatch_console"), None)
        if (cookie is not None) == present:
            return cookie
        time.sleep(0.2)
    raise AssertionError(f"the login cookie is {'missing' if present else 'still set'}")


def test_a_login_lasts_across_reloads_and_tabs_until_logout(console: Console, browser: Browser) -> None:
    context = browser.new_context(viewport=VIEWPORT)  # type: ignore[arg-type]
    context.set_default_timeout(TIMEOUT_MS)
    try:
        page = context.new_page()
        log_in(page, console.url)
        settle(page, "Review queue")
        cookie = wait_for_cookie(context)
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"  # issued by the server, unreadable to scripts
        assert "fakewatch_console" not in page.evaluate("document.cookie")
        page.reload()
        settle(page, "Review queue")
        expect(page.get_by_role("button", name="Log in")).to_have_count(0)
        other = context.new_page()
        other.goto(f"{console.url}/dashboard")
        settle(other, "Dashboard")
        other.get_by_role("button", name="Log out").click()
        expect(other.get_by_role("button", name="Log in")).to_be_visible()
        assert wait_for_cookie(context, present=False) is None  # the server deleted it
        page.reload()  # the other tab's login ended with it
        expect(page.get_by_role("button", name="Log in")).to_be_visible()
        expect(page.get_by_role("heading", name="Review queue", exact=True)).to_have_count(0)
    finally:
        context.close()


def test_images_are_served_only_inside_the_logged_in_session(console: Console, page: Page) -> None:
    """The queue's previews and the image page's original reach the browser inside the session's websocket (data:
    URLs), so no address outlives the session: the browser fetches nothing under /media/, and /media/ answers
    nothing to a request that never logged in."""
    fetched: list[str] = []
    page.on("request", lambda request: fetched.append(request.url))
    log_in(page, console.url)
    settle(page, "Review queue")
    page.get_by_role("link", name="Image details").first.click()
    settle(page, "Image")
    sources: list[str] = page.evaluate("() => [...document.images].map(image => image.src)")
    shown = [source for source in sources if source.startswith("data:image/")]
    assert len(shown) >= 1, sources
    media = [url for url in [*fetched, *sources] if urlsplit(url).path.startswith("/media/")]  # not /static/media fonts
    assert media == [], "an image was served from a public /media/ address"
    assert requests.get(f"{console.url}/media/{'0' * 56}.jpeg", timeout=10).status_code == 404


def new_page(browser: Browser, size: str = "1366x768") -> tuple[BrowserContext, Page]:
    context = browser.new_context(viewport=LAYOUTS[size])  # type: ignore[arg-type]
    context.set_default_timeout(TIMEOUT_MS)
    return context, context.new_page()


PAGE_PATHS = {"queue": "Review queue", "image": "Image", "batches": "Batches", "dashboard": "Dashboard",
              "models": "Models", "audit": "Audit"}


def test_every_console_page_opens_at_its_own_path_typed_or_bookmarked(console: Console, browser: Browser) -> None:
    """/queue used to answer "Page not found" (Streamlit serves its default page at / only); every page's path
    works typed into the address bar, and /queue?batch=ID fills the batch filter."""
    context, page = new_page(browser)
    try:
        log_in(page, console.url, ADMIN)
        settle(page, "Review queue")
        assert urlsplit(page.url).path == "/queue"
        for path, heading in PAGE_PATHS.items():
            page.goto(f"{console.url}/{path}")
            settle(page, heading)
            expect(page.get_by_text("Page not found")).to_have_count(0)
            assert urlsplit(page.url).path == f"/{path}"
        page.goto(f"{console.url}/queue?batch=a-linked-batch")
        settle(page, "Review queue")
        expect(page.get_by_role("textbox", name="Batch id")).to_have_value("a-linked-batch")
    finally:
        context.close()


CSP_WATCH_JS = """window.__cspViolations = [];
document.addEventListener('securitypolicyviolation',
    (event) => window.__cspViolations.push(event.violatedDirective + ' ' + event.blockedURI));"""


def test_console_pages_carry_security_headers_and_refuse_framing(console: Console, browser: Browser,
                                                                   image_server: LocalServer) -> None:
    """Content-Security-Policy (frame-ancestors 'none'), X-Frame-Options and nosniff on the pages and on what they
    load; every page works under the policy (no violation, charts drawn); another site cannot frame the console."""
    context, page = new_page(browser)
    responses: list[tuple[str, dict[str, str]]] = []
    page.on("response", lambda response: responses.append((response.url, response.headers)))
    page.add_init_script(CSP_WATCH_JS)
    try:
        document = page.goto(f"{console.url}/queue")
        assert document is not None
        headers = document.all_headers()
        assert "frame-ancestors 'none'" in headers["content-security-policy"]
        assert headers["x-frame-options"] == "DENY" and headers["x-content-type-options"] == "nosniff"
        log_in(page, console.url, ADMIN)
        settle(page, "Review queue")
        for title in ("Image", "Batches", "Dashboard", "Models", "Audit"):
            open_page(page, title)
            if title == "Dashboard":  # the Vega charts draw under the policy
                expect(page.locator("[data-testid=stVegaLiteChart] canvas, [data-testid=stVegaLiteChart] svg")
                       .first).to_be_visible()
        assert page.evaluate("window.__cspViolations") == []
        same_origin = [(url, h) for url, h in responses if url.startswith(console.url)]
        assert len(same_origin) > 5
        assert all(h.get("x-content-type-options") == "nosniff" for _, h in same_origin), same_origin
        assert requests.get(f"{console.url}/_stcore/health", timeout=10).headers["X-Frame-Options"] == "DENY"

        image_server.routes["/framing.html"] = (200, {"Content-Type": "text/html"},
                                                f'<iframe src="{console.url}/queue"></iframe>'.encode())
        page.goto(image_server.url("/framing.html"))
        page.wait_for_timeout(3000)
        [frame] = [frame for frame in page.frames if frame != page.main_frame]
        assert frame.get_by_role("textbox", name="Name").count() == 0
        assert not frame.url.startswith(console.url) or frame.locator("[data-testid=stApp]").count() == 0
    finally:
        context.close()


def test_the_login_cookie_is_issued_httponly_by_the_server() -> None:
    """The server's answer to a ticket sets the cookie HttpOnly and SameSite=Strict, Secure when reached over HTTPS
    (or through a proxy that says so); a ticket works once."""
    def redeem(ticket: str, headers: list[tuple[bytes, bytes]], scheme: str = "http") -> tuple[int, str]:
        scope = {"type": "http", "method": "GET", "path": SESSION_PATH, "query_string": f"ticket={ticket}".encode(),
                 "headers": headers, "scheme": scheme, "server": ("127.0.0.1", 8501)}
        with ThreadPoolExecutor(1) as thread:  # a loop of its own: Playwright's may be running in this one
            response = thread.submit(asyncio.run, session_cookie(Request(scope))).result()
        return response.status_code, response.headers.get("set-cookie", "")

    status, cookie = redeem(TICKETS.issue("token-1", 3600), [])
    assert status == 200 and cookie.startswith("fakewatch_console=token-1;")
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Max-Age=3600" in cookie and "Secure" not in cookie
    ticket = TICKETS.issue("token-2", 3600)
    assert "Secure" in redeem(ticket, [(b"x-forwarded-proto", b"https")])[1]
    assert redeem(ticket, [])[0] == 404  # used
    assert "Secure" in redeem(TICKETS.issue("token-3", 60), [], scheme="https")[1]
    assert redeem("a-guessed-ticket", [])[0] == 404


def visible_none(page: Page) -> list[str]:
    cells: list[str] = page.evaluate(NONE_CELLS_JS)
    return cells


def test_no_python_none_on_the_console_and_logins_record_the_address(console: Console, browser: Browser) -> None:
    """Cells without a value read as a dash (the Models page's "last active", the Image page's checks and
    provenance, the Audit page's addresses); the provenance block is tables, not a raw JSON viewer; a console
    login records the address it came from ("localhost" on this machine, which Streamlit does not name)."""
    context, page = new_page(browser)
    try:
        log_in(page, console.url, ADMIN)
        settle(page, "Review queue")
        wait_for_cookie(context)  # set by the server once the page loads its ticket: the next address needs it
        sha256 = hashlib.sha256(provenance_fixture("C.jpg")).hexdigest()
        page.goto(f"{console.url}/image?sha256={sha256}")
        settle(page, "Image")
        expect(page.get_by_test_id("stTable")).to_have_count(2)  # the Content Credentials and the signals
        expect(page.get_by_test_id("stJson")).to_have_count(0)
        page.get_by_role("heading", name="Checks (1)").scroll_into_view_if_needed()
        page.wait_for_timeout(500)
        assert visible_none(page) == []
        open_page(page, "Models")
        assert visible_none(page) == []
        open_page(page, "Audit")
        expect(page.get_by_test_id("stDataFrame").locator("canvas td", has_text="localhost").first).to_be_attached()
        assert visible_none(page) == []
    finally:
        context.close()


def test_a_refused_promotion_shows_its_reason_beside_the_button(console: Console, browser: Browser) -> None:
    """At 1366x768, "Promote anyway" without a reason is refused, and the refusal shows under the button, on
    screen, not a screen above it."""
    context, page = new_page(browser)
    try:
        log_in(page, console.url, ADMIN)
        settle(page, "Review queue")
        open_page(page, "Models")
        button = page.get_by_role("button", name=f"Promote {CANDIDATE} anyway")
        button.scroll_into_view_if_needed()
        button.click()
        refusal = page.get_by_test_id("stAlert").filter(has_text="An admin can override with a typed reason.")
        expect(refusal).to_be_visible()
        refusal.scroll_into_view_if_needed()  # a no-op when it is on screen already
        near, shown = button.bounding_box(), refusal.bounding_box()
        assert near is not None and shown is not None
        assert shown["y"] >= 0 and shown["y"] + shown["height"] <= LAYOUTS["1366x768"]["height"] + 1
        assert 0 <= shown["y"] - (near["y"] + near["height"]) < 100, (near, shown)
    finally:
        context.close()
