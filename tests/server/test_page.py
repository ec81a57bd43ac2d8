"""The chat page at GET / driven by headless Chromium through selenium.

Needs the Debian packages `chromium` and `chromium-driver` (/usr/bin/chromium and
/usr/bin/chromedriver) and `pip install selenium pytest`; selenium's own browser
download is not used. The `server_url` fixture (tests/server/conftest.py) starts
`rustorch serve` and gives its base URL.

    pytest tests/server/test_page.py
"""

import json
import os
import re
import shutil
import urllib.request

import pytest

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver")
ANSWER_TIMEOUT = 120  # seconds for one streamed answer on a slow CI machine


@pytest.fixture(scope="module")
def browser():
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not (os.path.exists(p) or shutil.which(p))]
    if missing:
        pytest.fail(
            f"missing {', '.join(missing)}: install Chromium and its driver "
            "(apt-get install -y chromium chromium-driver) to run the chat page test",
            pytrace=False,
        )
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.fail("selenium is missing: pip install selenium", pytrace=False)

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1200,900"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=opts)
    yield driver
    driver.quit()


def assistant_texts(driver):
    from selenium.webdriver.common.by import By

    return [
        m.find_element(By.CSS_SELECTOR, ".content").text
        for m in driver.find_elements(By.CSS_SELECTOR, "#messages .msg.assistant")
    ]


def page_state(driver):
    """What the page shows, for failure messages."""
    return (f"error={driver.find_element('id', 'error').text!r} "
            f"speed={driver.find_element('id', 'speed').text!r} "
            f"messages={driver.find_element('id', 'messages').text!r}")


def send_and_wait(driver, text, n_answers):
    """Types `text`, clicks Send and waits for the n-th answer to finish with a speed figure."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    box = driver.find_element(By.ID, "input")
    box.clear()
    box.send_keys(text)
    driver.execute_script("document.getElementById('speed').textContent = ''")
    driver.find_element(By.ID, "send").click()

    def done(d):
        if d.find_element(By.ID, "error").text:
            return True  # fails below with the message
        answers = assistant_texts(d)
        return (len(answers) == n_answers and answers[-1].strip()
                and re.search(r"\d", d.find_element(By.ID, "speed").text)
                and d.find_element(By.ID, "send").is_enabled())

    try:
        WebDriverWait(driver, ANSWER_TIMEOUT, poll_frequency=0.2).until(done)
    except TimeoutException:
        pytest.fail(f"no answer {n_answers} within {ANSWER_TIMEOUT}s: {page_state(driver)}")
    assert driver.find_element(By.ID, "error").text == "", page_state(driver)
    return assistant_texts(driver)


def test_chat_page_multi_turn(server_url, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    with urllib.request.urlopen(server_url + "/v1/models", timeout=30) as resp:
        model_id = json.load(resp)["data"][0]["id"]

    browser.get(server_url + "/")
    WebDriverWait(browser, 60).until(
        lambda d: d.find_element(By.ID, "model").text == model_id,
        message=f"#model never showed {model_id!r}",
    )
    for stable_id in ("input", "send", "stop", "messages", "speed", "error"):
        assert browser.find_elements(By.ID, stable_id), f"#{stable_id} is missing"
    # Answers of SmolLM2 at the default temperature may ramble for thousands of tokens.
    browser.find_element(By.ID, "max-tokens").send_keys("48")

    answers = send_and_wait(browser, "What is the capital of France?", 1)
    assert answers[0].strip()
    users = browser.find_elements(By.CSS_SELECTOR, "#messages .msg.user")
    assert [u.text for u in users] == ["What is the capital of France?"]

    # Record what the page sends: the second turn carries the whole conversation.
    browser.execute_script("""
        window.__sent = [];
        const orig = window.fetch;
        window.fetch = (url, opts) => {
            if (opts && opts.body) window.__sent.push(JSON.parse(opts.body));
            return orig(url, opts);
        };""")
    answers = send_and_wait(browser, "And of Italy?", 2)
    assert len(answers) == 2 and answers[1].strip(), page_state(browser)
    users = browser.find_elements(By.CSS_SELECTOR, "#messages .msg.user")
    assert len(users) == 2
    sent = browser.execute_script("return window.__sent")
    assert len(sent) == 1 and sent[0]["stream"] is True, sent
    assert [m["role"] for m in sent[0]["messages"]] == ["user", "assistant", "user"], sent
    assert sent[0]["max_tokens"] == 48, sent
    assert sent[0]["messages"][1]["content"].strip() == answers[0].strip(), sent
    assert re.search(r"\d+(\.\d+)?\s*tokens/s", browser.find_element(By.ID, "speed").text)
