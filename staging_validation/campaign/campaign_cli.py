"""`staging-validation campaign start|status|wait`: a campaign without the UI, for a deploy pipeline.

`start` launches the `start_campaign` job into the running instance the way the launchpad does, through
the webserver's GraphQL API, and waits for the registration run to end; the daemon's sensors then drive
the campaign. `status` and `wait` read the campaign's stored state and decision in the data root
(`STAGING_VALIDATION_DATA`, else the checkout's `data/`), so they need neither the webserver nor Dagster.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import click
import dagster as dg
import httpx
import yaml
from dagster_graphql import DagsterGraphQLClient, DagsterGraphQLClientError

from staging_validation.acceptance.cli import EXIT_CODES
from staging_validation.campaign.jobs import CampaignLaunchConfig, register_campaign_op, start_campaign
from staging_validation.campaigns import CampaignState, load_campaign_state
from staging_validation.config_files import ConfigError, validate_model
from staging_validation.definitions import build_definitions
from staging_validation.probes.deploy_steps import DeploySteps
from staging_validation.storage import campaign_dir, default_data_root, validate_campaign_id

EXIT_ERROR = 1
FINISHED = {"SUCCESS", "FAILURE", "CANCELED"}
# The step failure of a failed registration run: the launch check's message names the bad field.
FAILURE_QUERY = """
query RunFailure($runId: ID!) {
  logsForRun(runId: $runId) {
    ... on EventConnection { events { __typename ... on MessageEvent { message }
      ... on ExecutionStepFailureEvent { error { message } } } }
  }
}
"""


def _fail(message: str) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(EXIT_ERROR)


def load_run_config(path: Path) -> dict:
    """The launchpad's run config (`ops: register_campaign_op: config: ...`) from a YAML file; the bare
    `config` mapping is accepted too. Validated here, so a typo is one line naming the field."""
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {' '.join(str(exc).split())}") from None
    if not isinstance(document, dict):
        raise ConfigError(f"{path}: must be a mapping: the launchpad's run config, "
                          f"ops: {{{register_campaign_op.name}: {{config: {{campaign: ..., ...}}}}}}")
    if "ops" not in document:
        document = {"ops": {register_campaign_op.name: {"config": document}}}
    try:
        config = document["ops"][register_campaign_op.name]["config"]
    except (KeyError, TypeError):
        raise ConfigError(f"{path}: ops.{register_campaign_op.name}.config: missing; the launch config is nested "
                          f"under it, as in the launchpad") from None
    # The launch's own schema check (unknown keys, types), then the value constraints of the config model.
    job = build_definitions(str(default_data_root())).get_job_def(start_campaign.name)
    try:
        dg.validate_run_config(job, document)
    except dg.DagsterInvalidConfigError as exc:
        problems = "; ".join(error.message.split(" Expected:")[0] for error in exc.errors)
        raise ConfigError(f"{path}: {problems}") from None
    where = f"{path}: ops.{register_campaign_op.name}.config"
    validate_model(config, CampaignLaunchConfig, where)
    validate_model(config.get("deploy") or {}, DeploySteps, f"{where}.deploy")
    return document


def _run_failure(host: str, port: int, run_id: str) -> str:
    response = httpx.post(f"http://{host}:{port}/graphql", timeout=30,
                          json={"query": FAILURE_QUERY, "variables": {"runId": run_id}})
    events = (response.json().get("data") or {}).get("logsForRun", {}).get("events", [])
    failures = [event["error"]["message"].strip() for event in events
                if event["__typename"] == "ExecutionStepFailureEvent" and event.get("error")]
    return failures[0] if failures else f"run {run_id} failed; its events are in the UI"


@click.group(name="campaign")
def campaign() -> None:
    """Start a campaign in the running Dagster instance and follow it to its verdict."""


@campaign.command(name="start")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, exists=True, path_type=Path), required=True,
              help="The launchpad's run config of start_campaign, as YAML.")
@click.option("--host", default="127.0.0.1", show_default=True, help="The Dagster webserver.")
@click.option("--port", type=int, default=3000, show_default=True)
@click.option("--timeout", "timeout_s", type=click.FloatRange(min=1), default=300, show_default=True,
              help="Seconds to wait for the registration run (queued runs wait for the daemon).")
def start(config_path: Path, host: str, port: int, timeout_s: float) -> None:
    """Launch start_campaign like the launchpad; prints the campaign id once it is registered.

    Exit 0 when registered, 1 when the config is invalid, the webserver unreachable or the launch refused.
    """
    try:
        run_config = load_run_config(config_path)
    except ConfigError as exc:
        _fail(str(exc))
    campaign_id = run_config["ops"][register_campaign_op.name]["config"]["campaign"]
    try:
        httpx.get(f"http://{host}:{port}/server_info", timeout=10).raise_for_status()
    except httpx.HTTPError as exc:
        _fail(f"cannot reach the Dagster webserver at {host}:{port}: {exc}")
    client = DagsterGraphQLClient(host, port_number=port, timeout=30)
    try:
        run_id = client.submit_job_execution(start_campaign.name, run_config=run_config)
        deadline = time.monotonic() + timeout_s
        while (status := client.get_run_status(run_id).value) not in FINISHED:
            if time.monotonic() > deadline:
                _fail(f"the registration run {run_id} did not finish within {timeout_s:g} s (status {status}); "
                      "is the daemon running?")
            time.sleep(0.5)  # polling interval of a deadline wait
    except DagsterGraphQLClientError as exc:
        _fail(f"the webserver at {host}:{port} refused the launch: {' '.join(str(exc).split())[:500]}")
    except (httpx.HTTPError, OSError) as exc:
        _fail(f"cannot reach the Dagster webserver at {host}:{port}: {exc}")
    if status != "SUCCESS":
        _fail(f"campaign {campaign_id} not started: {_run_failure(host, port, run_id)}")
    click.echo(campaign_id)


def _stored(campaign_id: str) -> tuple[CampaignState, dict | None]:
    data_root = default_data_root()
    state = load_campaign_state(data_root, validate_campaign_id(campaign_id))
    decision_path = campaign_dir(data_root, campaign_id) / "decision.json"
    try:
        decision = json.loads(decision_path.read_text(encoding="utf-8")) if decision_path.exists() else None
    except ValueError as exc:
        raise ConfigError(f"{decision_path}: unreadable decision: {exc}") from None
    return state, decision


def _summary(state: CampaignState, decision: dict | None) -> dict:
    hours_elapsed = state.timing.campaign_seconds() / state.timing.hour_seconds
    return {
        "campaign": state.campaign, "status": state.status, "planned_hours": state.planned_hours,
        "total_hours": state.total_hours, "current_hour": int(min(max(hours_elapsed, 0), state.total_hours)),
        "early_stop": state.early_stop,
        "decision": None if decision is None else {key: decision.get(key) for key in ("decision", "rule")},
        "report": str(campaign_dir(default_data_root(), state.campaign) / "STAGING_ACCEPTANCE_REPORT.md")
        if decision else None,
    }


def _exit_code(decision: dict) -> int:
    verdict = decision.get("decision")
    if verdict not in EXIT_CODES:
        _fail(f"campaign {decision.get('campaign')}: unknown decision {verdict!r} in decision.json")
    return EXIT_CODES[verdict]


@campaign.command(name="status")
@click.argument("campaign_id")
@click.option("--json", "as_json", is_flag=True, help="One JSON object.")
def status(campaign_id: str, as_json: bool) -> None:
    """Where a campaign is: its status, hour, early stop and decision. Exit 0, or 1 when it cannot be read."""
    try:
        summary = _summary(*_stored(campaign_id))
    except ConfigError as exc:
        _fail(str(exc))
    if as_json:
        click.echo(json.dumps(summary))
        return
    decision = summary["decision"]
    click.echo(f"campaign {summary['campaign']}: {summary['status']}, hour {summary['current_hour']} "
               f"of {summary['total_hours']}")
    if summary["early_stop"]:
        click.echo(f"early stop: {summary['early_stop']['rule']}: {summary['early_stop']['reason']}")
    if decision:
        click.echo(f"decision: {decision['decision']} ({decision['rule']}), report {summary['report']}")


@campaign.command(name="wait")
@click.argument("campaign_id")
@click.option("--final", is_flag=True, help="After an EXTEND, wait for the verdict of the extended campaign.")
@click.option("--timeout", "timeout_s", type=click.FloatRange(min=0), help="Give up after this many seconds.")
@click.option("--poll", "poll_s", type=click.FloatRange(min=0.1), default=5.0, show_default=True)
def wait(campaign_id: str, final: bool, timeout_s: float | None, poll_s: float) -> None:
    """Wait for the campaign's verdict and print it.

    Exit code: 0 ACCEPT, 3 EXTEND, 4 REJECT, 5 inconclusive, 1 error (or --timeout reached).
    """
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while True:
        try:
            state, decision = _stored(campaign_id)
        except ConfigError as exc:
            _fail(str(exc))
        if decision is not None and (not final or state.status == "decided"):
            click.echo(f"{decision['decision']} ({decision.get('rule')})")
            sys.exit(_exit_code(decision))
        if deadline is not None and time.monotonic() > deadline:
            _fail(f"campaign {campaign_id}: no verdict within {timeout_s:g} s (status {state.status})")
        time.sleep(poll_s)  # polling interval of a deadline wait
