"""The campaign's assets: four hourly ones (campaign × hour) and the verdict chain (campaign)."""


import dataclasses
import json
import time

import dagster as dg
import pandas as pd
import pyarrow as pa

from staging_validation.acceptance.decision import Decision, judged_hours
from staging_validation.acceptance.judge import decide_campaign, load_campaign_tables
from staging_validation.acceptance.gates import GateResult, evaluate_gates, identity_merges
from staging_validation.acceptance.monitor import Alert
from staging_validation.acceptance.notify import (
    Message,
    Notifier,
    campaign_notification_settings,
    compose_decision_message,
)
from staging_validation.acceptance.policy import campaign_policy
from staging_validation.acceptance.report import CampaignEvidence, write_campaign_outputs
from staging_validation.campaign.partitions import (
    campaign_hour_partitions,
    campaign_partitions,
    split_campaign_hour,
)
from staging_validation.campaign.resources import CampaignStore
from staging_validation.hour_runner import (
    capture_until_hour_end,
    hour_telemetry,
    log_follower,
    run_campaign_deploy_steps,
    run_final_checks,
    run_hour_probes,
)
from staging_validation.plan import SNAPSHOT_EVERY_CAMPAIGN_S, Phase, plan_for_hour
from staging_validation.schemas.probe_records import RECORD_SCHEMA, records_to_table
from staging_validation.telemetry.aggregates import hourly_report as summarize_hour
from staging_validation.telemetry.aggregates import (
    metrics_snapshot,
    render_hourly_log_line,
    render_metrics_log_line,
)
from staging_validation.schemas.events import EVENT_SCHEMA
from staging_validation.watch import alerts_by_window, with_hour

HOURLY_GROUP = "campaign_hours"
VERDICT_GROUP = "campaign_verdict"
STATUS_SEVERITY = {"REVIEW": dg.AssetCheckSeverity.WARN, "NO_DATA": dg.AssetCheckSeverity.WARN,
                   "FAIL": dg.AssetCheckSeverity.ERROR}
GATE_CHECKS = {1: "gate_1_continuity_pack", 2: "gate_2_ambiguity_rate", 3: "gate_3_relationship_determinism",
               4: "gate_4_governor_regen", 5: "gate_5_identity_correctness"}
SNAPSHOT_SCHEMA = pa.schema([("at", pa.timestamp("ms", tz="UTC")), ("line", pa.string()), ("snapshot", pa.string())])
HOURLY_REPORT_SCHEMA = pa.schema([("hour", pa.int32()), ("line", pa.string()), ("report", pa.string())])
# An hour whose probes never ran (it was over before its probe run could start) is a gap, not an error.
PROBES_OF_THE_HOUR = dg.AssetIn(metadata={"allow_missing_partitions": True})


def _float_or_none(value) -> dg.MetadataValue:
    return dg.MetadataValue.float(float(value)) if value is not None and not pd.isna(value) else dg.MetadataValue.null()


def _records_frame(probe_records: pa.Table | None) -> pd.DataFrame:
    return (probe_records if probe_records is not None else RECORD_SCHEMA.empty_table()).to_pandas()


def _is_stopped(store: CampaignStore, campaign: str) -> bool:
    return store.load(campaign).status != "active"


def _stop_after_failed_deploy(store: CampaignStore, campaign: str, deploy, rule: str, what: str) -> None:
    """The runbook: "Tests should pass 4/4. If not, something is broken. Stop." (and so for a failed
    migrate or deploy step before them)."""
    state = store.load(campaign)
    if state.status != "active":
        return
    failed = [r for r in deploy.records if r.passed is False]
    first = min((r.time for r in failed), default=pd.Timestamp.now(tz="UTC"))
    store.save(state.model_copy(update={"status": "stopped", "early_stop": {
        "gate": 0, "rule": rule, "first_seen": str(first), "hour": 0,
        "reason": f"{what} failed: " + "; ".join(deploy.failures),
        "evidence": [{"time": str(r.time), "row": f"{r.case} {r.route} -> {r.outcome}: {r.error}"} for r in failed[:5]],
    }}))


# --- hourly ---------------------------------------------------------------------------------------


@dg.asset(
    partitions_def=campaign_hour_partitions,
    io_manager_key="parquet_io_manager",
    group_name=HOURLY_GROUP,
    kinds={"python", "parquet"},
    check_specs=[
        dg.AssetCheckSpec("smoke_tests_4_of_4", asset="probe_records",
                          description="Every round of the four smoke tests passed (hours 0 and 1)."),
        dg.AssetCheckSpec("no_identity_merge_by_probe", asset="probe_records",
                          description="The hourly identity watch saw no two identities share an id."),
    ],
)
def probe_records(context: dg.AssetExecutionContext, store: CampaignStore):
    """The hour's probe requests, one row each, run while the hour is current."""
    campaign, hour = split_campaign_hour(context.partition_key)
    state = store.load(campaign)
    plan = plan_for_hour(hour, state.planned_hours)
    # Hour 0 migrates and deploys first; the smoke tests of a deployment whose step failed mean nothing.
    steps = run_campaign_deploy_steps(store.data_root, state) if plan.phase is Phase.DEPLOY else None
    results = [steps] if steps and not steps.passed else [*([steps] if steps else []), *run_hour_probes(state, plan)]
    records = [record for result in results for record in result.records]
    table = records_to_table(records)
    frame = table.to_pandas()
    failures = [f"{result.probe}: {failure}" for result in results for failure in result.failures]
    yield dg.Output(
        table,
        metadata={
            "phase": plan.phase.value,
            "requests": dg.MetadataValue.int(len(records)),
            "failed_probes": dg.MetadataValue.int(sum(not r.passed for r in results)),
            "connection_errors": dg.MetadataValue.int(int((frame["outcome"] == "connection_error").sum())),
            "failures": dg.MetadataValue.md("\n".join(f"- {f}" for f in failures) or "none"),
            "probed": dg.MetadataValue.bool(bool(results)),
        },
    )
    deploy_failed = [r for r in results if r.probe == "deploy" and not r.passed]
    if steps and not steps.passed:
        _stop_after_failed_deploy(store, campaign, steps, "early_stop.deploy_step_failed", "deploy step")
    if deploy_failed:
        _stop_after_failed_deploy(store, campaign, deploy_failed[0], "early_stop.deploy_verification_failed",
                                  "deploy verification")
    smoke = [r for r in results if r.probe in ("deploy", "smoke")]
    if plan.runs_smoke_tests and not smoke:
        yield dg.AssetCheckResult(check_name="smoke_tests_4_of_4", passed=False,
                                  severity=dg.AssetCheckSeverity.ERROR,
                                  description=f"Not run: {steps.failures[0]}" if steps and not steps.passed
                                  else "The hour ended before its smoke tests could run.")
    else:
        yield dg.AssetCheckResult(
            check_name="smoke_tests_4_of_4",
            passed=all(r.passed for r in smoke),
            severity=dg.AssetCheckSeverity.ERROR,
            description=("; ".join(r.failures[0] for r in smoke if r.failures)
                         or ("all smoke tests passed" if smoke else f"no smoke tests in the {plan.phase} phase")),
        )
    merges = identity_merges(with_hour(frame, state.timing), EVENT_SCHEMA.empty_table().to_pandas())
    yield dg.AssetCheckResult(
        check_name="no_identity_merge_by_probe",
        passed=merges.empty,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={"merged_identities": dg.MetadataValue.int(len(merges))},
    )


@dg.asset(
    partitions_def=campaign_hour_partitions,
    io_manager_key="parquet_io_manager",
    group_name=HOURLY_GROUP,
    kinds={"python", "parquet"},
    check_specs=[
        dg.AssetCheckSpec("no_missing_pack", asset="telemetry_events"),
        dg.AssetCheckSpec("no_identity_merge", asset="telemetry_events"),
        dg.AssetCheckSpec("errors_within_monitor_threshold", asset="telemetry_events"),
        dg.AssetCheckSpec("slow_requests_within_monitor_threshold", asset="telemetry_events"),
    ],
)
def telemetry_events(context: dg.AssetExecutionContext, store: CampaignStore):
    """The target's log lines whose time falls in the hour, classified into typed events."""
    campaign, hour = split_campaign_hour(context.partition_key)
    state = store.load(campaign)
    follower = log_follower(store.data_root, state)
    problems = capture_until_hour_end(follower, state, hour, should_stop=lambda: _is_stopped(store, campaign))
    for problem in problems:
        context.log.warning(f"telemetry capture: {problem}")
    parsed = hour_telemetry(store.data_root, state, hour)
    events = parsed.events.to_pandas()
    kinds = events["kind"].value_counts().to_dict()
    yield dg.Output(
        parsed.events,
        metadata={
            "lines": dg.MetadataValue.int(parsed.lines_total),
            "unparsed_lines": dg.MetadataValue.int(parsed.unparsed_lines),
            "events": dg.MetadataValue.int(len(events)),
            "events_by_kind": dg.MetadataValue.json({k: int(v) for k, v in sorted(kinds.items())}),
            "capture_problems": dg.MetadataValue.md("\n".join(f"- {p}" for p in problems) or "none"),
            "capture_problem_count": dg.MetadataValue.int(len(problems)),
        },
    )
    policy = campaign_policy(state)
    records = RECORD_SCHEMA.empty_table().to_pandas()
    # The rules quote evidence with its campaign hour, as the monitor sensor's windows do.
    alerts = [alert for _, alert in alerts_by_window(with_hour(events, state.timing), with_hour(records, state.timing),
                                                     state.timing, policy)]

    def check(name: str, rule_prefix: str, severity: dg.AssetCheckSeverity):
        hits = [a for a in alerts if a.rule.startswith(rule_prefix)]
        return dg.AssetCheckResult(
            check_name=name, passed=not hits, severity=severity,
            description="; ".join(a.message for a in hits) or "within the monitor's rules",
            metadata={"alerts": dg.MetadataValue.int(len(hits))},
        )

    yield check("no_missing_pack", "monitor.missing_pack", dg.AssetCheckSeverity.ERROR)
    yield check("no_identity_merge", "monitor.identity_merge", dg.AssetCheckSeverity.ERROR)
    yield check("errors_within_monitor_threshold", "monitor.errors", dg.AssetCheckSeverity.WARN)
    yield check("slow_requests_within_monitor_threshold", "monitor.slow", dg.AssetCheckSeverity.WARN)


@dg.asset(
    partitions_def=campaign_hour_partitions,
    io_manager_key="parquet_io_manager",
    group_name=HOURLY_GROUP,
    kinds={"python", "parquet"},
    ins={"probe_records": PROBES_OF_THE_HOUR},
)
def metric_snapshots(context: dg.AssetExecutionContext, store: CampaignStore, probe_records: pa.Table | None,
                     telemetry_events: pa.Table) -> dg.Output[pa.Table]:
    """metrics-snapshot.sh every 30 campaign-minutes, computed from the hour's stored data."""
    campaign, hour = split_campaign_hour(context.partition_key)
    state = store.load(campaign)
    records, events = _records_frame(probe_records), telemetry_events.to_pandas()
    step_s = state.timing.scale(SNAPSHOT_EVERY_CAMPAIGN_S)
    rows = []
    for index in range(round(3600 / SNAPSHOT_EVERY_CAMPAIGN_S)):
        start = pd.Timestamp(state.timing.hour_start_s(hour) + index * step_s, unit="s", tz="UTC").floor("ms")
        end = start + pd.Timedelta(milliseconds=round(step_s * 1000))
        snapshot = metrics_snapshot(
            records[(records["time"] >= start) & (records["time"] < end)],
            events[(events["time"] >= start) & (events["time"] < end)],
            at=end.to_pydatetime(),
        )
        rows.append({"at": end, "line": render_metrics_log_line(snapshot),
                     "snapshot": json.dumps(snapshot, sort_keys=True, default=str)})
    table = pa.Table.from_pylist(rows, schema=SNAPSHOT_SCHEMA)
    return dg.Output(table, metadata={"metrics.log": dg.MetadataValue.md(
        "\n".join(f"    {row['line']}" for row in rows))})


@dg.asset(
    partitions_def=campaign_hour_partitions,
    io_manager_key="parquet_io_manager",
    group_name=HOURLY_GROUP,
    kinds={"python", "parquet"},
    ins={"probe_records": PROBES_OF_THE_HOUR},
)
def hourly_report(context: dg.AssetExecutionContext, probe_records: pa.Table | None,
                  telemetry_events: pa.Table) -> dg.Output[pa.Table]:
    """hourly-report.sh: the hour's numbers, also as metadata so the UI plots them across hours."""
    _, hour = split_campaign_hour(context.partition_key)
    report = summarize_hour(_records_frame(probe_records), telemetry_events, hour=hour)
    line = render_hourly_log_line(report)
    table = pa.Table.from_pylist(
        [{"hour": hour, "line": line, "report": json.dumps(report, sort_keys=True, default=str)}],
        schema=HOURLY_REPORT_SCHEMA,
    )
    latency = report["requests"]["latency_ms"]
    return dg.Output(
        table,
        metadata={
            "hourly.log": dg.MetadataValue.md(f"    {line}"),
            "requests": dg.MetadataValue.int(report["requests"]["completed"]),
            "errors": dg.MetadataValue.int(report["error_lines"]),
            "latency_p50_ms": _float_or_none(latency["p50"]),
            "latency_p99_ms": _float_or_none(latency["p99"]),
            "ambiguity_rate": _float_or_none(report["ambiguity"]["organic_rate"]),
            "zero_regen_share": _float_or_none(report["governor"]["zero_regeneration_share"]),
        },
    )


# --- verdict --------------------------------------------------------------------------------------


@dg.asset(partitions_def=campaign_partitions, io_manager_key="parquet_io_manager", group_name=VERDICT_GROUP,
          kinds={"python", "parquet"})
def final_checks(context: dg.AssetExecutionContext, store: CampaignStore) -> dg.Output[pa.Table]:
    """The runbook's hour-24 tests: a discord and a sovereign identity, and consecutive requests of stable users."""
    state = store.load(context.partition_key)
    results = run_final_checks(state)
    table = records_to_table([record for result in results for record in result.records])
    return dg.Output(table, metadata={r.probe: dg.MetadataValue.bool(r.passed) for r in results})


# The verdict assets read these through `load_campaign_tables`, the loader the verdict CLI re-judges with,
# so both see the same rows (hours never stored are gaps, not errors); Dagster keeps them as lineage.
CAMPAIGN_TABLES = [probe_records, telemetry_events, final_checks]


@dg.asset(
    partitions_def=campaign_partitions,
    io_manager_key="json_io_manager",
    group_name=VERDICT_GROUP,
    kinds={"python"},
    deps=CAMPAIGN_TABLES,
    check_specs=[dg.AssetCheckSpec(name, asset="gate_results") for name in GATE_CHECKS.values()],
)
def gate_results(context: dg.AssetExecutionContext, store: CampaignStore):
    """The five acceptance gates over every stored hour of the campaign."""
    state = store.load(context.partition_key)
    policy = campaign_policy(state)
    records, events = load_campaign_tables(store.data_root, state)
    gates = evaluate_gates(records, events, policy)
    yield dg.Output(
        {"gates": [dataclasses.asdict(g) for g in gates],
         "hours_observed": sorted(set(events["hour"].astype(int).tolist()))},
        metadata={f"gate_{g.gate}": g.status for g in gates},
    )
    for gate in gates:
        yield dg.AssetCheckResult(
            check_name=GATE_CHECKS[gate.gate],
            passed=gate.status == "PASS",
            severity=STATUS_SEVERITY.get(gate.status, dg.AssetCheckSeverity.WARN),
            description=f"{gate.status}: {gate.reason} (rule {gate.rule})",
            metadata={"samples": dg.MetadataValue.int(int(gate.samples)),
                      "metrics": dg.MetadataValue.json(json.loads(json.dumps(gate.metrics, default=str)))},
        )


def _gate_objects(payload: dict) -> list[GateResult]:
    return [GateResult(**g) for g in payload["gates"]]


@dg.asset(partitions_def=campaign_partitions, io_manager_key="json_io_manager", group_name=VERDICT_GROUP,
          kinds={"python"})
def campaign_decision(context: dg.AssetExecutionContext, store: CampaignStore, gate_results: dict) -> dg.Output[dict]:
    """ACCEPT, EXTEND or REJECT, with the rule that fired; an EXTEND lengthens the campaign once per round.

    The payload describes the campaign as judged: the report is written after the state is lengthened."""
    judged = store.load(context.partition_key)
    policy = campaign_policy(judged)
    gates = _gate_objects(gate_results)
    decision, observed, share = decide_campaign(judged, gates, gate_results["hours_observed"], policy)
    payload = {
        **dataclasses.asdict(decision),
        "campaign": judged.campaign,
        "decided_at": pd.Timestamp.now(tz="UTC").isoformat(),
        "observed_hours": observed,
        "judged_hours": judged_hours(judged),
        "coverage": share,
        "extension_count": judged.extension_count,
    }
    round_due = judged.timing.campaign_seconds() >= judged.total_hours * 3600
    if decision.decision == "EXTEND" and decision.extend_hours and round_due and judged.status == "active":
        store.save(judged.model_copy(update={"extension_count": judged.extension_count + 1,
                                             "extension_hours": judged.extension_hours + decision.extend_hours}))
    elif decision.decision != "EXTEND" or not decision.extend_hours:
        store.save(judged.model_copy(update={"status": "decided"}))
    return dg.Output(payload, metadata={"decision": decision.decision, "rule": decision.rule,
                                        "coverage": dg.MetadataValue.float(share)})


def _decision_object(payload: dict) -> Decision:
    return Decision(**{field.name: payload[field.name] for field in dataclasses.fields(Decision)})


def _alerts(store: CampaignStore, campaign: str) -> list[Alert]:
    return [Alert(**alert) for alert in store.read_alerts(campaign)]


@dg.asset(
    partitions_def=campaign_partitions,
    io_manager_key="json_io_manager",
    group_name=VERDICT_GROUP,
    kinds={"python", "markdown"},
    deps=CAMPAIGN_TABLES,
)
def acceptance_report(context: dg.AssetExecutionContext, store: CampaignStore, gate_results: dict,
                      campaign_decision: dict) -> dg.Output[dict]:
    """STAGING_ACCEPTANCE_REPORT.md, decision.json, the metrics text and the charts, in the campaign folder."""
    state = store.load(context.partition_key)
    policy = campaign_policy(state)
    records, events = load_campaign_tables(store.data_root, state)
    gates = _gate_objects(gate_results)
    decision = _decision_object(campaign_decision)
    message = compose_decision_message(decision, gates, policy, state.campaign, campaign_decision["observed_hours"])
    evidence = CampaignEvidence(
        campaign=state.campaign, state=state, records=records, events=events, gates=gates, decision=decision,
        alerts=_alerts(store, state.campaign), hours_observed=campaign_decision["observed_hours"],
        decided_at=pd.Timestamp(campaign_decision["decided_at"]), coverage=campaign_decision["coverage"],
        judged_hours=campaign_decision["judged_hours"], extension_count=campaign_decision["extension_count"],
    )
    paths = write_campaign_outputs(store.campaign_dir(state.campaign), evidence, message)
    report_path = paths["report"]
    return dg.Output(
        {"paths": {name: str(path) for name, path in paths.items()},
         "notification": {"subject": message.subject, "body": message.body}},
        metadata={"report": dg.MetadataValue.path(str(report_path)),
                  "decision": decision.decision,
                  "summary": dg.MetadataValue.md(report_path.read_text(encoding="utf-8")[:20000])},
    )


@dg.asset(partitions_def=campaign_partitions, io_manager_key="json_io_manager", group_name=VERDICT_GROUP,
          kinds={"python", "email"})
def decision_notification(context: dg.AssetExecutionContext, store: CampaignStore,
                          acceptance_report: dict) -> dg.Output[dict]:
    """The runbook's message for the decision: email and webhook as configured, always a copy in the outbox."""
    state = store.load(context.partition_key)
    settings = campaign_notification_settings(state)
    notifier = Notifier(settings, store.campaign_dir(state.campaign) / "outbox")
    delivery = notifier.send(Message(**acceptance_report["notification"]))
    return dg.Output(
        {"status": delivery.status, "channels": delivery.channels, "eml": str(delivery.eml_path),
         "sent_at": time.time()},
        metadata={"status": delivery.status, "eml": dg.MetadataValue.path(str(delivery.eml_path))},
    )


# Sensors report the monitor's alerts against this asset, so they show in the UI beside the campaign.
monitor_alerts_asset = dg.AssetSpec(
    "monitor_alerts", partitions_def=campaign_partitions, group_name=VERDICT_GROUP, kinds={"python"},
    description="Alerts raised by the background monitor (observations; the list lives in alerts.jsonl).",
)

PROBE_ASSETS = [probe_records]
INGESTION_ASSETS = [telemetry_events, metric_snapshots, hourly_report]
HOURLY_ASSETS = PROBE_ASSETS + INGESTION_ASSETS
VERDICT_ASSETS = [final_checks, gate_results, campaign_decision, acceptance_report, decision_notification]
