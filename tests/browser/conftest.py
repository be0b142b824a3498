"""Fixtures for the browser tests: a real `parley` binary on a free loopback port with a fresh data
directory, and headless Chromium sessions driven by selenium (each with its own cookie jar)."""
import os
import pathlib
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

ROOT = pathlib.Path(__file__).resolve().parents[2]
ARTIFACTS = pathlib.Path(os.environ.get("PARLEY_ARTIFACTS", ROOT / "artifacts"))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ParleyProcess:
    """A `parley` binary on a fixed port and data directory, which a test can stop and start again."""

    def __init__(self):
        self.binary = os.environ.get("PARLEY_BIN", str(ROOT / ".build" / "debug" / "parley"))
        if not os.path.exists(self.binary):
            pytest.fail(f"parley binary not found at {self.binary}: run `swift build` first")
        self.data = tempfile.mkdtemp(prefix="parley-browser-")
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = os.path.join(self.data, "server.log")
        self.process = None

    def start(self):
        env = dict(os.environ, PARLEY_BCRYPT_COST="4", PARLEY_RATE_LIMITS="false")
        with open(self.log_path, "a") as log:
            self.process = subprocess.Popen(
                [self.binary, "serve", "--port", str(self.port), "--data-dir", self.data],
                stdout=log, stderr=subprocess.STDOUT, env=env,
            )
        for _ in range(100):
            try:
                urllib.request.urlopen(self.base + "/ready", timeout=1)
                return
            except OSError:
                time.sleep(0.1)
        self.process.kill()
        pytest.fail("parley did not start: " + open(self.log_path).read())

    def stop(self):
        if self.process:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                # Say why before failing: the end of the server's log shows where shutdown stopped.
                self.process.kill()
                print("parley did not exit within 15 s of SIGTERM; the end of its log:\n"
                      + "".join(open(self.log_path).readlines()[-60:]))
                raise
            self.process = None

    def cleanup(self):
        self.stop()
        shutil.rmtree(self.data, ignore_errors=True)


@pytest.fixture(scope="session")
def server():
    parley = ParleyProcess()
    parley.start()
    yield parley.base
    parley.cleanup()


@pytest.fixture
def restartable_server():
    parley = ParleyProcess()
    parley.start()
    yield parley
    parley.cleanup()


def chromium_binary():
    for candidate in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(candidate)
        if path:
            return path
    return None


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.when == "call" and report.failed:
        item.failed_call = True


@pytest.fixture
def browser_factory(request):
    """Opens independent browser sessions; all are closed at the end of the test."""
    binary, driver = chromium_binary(), shutil.which("chromedriver")
    if not binary or not driver:
        message = "chromium and chromium-driver are needed for the browser tests"
        if os.environ.get("PARLEY_TEST_REQUIRE_ALL") == "1":
            pytest.fail(message)
        pytest.skip(message)
    drivers = []

    def open_browser(width=1280, height=800):
        options = webdriver.ChromeOptions()
        options.binary_location = binary
        for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                         f"--window-size={width},{height}", "--lang=en-US"):
            options.add_argument(argument)
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        instance = webdriver.Chrome(service=Service(driver), options=options)
        instance.set_window_size(width, height)
        drivers.append(instance)
        return instance

    yield open_browser
    if getattr(request.node, "failed_call", False):
        # Keep what each browser showed, and its console, next to the other artifacts.
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        for index, instance in enumerate(drivers):
            name = f"failed-{request.node.name}-{index}"
            instance.save_screenshot(str(ARTIFACTS / f"{name}.png"))
            (ARTIFACTS / f"{name}.log").write_text("\n".join(str(e) for e in instance.get_log("browser")))
    for instance in drivers:
        instance.quit()


@pytest.fixture(scope="session")
def artifacts():
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS
