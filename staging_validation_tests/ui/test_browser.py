"""The campaign as an ops lead sees it, in a real browser: Debian's Chromium driven by Playwright against the
real webserver and a real `dagster-daemon` on an instance of the project's `dagster.yaml`, with the
built-in simulator as the target.

The test clicks where a person clicks: it launches `start_campaign` from the launchpad (typing the config
into its editor), waits for the sensors to decide, then reads the campaigns overview, the decision check,
the report with its charts, and re-judges with `campaign_reverdict`. It counts the clicks of each task
(from the UI's home page) and prints them with the folder of its screenshots.

The machine is shared: every wait is on a condition with a generous deadline (an upper bound), and pages
that only change on a refresh are reloaded until they show what is awaited or the deadline passes.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import dagster as dg
import httpx
import pytest
from playwright.sync_api import Browser, Locator, Page, expect, sync_playwright

from staging_validation.campaign.metadata import DECISION_CHECK, TAG_DECISION
from staging_validation.campaign.rehearsal import instance_home, running_daemon, stop_process_group
from staging_validation.campaign.run_tags import TAG_CAMPAIGN, TAG_PHASE, VERDICT_PHASE
from staging_validation.campaign.sensors import SENSOR_INTERVAL_ENV
from staging_validation.lifecycle import load_campaign_state
from staging_validation.storage import DATA_ROOT_ENV
from staging_validation_tests.campaign.test_daemon_e2e import REPO, free_port
from staging_validation_tests.waiting import still_running, wait_until

pytestmark = pytest.mark.e2e

CHROMIUM = Path("/usr/bin/chromium")  # Debian's package; .ci/run installs it when missing
# Flags that work on a closed network: nothing of Chromium's own phones home or waits for a GPU.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
CAMPAIGN = "browser-missing-pack"
# The profile's missing pack comes at hour 2: the watch stops the campaign there, the verdict is REJECT
# (first_verdict_only: should the stop come late, the hour-4 verdict is the last one either way).
HOURS, HOUR_SECONDS = 4, 5
# Upper bounds for a machine whose load is many times its two CPUs.
PAGE_DEADLINE_MS = 240_000  # one page of the UI, or one element on it
WEBSERVER_DEADLINE_S = 300
LAUNCH_DEADLINE_S = 900  # the launch's run queued, started and registering the campaign
DECISION_DEADLINE_S = 1800  # clock, collector, hours, early stop, verdict
REJUDGE_DEADLINE_S = 900
# A folder the screenshots are also copied to, for a person to look at (the test prints where they are).
SCREENS_COPY_ENV = "STAGING_VALIDATION_SCREENS_COPY"


def launch_config(base_url: str, log_path: Path) -> str:
    """What a person types into the start_campaign launchpad."""
    return (
        "ops:\n"
        "  register_campaign_op:\n"
        "    config:\n"
        f"      campaign: {CAMPAIGN}\n"
        f"      base_url: {base_url}\n"
        f"      telemetry_path: {log_path}\n"
        f"      hours: {HOURS}\n"
        f"      hour_seconds: {HOUR_SECONDS}\n"
        "      stress_baseline_rps: 2\n"
        "      first_verdict_only: true\n"
    )


class Clicks:
    """The clicks a person makes for each task, by what was clicked."""

    def __init__(self) -> None:
        self.tasks: dict[str, list[str]] = {}
        self.task = ""

    def start(self, task: str) -> None:
        self.task = task
        self.tasks[task] = []

    def click(self, locator: Locator, what: str) -> None:
        expect(locator).to_be_visible(timeout=PAGE_DEADLINE_MS)
        locator.click(timeout=PAGE_DEADLINE_MS)
        self.tasks[self.task].append(what)

    def counts(self) -> dict[str, int]:
        return {task: len(clicked) for task, clicked in self.tasks.items()}


class Screens:
    def __init__(self, page: Page, folder: Path) -> None:
        self.page, self.folder = page, folder
        folder.mkdir(parents=True, exist_ok=True)

    def take(self, name: str, full_page: bool = False) -> None:
        # Animations finished first: a dialog still fading in would be caught half transparent.
        self.page.screenshot(path=str(self.folder / f"{name}.png"), full_page=full_page, animations="disabled",
                             timeout=PAGE_DEADLINE_MS)


def reload_until(page: Page, shown: Callable[[], bool], timeout_s: float, what: str) -> None:
    """Reload the page until `shown()` is true (pages that show new materializations after a refresh)."""
    deadline = time.monotonic() + timeout_s
    while True:
        if shown():
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not shown within {timeout_s} s (page {page.url})")
        page.reload(timeout=PAGE_DEADLINE_MS)


def shows(locator: Locator, timeout_ms: float = 60_000) -> bool:
    """Whether the locator becomes visible within a short wait (one round of a reload loop)."""
    try:
        expect(locator).to_be_visible(timeout=timeout_ms)
    except AssertionError:
        return False
    return True


def nav(page: Page, name: str) -> Locator:
    """A link of the left navigation (its accessible name is the icon's, then the label)."""
    return page.get_by_role("navigation").get_by_role("link", name=re.compile(rf"\b{name}$"))


def overview_row(page: Page) -> Locator:
    """The campaign's row of the campaigns table (the overview's `campaigns` metadata): its cells are
    campaign, decision, rule, gate_1..gate_5, status, hours observed and planned, profile, report."""
    return page.get_by_role("row", name=re.compile(rf"^{CAMPAIGN} ")).filter(
        has=page.get_by_role("cell", name="documented", exact=True))


def catalog_link(page: Page, asset: str) -> Locator:
    """An asset's link in the catalog's list (its accessible name is the asset's name twice)."""
    return page.get_by_role("link", name=re.compile(rf"^{asset}\b"))


@pytest.fixture
def chromium_browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        reason = f"{CHROMIUM} is missing (Debian's package `chromium`; `.ci/run` installs it)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but {reason}")
        pytest.skip(reason)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS,
                                             timeout=PAGE_DEADLINE_MS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def ui_instance(tmp_path) -> Iterator[tuple[str, Path, Path, dict[Path, subprocess.Popen]]]:
    """The webserver on a free loopback port and a real dagster-daemon, on the project's instance in a
    temporary DAGSTER_HOME: (UI base URL, DAGSTER_HOME, data root, {log: webserver process})."""
    home = instance_home(tmp_path / "dagster_home")
    data_root = tmp_path / "data"
    env = {**os.environ, "DAGSTER_HOME": str(home), DATA_ROOT_ENV: str(data_root), SENSOR_INTERVAL_ENV: "1"}
    bin_dir = Path(sys.executable).parent
    # The storage is created once before the services start, as a deployment does (they could race on it).
    subprocess.run([str(bin_dir / "dagster"), "instance", "migrate"], cwd=REPO, env=env, check=True,
                   capture_output=True)
    port = free_port()
    log = tmp_path / "webserver.txt"
    with open(log, "wb") as output:
        # Its own session: the code server it starts ends with it.
        webserver = subprocess.Popen(
            [str(bin_dir / "dagster-webserver"), "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)],
            cwd=REPO, env=env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
    base_url = f"http://127.0.0.1:{port}"

    def answering() -> bool:
        try:
            return httpx.get(f"{base_url}/server_info", timeout=5).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        with dg.DagsterInstance.from_config(str(home)) as instance, \
                running_daemon(instance, home, data_root, tmp_path / "daemon.txt"):
            wait_until(answering, WEBSERVER_DEADLINE_S, "the webserver answering", poll_s=0.5,
                       still_possible=still_running({log: webserver}))
            yield base_url, home, data_root, {log: webserver}
    finally:
        stop_process_group(webserver)


def verdict_runs(instance: dg.DagsterInstance) -> list[dg.DagsterRun]:
    return [record.dagster_run for record in instance.get_run_records(
        dg.RunsFilter(tags={TAG_CAMPAIGN: CAMPAIGN, TAG_PHASE: VERDICT_PHASE}))]


def rejudge_runs(instance: dg.DagsterInstance) -> list[dg.DagsterRun]:
    return [record.dagster_run for record in instance.get_run_records(
        dg.RunsFilter(job_name="campaign_reverdict", tags={"dagster/partition": CAMPAIGN}))]


def test_an_ops_lead_launches_a_campaign_reads_its_decision_report_and_charts_and_rejudges_it(
    tmp_path, chromium_browser, ui_instance, simulator_factory
):
    base_url, home, data_root, services = ui_instance
    started = time.monotonic()
    # The fault profile's hours count from the campaign's start: a day ahead until the collector sets it.
    simulator = simulator_factory(profile="missing-pack", hour_seconds=HOUR_SECONDS, organic_rps=10.0,
                                  campaign_start_ms=int(time.time() * 1000) + 86_400_000)
    state_file = data_root / "campaigns" / CAMPAIGN / "campaign.json"
    page = chromium_browser.new_page(viewport={"width": 1400, "height": 900})
    page.set_default_timeout(PAGE_DEADLINE_MS)
    page.set_default_navigation_timeout(PAGE_DEADLINE_MS)
    screens = Screens(page, tmp_path / "screenshots")
    clicks = Clicks()
    try:
        # 1. Launch: Jobs, start_campaign, Launchpad, the config editor (typed over), Launch Run.
        clicks.start("launch a campaign")
        page.goto(base_url)
        clicks.click(nav(page, "Jobs"), "Jobs")
        clicks.click(page.get_by_role("link", name=re.compile(r"\bstart_campaign\b")), "start_campaign")
        clicks.click(page.get_by_role("tab", name="Launchpad"), "Launchpad")
        editor = page.locator(".CodeMirror").first
        # The launchpad scaffolds the defaults; it never offers data_root (issue 12).
        expect(editor).to_contain_text("telemetry_path")
        assert "data_root" not in editor.inner_text()
        clicks.click(editor, "the config editor")
        page.keyboard.press("Control+A")
        page.keyboard.insert_text(launch_config(simulator.base_url, simulator.log_path))
        expect(editor).to_contain_text(f"campaign: {CAMPAIGN}")
        launch = page.get_by_role("button", name=re.compile(r"Launch Run"))
        expect(launch).to_be_enabled()  # the launchpad validated the typed config
        clicks.click(launch, "Launch Run")
        page.wait_for_url(re.compile(r"/runs/[0-9a-f-]+"))

        # 2. The launch registers the campaign; the clock's collector starts it; the watch stops it at the
        # missing pack; the clock requests the verdict. The simulator's fault hours follow the real start.
        def clock_started() -> bool:
            return state_file.exists() and json.loads(state_file.read_text())["status"] != "registered"

        wait_until(clock_started, LAUNCH_DEADLINE_S, "the campaign clock started by its collector", poll_s=0.5,
                   still_possible=still_running(services))
        simulator.set_campaign_start(json.loads(state_file.read_text())["timing"]["start_ms"])
        with dg.DagsterInstance.from_config(str(home)) as instance:
            def decided() -> bool:
                # Final (nothing more is requested for it) and none of its runs still going: a late early
                # stop adds a verdict run for the early round beside the planned round's.
                runs = [record.dagster_run for record in instance.get_run_records(
                    dg.RunsFilter(tags={TAG_CAMPAIGN: CAMPAIGN}))]
                return load_campaign_state(data_root, CAMPAIGN).status.final and all(run.is_finished for run in runs)

            wait_until(decided, DECISION_DEADLINE_S, "the campaign decided, its runs finished", poll_s=0.5,
                       still_possible=still_running(services))
            verdicts = verdict_runs(instance)
            assert verdicts and all(run.status == dg.DagsterRunStatus.SUCCESS for run in verdicts), verdicts
            assert {run.tags.get(TAG_DECISION) for run in verdicts} == {"REJECT"}
        decision = json.loads((data_root / "campaigns" / CAMPAIGN / "decision.json").read_text())
        assert decision["decision"] == "REJECT"
        # The watch stops the campaign at the missing pack (early_stop.missing_pack); should a busy machine
        # let the planned round's verdict decide before the watch saw it, gate 1's FAIL rejects it.
        rule = decision["rule"]
        assert rule in {"early_stop.missing_pack", "reject.critical_fail"}, rule
        decided_after_s = time.monotonic() - started

        # 3. Find the decision: Catalog, campaigns_overview. The sensor reports the table once the decision
        # is stored: until then the page shows an older table (reload).
        clicks.start("find a decision")
        page.goto(base_url)
        clicks.click(nav(page, "Catalog"), "Catalog")
        clicks.click(catalog_link(page, "campaigns_overview"), "campaigns_overview")
        row = overview_row(page)
        cells = row.get_by_role("cell")
        # The sensor reports the table when a campaign changed: reload until it has the decision.
        reload_until(page, lambda: shows(cells.nth(1).get_by_text("REJECT", exact=True)), DECISION_DEADLINE_S,
                     "the overview row with the decision")
        expect(row).to_have_count(1)
        expect(cells.nth(2)).to_have_text(rule)
        expect(cells.nth(3)).to_have_text("FAIL")  # gate 1, ContinuityPack integrity
        expect(cells.nth(8)).to_have_text(re.compile(r"^decided\b"))
        row.scroll_into_view_if_needed()
        screens.take("1-campaigns-overview")

        # Read the decision check: Catalog, campaign_decision, Checks: failed, severity ERROR, naming the rule.
        clicks.start("read the decision check")
        page.goto(base_url)
        clicks.click(nav(page, "Catalog"), "Catalog")
        clicks.click(catalog_link(page, "campaign_decision"), "campaign_decision")
        clicks.click(page.get_by_role("tab", name="Checks"), "Checks")
        verdict_text = page.get_by_text(re.compile(rf"^{CAMPAIGN}: REJECT by rule {re.escape(rule)}: "))
        # The latest execution may still be a verdict run the clock requested at the stop: reload.
        reload_until(page, lambda: shows(verdict_text), REJUDGE_DEADLINE_S, "the decision check's latest result")
        expect(page.get_by_role("row", name="severity ERROR", exact=True)).to_be_visible()
        expect(page.get_by_role("row", name=f"campaign {CAMPAIGN}", exact=True)).to_be_visible()
        expect(page.get_by_text("Failed", exact=True).first).to_be_visible()  # the check's badge
        screens.take("2-decision-check")

        # 4. Open the report: Catalog, campaigns_overview, the campaign's report link, [Show Markdown].
        clicks.start("open the report")
        page.goto(base_url)
        clicks.click(nav(page, "Catalog"), "Catalog")
        clicks.click(catalog_link(page, "campaigns_overview"), "campaigns_overview")
        clicks.click(page.get_by_role("link", name="report", exact=True).first, "report")
        clicks.click(page.get_by_text("[Show Markdown]").first, "[Show Markdown]")
        dialog = page.get_by_role("dialog")
        expect(dialog).to_contain_text(f"Staging acceptance report: {CAMPAIGN}")
        images = dialog.locator("img")
        expect(images).to_have_count(4)
        for index in range(4):
            image = images.nth(index)
            image.scroll_into_view_if_needed()
            page.wait_for_function("image => image.complete && image.naturalWidth > 0", arg=image.element_handle(),
                                   timeout=PAGE_DEADLINE_MS)
        images.first.evaluate("image => image.scrollIntoView({block: 'start'})")
        screens.take("3-report-charts")
        page.keyboard.press("Escape")

        # 5. Re-judge: Catalog, campaigns_overview, the campaign's re-judge link (the campaign_reverdict
        # launchpad with its partition chosen), Launch Run.
        clicks.start("re-judge")
        page.goto(base_url)
        clicks.click(nav(page, "Catalog"), "Catalog")
        clicks.click(catalog_link(page, "campaigns_overview"), "campaigns_overview")
        clicks.click(page.get_by_role("link", name=f"re-judge {CAMPAIGN}", exact=True), f"re-judge {CAMPAIGN}")
        expect(page.get_by_text(f"partition: {CAMPAIGN}", exact=True)).to_be_visible()
        launch = page.get_by_role("button", name=re.compile(r"Launch Run"))
        expect(launch).to_be_enabled()
        clicks.click(launch, "Launch Run")
        page.wait_for_url(re.compile(r"/runs/[0-9a-f-]+"))
        with dg.DagsterInstance.from_config(str(home)) as instance:
            rejudge = wait_until(lambda: next((run for run in rejudge_runs(instance) if run.is_finished), None),
                                 REJUDGE_DEADLINE_S, "the re-judge run finished", poll_s=0.5,
                                 still_possible=still_running(services))
            assert rejudge.status == dg.DagsterRunStatus.SUCCESS
            assert rejudge.tags[TAG_DECISION] == "REJECT"  # the same round, judged the same
            [rejudged] = [entry.dagster_event.event_specific_data for entry in instance.all_logs(
                rejudge.run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION)
                if entry.dagster_event.event_specific_data.check_name == DECISION_CHECK]
            assert (rejudged.passed, rejudged.severity) == (False, dg.AssetCheckSeverity.ERROR)
            assert rejudged.metadata["rule"].value == rule
        # The run page a person is on: the run succeeded, and its tags carry the decision (set while it ran:
        # the page shows the tags it loaded, so reload until they are there).
        expect(page.get_by_text("Success", exact=True).first).to_be_visible()  # the run's status badge
        tags_dialog = page.get_by_role("dialog")

        def decision_tag_shown() -> bool:
            page.get_by_role("button", name=re.compile(r"View tags and config")).click()
            if shows(tags_dialog.get_by_text(re.compile(rf"{re.escape(TAG_DECISION)}\W*REJECT"))):
                return True
            page.keyboard.press("Escape")
            return False

        reload_until(page, decision_tag_shown, REJUDGE_DEADLINE_S, "the re-judge run's decision tag")
        screens.take("4-rejudge-run-tags")
    except BaseException:
        screens.take("failure")
        raise
    finally:
        _copy_screens(screens.folder)
        page.close()

    counts = clicks.counts()
    copy = os.environ.get(SCREENS_COPY_ENV)
    print(f"\nscreenshots: {screens.folder}" + (f" (copied to {copy})" if copy else ""))
    print(f"decided {decided_after_s:.0f} s after the simulator started; whole test {time.monotonic() - started:.0f} s")
    for task, clicked in clicks.tasks.items():
        print(f"clicks to {task}: {len(clicked)} ({', '.join(clicked)})")
    assert counts == {"launch a campaign": 5, "find a decision": 2, "read the decision check": 3,
                      "open the report": 4, "re-judge": 4}


def _copy_screens(folder: Path) -> None:
    copy = os.environ.get(SCREENS_COPY_ENV)
    if copy and folder.exists():
        Path(copy).mkdir(parents=True, exist_ok=True)
        for screen in folder.glob("*.png"):
            shutil.copyfile(screen, Path(copy) / screen.name)
