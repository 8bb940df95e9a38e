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
import signal
import subprocess
import sys
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


def shot(page: Page, folder: Path, name: str) -> None:
    page.screenshot(path=str(folder / f"{name}.png"), full_page=False)


def decision_evaluations(instance: dg.DagsterInstance) -> list:
    records = instance.event_log_storage.get_asset_check_execution_history(
        dg.AssetCheckKey(dg.AssetKey("campaign_decision"), DECISION_CHECK), limit=10)
    return records


def test_an_ops_lead_launches_a_campaign_reads_its_decision_report_and_charts_and_rejudges_it(
    tmp_path, ui_services, simulator_factory
):
    assert CHROMIUM.exists(), f"{CHROMIUM} is missing: apt-get install -y chromium (.ci/run does)"
    base_url, home, data_root, dev, dev_log = ui_services
    shots = Path(os.environ.get("STAGING_VALIDATION_SCREENSHOTS", tmp_path / "screenshots"))
    shots.mkdir(parents=True, exist_ok=True)
    # The fault profile's hours count from the campaign's start, set once the launch has registered it.
    simulator = simulator_factory(profile="missing-pack", hour_seconds=HOUR_SECONDS, organic_rps=10.0,
                                  campaign_start_ms=2**41)
    state_file = data_root / "campaigns" / CAMPAIGN / "campaign.json"

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.set_default_timeout(UI_DEADLINE_MS)
        clicks = Clicks(page)
        try:
            # 1. Launch from the launchpad, by clicking: Jobs, start_campaign, Launchpad, type, Launch Run.
            clicks.start("launch a campaign")
            page.goto(base_url, timeout=UI_DEADLINE_MS)
            clicks.click(page.get_by_role("link", name="Jobs", exact=True))
            clicks.click(page.get_by_role("link", name="start_campaign", exact=True))
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

            # 3. Find the decision: Catalog, campaigns_overview — one row per campaign with its decision.
            clicks.start("find a decision")
            clicks.click(page.get_by_role("link", name="Catalog", exact=True))
            clicks.click(page.get_by_role("link", name="campaigns_overview").first)
            row = page.locator("tr", has_text=CAMPAIGN)
            expect(row).to_contain_text("REJECT", timeout=UI_DEADLINE_MS)
            expect(row).to_contain_text("early_stop.missing_pack")
            expect(row).to_contain_text("FAIL")
            shot(page, shots, "2-campaigns-overview")

            # The decision check of campaign_decision: an error, naming the rule.
            page.goto(f"{base_url}/assets/campaign_decision?view=checks", timeout=UI_DEADLINE_MS)
            check = page.locator("tr", has_text=DECISION_CHECK).first
            expect(check).to_contain_text("Failed", timeout=UI_DEADLINE_MS)
            expect(check).to_contain_text("REJECT by rule early_stop.missing_pack")
            shot(page, shots, "3-decision-check")

            # 4. Open the report: acceptance_report, its latest materialization, the report's markdown.
            clicks.start("open the report")
            page.goto(f"{base_url}/assets/acceptance_report", timeout=UI_DEADLINE_MS)
            clicks.click(page.get_by_role("button", name="Show more").first)
            dialog = page.get_by_role("dialog")
            expect(dialog).to_contain_text(f"Staging acceptance report: {CAMPAIGN}")
            images = dialog.locator("img")
            expect(images).to_have_count(4)
            for index in range(4):
                images.nth(index).scroll_into_view_if_needed()
                page.wait_for_function("img => img.complete && img.naturalWidth > 0",
                                       arg=images.nth(index).element_handle(), timeout=UI_DEADLINE_MS)
            images.nth(0).scroll_into_view_if_needed()
            shot(page, shots, "4-report-charts")
            page.keyboard.press("Escape")

            # 5. Re-judge: Jobs, campaign_reverdict, Launchpad, the campaign's partition, Launch Run.
            clicks.start("re-judge")
            clicks.click(page.get_by_role("link", name="Jobs", exact=True))
            clicks.click(page.get_by_role("link", name="campaign_reverdict", exact=True))
            clicks.click(page.get_by_role("tab", name="Launchpad"))
            clicks.click(page.get_by_placeholder("Select a partition"))
            clicks.click(page.get_by_role("menuitem", name=CAMPAIGN))
            clicks.click(page.get_by_role("button", name="Launch Run"))
            with dg.DagsterInstance.from_config(str(home)) as instance:
                wait_until(lambda: len(decision_evaluations(instance)) >= 2, 900, "the re-judged decision",
                           {dev_log: dev})
            shot(page, shots, "5-rejudge")
        except Exception:
            shot(page, shots, "failure")
            raise
        finally:
            browser.close()

    print(f"screenshots in {shots}; clicks: {clicks.counts}")
    assert not (home / ".nux").exists(), "the UI wrote .nux into DAGSTER_HOME"

    # `make ui` in the background stops, webserver and daemon with it, on SIGTERM.
    dev.send_signal(signal.SIGTERM)
    dev.wait(timeout=120)
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"{base_url}/server_info", timeout=5)
