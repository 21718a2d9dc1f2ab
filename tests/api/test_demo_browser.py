"""The /demo page in a real headless Chromium, with the real streaming job: pick a user,
see the list reported as an impression, click an item of it (attributed to the list), add an
item to the cart, and see the list the job computes replace the old one."""

from __future__ import annotations

import shutil
import time

import orjson
import pytest

from api.browse import BrowseCatalog
from state.keys import KeyKind
from transforms.catalog import CatalogItem
from transforms.recid import decode_rec_id

from .conftest import NOW_MS, put_list

pytestmark = pytest.mark.browser

DEMO_KEY = "demo-key-for-the-browser-test"
CATALOG = [CatalogItem(f"i{k}", title=f"Product {k}", category="fashion/shoes" if k % 2 else "home", brand="acme", price=10.0 + k) for k in range(1, 7)]


@pytest.fixture
def job(spool_dir, redis_url, store, tmp_path):
    """The real streaming job on a local mini-cluster, live on the API's spool directory.

    The catalog goes in through the spool like any upsert; the fixture yields
    once the job has published its content neighbours, so it is ready for events.
    """
    import dataclasses

    from flowrec.config import Settings
    from pipelines.main import run_job
    from pipelines.sources import DirectorySource

    catalog_dir = spool_dir / "catalog"
    catalog_dir.mkdir(parents=True, exist_ok=True)
    (catalog_dir / ".catalog-0.tmp").write_bytes(b"".join(item.to_json() + b"\n" for item in CATALOG))
    (catalog_dir / ".catalog-0.tmp").rename(catalog_dir / "catalog-0.jsonl")
    settings = Settings(redis_url=redis_url, spool_dir=spool_dir, restart_attempts=0, checkpoint_dir=str(tmp_path / "checkpoints"))
    client = run_job(dataclasses.replace(settings), DirectorySource(spool_dir), job_name="flowrec-browser-test", wait=False)
    try:
        deadline = time.monotonic() + 120
        while store.get_many([(KeyKind.CONTENT_NEIGHBOURS, "i3")])[0] is None:
            assert time.monotonic() < deadline, "the job did not start"
            time.sleep(0.2)
        yield client
    finally:
        client.cancel().result()


@pytest.fixture
def browser(tmp_path):
    chromium, chromedriver = shutil.which("chromium"), shutil.which("chromedriver")
    if not chromium or not chromedriver:
        pytest.skip("needs Debian's chromium and chromium-driver (deploy/bootstrap.sh chromium)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--no-first-run", "--disable-sync", "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "SEVERE"})
    driver = webdriver.Chrome(service=Service(executable_path=chromedriver), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


@pytest.mark.flink
def test_demo_page_sends_an_event_and_shows_the_list_change(serve, store, spool_dir, clock, job, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    clock.now_ms = time.time_ns() // 1_000_000  # live events: the job's event time follows the wall clock

    put_list(store, KeyKind.USER_RECS, "u1", NOW_MS - 60_000, [("i1", 0.9, "because you viewed i2"), ("i2", 0.5, "similar to i6")])
    put_list(store, KeyKind.TRENDING_GLOBAL, None, NOW_MS - 60_000, [("i5", 3.0), ("i6", 2.0)])
    base = serve(catalog=BrowseCatalog(CATALOG), demo_key=DEMO_KEY)
    wait = WebDriverWait(browser, 15, poll_frequency=0.1)

    browser.get(f"{base}/demo")
    user_input = wait.until(lambda d: d.find_element(By.ID, "user-input"))
    user_input.send_keys("u1")
    browser.find_element(By.ID, "user-set").click()

    def list_items(driver) -> list[str]:
        # Read in one script call: the page re-renders the list while it polls.
        return driver.execute_script("return [...document.querySelectorAll('#recs li[data-item]')].map(li => li.dataset.item)")

    def spooled() -> list[dict]:
        # (each file: JSON-array lines of events, then the end marker the job's spool retention reads)
        return [r for path in sorted(spool_dir.glob("events/events-*.jsonl")) for line in path.read_bytes().splitlines()[:-1] for r in orjson.loads(line)]

    wait.until(lambda d: list_items(d)[:2] == ["i1", "i2"])
    before = list_items(browser)  # the user's two items, topped up with trending
    # Reasons name items by title where the page knows them (the raw reason is the tooltip).
    assert "because you viewed Product 2" in browser.execute_script("return document.getElementById('recs').textContent")
    assert browser.find_element(By.CSS_SELECTOR, '.product[data-item="i1"] .title').text == "Product 1"
    # The list shown is reported once, as an impression under its response's rec_id (one spooled row per item) ...
    rec_id = wait.until(lambda d: d.execute_script("return document.getElementById('recs').dataset.recId"))
    assert decode_rec_id(rec_id, "u1").context == "home"
    shown = lambda: sorted((r["item_id"], r["position"]) for r in spooled() if r["event_type"] == "impression" and r.get("rec_id") == rec_id)
    WebDriverWait(browser, 15, poll_frequency=0.1).until(lambda d: shown() == sorted((item, k) for k, item in enumerate(before)))
    assert all(r["user_id"] == "u1" and r["ts"] == clock.now_ms for r in spooled() if r.get("rec_id") == rec_id)
    # ... and a click on one of its items carries the rec_id and the item's position.
    browser.find_element(By.CSS_SELECTOR, '#recs li[data-item="i2"] .name').click()
    wait.until(lambda d: "sent click i2" in d.find_element(By.ID, "last-post").text)
    assert {"user_id": "u1", "item_id": "i2", "event_type": "click", "ts": clock.now_ms, "rec_id": rec_id, "position": 1} in spooled()
    # The page polls its list every 500 ms (each response a new rec_id) but reports it again only when its items change.
    time.sleep(1.5)
    lists: dict[str, list[str]] = {}
    for r in spooled():
        if r["event_type"] == "impression" and decode_rec_id(r["rec_id"], "u1").context == "home":
            lists.setdefault(r["rec_id"], []).append(r["item_id"])
    reported = sorted(lists.values())  # (spool files of one fake-clock millisecond have no order)
    assert before in reported and len({tuple(items) for items in reported}) == len(reported), reported

    browser.find_element(By.CSS_SELECTOR, '.product[data-item="i3"] button.add-to-cart').click()
    wait.until(lambda d: "sent add_to_cart i3" in d.find_element(By.ID, "last-post").text)

    # The event reached the job's live source as a spool file ...
    assert {"user_id": "u1", "item_id": "i3", "event_type": "add_to_cart", "ts": clock.now_ms} in spooled()
    # ... and once the job has processed it, the page shows the new list with its reasons.
    WebDriverWait(browser, 30, poll_frequency=0.1).until(lambda d: list_items(d) not in ([], before))
    reasons = browser.execute_script("return [...document.querySelectorAll('#recs li .reason')].map(r => r.textContent)")
    assert reasons and all(reasons)
    assert browser.find_element(By.ID, "c-sent").text == "2"  # the click and the cart (impressions are not counted)
    severe = [entry["message"] for entry in browser.get_log("browser")]
    assert severe == []


def test_demo_page_without_demo_mode_has_no_key(serve, browser):
    from selenium.webdriver.common.by import By

    base = serve()
    browser.get(f"{base}/demo")
    assert browser.execute_script("return window.FLOWREC") == {"apiKey": None, "pollMs": 500}
    assert browser.find_element(By.ID, "api-key").get_attribute("value") == ""


def test_docs_page_renders_from_local_files_under_its_policy(serve, browser):
    """Swagger UI draws every operation with no network beyond the API (its files are local, the CSP allows nothing else)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    base = serve()
    browser.get(f"{base}/docs")
    WebDriverWait(browser, 20, poll_frequency=0.1).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, ".opblock")) >= 10)
    paths = browser.execute_script("return [...document.querySelectorAll('.opblock-summary-path')].map(e => e.dataset.path)")
    assert "/v1/users/{user_id}/recommendations" in paths
    loaded = browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert loaded and all(url.startswith(base) for url in loaded), loaded
    assert [entry["message"] for entry in browser.get_log("browser")] == []
