"""The /demo page in a real headless Chromium: pick a user, add an item to the cart, see the list change.

Something must turn the page's event into a new list in Redis.  Until the
real job runs in this test, ``fake_spool_job`` stands in for it: it watches
the spool directory like the job's file source and, for every new events
file, writes a new ``rec:{user}`` list through RedisStore.  Swapping in the
real job is the one line in the ``job`` fixture.
"""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import orjson
import pytest

from api.browse import BrowseCatalog
from state.keys import KeyKind
from state.store import RedisStore, ScoredItem, Write, encode_list
from transforms.catalog import CatalogItem

from .conftest import NOW_MS, put_list

pytestmark = pytest.mark.browser

DEMO_KEY = "demo-key-for-the-browser-test"
CATALOG = [CatalogItem(f"i{k}", title=f"Product {k}", category="fashion/shoes" if k % 2 else "home", brand="acme", price=10.0 + k) for k in range(1, 7)]


class FakeSpoolJob:
    """Reads each new events file in the spool dir and writes ``rec:{user}`` = a complement of the last cart add.

    The list it writes puts ``i4`` ("goes with <item> in your cart") in front of
    the user's previous list, so the page has something new to show.
    """

    def __init__(self, spool_dir: Path, store: RedisStore) -> None:
        self.spool_dir = spool_dir
        self.store = store
        self.seen: set[str] = set()
        self.processed: list[dict] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="fake-spool-job", daemon=True)

    def _run(self) -> None:
        while not self.stop.wait(0.05):
            for path in sorted(self.spool_dir.glob("events/events-*.jsonl")):
                if path.name in self.seen:
                    continue
                self.seen.add(path.name)
                for line in path.read_bytes().splitlines():
                    event = orjson.loads(line)
                    self.processed.append(event)
                    if event["event_type"] == "add_to_cart":
                        self._write_list(event["user_id"], event["item_id"], event["ts"])

    def _write_list(self, user: str, item: str, ts: int) -> None:
        from state.store import decode_list

        _, previous, _ = decode_list(self.store.get_many([(KeyKind.USER_RECS, user)])[0])
        fresh = [ScoredItem("i4", 2.0, f"goes with {item} in your cart")] + [p for p in previous if p.item not in ("i4", item)]
        self.store.write([Write(KeyKind.USER_RECS, user, encode_list(ts, fresh))])

    def __enter__(self) -> "FakeSpoolJob":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=5)


@pytest.fixture
def fake_spool_job(spool_dir, store):
    with FakeSpoolJob(spool_dir, store) as job:
        yield job


@pytest.fixture
def job(fake_spool_job):
    # The real PyFlink job fixture replaces this line once it exists.
    return fake_spool_job


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


def test_demo_page_sends_an_event_and_shows_the_list_change(serve, store, spool_dir, job, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

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

    wait.until(lambda d: list_items(d)[:2] == ["i1", "i2"])
    before = list_items(browser)
    # Reasons name items by title where the page knows them (the raw reason is the tooltip).
    assert "because you viewed Product 2" in browser.execute_script("return document.getElementById('recs').textContent")
    assert browser.find_element(By.CSS_SELECTOR, '.product[data-item="i1"] .title').text == "Product 1"

    browser.find_element(By.CSS_SELECTOR, '.product[data-item="i3"] button.add-to-cart').click()
    wait.until(lambda d: "sent add_to_cart i3" in d.find_element(By.ID, "last-post").text)

    # The event reached the job's live source as a spool file ...
    spooled = [orjson.loads(line) for path in sorted(spool_dir.glob("events/events-*.jsonl")) for line in path.read_bytes().splitlines()]
    assert {"user_id": "u1", "item_id": "i3", "event_type": "add_to_cart", "ts": NOW_MS} in spooled
    # ... and once the job has processed it, the page shows the new list with its reasons.
    wait.until(lambda d: list_items(d) != before)
    reasons = browser.execute_script("return [...document.querySelectorAll('#recs li .reason')].map(r => r.textContent)")
    assert reasons and all(reasons)
    assert browser.find_element(By.ID, "c-sent").text == "1"
    severe = [entry["message"] for entry in browser.get_log("browser")]
    assert severe == []


def test_demo_page_without_demo_mode_has_no_key(serve, browser):
    from selenium.webdriver.common.by import By

    base = serve()
    browser.get(f"{base}/demo")
    assert browser.execute_script("return window.FLOWREC") == {"apiKey": None, "pollMs": 500}
    assert browser.find_element(By.ID, "api-key").get_attribute("value") == ""
