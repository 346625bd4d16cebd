"""The web page of `erckit serve` in real headless Chromium (Debian's chromium + chromium-driver): it loads,
a pasted dialogue is labelled, a turn added live is labelled, colours and probabilities match the API's."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from test_encoder_model import tiny_encoder  # noqa: F401  (fixture)
from test_serve import TURNS, Server, request, train_model

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
REQUIRE = "ERCKIT_REQUIRE_BROWSER"  # CI sets it to 1 (it installs them): a missing browser fails there
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--window-size=1000,1500"]


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        reason = f"needs {CHROMIUM} and {CHROMEDRIVER} (apt-get install chromium chromium-driver)"
        if os.environ.get(REQUIRE) == "1":
            pytest.fail(f"{reason}, and {REQUIRE}=1 forbids skipping it", pytrace=False)
        pytest.skip(reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in [*FLAGS, f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    yield driver
    driver.quit()


def rgb(colour: str) -> str:
    """#rrggbb as the browser's computed style writes it."""
    return "rgb({}, {}, {})".format(*(int(colour[i:i + 2], 16) for i in (1, 3, 5)))


def shown_turns(driver) -> list[dict]:
    return driver.execute_script("""
        return [...document.querySelectorAll('#turns .turn')].map(item => ({
            label: item.dataset.label, probs: JSON.parse(item.dataset.probs),
            colour: getComputedStyle(item).backgroundColor,
            shown: [...item.querySelectorAll('.prob')].map(p => p.textContent),
            emotion: item.querySelector('.emotion').textContent}));""")


def check_matches(shown: list[dict], answer: list[dict], colours: dict[str, str]) -> None:
    assert len(shown) == len(answer)
    for turn, expected in zip(shown, answer, strict=True):
        assert turn["label"] == turn["emotion"] == expected["label"]
        assert turn["probs"] == expected["probs"]
        assert turn["colour"] == rgb(colours[expected["label"]])
        assert turn["shown"] == [f"{name} {p:.3f}" for name, p in expected["probs"].items()]


def test_the_page_labels_a_pasted_dialogue_and_live_turns_as_the_api_does(browser, tmp_path, tiny_encoder):  # noqa: F811
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    server = Server(train_model("tfidf", tmp_path / "model", tiny_encoder))
    try:
        info = request(f"{server.url}/api/info")[1]
        wait = WebDriverWait(browser, 30)
        browser.get(server.url + "/")
        wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-state") == "ready")
        assert [chip.text for chip in browser.find_elements(By.CSS_SELECTOR, "#legend span")] == info["labels"]

        pasted = TURNS[:8]
        box = browser.find_element(By.ID, "conversation")
        box.send_keys("\n".join(f"{t['speaker']}: {t['text']}" for t in pasted))
        browser.find_element(By.ID, "label").click()
        wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-state") == "labelled")
        check_matches(shown_turns(browser), request(f"{server.url}/api/label", {"turns": pasted})[1]["turns"],
                      info["colours"])

        for turn in TURNS[8:]:  # the rest arrive one at a time
            browser.find_element(By.ID, "speaker").clear()
            browser.find_element(By.ID, "speaker").send_keys(turn["speaker"])
            browser.find_element(By.ID, "text").send_keys(turn["text"])
            browser.find_element(By.ID, "add").click()
        wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-state") == f"live-{len(TURNS)}")
        live = [request(f"{server.url}/api/live", {"turns": TURNS[:k]})[1]["turns"][0]
                for k in range(len(pasted) + 1, len(TURNS) + 1)]
        check_matches(shown_turns(browser)[len(pasted):], live, info["colours"])

        too_long = "好" * (info["limits"]["max_chars"] + 1)
        browser.execute_script("document.getElementById('text').value = arguments[0];", too_long)
        browser.find_element(By.ID, "add").click()
        wait.until(lambda d: "more than the limit" in d.find_element(By.ID, "error").text)
        assert len(shown_turns(browser)) == len(TURNS)  # a refused turn is not added

        box.clear()  # a line that is no turn is named by its line in the box, blank lines counted
        box.send_keys("A: hi\n\n\nthis line has no speaker")
        browser.find_element(By.ID, "label").click()
        wait.until(lambda d: "line 4: write it as Speaker: text" in d.find_element(By.ID, "error").text)
        severe = [entry["message"] for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
        assert all("/api/live - " in message and "413" in message for message in severe), severe  # no favicon 404

        screenshot = tmp_path / "page.png"
        browser.find_element(By.ID, "text").clear()
        browser.execute_script("document.getElementById('error').textContent = '';")
        assert browser.save_screenshot(str(screenshot)) and screenshot.stat().st_size > 10_000

        browser.find_element(By.ID, "text").send_keys("half typed")
        browser.find_element(By.ID, "clear").click()  # a fresh start: turns, pasted text, typed turn, message
        assert shown_turns(browser) == [] and box.get_attribute("value") == ""
        assert browser.find_element(By.ID, "text").get_attribute("value") == ""
    finally:
        server.close()
