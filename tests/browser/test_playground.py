"""The playground in a real headless Chromium against `sound-creator serve`
on the tiny MusicGen checkpoint: a token, a prompt, live progress to 100 %,
the players, cancel, a contract error next to its field, and the stats
charts. Each state is saved as a screenshot under the artefacts folder."""

import math

from conftest import api
from playwright.sync_api import expect

LONG_MS = 180_000


def enter_token(page, token):
    page.fill("#token", token)
    page.click("#token-save")
    expect(page.locator("#token-forget")).to_be_visible()
    # The models list fills once the token is accepted.
    expect(page.locator("#model option")).not_to_have_count(1)
    assert page.evaluate("sessionStorage.getItem('sound-creator.token')") == token
    assert token not in page.url


def submit(page, prompt, duration):
    page.fill("#prompt", prompt)
    page.fill("#duration", str(duration))
    page.click("#submit")
    expect(page.locator("#task")).to_be_visible()


def test_a_prompt_runs_to_100_percent_and_plays_at_its_duration(page, token, artefacts):
    enter_token(page, token)
    page.screenshot(path=artefacts / "1-token-entered.png", full_page=True)
    duration = 12
    submit(page, "warm lofi piano with soft drums", duration)

    # The progress bar moves before the end (fed by the event stream).
    progress = page.locator("#progress")
    page.wait_for_function(
        "() => { const v = Number(document.querySelector('#progress').getAttribute('aria-valuenow'));"
        " return v > 0 && v < 100; }",
        timeout=LONG_MS,
    )
    expect(page.locator("#progress-text")).to_contain_text("step")
    page.screenshot(path=artefacts / "2-running.png", full_page=True)

    expect(page.locator("#task-status")).to_have_text("succeeded", timeout=LONG_MS)
    expect(progress).to_have_attribute("aria-valuenow", "100")
    expect(page.locator("#progress-text")).to_have_text("100 %")

    audio = page.locator("#results audio")
    expect(audio).to_have_count(1)
    played = page.wait_for_function(
        "() => { const a = document.querySelector('#results audio');"
        " return a && isFinite(a.duration) && a.duration > 0 ? a.duration : null; }",
        timeout=30_000,
    ).json_value()
    assert math.isclose(played, duration, abs_tol=0.05), played
    expect(page.locator("#results canvas")).to_have_attribute("data-drawn", "true", timeout=30_000)
    expect(page.locator("#results a[download]")).to_have_count(1)
    seed = page.locator("#results .seed").inner_text()
    assert seed.isdigit(), seed
    page.screenshot(path=artefacts / "3-done.png", full_page=True)


def test_a_running_task_can_be_canceled(page, base_url, token, artefacts):
    enter_token(page, token)
    submit(page, "a very long ambient drone", 30)
    expect(page.locator("#task-status")).to_have_text("running", timeout=LONG_MS)
    page.click("#cancel")
    expect(page.locator("#task-status")).to_have_text("canceled", timeout=LONG_MS)
    expect(page.locator("#cancel")).to_be_hidden()
    expect(page.locator("#results audio")).to_have_count(0)
    task_id = page.locator("#task-id").inner_text()
    page.screenshot(path=artefacts / "4-canceled.png", full_page=True)
    doc = api(base_url, token, "GET", f"/v1/result/{task_id}")
    assert doc["status"] == "canceled", doc


def test_a_too_long_prompt_shows_the_contracts_message_by_the_prompt(page, token, artefacts):
    enter_token(page, token)
    page.fill("#prompt", "é" * 140)
    expect(page.locator("#prompt-count")).to_have_text("140 / 100")
    expect(page.locator("#prompt-count")).to_have_class("count over")
    page.click("#submit")
    message = page.locator('[data-field="prompt"] .error')
    expect(message).to_have_text("prompt has 140 characters; the limit is 100")
    expect(page.locator('[data-field="prompt"]')).to_have_class("field invalid")
    expect(page.locator("#task")).to_be_hidden()
    page.screenshot(path=artefacts / "5-prompt-too-long.png", full_page=True)


def test_the_stats_charts_show_this_keys_totals(page, base_url, token, artefacts):
    # At least one finished task of each kind, whatever ran before.
    short = api(base_url, token, "POST", "/v1/generate",
                {"type": "music", "prompt": "a short blip", "duration": 1,
                 "user_id": "browser-test", "wait_seconds": 60})
    assert short["status"] == "succeeded", short
    enter_token(page, token)
    expect(page.locator("#usage")).to_have_attribute("data-rendered", _any(), timeout=30_000)
    stats = api(base_url, token, "GET", "/v1/stats")

    expect(page.locator("#total-requests")).to_have_text(str(stats["requests"]))
    expect(page.locator("#total-succeeded")).to_have_text(str(stats["by_status"]["succeeded"]))
    expect(page.locator("#total-audio")).to_have_text(f"{stats['audio_seconds']:.1f}")

    # Every task of this run is from today: the bars hold the same totals.
    series = page.evaluate("JSON.parse(document.querySelector('#chart-requests').dataset.values)")
    by_status = {s["name"]: sum(s["values"]) for s in series}
    assert by_status == {k: v for k, v in stats["by_status"].items() if v}, (by_status, stats)
    audio = page.evaluate("JSON.parse(document.querySelector('#chart-audio').dataset.values)")
    assert math.isclose(sum(audio[0]["values"]), stats["audio_seconds"], abs_tol=1e-6)
    # The charts are drawn, not blank.
    for chart in ["#chart-requests", "#chart-audio", "#chart-latency"]:
        painted = page.evaluate(
            "(sel) => { const c = document.querySelector(sel);"
            " const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
            " let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i]) n++; return n; }",
            chart,
        )
        assert painted > 100, (chart, painted)
    rows = page.locator("#history-rows tr[data-task]")
    expect(rows).to_have_count(min(10, stats["requests"]))
    page.locator("#usage").scroll_into_view_if_needed()
    page.screenshot(path=artefacts / "6-stats.png", full_page=True)

    # The same page on a phone: one column, nothing wider than the screen.
    page.set_viewport_size({"width": 390, "height": 844})
    page.click("#refresh")
    page.wait_for_timeout(500)
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, overflow
    page.screenshot(path=artefacts / "7-phone.png", full_page=True)

    # The README's picture: a finished task picked from the history.
    page.set_viewport_size({"width": 1280, "height": 860})
    page.locator("#history-rows tr[data-task]", has_text="succeeded").first.click()
    expect(page.locator("#task-status")).to_have_text("succeeded", timeout=30_000)
    expect(page.locator("#results canvas").first).to_have_attribute("data-drawn", "true", timeout=30_000)
    # The bar's width animates: the picture waits until it is full.
    page.wait_for_function(
        "() => { const f = document.getElementById('progress-fill');"
        " return f.getBoundingClientRect().width >= f.parentElement.clientWidth - 0.5; }",
        timeout=10_000,
    )
    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=artefacts / "playground.png")


def _any():
    import re

    return re.compile(r".+")
