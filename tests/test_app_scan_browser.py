"""The "scan a long file" panel in a real headless Chromium (as tests/test_app.py): after a fit, a long
recording uploaded through the page is scanned, its timeline drawn (a line per class, a band per
event), its events listed as the API gives them, the CSV downloaded; a picked path outside the
root shows the refusal; no request leaves the app's address.

A picture of the panel after the scan: ``CALM_APP_SCAN_SCREENSHOT=scan.png pytest tests/test_app_scan_browser.py``."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pytest
import soundfile

from test_app import (TONES, app_url, backbone, browser, clips, message, requested_urls, session, text,  # noqa: F401
                      then_message, wait)

By = pytest.importorskip("selenium.webdriver.common.by").By
RATE = 16000


@pytest.fixture()
def recording(tmp_path) -> Path:
    """7 s: noise, a low tone at 1-3 s, noise, a high tone at 4-6 s, noise."""
    noise = lambda s, seed: 0.01 * np.random.default_rng(seed).standard_normal(int(RATE * s))
    t = np.arange(2 * RATE) / RATE
    audio = np.concatenate([noise(1, 1), 0.3 * np.sin(2 * np.pi * TONES["low"] * t), noise(1, 2),
                            0.3 * np.sin(2 * np.pi * TONES["high"] * t), noise(1, 3)]).astype(np.float32)
    path = tmp_path / "night.wav"
    soundfile.write(path, audio, RATE)
    return path


def test_a_long_file_is_scanned_drawn_listed_and_downloaded_in_the_browser(browser, app_url, session, clips,
                                                                           recording):
    for name in TONES:
        session.add_class(name)
        for path in clips[name]:
            session.add_clip(name, path.name, path.read_bytes())
    session.fit()
    requested_urls(browser)
    browser.get(app_url)
    wait(browser, lambda d: d.find_element(By.ID, "scanning").is_displayed())
    options = [o.text for o in browser.find_elements(By.CSS_SELECTOR, "#scan-background option")]
    assert options == ["none", "high", "low"]

    kind, shown = then_message(browser, lambda: browser.find_element(By.ID, "scan-pick").send_keys("/etc/passwd\n"))
    assert kind == "error" and shown.startswith("/etc/passwd: outside ")
    browser.find_element(By.ID, "scan-upload").send_keys(str(recording))
    wait(browser, lambda d: text(d, "scan-file") == "night.wav (7.0 s)")
    browser.find_element(By.ID, "scan-threshold").clear()
    browser.find_element(By.ID, "scan-threshold").send_keys("0")
    browser.find_element(By.ID, "scan-run").click()
    wait(browser, lambda d: d.find_element(By.ID, "scan-result").is_displayed())

    result = session_scan(browser)
    events = result["events"]
    assert text(browser, "scan-summary").startswith(f"night.wav: {len(events)} event")
    assert len(browser.find_elements(By.CSS_SELECTOR, "#scan-timeline path.class")) == len(TONES)
    assert len(browser.find_elements(By.CSS_SELECTOR, "#scan-timeline rect.event")) == len(events) > 0
    rows = [r.text.split() for r in browser.find_elements(By.CSS_SELECTOR, "#scan-events tr")[1:]]
    assert rows == [[f"{e['onset']:.2f}", f"{e['offset']:.2f}", e["label"], f"{e['peak']:.3f}", f"{e['mean']:.3f}"]
                    for e in events]

    if os.environ.get("CALM_APP_SCAN_SCREENSHOT"):
        browser.execute_script("document.getElementById('scanning').scrollIntoView()")
        browser.save_screenshot(os.environ["CALM_APP_SCAN_SCREENSHOT"])
    browser.find_element(By.ID, "scan-csv").click()
    saved = browser.tmp_downloads / "night.events.csv"
    wait(browser, lambda d: saved.exists() and saved.stat().st_size > 0, 30)
    with open(saved, newline="") as handle:
        assert [(r["file"], r["label"]) for r in csv.DictReader(handle)] == [("night.wav", e["label"]) for e in events]
    urls = requested_urls(browser)
    assert app_url + "scan.js" in urls and app_url + "api/scan" in urls
    assert [u for u in urls if urlparse(u).scheme not in ("chrome", "data", "blob") and not u.startswith(app_url)] == []
    assert message(browser)[0] == "ok"


def session_scan(browser) -> dict:
    """The last scan as the API gives it, asked from the page itself (same settings, read back from the store)."""
    reply = browser.execute_async_script(
        "const done = arguments[0]; fetch('api/scan', {method: 'POST', headers: {'Content-Type': 'application/json'},"
        " body: JSON.stringify({threshold: 0})}).then((r) => r.text()).then(done);")
    return json.loads(reply)
