"""`staging-validation campaign start|status|wait`: a campaign without the UI, for a deploy pipeline.

`start` checks the launchpad's run config of `start_campaign` locally (the job's config schema, the launch
config model, `launch_problems`, the typed settings), then launches it into the running instance as the
launchpad does, through the webserver's GraphQL API, and waits for the registration run to end; the daemon's
sensors then drive the campaign. The checks that depend on the run worker's environment (the target profile
file, its token variable, the policy file, an id already registered) are the registration run's: its
failure message is printed. `status` and `wait` read the stored campaign through `lifecycle` and `layout`
(the data root: `--data-root`, else `STAGING_VALIDATION_DATA`, else the checkout's `data/`), so they need
neither the webserver nor the daemon.
"""

from __future__ import annotations

import json
import re
import sys
import time
import warnings
from datetime import datetime
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import urlsplit

import click
import dagster as dg
import httpx
import yaml

from staging_validation.acceptance.cli import EXIT_CODES
from staging_validation.campaign.jobs import CampaignLaunchConfig, launch_problems, register_campaign_op, start_campaign
from staging_validation.collection.recorded_steps import collection_by_hour
from staging_validation.config_files import ConfigError, validate_model
from staging_validation.layout import HOURLY_ASSET_TELEMETRY_EVENTS, CampaignLayout
from staging_validation.lifecycle import CampaignState, CampaignStatus, VerdictRound, load_campaign_state
from staging_validation.plan import phase_for_hour
from staging_validation.storage import DataPath, as_data_path, default_data_root, validate_campaign_id

EXIT_ERROR = 1
DEFAULT_URL = "http://127.0.0.1:3000"  # the webserver `make ui` starts
OP = register_campaign_op.name
CONFIG_PATH = f"ops.{OP}.config"
FINISHED = {"SUCCESS", "FAILURE", "CANCELED"}
START_POLL_S = 0.5
# The failure events of a failed registration run: the launch check's message names the bad field.
RUN_FAILURE_QUERY = """
query RunFailure($runId: ID!) {
  logsForRun(runId: $runId) {
    __typename
    ... on EventConnection { events { __typename
      ... on ExecutionStepFailureEvent { error { message } }
      ... on RunFailureEvent { message } } }
    ... on PythonError { message }
  }
}
"""


def _fail(message: str) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(EXIT_ERROR)


# --- the launch config --------------------------------------------------------------------------


def _schema_problem(error: Any) -> str:
    """One line of a Dagster config error: the dotted field, then what is wrong with it."""
    lines = error.message.splitlines()
    text = lines[0]
    path, reason = "<top level>", text
    located = re.search(r" at path root:(\S+?)\.?(?=\s|$)", text)
    if located:
        path = located.group(1).replace(":", ".")
        reason = text[:located.start()] + " " + text[located.end():].lstrip(". ")
    elif " at the root" in text:
        reason = text.replace(" at the root", "", 1)
    reason = re.split(r"\s*(?:Expected:|You must provide|Example config)", reason)[0].strip().rstrip(".")
    unset = re.search(r'environment variable "([^"]+)" which is not set', error.message)
    if unset:  # {env: VAR}: resolved here for the check, by the run worker for the run
        reason = f"{{env: {unset.group(1)}}}: environment variable {unset.group(1)} is not set in this shell"
    elif reason.endswith("failed:") and len(lines) > 1:  # other post-processing: the cause is next
        reason += " " + lines[1].split(": ", 1)[-1].strip().rstrip(".")
    return f"{path}: {reason[:1].lower()}{reason[1:]}"


def check_launch_config(document: object, source: str) -> CampaignLaunchConfig:
    """The launch config of a run config, checked as the launch will: ConfigError naming `source` and the
    field. `{env: VAR}` values are resolved from this process's environment for the check only."""
    if not isinstance(document, dict):
        raise ConfigError(f"{source}: must be a mapping: the launchpad's run config, "
                          f"ops: {{{OP}: {{config: {{campaign: ..., ...}}}}}}")
    job = _start_campaign_job()
    try:
        resolved = dg.validate_run_config(job, document)
    except dg.DagsterInvalidConfigError as exc:
        raise ConfigError(f"{source}: " + "; ".join(_schema_problem(error) for error in exc.errors)) from None
    config = validate_model(resolved["ops"][OP]["config"], CampaignLaunchConfig, f"{source}: {CONFIG_PATH}")
    problems = []
    try:
        validate_campaign_id(config.campaign)
    except ConfigError as exc:
        problems.append(f"campaign: {str(exc).removeprefix('campaign id ')}")
    problems += launch_problems(config)
    if not problems:  # the settings re-check some of the same fields: each problem is said once
        try:
            config.settings()
        except ConfigError as exc:
            problems.append(str(exc).removeprefix("launch config: "))
    if problems:
        raise ConfigError(f"{source}: " + "; ".join(f"{CONFIG_PATH}.{problem}" for problem in problems))
    return config


def _start_campaign_job() -> dg.JobDefinition:
    from staging_validation.definitions import build_definitions  # the job with its resources bound

    with warnings.catch_warnings():  # the sensors' `owners` is beta: noise on a pipeline's stderr
        warnings.simplefilter("ignore", dg.BetaWarning)
        return build_definitions(str(default_data_root())).get_job_def(start_campaign.name)


def load_launch_file(path: Path) -> tuple[dict, CampaignLaunchConfig]:
    """The run config in `path` (YAML, the launchpad's nesting) and its checked launch config."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {getattr(exc, 'strerror', None) or exc}") from None
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {' '.join(str(exc).split())}") from None
    return document, check_launch_config(document, str(path))


# --- the webserver ------------------------------------------------------------------------------


def _webserver(url: str) -> tuple[str, int | None, bool, str]:
    """hostname, port, https, path prefix of the webserver URL."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"--url {url}: give the webserver's address, e.g. {DEFAULT_URL}")
    return parts.hostname, parts.port, parts.scheme == "https", parts.path.rstrip("/")


def _run_failure(url: str, run_id: str) -> str:
    """The failure message of a finished run, from its event log."""
    try:
        response = httpx.post(f"{url.rstrip('/')}/graphql", timeout=30,
                              json={"query": RUN_FAILURE_QUERY, "variables": {"runId": run_id}})
        logs = (response.json().get("data") or {}).get("logsForRun") or {}
    except (httpx.HTTPError, ValueError):
        logs = {}
    messages = [event["error"]["message"] for event in logs.get("events", [])
                if event.get("__typename") == "ExecutionStepFailureEvent" and event.get("error")]
    messages += [event["message"] for event in logs.get("events", []) if event.get("__typename") == "RunFailureEvent"]
    if not messages:
        return f"run {run_id} did not succeed; its events are in the UI"
    # A dg.Failure's description is the message; Dagster prefixes its class name.
    return " ".join(messages[0].split()).removeprefix("dagster._core.definitions.events.Failure: ")


@click.group(name="campaign")
def campaign() -> None:
    """Start a campaign in the running Dagster instance and follow it to its verdict."""


@campaign.command(name="start")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help=f"The launchpad's run config of {start_campaign.name} as YAML ({CONFIG_PATH}: ...).")
@click.option("--url", default=DEFAULT_URL, show_default=True, help="The Dagster webserver.")
@click.option("--timeout", "timeout_s", type=click.FloatRange(min=1), default=300, show_default=True,
              help="Seconds to wait for the registration run (a queued run waits for the daemon).")
def start(config_path: Path, url: str, timeout_s: float) -> None:
    """Check the launch config, launch start_campaign like the launchpad, wait for the registration.

    Prints the campaign id and the run id. Exit 0 when registered; 1 when the config is invalid (nothing is
    launched), the webserver cannot be reached, or the launch or the registration failed.
    """
    from dagster_graphql import DagsterGraphQLClient, DagsterGraphQLClientError

    try:
        run_config, config = load_launch_file(config_path)
        host, port, https, prefix = _webserver(url)
    except ConfigError as exc:
        _fail(str(exc))
    try:
        httpx.get(f"{url.rstrip('/')}/server_info", timeout=10).raise_for_status()
    except httpx.HTTPError as exc:
        _fail(f"cannot reach the Dagster webserver at {url}: {exc}; is it running (make ui)?")
    try:
        client = DagsterGraphQLClient(host, port_number=port, use_https=https, path_prefix=prefix, timeout=60)
        run_id = client.submit_job_execution(start_campaign.name, run_config=run_config)
        deadline = time.monotonic() + timeout_s
        while (status := client.get_run_status(run_id).value) not in FINISHED:
            if time.monotonic() > deadline:
                _fail(f"campaign {config.campaign}: the registration run {run_id} did not finish within "
                      f"{timeout_s:g} s (it is {status}); is the daemon running?")
            time.sleep(START_POLL_S)  # polling interval of a deadline wait
    except DagsterGraphQLClientError as exc:
        detail = " ".join(" ".join(str(part) for part in exc.args).split())
        body = f" ({' '.join(str(exc.body).split())})" if exc.body else ""
        _fail(f"the webserver at {url} refused or failed the launch: {detail[:500]}{body[:500]}")
    except OSError as exc:
        _fail(f"cannot reach the Dagster webserver at {url}: {exc}")
    if status != "SUCCESS":
        _fail(f"campaign {config.campaign} not started ({start_campaign.name} run {run_id}: {status}): "
              f"{_run_failure(url, run_id)}")
    click.echo(f"campaign: {config.campaign}")
    click.echo(f"run: {run_id}")


# --- the stored campaign ------------------------------------------------------------------------


def _data_root(data_root: str | None) -> DataPath:
    return as_data_path(data_root) if data_root else default_data_root()


def _report_written(layout: CampaignLayout, verdict: VerdictRound) -> bool:
    """The round's report and decision.json are written (its notification, which follows them, is)."""
    if verdict.notified is not None:
        return True
    try:
        written = json.loads(layout.decision_file.read_text(encoding="utf-8"))
        # decision.json names its round by the round's recorded time (a re-judgement keeps that time).
        decided_at = datetime.fromisoformat(written["decided_at"])
    except (OSError, ValueError, TypeError, KeyError):
        return False  # not written yet, or being replaced
    return round(decided_at.timestamp() * 1000) == verdict.decided_at_ms


def summary(data_root: DataPath, state: CampaignState, now_s: float | None = None) -> dict:
    """What `status` shows: lifecycle status, current hour and phase, hours collected and stored, verdict."""
    now_s = time.time() if now_s is None else now_s
    layout = CampaignLayout.of(data_root, state.campaign)
    started = state.status is not CampaignStatus.REGISTERED  # before, the start is provisional
    hours = collection_by_hour(data_root, state, now_s) if started else []
    current = int(state.timing.campaign_seconds(now_s) // 3600) if started else None
    phase = None
    if current is not None and state.status.collecting:
        phase = (phase_for_hour(current, state.planned_hours).value if current < state.total_hours
                 else "verdict due")
    latest = state.rounds[-1] if state.rounds else None
    # A campaign closed at an EXTEND (the rehearsal's first_verdict_only) never runs the extension's hours.
    closed_at_extend = state.status is CampaignStatus.DECIDED and latest is not None and latest.extend_hours > 0
    return {
        "campaign": state.campaign,
        "status": state.status.value,
        "hour": current,
        "phase": phase,
        "total_hours": latest.judged_hours if closed_at_extend and latest else state.total_hours,
        # Ended hours whose planned probe steps all ran; stored: hours ingested into the hourly tables.
        "hours_collected": sum(1 for hour in hours if hour.over and set(hour.planned) <= set(hour.ran)),
        "hours_stored": len(layout.stored_hours(HOURLY_ASSET_TELEMETRY_EVENTS)),
        "hours_not_run": {str(hour.hour): hour.not_run for hour in hours if hour.not_run},
        "early_stop": None if state.early_stop is None else {"rule": state.early_stop.rule,
                                                              "hour": state.early_stop.hour,
                                                              "reason": state.early_stop.reason},
        "validator_failure": None if state.validator_failure is None else state.validator_failure.reason,
        "verdict": None if latest is None else {"round": latest.round_id, "decision": latest.decision,
                                                "rule": latest.rule},
        "report": str(layout.report_file) if latest is not None and _report_written(layout, latest) else None,
    }


@campaign.command(name="status")
@click.argument("campaign_id")
@click.option("--data-root", help="Where campaigns are stored (default: data/ or $STAGING_VALIDATION_DATA).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object.")
def status(campaign_id: str, data_root: str | None, as_json: bool) -> None:
    """Where a stored campaign is: status, hour and phase, hours collected, verdict. Exit 0, or 1 when it
    cannot be read."""
    root = _data_root(data_root)
    try:
        shown = summary(root, load_campaign_state(root, campaign_id))
    except (ConfigError, OSError) as exc:
        _fail(str(exc))
    if as_json:
        click.echo(json.dumps(shown))
        return
    if shown["status"] in (CampaignStatus.DECIDED, CampaignStatus.VALIDATOR_FAILED):
        where = "nothing more is run for it"
    elif shown["hour"] is None:
        where = "clock not started yet (its collector starts it)"
    elif shown["hour"] >= shown["total_hours"]:
        where = f"its {shown['total_hours']} hours have ended"
    else:
        where = f"hour {shown['hour']} of {shown['total_hours']}"
    where += f", {shown['phase']}" if shown["phase"] else ""
    click.echo(f"campaign {shown['campaign']}: {shown['status']}, {where}")
    click.echo(f"hours collected: {shown['hours_collected']} (every planned probe step ran), "
               f"stored: {shown['hours_stored']}, of {shown['total_hours']}")
    for hours, what in _grouped_not_run(shown["hours_not_run"]):
        click.echo(f"{hours} not run: {what}")
    if shown["early_stop"]:
        stop = shown["early_stop"]
        click.echo(f"early stop at hour {stop['hour']}: {stop['rule']}: {stop['reason']}")
    if shown["validator_failure"]:
        click.echo(f"validator failed: {shown['validator_failure']}")
    verdict = shown["verdict"]
    if verdict:
        click.echo(f"verdict (round {verdict['round']}): {verdict['decision']} ({verdict['rule']})"
                   + (f", report {shown['report']}" if shown["report"] else ", report not written yet"))
    else:
        click.echo("verdict: none yet")


def _grouped_not_run(not_run: dict[str, dict[str, str]]) -> list[tuple[str, str]]:
    """Consecutive hours whose steps were not run for the same reasons, as ranges: `hours 2-12`."""
    groups: list[tuple[int, int, str]] = []
    for hour, steps in sorted(not_run.items(), key=lambda item: int(item[0])):
        what = "; ".join(f"{step}: {reason}" for step, reason in steps.items())
        if groups and groups[-1][1] == int(hour) - 1 and groups[-1][2] == what:
            groups[-1] = (groups[-1][0], int(hour), what)
        else:
            groups.append((int(hour), int(hour), what))
    return [(f"hour {first}" if first == last else f"hours {first}-{last}", what) for first, last, what in groups]


def _waited_outcome(layout: CampaignLayout, state: CampaignState, final: bool) -> tuple[str, int] | None:
    """The line to print and the exit code once the awaited verdict is out, else None."""
    if state.status is CampaignStatus.VALIDATOR_FAILED:
        reason = state.validator_failure.reason if state.validator_failure else "its runs kept failing"
        return (f"INCONCLUSIVE (validator_failed: {reason}; nothing is known against the target)",
                EXIT_CODES["INCONCLUSIVE"])
    if not state.rounds or (final and not state.status.final):
        return None
    verdict = state.rounds[-1]
    if not _report_written(layout, verdict):
        return None
    if verdict.decision not in EXIT_CODES:
        _fail(f"campaign {state.campaign}: round {verdict.round_id} recorded an unknown decision {verdict.decision!r}")
    return (f"{verdict.decision} ({verdict.rule}), round {verdict.round_id}, report {layout.report_file}",
            EXIT_CODES[verdict.decision])


@campaign.command(name="wait")
@click.argument("campaign_id")
@click.option("--data-root", help="Where campaigns are stored (default: data/ or $STAGING_VALIDATION_DATA).")
@click.option("--final", is_flag=True, help="After an EXTEND, wait for the verdict that ends the campaign.")
@click.option("--timeout", "timeout_s", type=click.FloatRange(min=0), help="Give up after this many seconds.")
@click.option("--poll", "poll_s", type=click.FloatRange(min=0.1), default=5.0, show_default=True,
              help="Seconds between two reads of the stored campaign.")
def wait(campaign_id: str, data_root: str | None, final: bool, timeout_s: float | None, poll_s: float) -> None:
    """Wait for the campaign's verdict (recorded, report written) and print it.

    Exit code: 0 ACCEPT, 3 EXTEND, 4 REJECT, 5 INCONCLUSIVE (the validator missed the evidence, or its runs
    kept failing), 1 error or --timeout reached.
    """
    root = _data_root(data_root)
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while True:
        try:
            state = load_campaign_state(root, campaign_id)
            outcome = _waited_outcome(CampaignLayout.of(root, campaign_id), state, final)
        except (ConfigError, OSError) as exc:
            _fail(str(exc))
        if outcome is not None:
            click.echo(outcome[0])
            sys.exit(outcome[1])
        if deadline is not None and time.monotonic() >= deadline:
            latest = state.rounds[-1] if state.rounds else None
            recorded = f", round {latest.round_id} recorded ({latest.decision})" if latest else ""
            _fail(f"campaign {campaign_id}: no verdict within {timeout_s:g} s (it is {state.status.value}{recorded})")
        time.sleep(poll_s if deadline is None else max(0.0, min(poll_s, deadline - time.monotonic())))
