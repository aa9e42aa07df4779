"""The gallery in a real browser: Debian's headless Chromium, driven through chromedriver by
selenium, against a real ``tireg serve`` on 127.0.0.1. It loads the gallery, searches, filters,
opens an embedding, installs it into a (fake) A1111 folder and uninstalls it again, and writes a
screenshot of the gallery for people to look at (also to ``TIREG_SCREENSHOT_DIR`` when set)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.serve.conftest import Server, Setup

CHROMIUM = next(
    (p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None
)
CHROMEDRIVER = shutil.which("chromedriver")

pytestmark = pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None,
    reason="no Chromium with chromedriver here (Debian: apt-get install chromium chromium-driver)",
)

if CHROMIUM is not None and CHROMEDRIVER is not None:
    from selenium import webdriver
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.remote.webdriver import WebDriver
    from selenium.webdriver.remote.webelement import WebElement
    from selenium.webdriver.support.ui import Select, WebDriverWait


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[WebDriver]:
    """Headless Chromium with a fresh profile and nothing that talks to the internet."""
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (
        "--headless",
        "--no-sandbox",  # CI runs as root, where Chromium's sandbox cannot start
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--window-size=1400,1000",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def _names(browser: WebDriver) -> list[str]:
    return sorted(e.text for e in browser.find_elements(By.CSS_SELECTOR, "#cards .name"))


def _follow(browser: WebDriver, element: WebElement) -> None:
    """Click ``element`` and wait until the page it leads to has replaced this one.

    The old page is marked with a window property; the new page has none. Selenium's own
    ``staleness_of`` asks the old element whether it is enabled, and while Chromium is tearing
    the old document down chromedriver may answer that with a generic error ("Node with given
    id does not belong to the document") instead of a stale-element one, so every driver error
    during the wait means "not there yet"."""
    browser.execute_script("window.tiregLeaving = true")
    element.click()
    WebDriverWait(browser, 30, ignored_exceptions=(WebDriverException,)).until(
        lambda b: b.execute_script(
            "return window.tiregLeaving === undefined && document.readyState === 'complete'"
        )
    )


def _submit(browser: WebDriver) -> None:
    _follow(browser, browser.find_element(By.ID, "go"))


def _screenshot(browser: WebDriver, tmp_path: Path) -> None:
    """Wait for every thumbnail to be decoded, then save the page, here and where asked."""
    WebDriverWait(browser, 60).until(
        lambda b: b.execute_script(
            "return [...document.images].every(i => i.complete && i.naturalWidth > 0)"
        )
    )
    shot = tmp_path / "gallery.png"
    assert browser.save_screenshot(str(shot))
    assert shot.stat().st_size > 10_000
    wanted = os.environ.get("TIREG_SCREENSHOT_DIR")
    if wanted:
        Path(wanted).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, Path(wanted) / "gallery.png")


def test_browse_search_filter_open_install(
    browser: WebDriver, server: Server, gallery_setup: Setup, tmp_path: Path
) -> None:
    browser.get(server.url + "/")
    everything = _names(browser)
    assert everything == sorted(
        ["birb-style", "cat-toy", "midjourney-xl", "sd2-painting"]
        + [n for n in everything if n.startswith("gasai yuno")]
    )
    assert len([n for n in everything if n.startswith("gasai yuno")]) == 2
    # five previews, and the sd2 embedding (no preview) shows its validation grid
    assert len(browser.find_elements(By.CSS_SELECTOR, "#cards img")) == 6
    _screenshot(browser, tmp_path)

    # search
    box = browser.find_element(By.ID, "q")
    box.send_keys("birb")
    _submit(browser)
    assert _names(browser) == ["birb-style"]
    browser.find_element(By.ID, "q").clear()

    # filter: family, then "works on this model" (an SDXL checkpoint of the user's), then tag
    Select(browser.find_element(By.ID, "family")).select_by_value("sd1")
    _submit(browser)
    assert all(not n.startswith(("midjourney", "sd2")) for n in _names(browser))
    assert len(_names(browser)) == 4
    Select(browser.find_element(By.ID, "family")).select_by_value("")
    Select(browser.find_element(By.ID, "model")).select_by_visible_text(
        f"works on {gallery_setup.model} (sdxl)"
    )
    _submit(browser)
    assert _names(browser) == ["midjourney-xl"]
    Select(browser.find_element(By.ID, "model")).select_by_value("")
    Select(browser.find_element(By.ID, "source")).select_by_value("local")
    _submit(browser)
    assert len(_names(browser)) == 6
    _follow(browser, browser.find_element(By.LINK_TEXT, "paint"))
    assert _names(browser) == ["sd2-painting"]

    # open an embedding: versions, provenance, neighbours
    browser.get(server.url + "/?tag=anime")
    assert len(_names(browser)) == 2
    _follow(browser, browser.find_elements(By.CSS_SELECTOR, "#cards .card-link")[0])
    assert browser.find_element(By.ID, "name").text.startswith("gasai yuno")
    # the two saves carry their file stems as names (gasai yuno-1000, -2000): the run's lineage
    # is what ties them together as versions
    versions = browser.find_element(By.ID, "versions").text
    lineage = browser.find_element(By.ID, "lineage").text
    assert lineage.count("run-yuno") == 2 and lineage.count("train") == 2
    assert "1000" in versions and "2000" in versions
    assert "part2" in browser.find_element(By.ID, "provenance").text
    assert "7460a6fa" in browser.find_element(By.ID, "trained-on").text.lower()
    neighbours = browser.find_element(By.ID, "neighbours").find_elements(By.TAG_NAME, "a")
    assert len(neighbours) == 3  # the other sd1 embeddings
    _follow(browser, neighbours[0])
    assert browser.find_element(By.ID, "name").text.startswith(("cat-toy", "birb-style", "gasai"))

    # install into the fake A1111 folder, see the file land, uninstall it
    browser.get(server.url + "/?q=cat-toy")
    _follow(browser, browser.find_element(By.CSS_SELECTOR, "#cards .card-link"))
    assert browser.find_element(By.ID, "name").text == "cat-toy"
    landed = gallery_setup.a1111 / "embeddings" / "cat-toy.safetensors"
    assert not landed.exists()
    _follow(browser, browser.find_element(By.ID, "install-a1111"))
    assert "installed: " in browser.find_element(By.CLASS_NAME, "flash").text
    assert landed.is_file()
    assert str(landed) in browser.find_element(By.ID, "installs").text
    _follow(browser, browser.find_element(By.CSS_SELECTOR, "#installs .uninstall"))
    assert "removed: " in browser.find_element(By.CLASS_NAME, "flash").text
    assert not landed.exists()
