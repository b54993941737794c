"""The console in a real browser against a real stack (see conftest.py): open the runs page,
trigger a run from the form and watch it live, a bad param refused beside its field, a task's
log, cancel, rerun with an override, log in with the token."""

from __future__ import annotations

import pytest

from tests.console.conftest import TOKEN
from tests.servers import wait_for

pytestmark = pytest.mark.timeout(120)


def by_css(browser, css):
    from selenium.webdriver.common.by import By

    return browser.find_element(By.CSS_SELECTOR, css)


def all_css(browser, css):
    from selenium.webdriver.common.by import By

    return browser.find_elements(By.CSS_SELECTOR, css)


def text_of(browser, css) -> str:
    """The text of the first match; "" while the live page is redrawing it (the element
    found can be replaced before its text is read: the caller's wait then looks again)."""
    from selenium.common.exceptions import StaleElementReferenceException

    found = all_css(browser, css)
    try:
        return found[0].text if found else ""
    except StaleElementReferenceException:
        return ""


def wait_text(browser, css, wanted, timeout=20.0):
    return wait_for(
        lambda: wanted in text_of(browser, css),
        timeout,
        0.05,
        f"{wanted!r} in {css} (has {text_of(browser, css)!r})",
    )


def test_runs_page_lists_runs_newest_first_with_links_and_filters(stack, browser, shot):
    with stack.client() as client:
        first = client.submit("console_demo", {"n": 2})
        client.wait(first, timeout=30)
        broken = client.submit("console_broken")
        client.wait(broken, timeout=30)
    browser.get(stack.base + "/")
    rows = all_css(browser, "#runs tr.run")
    ids = [r.get_attribute("data-run") for r in rows]
    assert ids.index(broken) < ids.index(first)  # newest first
    link = by_css(browser, f'#runs tr[data-run="{first}"] a.run-link')
    assert link.get_attribute("href").endswith(f"/ui/runs/{first}")
    assert all_css(browser, f'#strips a.cell.s-failed[href="/ui/runs/{broken}"]')

    from selenium.webdriver.support.ui import Select

    Select(by_css(browser, "#filter-status")).select_by_value("failed")
    wait_for(lambda: "status=failed" in browser.current_url, 10, 0.05, "the filtered page")
    assert [r.get_attribute("data-run") for r in all_css(browser, "#runs tr.run")] == [broken]

    browser.get(f"{stack.base}/ui/runs/{broken}")  # a failed task shows its traceback
    links = wait_for(lambda: all_css(browser, "#tree-body a.task-link"), 10, 0.05, "the tree")
    links[0].click()  # the root's details: its error names the failed child
    wait_text(browser, "#tree-body pre.traceback", "UpstreamFailed")
    [a for a in all_css(browser, "#tree-body a.task-link") if "Broken" in a.text][0].click()
    wait_text(browser, "#tree-body pre.traceback", "ValueError: the input file has no header row")
    assert "Traceback" in text_of(browser, "#tree-body pre.traceback")
    shot("run-failed")


def test_trigger_from_the_form_then_follow_the_run_live_and_read_a_log(stack, browser, shot):
    browser.get(stack.base + "/ui/dags")
    shot("dags")
    form = "#trigger-console_demo"
    n = by_css(browser, f"{form} input[data-param=n]")
    n.clear()
    n.send_keys("12")  # 12 leaves: one grouped row
    delay = by_css(browser, f"{form} input[data-param=delay]")
    delay.clear()
    delay.send_keys("0.8")
    by_css(browser, f"{form} button[type=submit]").click()
    wait_for(lambda: "/ui/runs/" in browser.current_url, 10, 0.05, "the new run's page")
    run_id = browser.current_url.rsplit("/", 1)[1]
    browser.execute_script("window.notReloaded = true")

    wait_text(browser, "#run-status", "running")
    group = wait_for(lambda: all_css(browser, "#tree-body tr.group"), 10, 0.05, "a group row")
    assert "Sleeper" in group[0].text and "× 12" in group[0].text
    wait_text(browser, "#tree-body tr.group", "succeeded")  # part-way: some leaves done
    shot("run-live")
    wait_text(browser, "#run-status", "succeeded", 30)
    assert browser.execute_script("return window.notReloaded") is True  # live, no reload
    assert text_of(browser, "#run-result") == "66"  # sum(range(12))
    wait_text(browser, "#tree-body tr.group", "succeeded 12")

    by_css(browser, "#tree-body [data-toggle]").click()  # expand the group on demand
    leaves = wait_for(
        lambda: [
            a for a in all_css(browser, "#tree-body a.task-link") if a.text.startswith("Sleeper")
        ],
        5,
        0.05,
        "expanded leaves",
    )
    assert len(leaves) == 12
    browser.execute_script("window.scrollTo(0, 0)")
    shot("run")
    leaves[3].click()
    by_css(browser, "#tree-body button[data-log]").click()
    wait_text(browser, "#log-lines", "leaf 3 done")
    assert "leaf 4" not in text_of(browser, "#log-lines")  # that task's lines only
    shot("run-log")
    with stack.client() as client:
        assert client.status(run_id)["status"] == "succeeded"


def test_a_bad_param_is_refused_beside_its_field_and_nothing_runs(stack, browser):
    with stack.client() as client:
        before = len(client.runs(limit=200))
    browser.get(stack.base + "/ui/dags")
    form = "#trigger-console_demo"
    n = by_css(browser, f"{form} input[data-param=n]")
    n.clear()
    n.send_keys("three")
    by_css(browser, f"{form} button[type=submit]").click()
    wait_text(
        browser,
        f'{form} [data-error="n"]',
        "console_demo: parameter 'n' = 'three': expected int, got str",
    )
    assert text_of(browser, f'{form} [data-error="delay"]') == ""
    assert browser.current_url.endswith("/ui/dags")
    with stack.client() as client:
        assert len(client.runs(limit=200)) == before


def test_cancel_a_running_run(stack, browser):
    with stack.client() as client:
        run_id = client.submit("console_demo", {"n": 2, "delay": 30.0})
    browser.get(f"{stack.base}/ui/runs/{run_id}")
    wait_text(browser, "#run-status", "running")
    by_css(browser, "#cancel").click()
    wait_text(browser, "#run-status", "cancelled", 20)
    with stack.client() as client:
        assert client.run_status(run_id) == "cancelled"


def test_rerun_with_an_override_shows_the_diff_first(stack, browser, shot):
    with stack.client() as client:
        old = client.submit("console_demo", {"n": 2})
        client.wait(old, timeout=30)
    browser.get(f"{stack.base}/ui/runs/{old}")
    wait_text(browser, "#run-status", "succeeded")
    by_css(browser, "#overrides").send_keys("Sleeper.tag=again")
    by_css(browser, "#rerun-preview").click()
    wait_text(browser, "#rerun-summary", "3 task(s) change")  # two leaves and their total
    rows = [r.text for r in all_css(browser, "#rerun-diff tbody tr")]
    assert sum("same (a child changed)" in r for r in rows) == 1
    shot("rerun")
    with stack.client() as client:
        before = {r["run_id"] for r in client.runs(limit=200)}
    by_css(browser, "#rerun-confirm").click()
    wait_for(lambda: old not in browser.current_url, 10, 0.05, "the new run's page")
    new = browser.current_url.rsplit("/", 1)[1]
    assert new not in before
    assert by_css(browser, "#rerun-of").text == old
    wait_text(browser, "#run-status", "succeeded", 30)
    with stack.client() as client:
        tags = {
            t["params"].get("tag") for t in client.status(new)["tasks"] if t["name"] == "Sleeper"
        }
    assert tags == {"again"}


def test_bad_override_is_refused_with_the_api_message(stack, browser):
    with stack.client() as client:
        old = client.submit("console_demo", {"n": 1})
        client.wait(old, timeout=30)
    browser.get(f"{stack.base}/ui/runs/{old}")
    by_css(browser, "#overrides").send_keys("Sleeper.i=one")
    by_css(browser, "#rerun-preview").click()
    wait_text(browser, "#err-overrides", "expected int")
    assert by_css(browser, "#rerun-plan").get_attribute("hidden") is not None


def test_workers_page_shows_workers_queues_and_the_leader(stack, browser, shot):
    browser.get(stack.base + "/ui/workers")
    names = {r.find_element("css selector", "td").text for r in all_css(browser, "tr.worker")}
    assert {"console-w1", "console-w2"} <= names
    assert "epoch" in by_css(browser, "#leader").text.lower()
    wait_for(lambda: by_css(browser, "#leader code").text, 5, 0.05, "the leader's token")
    shot("workers")


def test_with_a_token_the_console_asks_for_it_once(stack, browser, shot):
    base = stack.api(PLANKTON_API_TOKEN=TOKEN)
    browser.delete_all_cookies()
    browser.get(base + "/")
    assert "/ui/login" in browser.current_url  # no run data without the token
    assert not all_css(browser, "#runs")
    shot("login")
    by_css(browser, "#token").send_keys("not-the-token")
    by_css(browser, "#login-form button").click()
    wait_text(browser, "#login-error", "wrong token")
    by_css(browser, "#token").send_keys(TOKEN)
    by_css(browser, "#login-form button").click()
    wait_for(lambda: all_css(browser, "#runs"), 10, 0.05, "the runs page after logging in")
    cookie = browser.get_cookie("plankton_session")
    assert cookie["httpOnly"] is True and cookie["sameSite"] == "Strict"
    assert TOKEN not in cookie["value"]
    browser.get(base + "/ui/dags")  # actions work with the cookie: trigger a run
    by_css(browser, "#trigger-console_demo button[type=submit]").click()
    wait_for(lambda: "/ui/runs/" in browser.current_url, 10, 0.05, "the new run's page")
    wait_text(browser, "#run-status", "succeeded", 30)
    browser.delete_all_cookies()


def test_the_trigger_form_sends_typed_params(stack, browser):
    """An enum is a choice, a list is JSON, an optional left empty keeps its default."""
    from selenium.webdriver.support.ui import Select

    browser.get(stack.base + "/ui/dags")
    form = "#trigger-console_typed"
    Select(by_css(browser, f"{form} select[data-param=color]")).select_by_value("BLUE")
    sizes = by_css(browser, f"{form} input[data-param=sizes]")
    assert sizes.get_attribute("value") == "[1, 2]"
    sizes.clear()
    sizes.send_keys("[3, 4, 5]")
    by_css(browser, f"{form} button[type=submit]").click()
    wait_for(lambda: "/ui/runs/" in browser.current_url, 10, 0.05, "the new run's page")
    run_id = browser.current_url.rsplit("/", 1)[1]
    with stack.client() as client:
        run = client.status(run_id)
    assert run["params"] == {
        "color": "BLUE",
        "sizes": [3, 4, 5],
        "note": None,
        "when": "2024-01-31",
    }


def test_a_family_of_250_siblings_is_one_row_that_expands_100_at_a_time(stack, browser):
    from tests.console.console_tasks import Parked, Total

    with stack.client() as client:
        run_id = client.submit(Total().add_children(*(Parked(i=i) for i in range(250))))
    try:
        browser.get(f"{stack.base}/ui/runs/{run_id}")
        group = wait_for(lambda: all_css(browser, "#tree-body tr.group"), 10, 0.05, "a group")
        assert len(all_css(browser, "#tree-body tr")) == 2  # the root and one group row
        assert "× 250" in group[0].text and "queued 250" in group[0].text
        by_css(browser, "#tree-body [data-toggle]").click()
        assert len(all_css(browser, "#tree-body tr.task")) == 1 + 100
        by_css(browser, "#tree-body [data-more]").click()
        assert len(all_css(browser, "#tree-body tr.task")) == 1 + 200
        browser.get(f"{stack.base}/ui/runs/{run_id}#task-240")  # a link into the group
        wait_for(lambda: all_css(browser, "#task-240.open"), 10, 0.05, "task 240 opened")
    finally:
        with stack.client() as client:
            client.cancel(run_id)


def test_resume_a_failed_run_from_its_failure(stack, browser, shot):
    import redis

    with stack.client() as client:
        failed = client.submit("console_flaky")
        client.wait(failed, timeout=30)
        assert client.run_status(failed) == "failed"
    redis.Redis.from_url(stack.redis.url).set("console:flag", 1)  # the input is there now
    browser.get(f"{stack.base}/ui/runs/{failed}")
    by_css(browser, "#resume").click()  # first the plan, nothing submitted
    wait_text(browser, "#resume-summary", "2 task(s) run again, 2 reused")
    plan = {r.text.split()[0]: r.text for r in all_css(browser, "#resume-tasks tbody tr")}
    assert "reuse" in plan["Sleeper#0"] and "run" in plan["Flaky#2"]
    shot("resume")
    by_css(browser, "#resume-confirm").click()
    wait_for(lambda: failed not in browser.current_url, 10, 0.05, "the resumed run's page")
    assert by_css(browser, "#rerun-of").text == failed
    wait_text(browser, "#run-status", "succeeded", 30)
    assert text_of(browser, "#run-result") == "13"  # 1 + 2 reused, 10 from the re-run
    reused = wait_for(
        lambda: [r for r in all_css(browser, "#tree-body tr.task") if "reused" in r.text],
        5,
        0.05,
        "reused rows",
    )
    assert sorted(r.text.split()[0] for r in reused) == ["Sleeper#0", "Sleeper#1"]


def test_the_history_strip_shows_the_session(stack, browser, shot):
    """Last in the file (tests run in file order): the runs page after the runs above."""
    with stack.client() as client:
        done = client.submit("console_demo", {"n": 1})
        stopped = client.submit("console_demo", {"n": 1, "delay": 30.0})
        client.cancel(stopped)
        client.wait(done, timeout=30)
        client.wait(stopped, timeout=30)
    browser.get(stack.base + "/")
    row = [r for r in all_css(browser, "#strips tr") if r.text.startswith("console_demo")][0]
    cells = row.find_elements("css selector", "a.cell")
    statuses = {c.get_attribute("class").split()[-1] for c in cells}
    assert {"s-succeeded", "s-cancelled"} <= statuses
    assert cells[-1].get_attribute("href").endswith(f"/ui/runs/{stopped}")  # newest right
    shot("runs")
