"""The review page in a real browser: headless Chromium (Debian's) driven by Selenium.

Rates items with the mouse and with keys, reloads, and checks that the answers came back
both in the page and in ratings.jsonl, that the summary is right, and that markup in a
generated output shows as text and never runs. Needs `chromium` and `chromium-driver`
(Debian packages): /usr/bin/chromium and /usr/bin/chromedriver. Selenium gets the driver
path explicitly, so Selenium Manager never looks for (or downloads) a browser.
"""

from __future__ import annotations

import json
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fixtures.analysis_run import (
    IFD_SCORES,
    INJECTION,
    JUDGE_NAME,
    JUDGE_SCORES,
    TRIPLES,
    make_run,
    write_score_files,
)

from selfinstruct.analysis.review.ratings import load_latest
from selfinstruct.analysis.review.server import ReviewServer, make_review_server

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
PAGE_TITLE = "Review: run"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ReviewServer]:
    triples = [*TRIPLES, {"instruction": "Echo the given text.", "input": "hello", "output": INJECTION}]
    run = make_run(tmp_path, triples=triples)
    write_score_files(run, triples, [*JUDGE_SCORES, (3.0, 0.6, 0.6, 0.6)], [*IFD_SCORES, 0.8])
    srv = make_review_server(run, port=0, size=200, seed=0)
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    if not (CHROMIUM.is_file() and CHROMEDRIVER.is_file()):
        pytest.fail(
            "the browser test needs Debian's chromium and chromium-driver: apt-get install chromium chromium-driver"
        )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    # The flags that keep Chromium off the network and usable as root in a container.
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-quic",
        "--no-first-run",
        "--disable-extensions",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
        "--window-size=1200,900",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    yield driver
    driver.quit()
    shutil.rmtree(tmp_path / "chromium-profile", ignore_errors=True)


def wait(driver: Any, condition: Any, timeout: float = 10) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.05).until(condition)


def open_page(driver: Any, srv: ReviewServer) -> None:
    driver.get(srv.url)
    wait(driver, lambda d: d.find_element("id", "status").get_attribute("data-state") == "ready")


def wait_saved(driver: Any) -> None:
    wait(driver, lambda d: d.execute_script("return document.body.dataset.pending") == "0")
    assert driver.find_element("id", "status").get_attribute("data-state") == "saved"


def press(driver: Any, *keys: str) -> None:
    from selenium.webdriver.common.action_chains import ActionChains

    for key in keys:
        ActionChains(driver).send_keys(key).perform()


def click_answer(driver: Any, question: str, answer: str) -> None:
    driver.find_element(
        "css selector", f'.question[data-question="{question}"] button[data-answer="{answer}"]'
    ).click()


def pressed(driver: Any) -> dict[str, str | None]:
    """The answers the page shows for the current item."""
    state: dict[str, str | None] = {}
    for question in ("valid", "input_ok", "output_ok"):
        buttons = driver.find_elements("css selector", f'.question[data-question="{question}"] button')
        on = [b.get_attribute("data-answer") for b in buttons if b.get_attribute("aria-pressed") == "true"]
        state[question] = on[0] if on else None
    grades = driver.find_elements("css selector", "button[data-grade]")
    on = [b.get_attribute("data-grade") for b in grades if b.get_attribute("aria-pressed") == "true"]
    state["grade"] = on[0] if on else None
    return state


def score_rows(driver: Any) -> dict[str, list[str]]:
    """The current item's scores as the page shows them: row key -> its cells."""
    rows = driver.find_elements("css selector", "#score-table tbody tr")
    return {
        r.get_attribute("data-score"): [td.text for td in r.find_elements("css selector", "td")] for r in rows
    }


def position(driver: Any) -> str:
    return str(driver.find_element("id", "position").text)


def test_rate_with_mouse_and_keys_reload_and_nothing_injected_runs(
    server: ReviewServer, browser: Any
) -> None:
    from selenium.webdriver.common.keys import Keys

    items = server.items
    assert len(items) == 4
    open_page(browser, server)
    assert browser.title == PAGE_TITLE
    assert position(browser) == "Item 1 of 4"
    assert browser.find_element("id", "instruction").text == items[0].instruction

    # The row's scores, beside the questions; folded until opened, so they do not sway the rating.
    assert browser.find_element("id", "score-table").is_displayed() is False
    browser.find_element("css selector", "#scores summary").click()
    assert score_rows(browser) == {  # the sea poem: TRIPLES[0]
        "ifd": ["IFD", "0.500", "gpt2.gguf"],
        "judge": ["judge: overall (1–5)", "4.50", JUDGE_NAME],
        "valid_task": ["judge: valid task", "yes (0.90)", ""],
        "appropriate_input": ["judge: appropriate input", "yes (0.80)", ""],
        "correct_output": ["judge: correct output", "yes (0.70)", ""],
    }

    # Item 1: the mouse for the questions, a key for the grade.
    click_answer(browser, "valid", "yes")
    click_answer(browser, "input_ok", "no")
    click_answer(browser, "output_ok", "yes")
    press(browser, "b")
    wait_saved(browser)
    assert pressed(browser) == {"valid": "yes", "input_ok": "no", "output_ok": "yes", "grade": "B"}

    # Item 2: keys only. "1" twice toggles yes -> no; "d" then "a" leaves A.
    press(browser, "n")
    assert position(browser) == "Item 2 of 4"
    press(browser, "1", "1", "2", "3", "d", "a")
    wait_saved(browser)
    assert pressed(browser) == {"valid": "no", "input_ok": "yes", "output_ok": "yes", "grade": "A"}
    assert score_rows(browser)["ifd"] == ["IFD", "not scored", ""]  # Paris has no IFD
    assert score_rows(browser)["appropriate_input"][1] == "no (0.49)"

    # Item 3 by the arrow key: all yes, grade by mouse.
    press(browser, Keys.ARROW_RIGHT)
    assert position(browser) == "Item 3 of 4"
    press(browser, "1", "2", "3")
    browser.find_element("css selector", 'button[data-grade="A"]').click()
    wait_saved(browser)

    # Back with "p": item 2 still shows its answers.
    press(browser, "p")
    assert position(browser) == "Item 2 of 4"
    assert pressed(browser)["grade"] == "A"

    # The item whose output is markup: shown as literal text, nothing ran.
    injected = next(n for n, item in enumerate(items) if item.output == INJECTION)
    assert injected == 3  # seed 0 puts it last, after the three rated above
    browser.find_elements("css selector", "#strip button")[injected].click()
    assert browser.find_element("id", "output").text == INJECTION
    assert browser.execute_script("return window.__pwned") is None
    assert browser.find_elements("css selector", "#output img, #output script") == []
    assert browser.title == PAGE_TITLE
    # Even a script of the page's own that tried an HTML sink would be stopped by the CSP.
    outcome = browser.execute_script(
        "try { document.body.insertAdjacentHTML('beforeend', arguments[0]); return 'inserted'; }"
        " catch (e) { return e.name; }",
        '<img src=x onerror="window.__pwned=3">',
    )
    assert outcome == "TypeError"

    # Reload: the page comes back with every answer, at the first unrated item.
    browser.refresh()
    open_page(browser, server)
    assert position(browser) == "Item 4 of 4"
    browser.find_elements("css selector", "#strip button")[0].click()
    assert pressed(browser) == {"valid": "yes", "input_ok": "no", "output_ok": "yes", "grade": "B"}
    strip = [b.get_attribute("class") for b in browser.find_elements("css selector", "#strip button")]
    assert [c.split()[0] if c else "" for c in strip[:3]] == ["done", "done", "done"]
    assert browser.execute_script("return window.__pwned") is None

    # The summary on the page and in the files agree with the answers given.
    rows = {
        r.get_attribute("data-row"): [td.text for td in r.find_elements("css selector", "td")]
        for r in browser.find_elements("css selector", "#summary tbody tr")
    }
    assert rows["valid task"][1:4] == ["2", "3", "66.7%"]
    assert rows["appropriate input"][1:4] == ["2", "3", "66.7%"]
    assert rows["correct output"][1:4] == ["3", "3", "100.0%"]
    assert rows["all fields valid"][1:5] == ["1", "3", "33.3%", "54.0%"]
    grades = browser.find_element("css selector", '#grade-summary td[data-grade="A"]').text
    assert grades == "2 (66.7%)"

    latest = load_latest(server.run / "review" / "ratings.jsonl")
    answers = {k: {q: r[q] for q in ("valid", "input_ok", "output_ok", "grade")} for k, r in latest.items()}
    assert answers == {
        items[0].id: {"valid": True, "input_ok": False, "output_ok": True, "grade": "B"},
        items[1].id: {"valid": False, "input_ok": True, "output_ok": True, "grade": "A"},
        items[2].id: {"valid": True, "input_ok": True, "output_ok": True, "grade": "A"},
    }
    summary = json.loads((server.run / "review" / "summary.json").read_text())
    assert summary["all_valid"]["yes"] == 1 and summary["grades"]["B"]["count"] == 1
    # Against the judge (yes/yes/yes, no/no/yes, yes/yes/yes on the three rated items):
    agreement = summary["agreement"]
    assert {q: (e["agree"], e["rows"]) for q, e in agreement["questions"].items()} == {
        "valid": (3, 3),
        "input_ok": (1, 3),
        "output_ok": (3, 3),
    }
    assert agreement["overall"]["rows"] == 3 and agreement["overall"]["spearman"] == 0.0


def test_off_loopback_the_page_from_the_printed_url_loads_and_saves_with_its_token(
    tmp_path: Path, browser: Any
) -> None:
    srv = make_review_server(make_run(tmp_path), host="0.0.0.0", port=0, size=200, seed=0)
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        assert srv.token is not None
        browser.get(srv.page_url.replace("0.0.0.0", "127.0.0.1"))
        wait(browser, lambda d: d.find_element("id", "status").get_attribute("data-state") == "ready")
        press(browser, "c")
        wait_saved(browser)
        latest = load_latest(srv.run / "review" / "ratings.jsonl")
        assert [r["grade"] for r in latest.values()] == ["C"]
        # The same page without the token in its URL gets nothing.
        browser.get(srv.url.replace("0.0.0.0", "127.0.0.1"))
        wait(browser, lambda d: d.find_element("id", "status").get_attribute("data-state") == "error")
        assert "403" in browser.find_element("id", "status").text
    finally:
        srv.shutdown()
        srv.server_close()
