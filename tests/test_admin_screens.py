"""Screenshots of every console page from a real headless Chromium against a running console (`fakewatch admin`
as a subprocess, XSRF protection on), over a database seeded through the services.

Screenshots go to test-artifacts/admin-*.png; with FAKEWATCH_UPDATE_DOCS_IMAGES=1 they also replace the
README's docs/images/admin-*.png (opt-in, so an ordinary test run leaves the work tree clean)."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests
from playwright.sync_api import Browser, Page, expect, sync_playwright

from backend.batches.lifecycle import create_batch
from backend.batches.lists import entries_from_text, validate_entries
from backend.moderation.reviews import label_image
from backend.settings import Settings
from backend.storage.db import get_engine, session_scope
from backend.storage.migrate import upgrade_database
from tests.actors import as_user
from tests.fixtures_images import LocalServer
from tests.stack import free_port, isolated_settings, wait_for_url
from tests.test_admin import MODERATOR, PASSWORD, add_moderator, image_id_of, seed_queue

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
TIMEOUT_MS = 30_000
MAX_SHOT_PX = 4000


@dataclass
class Console:
    url: str
    log: Path


def seed_console_database(settings: Settings, image_server: LocalServer) -> None:
    """Users, flagged checks, one review (for the agreement chart) and a batch, all through the services."""
    upgrade_database(settings.database)
    seeded = seed_queue(add_moderator(settings))
    with session_scope(settings) as session:
        label_image(session, image_id_of(settings, seeded.real), "real", as_user(MODERATOR))
        urls = "\n".join(image_server.url(f"/crawl/{n}.jpg") for n in range(5))
        create_batch(session, validate_entries(entries_from_text(urls + "\nnot a url"), settings.batch_max_urls),
                     name="crawl of example pages")
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
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS, headless=True)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport=VIEWPORT)  # type: ignore[arg-type]
    context.set_default_timeout(TIMEOUT_MS)
    tab = context.new_page()
    yield tab
    context.close()


def log_in(page: Page, url: str) -> None:
    page.goto(url)
    page.get_by_role("textbox", name="Name").fill(MODERATOR)
    page.get_by_role("textbox", name="Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()


def settle(page: Page, heading: str) -> None:
    """Wait for the page's title, for its images and charts, and for the script run to end."""
    expect(page.get_by_role("heading", name=heading, exact=True)).to_be_visible()
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
        page.get_by_role("link", name="Image details").first.click()
        settle(page, "Image")
        assert cut_buttons(page) == [], f"cut button labels on the Image page at {size}"
        capture(page, f"image-{size}", LAYOUTS[size])
        for title in ("Batches", "Dashboard", "Models"):
            open_page(page, title)
            assert cut_buttons(page) == [], f"cut button labels on {title} at {size}"
            capture(page, f"{title.lower()}-{size}", LAYOUTS[size])
    finally:
        context.close()


def test_cut_labels_are_detected(console: Console, page: Page) -> None:
    """The check above can fail: a button squeezed to 40 px is reported."""
    log_in(page, console.url)
    settle(page, "Review queue")
    page.evaluate("""() => { const button = [...document.querySelectorAll('button')]
        .find((b) => b.innerText.includes('Undo my last decision'));
        button.style.width = '40px'; button.style.minWidth = '0'; button.style.maxWidth = '40px'; }""")
    assert cut_buttons(page) == ["Undo my last decision"]


def test_a_login_lasts_across_reloads_and_tabs_until_logout(console: Console, browser: Browser) -> None:
    context = browser.new_context(viewport=VIEWPORT)  # type: ignore[arg-type]
    context.set_default_timeout(TIMEOUT_MS)
    try:
        page = context.new_page()
        log_in(page, console.url)
        settle(page, "Review queue")
        page.wait_for_function("() => document.cookie.includes('fakewatch_console=')")
        page.reload()
        settle(page, "Review queue")
        expect(page.get_by_role("button", name="Log in")).to_have_count(0)
        other = context.new_page()
        other.goto(f"{console.url}/dashboard")
        settle(other, "Dashboard")
        other.get_by_role("button", name="Log out").click()
        expect(other.get_by_role("button", name="Log in")).to_be_visible()
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
