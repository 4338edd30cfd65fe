"""The web console (``--http``, ``/``): its actions and token gate over HTTP, and the pages
driven in a real headless Chromium through selenium, checked against what the beanstalk
protocol says.

The browser is Debian's ``chromium`` with ``chromium-driver`` (paths given explicitly, so
selenium-manager never downloads anything). Without them, or without selenium, the browser
tests skip, unless BEANQ_REQUIRE_BROWSER=1 (CI), where they fail. Screenshots go to
build/screenshots/ (the pytest summary names the folder).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from beanq import protocol as p
from tests.servers import skip_or_fail
from tests.test_http import Beanstalk, http_server

CHROMIUM = os.environ.get("BEANQ_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("BEANQ_CHROMEDRIVER", "/usr/bin/chromedriver")
REQUIRE_BROWSER_ENV = "BEANQ_REQUIRE_BROWSER"
SCREENSHOTS = Path(__file__).resolve().parent.parent / "build" / "screenshots"  # (conftest)
TOKEN = "console-test-token-0123456789"
BEARER = {"Authorization": f"Bearer {TOKEN}"}
WAIT = 15.0  # seconds a page may take to show what it should (it polls every 1-2 s)
BURIED_MANY = 2000

T = TypeVar("T")


# --- the daemon and the protocol ---------------------------------------------------------------


@contextmanager
def console_server(*args: str) -> Iterator[tuple[int, httpx.Client, str]]:
    """beanq with --http (and ``args``); yields its beanstalk port, a client, the base URL."""
    with http_server(*args) as (port, client):
        yield port, client, str(client.base_url).rstrip("/")


def bulk(bs: Beanstalk, lines: list[tuple[str, bytes | None]]) -> list[p.Reply]:
    """Pipeline many commands at once and read every reply."""
    data = b"".join(
        line.encode() + b"\r\n" + (b"" if body is None else body + b"\r\n") for line, body in lines
    )
    bs.sock.sendall(data)
    while len(bs.replies) < len(lines):
        chunk = bs.sock.recv(1 << 20)
        if not chunk:
            raise EOFError
        bs.replies.extend(bs.reader.feed(chunk))
    out = bs.replies[: len(lines)]
    del bs.replies[: len(lines)]
    return out


def put(bs: Beanstalk, tube: str, bodies: list[bytes], pri: int = 100, delay: int = 0) -> list[int]:
    replies = bulk(
        bs, [(f"use {tube}", None)] + [(f"put {pri} {delay} 60 {len(b)}", b) for b in bodies]
    )
    return [int(r.args[0]) for r in replies[1:]]


def bury(bs: Beanstalk, tube: str, count: int) -> list[int]:
    """Reserve ``count`` jobs of ``tube`` (the only one watched) and bury them."""
    bulk(bs, [(f"watch {tube}", None), ("ignore default", None)])
    reserved = bulk(bs, [("reserve-with-timeout 0", None)] * count)
    ids = [int(r.args[0]) for r in reserved]
    assert all(r.word == "RESERVED" for r in reserved)
    assert all(r.word == "BURIED" for r in bulk(bs, [(f"bury {i} 10", None) for i in ids]))
    bulk(bs, [("watch default", None), (f"ignore {tube}", None)])
    return ids


def stats_tube(bs: Beanstalk, tube: str) -> dict[str, str]:
    return bs.yaml(f"stats-tube {tube}")


def wait_for(what: Callable[[], T], message: str, timeout: float = WAIT) -> T:
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = what()
        except Exception:  # (a page redrawing under us: try again)
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting: {message}")
        time.sleep(0.1)


# --- rates, in process ---------------------------------------------------------------------


def test_rates_per_second_from_sampled_counters() -> None:
    from beanq.http.rates import TUBE_INTERVAL, Rates
    from beanq.tubes import Engine, Job

    clock = [100.0]
    engine = Engine(clock[0])
    rates = Rates(engine, lambda: clock[0])
    producer = engine.connect()
    engine.use(producer, b"busy")
    rates.sample()
    rates.want_tubes()  # (a first snapshot of the tubes' counters)
    for _ in range(6):
        engine.put(producer, 0, 0, 60, b"x", clock[0])
    clock[0] += 2.0
    rates.sample()
    engine.watch(producer, b"busy")
    for _ in range(3):
        job = engine.reserve(producer, 0, clock[0])
        assert isinstance(job, Job)
        assert engine.delete(producer, job.id, clock[0])
    clock[0] += TUBE_INTERVAL
    rates.sample()  # (and the second snapshot: the tubes table asked lately)
    # [seconds before now, puts/s, reserves/s, deletes/s, timeouts/s]
    assert rates.series() == [[-TUBE_INTERVAL, 3.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.6, 0.6, 0.0]]
    busy = engine.find_tube(b"busy")
    assert busy is not None
    # over the 7 s between the two snapshots: 6 puts, 3 reserves, 3 deletes
    assert rates.tube_rates(busy) == (6 / 7, 3 / 7, 3 / 7)


# --- actions and the gate over HTTP (no browser) -------------------------------------------


def test_actions_over_the_api_wake_waiting_reserves_and_reach_the_binlog(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    data = tmp_path / "binlog"
    data.mkdir()
    args = ("-b", str(data), "-f", "0", "--http-token-file", str(token_file))
    with console_server(*args) as (port, client, _url):
        bs = Beanstalk(port)
        put(bs, "work", [b"one"])
        (buried,) = bury(bs, "work", 1)
        worker = Beanstalk(port)
        bulk(worker, [("watch work", None)])
        worker.sock.sendall(b"reserve\r\n")  # waits: nothing is ready
        time.sleep(0.2)
        kicked = client.post("/api/v1/tubes/work/kick", json={"bound": 5}, headers=BEARER)
        assert kicked.json() == {"kicked": 1}
        worker.sock.settimeout(5)
        got = worker.reader.feed(worker.sock.recv(4096))
        assert got[0].word == "RESERVED" and int(got[0].args[0]) == buried  # served as a put's
        # delete: any job but a reserved one; reserved ones only by their holder
        assert client.post(f"/api/v1/jobs/{buried}/delete", headers=BEARER).status_code == 404
        keep, gone, stays = put(bs, "work", [b"keep", b"gone", b"stays"])
        assert client.post(f"/api/v1/jobs/{gone}/delete", headers=BEARER).json() == {
            "deleted": gone
        }
        assert bs.ask(f"peek {gone}").word == "NOT_FOUND"
        stuck = put(bs, "work", [b"delayed"], delay=3600)[0]
        assert client.post(f"/api/v1/jobs/{stuck}/kick", headers=BEARER).json() == {"kicked": stuck}
        assert bs.yaml(f"stats-job {stuck}")["state"] == "ready"
        move = {"to": "elsewhere", "state": "ready", "limit": 1}
        assert client.post("/api/v1/tubes/work/move", json=move, headers=BEARER).json() == {
            "moved": 1
        }
        flushed = put(bs, "trash", [b"a", b"b"])
        flush = client.post("/api/v1/tubes/trash/flush", json={"state": "all"}, headers=BEARER)
        assert flush.json() == {"flushed": 2}
        pause = client.post("/api/v1/tubes/work/pause", json={"seconds": 30}, headers=BEARER)
        assert pause.json() == {"paused": True, "seconds": 30}
        assert stats_tube(bs, "work")["pause"] == "30"
        assert client.post("/api/v1/drain", json={"on": True}, headers=BEARER).is_success
        assert bs.ask("put 0 0 1 1", b"x").word == "DRAINING"
        assert client.post("/api/v1/drain", json={"on": False}, headers=BEARER).is_success
        assert bs.ask("put 0 0 1 1", b"x").word == "INSERTED"
        # bad parameters and unknown things
        for path, body, status in [
            ("/api/v1/tubes/work/kick", {}, 400),
            ("/api/v1/tubes/work/kick", {"bound": -1}, 400),
            ("/api/v1/tubes/nope/kick", {"bound": 1}, 404),
            ("/api/v1/tubes/work/flush", {"state": "reserved"}, 400),
            ("/api/v1/tubes/work/move", {"to": "-bad", "state": "ready", "limit": 1}, 400),
            ("/api/v1/tubes/nope/pause", {"seconds": 1}, 404),
            ("/api/v1/jobs/99999/kick", {}, 404),
            ("/api/v1/drain", {"on": "yes"}, 400),
        ]:
            answer = client.post(path, json=body, headers=BEARER)
            assert answer.status_code == status, (path, body, answer.text)
            assert set(answer.json()) == {"error", "message"}
        moved_to = bs.yaml(f"stats-job {keep}")["tube"]
        bs.close()
        worker.close()
    # the binlog recorded every change like the protocol's commands: after a restart
    with console_server(*args) as (port, client, _url):
        bs = Beanstalk(port)
        assert bs.ask(f"peek {gone}").word == "NOT_FOUND"
        assert all(bs.ask(f"peek {i}").word == "NOT_FOUND" for i in flushed)
        assert bs.yaml(f"stats-job {stuck}")["state"] == "ready"
        assert bs.yaml(f"stats-job {keep}")["tube"] == moved_to == "elsewhere"
        assert bs.yaml(f"stats-job {stays}")["tube"] == "work"
        assert bs.yaml(f"stats-job {buried}")["state"] == "ready"  # its holder went away
        bs.close()


def test_read_only_without_a_token_file() -> None:
    with console_server() as (port, client, _url):
        bs = Beanstalk(port)
        (job_id,) = put(bs, "ro", [b"secret"])
        assert client.get("/api/v1/session").json() == {
            "auth": "none",
            "via": "open",
            "actions": False,
            "bodies": False,
            "csrf": None,
        }
        for path, body in [
            ("/api/v1/tubes/ro/kick", {"bound": 1}),
            (f"/api/v1/jobs/{job_id}/delete", {}),
            ("/api/v1/tubes/ro/flush", {"state": "all"}),
            ("/api/v1/drain", {"on": True}),
        ]:
            answer = client.post(path, json=body)
            assert answer.status_code == 403 and answer.json()["error"] == "forbidden"
        assert bs.ask(f"peek {job_id}").word == "FOUND"
        page = client.get("/")
        assert page.status_code == 200 and "console.js" in page.text
        assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
        assert client.get("/login", follow_redirects=False).status_code == 303
        rates = client.get("/api/v1/rates", params={"seconds": 300}).json()
        assert rates["interval"] == 1 and all(-300 <= point[0] <= 0 for point in rates["points"])
        assert client.get("/api/v1/rates", params={"seconds": 601}).status_code == 400
        assert client.get("/api/v1/tubes", params={"sort": "nope"}).status_code == 400
        assert client.get("/api/v1/tubes", params={"limit": 0}).status_code == 400
        bs.close()


def test_login_session_cookie_and_csrf(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    with console_server("--http-token-file", str(token_file)) as (port, client, url):
        bs = Beanstalk(port)
        (job_id,) = put(bs, "c", [b"x"])
        assert client.get("/", follow_redirects=False).headers["location"] == "/login"
        assert client.get("/static/console.js").status_code == 200  # the package's own code
        origin = {"Origin": url}
        wrong = client.post("/login", data={"token": "nope"}, headers=origin)
        assert wrong.status_code == 401 and "Wrong token" in wrong.text
        foreign = client.post("/login", data={"token": TOKEN}, headers={"Origin": "http://evil"})
        assert foreign.status_code == 403
        ok = client.post("/login", data={"token": TOKEN}, headers=origin, follow_redirects=False)
        assert ok.status_code == 303
        cookie = ok.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie
        assert client.get("/").status_code == 200  # the cookie lets the page in
        me = client.get("/api/v1/session").json()
        assert me["via"] == "cookie" and me["actions"] and me["bodies"] and me["csrf"]
        path = f"/api/v1/jobs/{job_id}/delete"
        csrf = {"X-CSRF-Token": me["csrf"]}
        assert client.post(path, headers=origin).status_code == 403  # no CSRF token
        assert client.post(path, headers={**csrf, "Origin": "http://evil"}).status_code == 403
        assert client.post(path, headers={"X-CSRF-Token": "forged", **origin}).status_code == 403
        assert client.post(path, headers=csrf).status_code == 403  # no Origin nor Referer
        assert bs.ask(f"peek {job_id}").word == "FOUND"
        assert client.post(path, headers={**csrf, **origin}).json() == {"deleted": job_id}
        assert client.post("/logout", headers={**csrf, **origin}).is_success
        assert client.get("/api/v1/stats").status_code == 401
        bs.close()


# --- the browser -------------------------------------------------------------------------------


def _webdriver() -> Any:
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        skip_or_fail("selenium is not installed", REQUIRE_BROWSER_ENV)
    for path in (CHROMIUM, CHROMEDRIVER):
        if not (os.path.isfile(path) and os.access(path, os.X_OK)):
            skip_or_fail(
                f"{path} is not installed (chromium, chromium-driver)", REQUIRE_BROWSER_ENV
            )
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # (the page's console)
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1400,1000",
        "--force-device-scale-factor=1",
        "--no-first-run",
        "--disable-extensions",
    ):
        options.add_argument(arg)
    # the driver's path, given: selenium-manager is skipped and downloads nothing
    return webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    driver = _webdriver()
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def shot(driver: Any, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(SCREENSHOTS / f"{name}.png"))


def css(driver: Any, selector: str) -> Any:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.CSS_SELECTOR, selector)


def all_css(driver: Any, selector: str) -> list[Any]:
    from selenium.webdriver.common.by import By

    return list(driver.find_elements(By.CSS_SELECTOR, selector))


def value_of(driver: Any, selector: str) -> str:
    return str(css(driver, selector).get_attribute("data-value"))


def js(driver: Any, expression: str) -> Any:
    """Read the page in one step (elements found first may be redrawn by the next poll)."""
    return driver.execute_script(f"return {expression}")


def go(driver: Any, url: str) -> None:
    """Open ``url``; one with a ``#/view`` returns once the console shows that view (a
    change of the fragment alone is no page load: the old view stays until the script
    answers the hashchange)."""
    driver.get(url)
    if "#" in url:
        hash_ = url[url.index("#") :]
        wait_for(lambda: js(driver, "document.getElementById('main').dataset.view") == hash_, url)


def click(driver: Any, selector: str) -> None:
    css(driver, selector).click()


class Scene:
    """The daemon the browser tests share, holding jobs in several tubes and every state."""

    def __init__(self, port: int, client: httpx.Client, url: str) -> None:
        self.port = port
        self.client = client
        self.url = url
        self.bs = Beanstalk(port)
        bs = self.bs
        self.ready = put(bs, "emails", [b"hello %d" % i for i in range(5)])
        self.delayed = put(bs, "emails", [b"later", b"much later"], delay=3600)
        to_bury = put(bs, "emails", [b"to bury %d" % i for i in range(3)], pri=1)
        self.emails_buried = bury(bs, "emails", 3)  # (reserved first: most urgent)
        assert self.emails_buried == to_bury
        self.json_job = put(bs, "json", [json.dumps({"user": 7, "tags": ["a", "b"]}).encode()])[0]
        self.binary_job = put(bs, "json", [bytes(range(255, 215, -1))])[0]  # not UTF-8
        self.many = put(bs, "reports", [b"report %04d" % i for i in range(BURIED_MANY)])
        assert bury(bs, "reports", BURIED_MANY) == self.many
        put(bs, "wake", [b"wake me"])
        self.wake_job = bury(bs, "wake", 1)[0]
        self.holder = Beanstalk(port)  # holds a reserved job of "emails"
        bulk(self.holder, [("watch emails", None), ("ignore default", None)])
        self.reserved = int(self.holder.ask("reserve-with-timeout 0").args[0])
        self.worker = Beanstalk(port)  # waits in reserve on "wake"
        bulk(self.worker, [("watch wake", None), ("ignore default", None)])
        self.worker.sock.sendall(b"reserve\r\n")

    def close(self) -> None:
        for conn in (self.bs, self.holder, self.worker):
            conn.close()


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scene]:
    token_file = tmp_path_factory.mktemp("console") / "token"
    token_file.write_text(TOKEN + "\n")
    with console_server("--http-token-file", str(token_file)) as (port, client, url):
        client.headers.update(BEARER)
        built = Scene(port, client, url)
        try:
            yield built
        finally:
            built.close()


def test_browser_login_gate(browser: Any, scene: Scene) -> None:
    go(browser, scene.url + "/")
    wait_for(lambda: browser.current_url.endswith("/login"), "the console sends to /login")
    shot(browser, "01-login")
    css(browser, "#token").send_keys("not the token")
    click(browser, "button[type=submit]")
    error = wait_for(lambda: css(browser, "p.error").text, "the wrong token is refused")
    assert error == "Wrong token."
    shot(browser, "02-login-wrong-token")
    assert httpx.get(scene.url + "/api/v1/stats").status_code == 401  # no bearer, no cookie
    css(browser, "#token").send_keys(TOKEN)
    click(browser, "button[type=submit]")
    wait_for(lambda: all_css(browser, "#stats .stat"), "the overview after logging in")
    cookie = browser.get_cookie("beanq_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    # the script cannot read it
    assert "beanq_session" not in browser.execute_script("return document.cookie")
    assert css(browser, "body").get_attribute("data-actions") == "on"


def test_browser_overview_matches_stats(browser: Any, scene: Scene) -> None:
    go(browser, scene.url + "/#/")
    fields = [
        "current-jobs-ready",
        "current-jobs-urgent",
        "current-jobs-reserved",
        "current-jobs-delayed",
        "current-jobs-buried",
        "current-tubes",
        "current-connections",
        "current-producers",
        "current-workers",
        "current-waiting",
        "total-jobs",
        "job-timeouts",
    ]

    def shown() -> dict[str, str]:
        return {f: value_of(browser, f'[data-stat="{f}"] .value') for f in fields}

    def same() -> bool:
        stats = scene.bs.yaml("stats")
        return shown() == {f: stats[f] for f in fields}

    wait_for(same, "the overview shows what stats says")
    stats = scene.bs.yaml("stats")
    assert stats["current-jobs-buried"] == str(3 + BURIED_MANY + 1)
    assert stats["current-waiting"] == "1"
    charts = all_css(browser, "figure[data-chart] svg")
    assert [c.find_element("xpath", "..").get_attribute("data-chart") for c in charts] == [
        "puts",
        "reserves",
        "deletes",
        "timeouts",
    ]
    wait_for(lambda: all_css(browser, "figure[data-chart=puts] polyline"), "a line of puts/s")
    shot(browser, "03-overview")


def test_browser_tubes_table_sort_and_filter(browser: Any, scene: Scene) -> None:
    go(browser, scene.url + "/#/tubes")
    wait_for(lambda: all_css(browser, "#tubes-table tr[data-tube]"), "the tubes table")
    columns = {
        "current-jobs-ready": "current-jobs-ready",
        "current-jobs-reserved": "current-jobs-reserved",
        "current-jobs-delayed": "current-jobs-delayed",
        "current-jobs-buried": "current-jobs-buried",
        "current-waiting": "current-waiting",
    }

    def table_matches() -> bool:
        rows = all_css(browser, "#tubes-table tr[data-tube]")
        names = [r.get_attribute("data-tube") for r in rows]
        if sorted(names) != sorted(["default", "emails", "json", "reports", "wake"]):
            return False
        for name in names:
            st = stats_tube(scene.bs, name)
            for col, field in columns.items():
                got = value_of(browser, f'tr[data-tube="{name}"] td[data-col="{col}"]')
                if got != st[field]:
                    return False
        return True

    wait_for(table_matches, "every tube's row shows what stats-tube says")
    click(browser, 'th[data-sort="buried"]')  # the first click sorts the busiest first
    wait_for(
        lambda: (
            all_css(browser, "#tubes-table tr[data-tube]")[0].get_attribute("data-tube")
            == "reports"
        ),
        "sorted by buried, descending",
    )
    shot(browser, "04-tubes-sorted")
    css(browser, "#tube-filter").send_keys("mail")
    wait_for(
        lambda: (
            [r.get_attribute("data-tube") for r in all_css(browser, "#tubes-table tr")[1:]]
            == ["emails"]
        ),
        "filtered to emails",
    )
    assert "of 1 matching (5 tubes)" in css(browser, "#tubes-summary").text


def test_browser_pages_through_buried_jobs(browser: Any, scene: Scene) -> None:
    go(browser, scene.url + "/#/tube/reports?state=buried")
    seen: list[int] = []
    page = 0

    def page_shown(number: int) -> list[int] | None:
        shown = js(
            browser,
            "{page: document.getElementById('jobs-page').textContent, ids: [...document."
            "querySelectorAll('#jobs-table tr[data-job]')].map(r => Number(r.dataset.job)),"
            "last: document.getElementById('jobs-next').disabled}",
        )
        if shown["page"] != f"page {number}" or not shown["ids"]:
            return None
        return [*shown["ids"], -1 if shown["last"] else 0]

    while True:
        page += 1
        shown = wait_for(partial(page_shown, page), f"page {page} of buried jobs")
        assert shown is not None
        *ids, last = shown
        assert not seen or ids[0] > seen[-1]
        seen.extend(ids)
        if page == 1:
            preview = js(browser, "document.querySelector('td[data-col=preview]').textContent")
            assert preview == "report 0000"
            shot(browser, "05-tube-buried-page")
        if last:
            break
        js(browser, "document.getElementById('jobs-next').click()")
    assert seen == scene.many
    assert page == BURIED_MANY // 100
    js(browser, "document.getElementById('jobs-prev').click()")
    back = wait_for(lambda: page_shown(page - 1), "a page back")
    assert back is not None and back[0] == scene.many[-200]


def test_browser_job_page_shows_body_as_json_and_hex(browser: Any, scene: Scene) -> None:
    go(browser, scene.url + f"/#/job/{scene.json_job}")
    body = wait_for(lambda: css(browser, "#body-view").text, "the job's body")
    assert json.loads(body) == {"user": 7, "tags": ["a", "b"]} and "\n  " in body  # pretty
    assert css(browser, '[data-field="state"]').text == "ready"
    shot(browser, "06-job-json")
    click(browser, 'button[data-mode="hex"]')
    assert css(browser, "#body-view").text.startswith("00000000  7b 22 75 73 65 72")
    go(browser, scene.url + f"/#/job/{scene.binary_job}")
    wait_for(
        lambda: css(browser, "#body-view").text.startswith("00000000  ff fe fd fc"), "hex dump"
    )
    shot(browser, "07-job-binary-hex")


def test_browser_actions_change_the_queue(browser: Any, scene: Scene) -> None:
    from selenium.webdriver.support.ui import Select

    bs = scene.bs
    # kick: the job goes to the worker waiting in reserve, as after a put
    go(browser, scene.url + "/#/tube/wake?state=buried")
    wait_for(lambda: all_css(browser, "#kick"), "the tube's actions")
    shot(browser, "08-tube-actions")
    kick_bound = css(browser, "#kick-bound")
    kick_bound.clear()
    kick_bound.send_keys("1")
    click(browser, "#kick")
    scene.worker.sock.settimeout(10)
    got = scene.worker.reader.feed(scene.worker.sock.recv(4096))
    assert got[0].word == "RESERVED" and int(got[0].args[0]) == scene.wake_job
    wait_for(lambda: "Kicked 1 job" in css(browser, "#flash").text, "the kick's message")
    assert stats_tube(bs, "wake")["current-jobs-buried"] == "0"
    # delete a buried job from its row (two clicks: it asks once more)
    victim = scene.emails_buried[0]
    go(browser, scene.url + "/#/tube/emails?state=buried")
    button = f'tr[data-job="{victim}"] button[data-action="delete-job"]'
    wait_for(lambda: all_css(browser, button), "the buried job's row")
    click(browser, button)
    wait_for(lambda: css(browser, button).text == "Sure?", "the second thought")
    shot(browser, "09-delete-confirm")
    click(browser, button)
    wait_for(lambda: bs.ask(f"peek {victim}").word == "NOT_FOUND", "the job deleted")
    wait_for(lambda: not all_css(browser, f'tr[data-job="{victim}"]'), "the row gone")
    # kick one job from its row
    kicked = scene.emails_buried[1]
    click(browser, f'tr[data-job="{kicked}"] button[data-action="kick-job"]')
    wait_for(lambda: bs.yaml(f"stats-job {kicked}")["state"] == "ready", "the job kicked")
    # pause, then unpause
    seconds = css(browser, "#pause-seconds")
    seconds.clear()
    seconds.send_keys("120")
    click(browser, "#pause")
    wait_for(lambda: stats_tube(bs, "emails")["pause"] == "120", "the tube paused")
    wait_for(lambda: "left" in css(browser, '[data-stat="paused"] .value').text, "shown paused")
    click(browser, "#unpause")
    wait_for(lambda: stats_tube(bs, "emails")["pause"] == "0", "the tube unpaused")
    # flush the buried jobs of reports (two clicks)
    go(browser, scene.url + "/#/tube/reports?state=buried")
    wait_for(lambda: all_css(browser, "#flush"), "the flush button")
    click(browser, "#flush")
    click(browser, "#flush")
    # (empty and neither used nor watched, the tube is gone)
    wait_for(lambda: bs.ask("stats-tube reports").word == "NOT_FOUND", "reports flushed")
    wait_for(lambda: all_css(browser, "#tube-gone"), "the page says the tube is gone")
    wait_for(lambda: "Flushed 2,000 jobs" in css(browser, "#flash").text, "the flush's message")
    # move the ready jobs of emails to another tube
    go(browser, scene.url + "/#/tube/emails?state=ready")
    wait_for(lambda: all_css(browser, "#move-to"), "the move form")
    css(browser, "#move-to").send_keys("archive")
    Select(css(browser, "#move-state")).select_by_value("ready")
    click(browser, "#move")
    # (hello 1-4 and the kicked job; hello 0 is held)
    wait_for(lambda: stats_tube(bs, "archive")["current-jobs-ready"] == "5", "moved to archive")
    # drain mode on and off from the overview
    go(browser, scene.url + "/#/")
    wait_for(lambda: all_css(browser, "#drain-toggle"), "the drain button")
    click(browser, "#drain-toggle")
    wait_for(lambda: bs.yaml("stats")["draining"] == "true", "drain mode on")
    wait_for(lambda: all_css(browser, "#draining-badge"), "the draining badge")
    shot(browser, "10-overview-draining")
    click(browser, "#drain-toggle")
    wait_for(lambda: bs.yaml("stats")["draining"] == "false", "drain mode off")


def test_browser_connections_page(browser: Any, scene: Scene) -> None:
    go(browser, scene.url + "/#/connections")

    def rows() -> list[dict[str, str]]:
        return list(
            js(
                browser,
                "[...document.querySelectorAll('#conns-table tr[data-conn]')].map(r => ({"
                "held: r.querySelector('[data-col=reserved]').dataset.value,"
                "address: r.querySelector('[data-col=address]').textContent,"
                "waiting: r.querySelector('[data-col=waiting]').dataset.value}))",
            )
        )

    wait_for(lambda: len(rows()) == int(scene.bs.yaml("stats")["current-connections"]), "rows")
    shown = rows()
    assert sorted(r["held"] for r in shown) == ["0", "1", "1"]  # the holder's, the worker's
    assert all(r["address"].startswith("127.0.0.1:") for r in shown)
    assert all(r["waiting"] == "false" for r in shown)  # (the worker got its job)
    shot(browser, "11-connections")


def schedule_list(bs: Beanstalk) -> dict[str, dict[str, Any]]:
    """beanq-schedule-list, by name."""
    reply = bs.ask("beanq-schedule-list")
    assert reply.word == "OK" and reply.body is not None
    return {s["name"]: s for s in json.loads(reply.body)}


def local_time(ts: float) -> str:
    """What the page shows for a Unix time: the browser's local time (the same zone as ours),
    with the date unless it is today."""
    at = datetime.fromtimestamp(ts)
    return at.strftime("%H:%M:%S" if at.date() == datetime.now().date() else "%Y-%m-%d %H:%M:%S")


SCHEDULE_ROWS = """[...document.querySelectorAll('#schedules-table tr[data-schedule]')].map(r => {
  const c = (col) => r.querySelector(`[data-col=${col}]`);
  return {name: r.dataset.schedule, tube: c('tube').textContent,
    tube_link: c('tube').querySelector('a').getAttribute('href'),
    trigger: c('trigger').dataset.value, next: c('next_fire').dataset.value,
    next_text: c('next_fire').textContent, last: c('last_fire').dataset.value,
    last_text: c('last_fire').textContent, fired: c('fired').dataset.value,
    skipped: c('skipped').dataset.value, missed: c('missed').dataset.value,
    paused: c('paused').dataset.value,
    buttons: [...r.querySelectorAll('button[data-action]')].map(b => b.dataset.action)};
})"""


def test_browser_schedules_page(browser: Any, tmp_path: Path) -> None:
    """Schedules declared over the protocol show on #/schedules as beanq-schedule-list says
    (next fire absolute and relative, last fire, counts, state); Pause, Resume and Delete
    clicked in the page act (checked over the protocol); 3,000 schedules cost one page."""
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    with console_server("--http-token-file", str(token_file)) as (port, _client, url):
        bs = Beanstalk(port)
        definitions = {
            "digest": {"tube": "mail", "cron": "*/5 * * * *", "tz": "Europe/Paris"},
            "heartbeat": {"tube": "beats", "every": 1, "overlap": "allow", "body": "beat"},
            "nightly": {"tube": "reports", "cron": "0 3 * * *", "pri": 10, "ttr": 600},
            "single": {"tube": "single/file", "every": 0.5},  # (overlap skip: skips pile up)
        }
        for name, definition in definitions.items():
            data = json.dumps(definition).encode()
            assert bs.ask(f"beanq-schedule-add {name} {len(data)}", data).word == "ADDED"
        assert bs.ask("beanq-schedule-pause nightly").word == "PAUSED"
        browser.get_log("browser")  # (forget what earlier tests logged)
        go(browser, url + "/login")
        css(browser, "#token").send_keys(TOKEN)
        click(browser, "button[type=submit]")
        wait_for(lambda: all_css(browser, "#stats .stat"), "logged in")
        go(browser, url + "/#/schedules")
        wait_for(lambda: all_css(browser, "#schedules-table tr[data-schedule]"), "the table")

        def shown() -> dict[str, dict[str, Any]]:
            return {row["name"]: row for row in js(browser, SCHEDULE_ROWS)}

        def matches() -> bool:
            """The page between two reads of the protocol's list (heartbeat fires meanwhile)."""
            before = schedule_list(bs)
            page = shown()
            after = schedule_list(bs)
            if set(page) != set(after):
                return False
            for name, row in page.items():
                old, new = before[name], after[name]
                if not old["fired"] <= int(row["fired"]) <= new["fired"]:
                    return False
                if not old["skipped"] <= int(row["skipped"]) <= new["skipped"]:
                    return False
                if row["missed"] != str(new["missed"]) or row["tube"] != new["tube"]:
                    return False
                if row["paused"] != str(new["paused"]).lower():
                    return False
                if old["next_fire"] == new["next_fire"]:  # (not fired meanwhile: exact)
                    if (float(row["next"]) if row["next"] else None) != new["next_fire"]:
                        return False
                    if old["last_fire"] != (float(row["last"]) if row["last"] else None):
                        return False
            return True

        wait_for(lambda: schedule_list(bs)["single"]["skipped"] >= 2, "single skips")
        wait_for(matches, "the schedules as beanq-schedule-list says")
        rows = shown()
        listed = schedule_list(bs)
        digest = rows["digest"]
        assert digest["trigger"] == "cron */5 * * * * Europe/Paris"
        assert digest["tube_link"] == "#/tube/mail"
        assert digest["next_text"].startswith(local_time(listed["digest"]["next_fire"]) + " in ")
        assert digest["last_text"] == "never" and digest["buttons"] == [
            "pause-schedule",
            "delete-schedule",
        ]
        assert rows["nightly"]["next_text"] == "paused" and rows["nightly"]["next"] == ""
        assert rows["nightly"]["buttons"][0] == "resume-schedule"
        assert rows["single"]["tube_link"] == "#/tube/single%2Ffile"
        assert rows["heartbeat"]["trigger"] == "every 1" and int(rows["heartbeat"]["fired"]) >= 1
        last = float(rows["heartbeat"]["last"])
        assert rows["heartbeat"]["last_text"].startswith(local_time(last))
        assert rows["heartbeat"]["last_text"].endswith(" ago")
        shot(browser, "14-schedules")
        # pause and resume from the page, checked over the protocol
        pause = 'tr[data-schedule="digest"] button[data-action="pause-schedule"]'
        click(browser, pause)
        wait_for(lambda: schedule_list(bs)["digest"]["paused"], "digest paused")
        wait_for(lambda: shown()["digest"]["paused"] == "true", "shown paused")
        assert shown()["digest"]["next_text"] == "paused"
        click(browser, 'tr[data-schedule="digest"] button[data-action="resume-schedule"]')
        wait_for(lambda: not schedule_list(bs)["digest"]["paused"], "digest resumed")
        resumed = schedule_list(bs)["digest"]["next_fire"]
        assert resumed is not None and resumed == listed["digest"]["next_fire"]
        wait_for(lambda: float(shown()["digest"]["next"]) == resumed, "shown resumed")
        # delete (it asks once more)
        delete = 'tr[data-schedule="single"] button[data-action="delete-schedule"]'
        click(browser, delete)
        wait_for(lambda: css(browser, delete).text == "Sure?", "the second thought")
        click(browser, delete)
        wait_for(lambda: "single" not in schedule_list(bs), "single deleted")
        wait_for(lambda: "single" not in shown(), "its row gone")
        # thousands of schedules: one page of rows, filtered on the server
        lines: list[tuple[str, bytes | None]] = []
        for i in range(3000):
            data = b'{"tube":"bulk-%d","cron":"0 * * * *"}' % (i % 7)
            lines.append((f"beanq-schedule-add bulk-{i:04d} {len(data)}", data))
        assert all(r.word == "ADDED" for r in bulk(bs, lines))
        wait_for(lambda: "of 3,003 schedules" in css(browser, "#schedules-summary").text, "3,003")
        assert len(shown()) == 50
        started = time.monotonic()
        css(browser, "#schedule-filter").send_keys("bulk-2999")
        wait_for(lambda: list(shown()) == ["bulk-2999"], "filtered among 3,003 schedules")
        assert time.monotonic() - started < WAIT
        shot(browser, "15-schedules-filtered")
        logged = [e["message"] for e in browser.get_log("browser") if e["level"] == "SEVERE"]
        assert logged == []
        browser.get("about:blank")  # (no poll of this server once it is gone)
        bs.close()


def test_browser_read_only_console_and_ten_thousand_tubes(browser: Any) -> None:
    browser.get_log("browser")  # (forget what earlier tests logged: 401s of the login)
    with console_server() as (port, client, url):
        bs = Beanstalk(port)
        lines: list[tuple[str, bytes | None]] = []
        for i in range(10_000):
            lines += [(f"use t{i:05d}", None), ("put 0 0 60 1", b"x")]
        for start in range(0, len(lines), 4000):
            bulk(bs, lines[start : start + 4000])
        go(browser, url + "/#/tubes")
        wait_for(lambda: "of 10,001 tubes" in css(browser, "#tubes-summary").text, "10,001 tubes")
        assert len(all_css(browser, "#tubes-table tr[data-tube]")) == 50  # a page, not 10k rows
        started = time.monotonic()
        css(browser, "#tube-filter").send_keys("t09999")
        wait_for(
            lambda: (
                [r.get_attribute("data-tube") for r in all_css(browser, "#tubes-table tr")[1:]]
                == ["t09999"]
            ),
            "filtered among 10,000 tubes",
        )
        assert time.monotonic() - started < WAIT
        assert not all_css(browser, "#kick")
        shot(browser, "12-tubes-10k-filtered")
        go(browser, url + "/#/tube/t00042")
        wait_for(lambda: all_css(browser, "#jobs-table tr[data-job]"), "the tube's jobs")
        assert not all_css(browser, "#tube-actions .action")  # read-only: no action controls
        assert not all_css(browser, "button[data-action]")
        assert not all_css(browser, "td[data-col=preview]")  # bodies hidden
        assert all_css(browser, "#read-only")
        shot(browser, "13-read-only-tube")
        go(browser, url + "/#/schedules")
        wait_for(lambda: all_css(browser, "#no-schedules"), "no schedules yet")
        data = b'{"tube":"t00042","every":60}'
        assert bs.ask(f"beanq-schedule-add minutely {len(data)}", data).word == "ADDED"
        wait_for(lambda: all_css(browser, 'tr[data-schedule="minutely"]'), "the schedule's row")
        assert not all_css(browser, "#schedules-table button")  # read-only: no Pause, Delete
        # no script error, no request refused, nothing the Content-Security-Policy blocked
        logged = [e["message"] for e in browser.get_log("browser") if e["level"] == "SEVERE"]
        assert logged == []
        bs.close()
        client.close()


def test_tubes_with_slashes_in_their_names(tmp_path: Path) -> None:
    """``/`` is allowed in tube names: ``a/jobs`` is a tube of its own, not the jobs of ``a``,
    in the API and in the actions (the console sends names encoded)."""
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    with console_server("--http-token-file", str(token_file)) as (port, client, _url):
        bs = Beanstalk(port)
        put(bs, "a", [b"in a"])
        slashed = put(bs, "a/jobs", [b"in a/jobs", b"also"])
        tube = client.get("/api/v1/tubes/a%2Fjobs", headers=BEARER).json()
        assert tube["name"] == "a/jobs" and tube["current-jobs-ready"] == 2
        jobs = client.get("/api/v1/tubes/a%2Fjobs/jobs", headers=BEARER).json()["jobs"]
        assert [j["id"] for j in jobs] == slashed
        assert len(client.get("/api/v1/tubes/a/jobs", headers=BEARER).json()["jobs"]) == 1
        bury(bs, "a/jobs", 1)
        kicked = client.post("/api/v1/tubes/a%2Fjobs/kick", json={"bound": 5}, headers=BEARER)
        assert kicked.json() == {"kicked": 1}
        assert int(bs.yaml("stats-tube a/jobs")["current-jobs-ready"]) == 2
        bs.close()
