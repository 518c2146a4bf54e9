"""The page `herd serve` shows at / (server/page.html), driven by a real browser.

Starts `herd serve` on 127.0.0.1 (port 0: the port is read from the "listening on" line), opens the page
in Debian's headless chromium through selenium, chats with the model and checks the live cluster view.
Missing chromium / chromedriver / selenium is a failure, not a skip: ./setup.sh test installs them.

Environment:
  HERD_BIN            the herd binary (default: build/bin/herd under the repository root)
  HERD_MODEL          the GGUF file (default: ../shared/models/stories260K.gguf beside the repository)
  HERD_SHARED_DIR     where shared/ is, when HERD_MODEL is not set
  HERD_CHAT_TEMPLATE  --chat-template NAME (default: the model's own; one without gets chatml)
  HERD_PAGE_CLUSTER   a cluster file: serve under launch/herd-cluster, one worker per line
  HERD_PAGE_ARGS      more `herd serve` arguments, split on spaces (e.g. "--plan-strategy even")
  HERD_ARTEFACTS      where the screenshots go (default build/test-artefacts); serve-page.png is the chat
  HERD_CHROMIUM, HERD_CHROMEDRIVER   default /usr/bin/chromium and /usr/bin/chromedriver

The README's screenshot (docs/img/serve-page.png) is this test's, taken with
  HERD_MODEL=models/SmolLM2-135M-Instruct.Q4_1.gguf \
  HERD_PAGE_CLUSTER=launch/local-cluster.txt HERD_PAGE_ARGS="--plan-strategy even" \
  HERD_ARTEFACTS=docs/img python3 -m pytest tests/server/test_page.py -k chat
"""

import os
import struct
import time
from pathlib import Path

import pytest

try:
    from selenium import webdriver
    from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait
    SELENIUM_ERROR = None
except ImportError as e:  # reported by the browser fixture, as a failure
    SELENIUM_ERROR = e

from utils import ServerProcess  # noqa: E402  (tests/server is on pytest's path: conftest.py)

ROOT = Path(__file__).resolve().parents[2]
HERD_BIN = Path(os.environ.get("HERD_BIN") or ROOT / "build" / "bin" / "herd")
SHARED = Path(os.environ.get("HERD_SHARED_DIR") or ROOT.parent / "shared")
MODEL = Path(os.environ.get("HERD_MODEL") or SHARED / "models" / "stories260K.gguf")
CHAT_TEMPLATE = os.environ.get("HERD_CHAT_TEMPLATE", "")
CLUSTER = os.environ.get("HERD_PAGE_CLUSTER", "")
EXTRA_ARGS = os.environ.get("HERD_PAGE_ARGS", "").split()
ARTEFACTS = Path(os.environ.get("HERD_ARTEFACTS") or ROOT / "build" / "test-artefacts")
CHROMIUM = os.environ.get("HERD_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("HERD_CHROMEDRIVER", "/usr/bin/chromedriver")

READY_TIMEOUT_S = 180    # until the socket is bound and /health says the model is loaded
ANSWER_TIMEOUT_S = 30    # one streamed answer (max_tokens is set on the page)
API_KEY = "page-test-key-7f3a"


def resolve(p):
    p = Path(p)
    return p if p.is_absolute() else ROOT / p


def gguf_block_count(path):
    """The model's layer count, read from the GGUF header ({arch}.block_count) without herd."""
    scalar = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
    with open(path, "rb") as f:
        def read(fmt):
            return struct.unpack("<" + fmt, f.read(struct.calcsize("<" + fmt)))[0]

        def string():
            return f.read(read("Q")).decode("utf-8", "replace")

        def value(t):
            if t in scalar:
                return read(scalar[t])
            if t == 8:
                return string()
            if t == 9:
                item, n = read("I"), read("Q")
                return [value(item) for _ in range(n)]
            raise ValueError(f"{path}: unknown GGUF value type {t}")

        assert f.read(4) == b"GGUF", f"{path} is not a GGUF file"
        read("I")  # version
        read("Q")  # tensor count
        meta = {}
        for _ in range(read("Q")):
            key = string()
            meta[key] = value(read("I"))
            if "general.architecture" in meta and f"{meta['general.architecture']}.block_count" in meta:
                return int(meta[f"{meta['general.architecture']}.block_count"])
    raise ValueError(f"{path}: no block_count in the metadata")


class PageServer(ServerProcess):
    """The `herd serve` the page is tested against (tests/server/utils.py), as the environment says."""

    @property
    def model_id(self):
        return Path(self.model).name.removesuffix(".gguf")

    def get_json(self, path):
        r = self.get(path, timeout=10)
        r.raise_for_status()
        return r.json()


def start_server(api_key=None):
    if not Path(HERD_BIN).is_file():
        pytest.fail(f"no herd binary at {HERD_BIN}: build it (cmake --build build --target herd) or set HERD_BIN")
    if not MODEL.is_file():
        pytest.fail(f"no model at {MODEL}: set HERD_MODEL or HERD_SHARED_DIR")
    args = (["--chat-template", CHAT_TEMPLATE] if CHAT_TEMPLATE else []) + EXTRA_ARGS
    return PageServer(str(MODEL), args, api_key=api_key, cluster_file=str(resolve(CLUSTER)) if CLUSTER else None).start(timeout_s=READY_TIMEOUT_S)


@pytest.fixture
def server():
    s = start_server()
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture
def key_server():
    s = start_server(api_key=API_KEY)
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture
def browser():
    if SELENIUM_ERROR is not None:
        pytest.fail(f"the Python package selenium is missing ({SELENIUM_ERROR}): pip install selenium "
                    "(./setup.sh test installs it)")
    for what, path, package in (("chromium", CHROMIUM, "chromium"), ("chromedriver", CHROMEDRIVER, "chromium-driver")):
        if not os.access(path, os.X_OK):
            pytest.fail(f"{what} not found at {path}: apt-get install chromium chromium-driver "
                        f"(Debian package {package}; ./setup.sh test installs it)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,860", "--no-first-run", "--disable-extensions"):
        options.add_argument(arg)
    # An explicit driver path: Selenium Manager is never asked (it would download a driver).
    try:
        driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    except WebDriverException as e:
        pytest.fail(f"could not start headless chromium through {CHROMEDRIVER}: {e.msg}")
    try:
        yield driver
    finally:
        driver.quit()


def wait_for(driver, what, condition, timeout):
    """WebDriverWait with a readable failure: what was awaited, and the page's messages at that moment."""
    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.1,
                             ignored_exceptions=(StaleElementReferenceException,)).until(lambda d: condition(d))
    except Exception as e:  # TimeoutException, or the page gone
        msgs = [(m.get_attribute("class"), m.get_attribute("data-state"), m.text[:200])
                for m in driver.find_elements(By.CSS_SELECTOR, "#messages .msg")]
        status = driver.find_element(By.ID, "status").text
        pytest.fail(f"waited {timeout} s for {what} ({type(e).__name__}); #status={status!r}; messages={msgs}")


def answer_finished(driver, n, errors_before=0):
    """The n-th assistant message (1-based) once its stream ended (data-state done/stopped/error), or the
    newest error message once there are more than errors_before of them."""
    errors = driver.find_elements(By.CSS_SELECTOR, "#messages .msg.error")
    if len(errors) > errors_before:
        return errors[-1]
    msgs = driver.find_elements(By.CSS_SELECTOR, "#messages .msg.assistant")
    if len(msgs) >= n and msgs[n - 1].get_attribute("data-state") in ("done", "stopped", "error"):
        return msgs[n - 1]
    return None


def assert_answered(driver, element):
    assert element.get_attribute("class") == "msg assistant", f"the page shows an error: {element.text!r}"
    assert element.get_attribute("data-state") == "done", element.get_attribute("data-state")
    assert element.text.strip(), "the assistant message is empty"
    assert element.get_attribute("data-finish") in ("stop", "length")
    assert driver.find_element(By.ID, "send").is_enabled()
    assert not driver.find_element(By.ID, "stop").is_enabled()


def table_cells(driver, table_id):
    """The body cells' text of a table, read in one go (the page redraws it every second)."""
    return driver.execute_script(
        "return Array.from(document.getElementById(arguments[0]).tBodies[0].rows)"
        ".map(r => Array.from(r.cells, c => c.textContent));", table_id)


def screenshot(driver, name):
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTEFACTS / name
    driver.save_screenshot(str(path))
    print(f"screenshot: {path}")


def test_chat_streams_and_cluster_is_shown(server, browser):
    d = browser
    d.get(server.url("/"))
    wait_for(d, "#status to say ready", lambda d: d.find_element(By.ID, "status").get_attribute("data-state") == "ready", 15)
    assert d.find_element(By.ID, "model").text == server.model_id

    d.find_element(By.ID, "max-tokens").send_keys("40")
    d.find_element(By.ID, "input").send_keys("Hello! Tell me a short story about a cat.")
    d.find_element(By.ID, "send").click()
    user = d.find_elements(By.CSS_SELECTOR, "#messages .msg.user")
    assert [u.text for u in user] == ["Hello! Tell me a short story about a cat."]
    answer = wait_for(d, "the streamed answer", lambda d: answer_finished(d, 1), ANSWER_TIMEOUT_S)
    assert_answered(d, answer)
    assert not d.find_elements(By.CSS_SELECTOR, "#messages .msg.error")

    # The cluster table: one row per stage of /v1/cluster, together covering every layer of the model.
    n_layers = gguf_block_count(MODEL)
    stages = server.get_json("/v1/cluster")["stages"]
    assert stages, "/v1/cluster lists no stage"
    assert stages[0]["first_layer"] == 0 and stages[-1]["end_layer"] == n_layers
    rows = table_cells(d, "cluster-table")
    assert len(rows) == len(stages), rows
    for cells, stage in zip(rows, stages):
        assert cells[1] == stage["name"], cells
        assert cells[3] == f"{stage['first_layer']}-{stage['end_layer'] - 1}", cells
    hops = table_cells(d, "hops-table")
    if all(stage["name"] == "local" for stage in stages):
        assert hops == [["in-process"]], hops
    else:
        assert hops[0][0] == "coordinator → stage 0", hops
        assert hops[-1][0] == f"stage {len(stages) - 1} → coordinator", hops

    # The chart: 60 points, and the tokens just generated show up in the last minute.
    wait_for(d, "the tokens/s chart to show the generated tokens", lambda d: d.find_elements(By.ID, "tps-line")
             and float(d.find_element(By.ID, "tps-chart").get_attribute("data-max")) > 0, 5)
    points = d.find_element(By.ID, "tps-line").get_attribute("points").split()
    assert len(points) == 60
    assert d.find_element(By.ID, "tps-now").text != "—"

    # A second turn sends the whole conversation (Enter sends; Shift+Enter is a new line).
    box = d.find_element(By.ID, "input")
    box.send_keys("And then?", Keys.SHIFT, Keys.ENTER, Keys.SHIFT, "Keep it short.", Keys.ENTER)
    assert d.find_elements(By.CSS_SELECTOR, "#messages .msg.user")[-1].text == "And then?\nKeep it short."
    assert_answered(d, wait_for(d, "the second answer", lambda d: answer_finished(d, 2), ANSWER_TIMEOUT_S))
    time.sleep(1.2)  # one more poll, so the screenshot shows the latest numbers
    screenshot(d, "serve-page.png")

    d.find_element(By.ID, "new-chat").click()
    assert not d.find_elements(By.CSS_SELECTOR, "#messages .msg")


def test_api_key_is_asked_for_and_used(key_server, browser):
    d = browser
    d.get(key_server.url("/"))
    key_box = d.find_element(By.ID, "key-box")
    wait_for(d, "the page to ask for the API key", lambda d: key_box.is_displayed(), 10)
    assert d.find_element(By.ID, "status").get_attribute("data-state") == "auth"

    d.find_element(By.ID, "max-tokens").send_keys("24")
    d.find_element(By.ID, "input").send_keys("Hello!", Keys.ENTER)
    err = wait_for(d, "the 401 to be shown", lambda d: answer_finished(d, 1), 10)
    assert err.get_attribute("class") == "msg error", err.get_attribute("class")
    assert not d.find_elements(By.CSS_SELECTOR, "#messages .msg.assistant")

    # A wrong key: the server still says 401 and the page asks again.
    d.find_element(By.ID, "api-key").send_keys("wrong-key")
    d.find_element(By.ID, "api-key-save").click()
    wait_for(d, "a second 401", lambda d: len(d.find_elements(By.CSS_SELECTOR, "#messages .msg.error")) == 2, 10)
    wait_for(d, "the key box to come back", lambda d: key_box.is_displayed(), 5)

    # The right key: the waiting message is sent again and answered, and the cluster view works.
    d.find_element(By.ID, "api-key").send_keys(API_KEY, Keys.ENTER)
    answer = wait_for(d, "the answer after the key", lambda d: answer_finished(d, 1, errors_before=2), ANSWER_TIMEOUT_S)
    assert_answered(d, answer)
    assert not key_box.is_displayed()
    assert d.execute_script("return localStorage.getItem('herd.apiKey')") == API_KEY
    wait_for(d, "#status to say ready", lambda d: d.find_element(By.ID, "status").get_attribute("data-state") == "ready", 5)
    wait_for(d, "the cluster table", lambda d: d.find_elements(By.CSS_SELECTOR, "#cluster-table tbody tr:not(.empty)"), 5)
    screenshot(d, "serve-page-api-key.png")
