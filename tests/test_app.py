"""``calm app`` driven in a real headless Chromium (Debian's ``chromium`` + ``chromium-driver``) on a
tiny random model: make classes, upload and record clips, fit, classify, download the classifier
and get the same label from ``calm predict``; corrupt uploads show the error in the page and the
next action works; no request leaves the app's own address.

The README's picture of the page after a prediction was made with
``CALM_APP_MODEL=whisper-base CALM_APP_SCREENSHOT=docs/img/app.png pytest tests/test_app.py -k download``."""

from __future__ import annotations

import csv
import json
import logging
import os
import re
import shutil
import threading
import time
import warnings
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import urlparse

import numpy as np
import pytest
import soundfile

from calm.app import AppSession, make_server
from calm.backbones import load_backbone
from calm.cli import main
from calm.cli._common import DEFAULT_PROMPT
from calm.predict import predict_files

MODEL = os.environ.get("CALM_APP_MODEL", "tiny:qwen2_audio")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
webdriver = pytest.importorskip("selenium.webdriver", reason="needs selenium: pip install 'calm-audio[test]'")
if CHROMIUM is None or CHROMEDRIVER is None:
    pytest.skip("needs Debian's chromium and chromium-driver (scripts/setup.sh installs them)",
                allow_module_level=True)
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.common.exceptions import StaleElementReferenceException  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

TONES = {"low": 250.0, "high": 3000.0}


def tone(path: Path, hz: float, seed: int = 0, seconds: float = 0.4) -> Path:
    t = np.arange(int(16000 * seconds)) / 16000
    noise = 0.01 * np.random.default_rng(seed).standard_normal(len(t))
    soundfile.write(path, (0.3 * np.sin(2 * np.pi * hz * t) + noise).astype(np.float32), 16000)
    return path


@pytest.fixture(scope="module")
def backbone() -> Any:
    return load_backbone(MODEL)


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, list[Path]]:
    """Three tones per class, one new tone near 'high', and a corrupt 'wav'."""
    root = tmp_path_factory.mktemp("appclips")
    made = {name: [tone(root / f"{name}{k}.wav", hz * (1 + 0.03 * k), seed=k) for k in range(3)]
            for name, hz in TONES.items()}
    made["query"] = [tone(root / "query.wav", 3100.0, seed=9)]
    (root / "broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEnot really audio")
    made["broken"] = [root / "broken.wav"]
    return made


@pytest.fixture()
def session(backbone, tmp_path) -> AppSession:
    return AppSession(backbone, tmp_path / "work", DEFAULT_PROMPT, root=tmp_path)


@pytest.fixture()
def app_url(session) -> Iterator[str]:
    server = make_server(session, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


@pytest.fixture()
def browser(tmp_path) -> Iterator[Any]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
                 f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1400,1000",
                 "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream"):
        options.add_argument(flag)
    options.add_experimental_option("prefs", {"download.default_directory": str(tmp_path / "downloads"),
                                              "download.prompt_for_download": False})
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.tmp_downloads = tmp_path / "downloads"
    try:
        yield driver
    finally:
        driver.quit()


def wait(driver: Any, condition, seconds: float = 120) -> Any:
    """``condition`` polled until true; an element the page re-drew between finding and reading it
    is looked up again at the next poll."""
    return WebDriverWait(driver, seconds, poll_frequency=0.1,
                         ignored_exceptions=(StaleElementReferenceException,)).until(lambda d: condition(d))


def text(driver: Any, element_id: str) -> str:
    return driver.find_element(By.ID, element_id).text


def message(driver: Any) -> tuple[str, str]:
    """The page's message box: (its class: ok / error, its text)."""
    box = driver.find_element(By.ID, "message")
    return box.get_attribute("class"), box.text


def make_class(driver: Any, name: str) -> None:
    driver.find_element(By.ID, "new-class").send_keys(name)
    driver.find_element(By.ID, "add-class").click()
    wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, f'.class[data-class="{name}"]'))


def card(driver: Any, name: str) -> Any:
    return driver.find_element(By.CSS_SELECTOR, f'.class[data-class="{name}"]')


def then_message(driver: Any, action) -> tuple[str, str]:
    """Hide the message box, do ``action``, wait for the page's new message and return it."""
    driver.execute_script("document.getElementById('message').hidden = true")
    action()
    wait(driver, lambda d: d.find_element(By.ID, "message").is_displayed())
    return message(driver)


def upload_clips(driver: Any, name: str, paths: list[Path]) -> None:
    """Upload through the class's file input; wait until the page reports the result."""
    field = card(driver, name).find_element(By.CSS_SELECTOR, "input[type=file]")
    then_message(driver, lambda: field.send_keys("\n".join(map(str, paths))))


def classify(driver: Any, path: Path) -> None:
    driver.execute_script("document.getElementById('message').hidden = true;"
                          "document.getElementById('result-label').textContent = ''")
    driver.find_element(By.ID, "classify-file").send_keys(str(path))
    wait(driver, lambda d: text(d, "result-label") or d.find_element(By.ID, "message").is_displayed())


def requested_urls(driver: Any) -> list[str]:
    """Every URL the browser asked for since the last call (from Chromium's network log); ``chrome:``
    ones are the browser's own built-in pages."""
    urls = []
    for entry in driver.get_log("performance"):
        event = json.loads(entry["message"])["message"]
        if event["method"] == "Network.requestWillBeSent":
            urls.append(event["params"]["request"]["url"])
    return urls


def test_fit_classify_and_download_in_the_browser(browser, app_url, clips, tmp_path, caplog):
    caplog.set_level(logging.INFO, "calm.app")
    requested_urls(browser)  # drops what the browser's start page asked for
    browser.get(app_url)
    wait(browser, lambda d: text(d, "model") == MODEL)
    for name in TONES:
        make_class(browser, name)
        upload_clips(browser, name, clips[name])
        assert message(browser) == ("ok", f"3 clip(s) added to {name}.")
    assert "(3 clips)" in card(browser, "low").text

    browser.find_element(By.ID, "fit").click()
    wait(browser, lambda d: text(d, "fit-status").startswith("fitted"))
    assert re.fullmatch(r"fitted DefaultClassifier \(calibrated\) on 6 clips\. Held-out accuracy \d+% \(each clip "
                        r"classified without it\)\.", text(browser, "fit-status"))
    assert "DefaultClassifier (calibrated) on 2 classes (high, low)" in text(browser, "classifier-info")

    classify(browser, clips["query"][0])
    label = text(browser, "result-label")
    assert label in TONES
    shown = [row.text.split() for row in browser.find_elements(By.CSS_SELECTOR, "#result-probabilities tr")]
    probabilities = {row[0]: float(row[1]) for row in shown}
    assert sorted(probabilities) == sorted(TONES) and max(probabilities, key=probabilities.get) == label
    wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#weights rect.head"))
    n_heads = len(load_backbone(MODEL).head_index())  # a map per class: every head once
    assert len(browser.find_elements(By.CSS_SELECTOR, "#weights rect.head")) == len(TONES) * n_heads
    assert browser.find_elements(By.CSS_SELECTOR, "#profile rect.layer")
    if os.environ.get("CALM_APP_SCREENSHOT"):
        browser.save_screenshot(os.environ["CALM_APP_SCREENSHOT"])

    browser.find_element(By.ID, "download").click()
    saved = browser.tmp_downloads / "calm-classifier.safetensors"
    wait(browser, lambda d: saved.exists() and saved.stat().st_size > 0, 30)
    out = tmp_path / "predicted.csv"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["predict", "--classifier", str(saved), "--model", MODEL, str(clips["query"][0]),
                     "--out", str(out), "--quiet"]) == 0
    with open(out, newline="") as handle:
        row = next(csv.DictReader(handle))
    assert row["label"] == label
    assert {c: round(float(row[f"p_{c}"]), 3) for c in TONES} == probabilities

    urls = requested_urls(browser)
    assert app_url + "app.js" in urls and app_url + "api/weights" in urls
    assert [u for u in urls if urlparse(u).scheme not in ("chrome", "data", "blob") and not u.startswith(app_url)] == []
    assert [r.getMessage() for r in caplog.records if "no such page" in r.getMessage()] == []  # the favicon is served


def test_corrupt_uploads_show_the_error_and_the_next_action_works(browser, app_url, clips, tmp_path):
    browser.get(app_url)
    make_class(browser, "low")
    upload_clips(browser, "low", clips["broken"])
    kind, shown = message(browser)
    assert kind == "error" and "broken.wav: not a decodable audio file" in shown and "0 clip(s) added" in shown
    upload_clips(browser, "low", [clips["low"][0]])
    assert message(browser) == ("ok", "1 clip(s) added to low.")

    assert then_message(browser, browser.find_element(By.ID, "fit").click) == (
        "error", "fit needs at least two classes, each with at least one clip")

    make_class(browser, "high")
    upload_clips(browser, "high", [clips["broken"][0], clips["high"][0], clips["high"][1]])
    kind, shown = message(browser)
    assert kind == "error" and shown.startswith("2 clip(s) added to high; not added:\nbroken.wav: ")
    upload_clips(browser, "low", [clips["low"][1]])
    browser.find_element(By.ID, "fit").click()
    wait(browser, lambda d: text(d, "fit-status").startswith("fitted"))

    classify(browser, clips["broken"][0])
    kind, shown = message(browser)
    assert kind == "error" and shown.startswith("broken.wav: not a decodable audio file")
    classify(browser, clips["query"][0])
    assert text(browser, "result-label") in TONES and message(browser)[0] == "ok"

    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}garbage")
    kind, shown = then_message(browser, lambda: browser.find_element(By.ID, "load-file").send_keys(str(garbage)))
    assert kind == "error" and shown.startswith("garbage.safetensors: ")
    classify(browser, clips["query"][0])
    assert text(browser, "result-label") in TONES


def test_a_recorded_clip_is_added_to_its_class(browser, app_url):
    """Chromium's fake microphone (a beep) through the page's recorder: a WAV the model can read."""
    browser.get(app_url)
    make_class(browser, "beep")
    record = card(browser, "beep").find_element(By.CSS_SELECTOR, "button.record")
    record.click()
    wait(browser, lambda d: card(d, "beep").find_element(By.CSS_SELECTOR, "button.record").text == "Stop", 10)
    time.sleep(1.0)
    card(browser, "beep").find_element(By.CSS_SELECTOR, "button.record").click()
    wait(browser, lambda d: "(1 clip)" in card(d, "beep").text, 30)
    assert message(browser) == ("ok", "1 clip(s) added to beep.")
    assert card(browser, "beep").find_element(By.CSS_SELECTOR, ".clips li").text.startswith("recording-")


def test_unknown_and_prediction_sets_in_the_page_at_1280_px(browser, app_url, session, clips, backbone):
    """The reject toggle labels a clip "unknown" below the threshold of the rate the user sets (the
    rule of calm predict --reject); the 90% set and what the sets hold on average are shown; at
    1280 px wide nothing overflows and the plots' labels are at least 11 px."""
    browser.set_window_size(1280, 1000)
    browser.get(app_url)
    for name in TONES:
        make_class(browser, name)
        upload_clips(browser, name, clips[name])
    browser.find_element(By.ID, "fit").click()
    wait(browser, lambda d: text(d, "fit-status").startswith("fitted"))
    classify(browser, clips["query"][0])
    expected = predict_files(backbone, session.classifier, clips["query"], reject=True, sets=0.9)[0]
    top = max(expected.probabilities, key=expected.probabilities.get)
    assert text(browser, "result-label") == top and not browser.find_element(By.ID, "reject-rate-box").is_displayed()
    assert text(browser, "result-set").startswith(f"90% prediction set: {{{', '.join(expected.prediction_set)}}} ")
    size = len(expected.prediction_set)
    assert text(browser, "set-summary").startswith(f"At 3 shots, the 90% sets hold {size:.1f} of 2 classes on average "
                                                   "here (1 clip classified)")

    browser.find_element(By.ID, "reject").click()  # at the fit's rate, 5%: 6 clips turn none away
    wait(browser, lambda d: "none is turned away at this rate" in text(d, "result-score"))
    assert text(browser, "reject-rate-value") == "5%" and text(browser, "result-label") == top
    browser.execute_script("const r = document.getElementById('reject-rate'); r.value = 50;"
                           "r.dispatchEvent(new Event('input'))")
    threshold = session.reject_threshold(0.5)
    wait(browser, lambda d: f"unknown below {threshold:.2f}" in text(d, "result-score"))
    assert text(browser, "result-label") == ("unknown" if expected.score < threshold else top)
    browser.find_element(By.ID, "reject").click()
    wait(browser, lambda d: text(d, "result-label") == top)

    assert browser.execute_script("return document.documentElement.scrollWidth") <= 1280
    sizes = browser.execute_script("return [...document.querySelectorAll('#interpretation svg text')]"
                                   ".map((t) => parseFloat(getComputedStyle(t).fontSize))")
    assert sizes and min(sizes) >= 11
