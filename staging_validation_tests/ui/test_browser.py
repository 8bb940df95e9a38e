"""The campaign as an ops lead sees it, in a real browser: Debian's Chromium driven by Playwright against the
real `dagster dev` (webserver and daemon) on a temporary instance and the built-in simulator.

The test clicks where a person clicks: it launches `start_campaign` from the launchpad, waits for the
sensors to decide, then reads the decision check, the campaigns overview, the report with its charts,
and re-judges with `campaign_reverdict`. Screenshots go to $STAGING_VALIDATION_SCREENSHOTS (default: the
test's temporary folder). Every wait is on a condition with a generous deadline: the machine is shared.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import httpx
import pytest
from playwright.sync_api import Page, expect, sync_playwright

from staging_validation.campaign.metadata import DECISION_CHECK, TAG_DECISION
from staging_validation.campaign.sensors import TAG_CAMPAIGN, TAG_PHASE
from staging_validation_tests.campaign.test_daemon_e2e import REPO, free_port, run_finished, wait_until

pytestmark = pytest.mark.e2e

CHROMIUM = Path("/usr/bin/chromium")  # Debian's package; .ci/run installs it
CAMPAIGN = "browser-missing-pack"
HOURS, HOUR_SECONDS = 3, 8.0  # the profile's missing pack comes at hour 2: an early stop, then REJECT
UI_DEADLINE_MS = 180_000  # a page of the UI on a loaded machine
DECISION_DEADLINE_S = 1200  # launch, three hours, the early stop and the verdict, on a loaded machine


def launch_config(simulator) -> str:
    """What a person types into the launchpad."""
    return (
        "ops:\n"
        "  register_campaign_op:\n"
        "    config:\n"
        f"      campaign: {CAMPAIGN}\n"
        f"      base_url: {simulator.base_url}\n"
        f"      telemetry_path: {simulator.log_path}\n"
        f"      hours: {HOURS}\n"
        f"      hour_seconds: {HOUR_SECONDS}\n"
        "      stress_baseline_rps: 2\n"
    )


class Clicks:
    """Counts the clicks a person makes for each task (the report names them)."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.counts: dict[str, int] = {}
        self.task = ""

    def start(self, task: str) -> None:
        self.task = task
        self.counts[task] = 0

    def click(self, locator) -> None:
        expect(locator).to_be_visible(timeout=UI_DEADLINE_MS)
        locator.click(timeout=UI_DEADLINE_MS)
        self.counts[self.task] += 1


@pytest.fixture
def ui_services(tmp_path):
    """`dagster dev` (via `make ui`'s launcher) on a temporary instance: (base URL, DAGSTER_HOME, data root,
    process). Stopped with SIGTERM at the end; the test checks it stops."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text((REPO / "dagster.yaml").read_text().replace("data/dagster",
                                                                                    str(home / "storage")))
    data_root = tmp_path / "data"
    env = {**os.environ, "DAGSTER_HOME": str(home), "STAGING_VALIDATION_DATA": str(data_root),
           "STAGING_VALIDATION_SENSOR_INTERVAL_S": "1"}
    # Created once before the webserver and daemon start, as a deployment does (they could race on it).
    subprocess.run([str(Path(sys.executable).parent / "dagster"), "instance", "migrate"], cwd=REPO, env=env,
                   check=True, capture_output=True)
    port = free_port()
    log = tmp_path / "dagster-dev.txt"
    with open(log, "wb") as output:
        # As `make ui &` does; SIGINT ignored as a shell hands it to a background job.
        process = subprocess.Popen(
            [sys.executable, "-m", "staging_validation.campaign.dev_server", "-w", "workspace.yaml",
             "-h", "127.0.0.1", "-p", str(port)],
            cwd=REPO, env=env, stdout=output, stderr=subprocess.STDOUT,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
        )
    base_url = f"http://127.0.0.1:{port}"

    def answering() -> bool:
        try:
            return httpx.get(f"{base_url}/server_info", timeout=5).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_until(answering, 300, "the webserver answering", {log: process})
        yield base_url, home, data_root, process, log
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=120)
            except subprocess.TimeoutExpired:
                process.kill()


def nav(page: Page, name: str):
    """A link of the left navigation (its accessible name starts with the icon's)."""
    return page.get_by_role("navigation").get_by_role("link", name=re.compile(rf"{name}$"))


def shot(page: Page, folder: Path, name: str) -> None:
    page.screenshot(path=str(folder / f"{name}.png"), full_page=False)


def decision_evaluations(instance: dg.DagsterInstance) -> list:
    """The decision check's executions, newest first."""
    return list(instance.event_log_storage.get_asset_check_execution_history(
        dg.AssetCheckKey(dg.AssetKey("campaign_decision"), DECISION_CHECK), limit=10))


def test_an_ops_lead_launches_a_campaign_reads_its_decision_report_and_charts_and_rejudges_it(
    tmp_path, ui_services, simulator_factory
):
    assert CHROMIUM.exists(), f"{CHROMIUM} is missing: apt-get install -y chromium (.ci/run does)"
    base_url, home, data_root, dev, dev_log = ui_services
    shots = Path(os.environ.get("STAGING_VALIDATION_SCREENSHOTS", tmp_path / "screenshots"))
    shots.mkdir(parents=True, exist_ok=True)
    # The fault profile's hours count from the campaign's start, set once the launch has registered it.
    simulator = simulator_factory(profile="missing-pack", hour_seconds=HOUR_SECONDS, organic_rps=10.0,
                                  campaign_start_ms=int(time.time() * 1000) + 86_400_000)
    state_file = data_root / "campaigns" / CAMPAIGN / "campaign.json"

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.set_default_timeout(UI_DEADLINE_MS)
        expect.set_options(timeout=UI_DEADLINE_MS)
        clicks = Clicks(page)
        try:
            # 1. Launch from the launchpad, by clicking: Jobs, start_campaign, Launchpad, type, Launch Run.
            clicks.start("launch a campaign")
            page.goto(base_url, timeout=UI_DEADLINE_MS)
            clicks.click(nav(page, "Jobs"))
            clicks.click(page.get_by_role("link", name=re.compile(r"\bstart_campaign\b")))
            clicks.click(page.get_by_role("tab", name="Launchpad"))
            editor = page.locator(".CodeMirror")
            expect(editor).to_contain_text("register_campaign_op", timeout=UI_DEADLINE_MS)
            assert "data_root" not in editor.inner_text(), "the launchpad offers data_root"
            clicks.click(editor)
            page.keyboard.press("Control+A")
            page.keyboard.insert_text(launch_config(simulator))
            shot(page, shots, "1-launchpad")
            clicks.click(page.get_by_role("button", name="Launch Run"))
            wait_until(state_file.exists, 600, "the campaign registered by the launch", {dev_log: dev})
            simulator.set_campaign_start(json.loads(state_file.read_text())["timing"]["start_ms"])

            # 2. The sensors run the hours, stop the campaign at the missing pack and request the verdict.
            with dg.DagsterInstance.from_config(str(home)) as instance:
                wait_until(lambda: run_finished(instance, f"{CAMPAIGN}:verdict:early"), DECISION_DEADLINE_S,
                           "the verdict run", {dev_log: dev})
                [verdict] = instance.get_run_records(dg.RunsFilter(tags={TAG_CAMPAIGN: CAMPAIGN,
                                                                         TAG_PHASE: "verdict"}))
                assert verdict.dagster_run.tags[TAG_DECISION] == "REJECT"

            # 3. Find the decision: Catalog, campaigns_overview: one row per campaign, the decision beside its id.
            clicks.start("find a decision")
            clicks.click(nav(page, "Catalog"))
            clicks.click(page.get_by_role("link", name="campaigns_overview", exact=True))
            row = page.locator("tr", has_text=CAMPAIGN).first
            expect(row).to_contain_text("REJECT")
            expect(row).to_contain_text("early_stop.missing_pack")
            expect(row).to_contain_text("FAIL")
            overview_url = page.url
            shot(page, shots, "2-campaigns-overview")

            # The decision check of campaign_decision: failed, severity ERROR, naming the rule.
            page.goto(f"{base_url}/assets/campaign_decision?view=checks", timeout=UI_DEADLINE_MS)
            expect(page.get_by_text(f"{CAMPAIGN}: REJECT by rule early_stop.missing_pack").first).to_be_visible()
            expect(page.get_by_text("Failed").first).to_be_visible()
            expect(page.locator("tr", has_text="severity").first).to_contain_text("ERROR")
            shot(page, shots, "3-decision-check")

            # 4. Open the report: its link in the overview, then the report's markdown with the four charts.
            clicks.start("open the report")
            page.goto(overview_url, timeout=UI_DEADLINE_MS)
            links = page.locator("tr", has_text=f"re-judge {CAMPAIGN}").first
            clicks.click(links.get_by_role("link", name="report", exact=True))
            clicks.click(page.get_by_text("[Show Markdown]").first)
            dialog = page.get_by_role("dialog")
            expect(dialog).to_contain_text(f"Staging acceptance report: {CAMPAIGN}")
            images = dialog.locator("img")
            expect(images).to_have_count(4)
            for index in range(4):
                images.nth(index).scroll_into_view_if_needed()
                page.wait_for_function("img => img.complete && img.naturalWidth > 0",
                                       arg=images.nth(index).element_handle(), timeout=UI_DEADLINE_MS)
            shot(page, shots, "4-report-charts")
            page.keyboard.press("Escape")

            # 5. Re-judge: the campaign's re-judge link in the overview opens the launchpad with its
            # partition chosen; Launch Run.
            clicks.start("re-judge")
            page.goto(overview_url, timeout=UI_DEADLINE_MS)
            links = page.locator("tr", has_text=f"re-judge {CAMPAIGN}").first
            clicks.click(links.get_by_role("link", name=f"re-judge {CAMPAIGN}"))
            expect(page.get_by_text(f"partition: {CAMPAIGN}").first).to_be_visible()
            clicks.click(page.get_by_role("button", name="Launch Run"))
            with dg.DagsterInstance.from_config(str(home)) as instance:
                def rejudged() -> bool:
                    evaluations = decision_evaluations(instance)
                    return len(evaluations) >= 2 and evaluations[0].status.value != "PLANNED"

                wait_until(rejudged, 900, "the re-judged decision", {dev_log: dev})
                latest = decision_evaluations(instance)[0]
                assert latest.event.dagster_event.event_specific_data.severity == dg.AssetCheckSeverity.ERROR
            shot(page, shots, "5-rejudge")
        except Exception:
            shot(page, shots, "failure")
            raise
        finally:
            browser.close()

    print(f"screenshots in {shots}; clicks: {clicks.counts}")
    assert clicks.counts["find a decision"] == 2 and clicks.counts["open the report"] == 2
    assert clicks.counts["re-judge"] == 2
    assert not (home / ".nux").exists(), "the UI wrote .nux into DAGSTER_HOME"

    # `make ui` in the background stops, webserver and daemon with it, on SIGTERM.
    dev.send_signal(signal.SIGTERM)
    dev.wait(timeout=120)
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"{base_url}/server_info", timeout=5)
