"""Fixtures for the playground's browser tests: the server `run.sh` started
(its URL and token come in the environment), and a fresh headless Chromium
page per test, driven by Playwright through Debian's `chromium`."""

import json
import os
import tempfile
import urllib.request
from pathlib import Path

import pytest
from playwright.sync_api import sync_playwright

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="session")
def base_url():
    return os.environ["PLAYGROUND_URL"].rstrip("/")


@pytest.fixture(scope="session")
def token():
    return os.environ["PLAYGROUND_TOKEN"]


@pytest.fixture(scope="session")
def artefacts():
    path = Path(os.environ.get("PLAYGROUND_ARTEFACTS", "target/browser-tests"))
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session")
def playwright_instance():
    with sync_playwright() as p:
        yield p


@pytest.fixture
def page(playwright_instance, base_url, token):
    """A page in a browser with a fresh profile; fails the test if the token
    ever appears in a URL the page requests."""
    with tempfile.TemporaryDirectory(prefix="playground-chromium-") as profile:
        context = playwright_instance.chromium.launch_persistent_context(
            profile,
            executable_path=os.environ.get("CHROMIUM", "/usr/bin/chromium"),
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 900},
        )
        page = context.pages[0] if context.pages else context.new_page()
        urls = []
        page.on("request", lambda request: urls.append(request.url))
        errors = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(base_url + "/")
        yield page
        context.close()
        assert not [u for u in urls if token in u], "the token appeared in a URL"
        assert not errors, f"script errors on the page: {errors}"


def api(base_url, token, method, path, body=None):
    """The API as the tests check it, outside the browser."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(base_url + path, data=data, method=method)
    request.add_header("Authorization", "Bearer " + token)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)
