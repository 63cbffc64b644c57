"""The server's web page in a real browser: headless Chromium loads it, types a sentence,
presses Speak, and the page plays the streamed audio while it highlights the words.

Needs Debian's ``chromium`` and ``chromium-driver`` (``./install.sh --dev`` installs them);
``docs/figures/server-page.png`` is this test's screenshot (``FLOWSPEECH_SAVE_SCREENSHOT=1``
refreshes it)."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest
from test_server import LiveServer

from flowspeech import Synthesizer
from flowspeech.server import ServerConfig, create_app

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
SCREENSHOT = Path(__file__).resolve().parent.parent / "docs" / "figures" / "server-page.png"

pytestmark = pytest.mark.skipif(CHROMIUM is None or DRIVER is None,
                                reason="Debian's chromium and chromium-driver are not installed (./install.sh --dev)")


def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--autoplay-policy=no-user-gesture-required", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
                 "--window-size=1000,700"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(DRIVER), options=options)


def test_the_page_plays_streamed_speech_and_lights_each_word(tmp_path):
    from selenium.webdriver.common.by import By

    app = create_app(ServerConfig({"slt": Synthesizer()}, workers=1, streams=2, queue=2))
    with LiveServer(app) as server:
        driver = browser()
        try:
            driver.get(f"http://127.0.0.1:{server.port}/")
            for _ in range(100):  # the voice list comes from /v1/voices
                if driver.find_elements(By.CSS_SELECTOR, "#voice option"):
                    break
                time.sleep(0.1)
            assert driver.find_element(By.CSS_SELECTOR, "#voice option").get_attribute("value") == "slt"
            box = driver.find_element(By.ID, "text")
            box.clear()
            box.send_keys("The quick brown fox jumps over the lazy dog. It was not amused.")
            driver.find_element(By.ID, "speak").click()
            state, shot = {}, False
            for _ in range(600):  # bounded: at most a minute
                state = driver.execute_script(
                    "const s = window.flowspeechState; return {played: s.played, lit: s.highlighted.size, "
                    "done: s.done, error: s.error, words: document.querySelectorAll('#words span').length};")
                if not shot and state["lit"] >= 6:  # mid-sentence: the word being said is lit
                    driver.save_screenshot(str(tmp_path / "page.png"))
                    shot = True
                if state["done"] and state["lit"] == state["words"] > 0:
                    break
                time.sleep(0.1)
            assert state["error"] is None, state
            assert state["played"] > 2.0, state  # seconds of audio scheduled for playback
            assert state["words"] == 13 and state["lit"] == 13, state  # every word lit in turn
            assert driver.find_element(By.ID, "download").is_displayed()
            assert shot and (tmp_path / "page.png").stat().st_size > 10_000
            if os.environ.get("FLOWSPEECH_SAVE_SCREENSHOT"):  # to refresh the one in docs/
                shutil.copyfile(tmp_path / "page.png", SCREENSHOT)
        finally:
            driver.quit()
