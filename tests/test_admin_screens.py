"""Screenshots of every console page from a real headless Chromium against a running console (`fakewatch admin`
as a subprocess, XSRF protection on), over a database seeded through the services.

Screenshots go to test-artifacts/admin-*.png; with FAKEWATCH_UPDATE_DOCS_IMAGES=1 they also replace the
README's docs/images/admin-*.png (opt-in, so an ordinary test run leaves the work tree clean)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests
from playwright.sync_api import Browser, Page, expect, sync_playwright

from backend.batches.lifecycle import create_batch
from backend.batches.lists import entries_from_text, validate_entries
from backend.db import get_engine, session_scope
from backend.migrate import upgrade_database
from backend.reviews import label_image
from backend.settings import Settings
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


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory, image_server: LocalServer) -> Iterator[Console]:
    data_dir = tmp_path_factory.mktemp("console") / "var"
    env = {"FAKEWATCH_DATA_DIR": str(data_dir)}
    seed_console_database(isolated_settings(data_dir=data_dir), image_server)
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


def capture(page: Page, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"admin-{name}.png"
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
    expect(page.get_by_role("button", name="Fake", exact=True)).to_have_count(3)
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
