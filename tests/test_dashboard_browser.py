"""``peers dashboard`` in a real browser: Debian's headless Chromium driven by Playwright
(never a downloaded browser: ``.ci/run`` installs ``chromium``), against a real peersd
with two demo peers.

The page lists the peers; a message sent from the CLI appears within a second without a
reload; compose from the page reaches a peer's inbox; hostile text renders as text; no
request leaves the origin; the page says when the daemon goes away and catches up.
"""

from __future__ import annotations

import os
import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from peers_mcp.render import clean
from peersd import protocol as p
from peersd.client import Client, session_registration

from .conftest import register, run_peers
from .dashboard_fixtures import Dashboard, running

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

try:
    from playwright.sync_api import Browser, Page, expect, sync_playwright
except ImportError:  # pragma: no cover - the test extras install it
    sync_playwright = None  # type: ignore[assignment]

if sync_playwright is None or not os.path.exists(CHROMIUM):
    why = "needs playwright and Debian's chromium (apt-get install chromium; .ci/run does)"
    if os.environ.get("CI"):
        raise RuntimeError(f"the browser tests cannot run in CI: {why}")
    pytest.skip(why, allow_module_level=True)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


@pytest.fixture
def dash(daemon, tmp_path):
    yield from running(daemon, tmp_path)


class Visit:
    """A page on the dashboard that records every request it makes and console errors."""

    def __init__(self, browser: Browser, d: Dashboard, **context: object) -> None:
        self.d = d
        self.context = browser.new_context(**context)  # type: ignore[arg-type]
        self.page: Page = self.context.new_page()
        self.requests: list[str] = []
        self.errors: list[str] = []
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.page.on("websocket", lambda ws: self.requests.append(ws.url))
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.goto(d.url)
        self.page.wait_for_selector("#conn.ok", timeout=10000)

    def foreign(self) -> list[str]:
        """Requests that left the dashboard's origin (http or ws on the same host:port)."""
        origin = urlsplit(self.d.url).netloc
        return [u for u in self.requests if urlsplit(u).netloc != origin]

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def visit(browser, dash, pair) -> Iterator[Visit]:
    v = Visit(browser, dash)
    yield v
    try:
        assert not v.foreign(), f"requests left the origin: {v.foreign()}"
        assert not v.errors, f"console errors (a CSP violation?): {v.errors}"
    finally:
        v.close()


def feed_texts(page: Page) -> list[str]:
    return page.locator("#feed li.message .text").all_text_contents()


# --------------------------------------------------------------------------- tests


# Playwright's wait_for_function evaluates strings: the page's CSP (no 'unsafe-eval')
# refuses that, so the tests wait on locators instead.


def test_the_page_lists_the_two_demo_peers(visit):
    page = visit.page
    page.wait_for_function("document.querySelectorAll('#peers li.peer').length >= 3", timeout=5000)
    names = page.locator("#peers li.peer .name").all_text_contents()
    assert {"alpha", "beta"} <= set(names)
    assert page.url.endswith("/") and "token" not in page.url  # the token left the URL
    alpha = page.locator("#peers li.peer", has_text="alpha")
    assert "claude-code" in alpha.inner_text()
    assert alpha.locator("button", has_text="Kill").count() == 1
    you = page.locator("#peers li.peer", has=page.locator(".badge.you"))
    assert you.locator("button", has_text="Kill").count() == 0  # never yourself


def test_a_cli_message_appears_within_a_second_without_reload(visit, dash):
    page = visit.page
    page.evaluate("window.__same_page = 42")
    done = run_peers(dash.daemon.env, "send", "beta", "hello from the CLI")
    assert done.code == 0, done
    started = time.monotonic()
    page.wait_for_selector("#feed li.message >> text=hello from the CLI", timeout=1000)
    latency = time.monotonic() - started
    assert page.evaluate("window.__same_page") == 42  # no reload
    assert latency < 1.0


def test_compose_from_the_page_reaches_the_inbox(visit, pair):
    _ca, _a, cb, b = pair
    page = visit.page
    page.wait_for_selector(f'#to option[value="peer:{b.id}"]', state="attached")
    page.select_option("#to", f"peer:{b.id}")
    page.click("#text")
    page.keyboard.type("first line")
    page.keyboard.press("Shift+Enter")
    page.keyboard.type("second line")
    page.keyboard.press("Enter")
    page.wait_for_selector("#compose-status >> text=sent", timeout=5000)
    [msg] = cb.request(p.Claim).messages
    assert msg.text == "first line\nsecond line"
    assert page.input_value("#text") == ""
    page.wait_for_selector("#feed li.message >> text=second line", timeout=2000)


def test_hostile_text_renders_as_text(visit, pair):
    ca, _a, _cb, _b = pair
    page = visit.page
    evil = (
        '<img src=x onerror="window.__pwned=1"> <script>window.__pwned=2</script> '
        "\u202eevil\u202c \x1b[31mred \u2066x\u2069"
    )
    ca.request(p.SetSummary, summary='<img src=y onerror="window.__pwned=3">\u202e')
    ca.request(p.Send, to="beta", text=evil)
    page.wait_for_selector("#feed li.message .text", timeout=2000)
    page.locator("#peers dd", has_text="<img src=y").wait_for(timeout=3000)
    assert page.locator("#feed .text").last.text_content() == clean(evil)
    assert "\\u202e" in page.locator("#feed .text").last.text_content()
    assert page.locator("main img").count() == 0
    assert page.locator("main script").count() == 0
    assert page.evaluate("window.__pwned") is None
    time.sleep(0.3)  # an image that loaded would have asked for /x or /y by now
    assert not [u for u in visit.requests if urlsplit(u).path in ("/x", "/y")]


def test_the_page_clean_agrees_with_render_clean(visit):
    """The JS mirror (static/text.js) of peers_mcp.render.clean, on the same inputs."""
    inputs = [
        "plain",
        "tab\tand\nnewline kept",
        "\x00\x01\x1b[2J\x7f\x80\x9f\xa0",
        "\u2028\u2029\u061c\u200e\u200f",
        "".join(chr(c) for c in range(0x2020, 0x2070)),
        "emoji \U0001f600 and \U0001d4b3 astral",
        "".join(chr(c) for c in range(0, 0x300)),
        "\r\n\v\f",
    ]
    got = visit.page.evaluate(
        "async (xs) => { const m = await import('/static/text.js');"
        " return xs.map((x) => m.clean(x)); }",
        inputs,
    )
    assert got == [clean(x) for x in inputs]


def test_search_box_and_keyboard(visit, pair):
    ca, _a, _cb, _b = pair
    page = visit.page
    for text in ("apples are red", "bananas are yellow"):
        ca.request(p.Send, to="beta", text=text)
    page.wait_for_selector("#feed li.message >> text=bananas", timeout=2000)
    page.click("body")
    page.keyboard.press("/")
    assert page.evaluate("document.activeElement.id") == "search"
    page.keyboard.type("banana")
    expect(page.locator("#feed li.message")).to_have_count(1)
    assert feed_texts(page) == ["bananas are yellow"]
    page.keyboard.press("Escape")
    expect(page.locator("#feed li.message")).to_have_count(2)


def test_kill_needs_a_confirmation(visit, agents, dash):
    page = visit.page
    victim = agents.spawn()
    with dash.daemon.client("codex") as c:
        register(c, victim.pid, "codex", name="victim")
        card = page.locator("#peers li.peer", has_text="victim")
        card.wait_for(timeout=3000)
        card.locator("button", has_text="Kill").click()
        page.click("#confirm button[value=cancel]")
        time.sleep(0.3)
        assert victim.poll() is None  # cancelled: untouched
        card.locator("button", has_text="Kill").click()
        page.click("#confirm-ok")
        assert victim.wait(5) == -signal.SIGTERM
    page.wait_for_selector("#audit li >> text=kill", timeout=3000)


def test_the_page_outlives_a_daemon_restart(visit, dash):
    page = visit.page
    dash.daemon.stop()
    page.wait_for_selector("#conn.bad", timeout=5000)
    assert "peersd went away" in page.inner_text("#banner")
    dash.daemon.start()
    page.wait_for_selector("#conn.ok", timeout=15000)
    assert page.locator("#banner").is_hidden()
    done = run_peers(dash.daemon.env, "send", "beta", "after the restart")
    assert done.code == 0, done
    page.wait_for_selector("#feed li.message >> text=after the restart", timeout=2000)


def test_the_page_reconnects_to_a_restarted_dashboard(browser, daemon, pair, tmp_path):
    """The page's own reconnect (the path a laptop waking from sleep takes too): the
    dashboard goes away, the page says so, and picks up from a new one on the same port
    (same token, so the same cookie) with what happened meanwhile."""
    first = Dashboard(daemon, tmp_path)
    first.wait_ready()
    v = Visit(browser, first)
    try:
        assert first.stop() == 0
        v.page.wait_for_selector("#conn.wait", timeout=5000)
        assert "reconnecting" in v.page.inner_text("#banner")
        ca, _a, _cb, _b = pair
        ca.request(p.Send, to="beta", text="while the dashboard was down")
        second = Dashboard(daemon, tmp_path, "--port", str(first.port))
        try:
            v.page.wait_for_selector("#conn.ok", timeout=15000)
            v.page.wait_for_selector(
                "#feed li.message >> text=while the dashboard was down", timeout=5000
            )
            assert not v.foreign()
        finally:
            second.stop()
    finally:
        v.close()


SPY = """
window.__notes = [];
window.Notification = class {
  static permission = "granted";
  static requestPermission() { return Promise.resolve("granted"); }
  constructor(title, options) { window.__notes.push([title, options.body]); }
};
Object.defineProperty(document, "hidden", { get: () => window.__hidden === true });
"""


def test_mail_to_the_human_notifies_only_while_the_tab_is_hidden(browser, dash, pair):
    ca, _a, _cb, _b = pair
    context = browser.new_context()
    context.add_init_script(SPY)  # stands in for the browser's Notification API
    page = context.new_page()
    try:
        page.goto(dash.url)
        page.wait_for_selector("#conn.ok", timeout=10000)
        me = page.locator("#peers li.peer", has=page.locator(".badge.you")).locator(".name")
        name = me.inner_text()
        ca.request(p.Send, to=name, text="seen while visible")
        page.wait_for_selector("#feed li.to-me >> text=seen while visible", timeout=3000)
        assert page.evaluate("window.__notes") == []
        page.evaluate("window.__hidden = true")
        ca.request(p.Send, to=name, text="hidden \u202e tab")
        page.wait_for_selector("#feed li.to-me >> text=tab", timeout=3000)
        assert page.evaluate("window.__notes") == [["Mail from alpha", clean("hidden \u202e tab")]]
    finally:
        context.close()


def test_readable_on_a_phone(browser, dash, pair):
    v = Visit(browser, dash, viewport={"width": 390, "height": 844}, is_mobile=True)
    try:
        v.page.wait_for_selector("#peers li.peer >> text=alpha", timeout=5000)
        overflow = v.page.evaluate(
            "document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow <= 0
        assert v.page.locator("#compose").is_visible()
    finally:
        v.close()


def demo_peer(daemon, agents, kind: str, name: str, branch: str) -> Client:
    client = daemon.client(kind)
    req = session_registration(client.settings, agents.spawn().pid, kind, cwd="/home/you/shop")
    req.name, req.git_root, req.branch = name, "/home/you/shop", branch
    client.call(req)
    return client


def test_light_and_dark_follow_the_system(browser, daemon, agents, tmp_path):
    """Also makes docs/img/dashboard-{light,dark}.png with PEERS_DASHBOARD_SCREENSHOTS=docs/img."""
    d = Dashboard(daemon, tmp_path, "--as", "you")
    ca = demo_peer(daemon, agents, "claude-code", "api", "feature/login")
    cb = demo_peer(daemon, agents, "codex", "web", "main")
    try:
        d.wait_ready()
        repo = "/home/you/shop"
        ca.request(p.SetSummary, summary="rewriting the login flow")
        cb.request(p.SetSummary, summary="styling the checkout page")
        ca.request(p.SetStatus, state="working", note="running the auth tests")
        ca.request(
            p.ClaimFiles,
            patterns=[p.FileRef(path=f"{repo}/src/auth/**", repo=repo)],
            exclusive=True,
            reason="rewriting login",
        )
        cb.request(p.TouchFiles, files=[p.FileRef(path=f"{repo}/web/checkout.css", repo=repo)])
        sent = ca.request(p.Send, to="web", text="Which port is the API server on?")
        answer = "8080, and the admin UI is on 8081."
        cb.request(p.Send, to="api", text=answer, reply_to=sent.message_id)
        cb.request(p.Send, to="you", text="Checkout page is ready for review.")
        colours = {}
        for scheme in ("light", "dark"):
            v = Visit(browser, d, color_scheme=scheme, viewport={"width": 1280, "height": 800})
            try:
                v.page.wait_for_selector("#feed li.message >> text=ready for review", timeout=5000)
                v.page.wait_for_selector("#files tr >> text=src/auth/**", timeout=5000)
                colours[scheme] = v.page.evaluate("getComputedStyle(document.body).backgroundColor")
                shot = tmp_path / f"dashboard-{scheme}.png"
                v.page.screenshot(path=str(shot))
                assert shot.stat().st_size > 10000
                target = os.environ.get("PEERS_DASHBOARD_SCREENSHOTS")
                if target:  # how docs/img/ was made: see docs/dashboard.md
                    shutil.copy(shot, Path(target) / shot.name)
                assert not v.foreign() and not v.errors, (v.foreign(), v.errors)
            finally:
                v.close()
        assert colours["light"] != colours["dark"]
    finally:
        ca.close()
        cb.close()
        d.stop()


def test_tasks_decisions_and_proposals_panels_show_live(visit, dash):
    """The panels of issue 10's shared work state appear once there is data, with their
    named columns, and a change announced by mail refreshes them without a reload."""
    page = visit.page
    env = dash.daemon.env
    done = run_peers(env, "task", "add", "Write the <b>release</b> notes", "--to", "beta")
    assert done.code == 0, done
    page.wait_for_selector("#tasks-panel >> text=Write the <b>release</b> notes", timeout=3000)
    heads = page.locator("#tasks-panel th").all_text_contents()
    assert heads[:3] == ["id", "state", "title"] and "assignee" in heads
    assert page.locator("#tasks-panel b").count() == 0  # rendered as text
    done = run_peers(env, "decide", "db.engine", "postgres", "--why", "we need jsonb")
    assert done.code == 0, done
    page.wait_for_selector("#decisions-panel >> text=we need jsonb", timeout=3000)
    done = run_peers(env, "propose", "Ship it?", "--voter", "beta")
    assert done.code == 0, done
    page.wait_for_selector("#proposals-panel >> text=beta: —", timeout=3000)


def test_the_opened_file_lands_on_the_page_logged_in(browser, daemon, pair, tmp_path):
    """What `peers dashboard` hands the browser (a private file, not the token URL) takes
    it to the live page with its cookie."""
    from peers_cli.dashboard.web import open_page

    d = Dashboard(daemon, tmp_path)
    context = browser.new_context()
    try:
        d.wait_ready()
        page_file = open_page(daemon.settings, d.port, d.url)
        page = context.new_page()
        page.goto(page_file.as_uri())
        page.wait_for_selector("#conn.ok", timeout=10000)
        assert page.url == f"{d.origin}/"  # the token left the address bar
        page.wait_for_selector("#peers li.peer >> text=alpha", timeout=5000)
    finally:
        context.close()
        d.stop()


def test_a_message_badge_follows_its_state_and_reactions(visit, pair):
    ca, _a, cb, _b = pair
    page = visit.page
    mid = ca.request(p.Send, to="beta", text="follow my badge").message_id
    item = page.locator(f'#feed li.message[data-id="{mid}"]')
    item.locator(".badge.queued").wait_for(timeout=3000)
    cb.request(p.Claim)
    item.locator(".badge.leased").wait_for(timeout=3000)
    cb.request(p.React, message_id=mid, emoji="👀")
    item.locator(".reaction", has_text="👀").wait_for(timeout=3000)
    cb.request(p.Ack, message_ids=[mid], via="check")
    item.locator(".badge.delivered").wait_for(timeout=3000)
    assert item.locator(".badge.delivered").get_attribute("title") == "via check"
    assert page.locator(f'#feed li.message[data-id="{mid}"]').count() == 1  # replaced, not added


def test_a_page_left_open_keeps_at_most_2000_messages(browser, make_daemon, agents, tmp_path):
    """The oldest leave the feed (and the page's memory) past 2000, as in the dashboard."""
    daemon = make_daemon(rate_per_second="0", queue_limit="5000")
    ca = demo_peer(daemon, agents, "claude-code", "alpha", "main")
    cb = demo_peer(daemon, agents, "codex", "beta", "main")
    d = Dashboard(daemon, tmp_path)
    v = None
    try:
        d.wait_ready()
        v = Visit(browser, d)
        page = v.page
        first = ca.request(p.Send, to="beta", text="the very first").message_id
        page.wait_for_selector("#feed li.message >> text=the very first", timeout=3000)
        for n in range(2000):
            ca.request(p.Send, to="beta", text=f"filler {n}")
        page.wait_for_selector("#feed li.message >> text=filler 1999", timeout=30000)
        expect(page.locator("#feed li.message")).to_have_count(2000)
        assert page.locator(f'#feed li.message[data-id="{first}"]').count() == 0
        assert page.locator("#feed li.message >> text=filler 0").count() == 1
        assert not v.errors, v.errors
    finally:
        if v is not None:
            v.close()
        ca.close()
        cb.close()
        d.stop()
