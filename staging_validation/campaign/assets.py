"""The campaign's assets: four hourly ones (campaign × hour) and the verdict chain (campaign)."""


import dataclasses
import io
import json
import time

import dagster as dg
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from staging_validation.acceptance.alert_rules import Alert
from staging_validation.acceptance.decision import Decision
from staging_validation.acceptance.gates import GateResult, evaluate_gates, identity_merges
from staging_validation.acceptance.judge import decide_round, load_campaign_tables, round_validator_coverage
from staging_validation.acceptance.notify import Message, Notifier, compose_decision_message
from staging_validation.acceptance.policy import campaign_policy
from staging_validation.acceptance.report import CampaignEvidence, write_campaign_outputs
from staging_validation.campaign.partitions import (
    campaign_hour_partitions,
    campaign_partitions,
    split_campaign_hour,
)
from staging_validation.campaign.resources import CampaignStore
from staging_validation.campaign.run_tags import TAG_HOUR, TAG_PHASE, VERDICT_PHASE
from staging_validation.config_files import ConfigError
from staging_validation.hour_runner import (
    capture_until_hour_end,
    hour_telemetry,
    log_follower,
    run_final_checks,
    run_hour_probes,
)
from staging_validation.lifecycle import (
    CampaignState,
    EarlyStop,
    IllegalTransition,
    RoundSpec,
    VerdictRound,
    record_notification,
    record_verdict,
    stop_early,
)
from staging_validation.plan import SNAPSHOT_EVERY_CAMPAIGN_S, plan_for_hour
from staging_validation.schemas.events import EVENT_SCHEMA
from staging_validation.validator_gaps import coverage_from_dict, makeup_for_hour, makeup_phase
from staging_validation.schemas.probe_records import RECORD_SCHEMA, records_to_table
from staging_validation.storage import atomic_write_bytes, local_path
from staging_validation.telemetry.aggregates import hourly_report as summarize_hour
from staging_validation.telemetry.aggregates import (
    metrics_snapshot,
    render_hourly_log_line,
    render_metrics_log_line,
)
from staging_validation.watch.windows import alerts_by_window, with_hour

HOURLY_GROUP = "campaign_hours"
VERDICT_GROUP = "campaign_verdict"
STATUS_SEVERITY = {"REVIEW": dg.AssetCheckSeverity.WARN, "NO_DATA": dg.AssetCheckSeverity.WARN,
                   "FAIL": dg.AssetCheckSeverity.ERROR}
GATE_CHECKS = {
    1: ("gate_1_continuity_pack", "Gate 1 (critical): every request had its ContinuityPack."),
    2: ("gate_2_ambiguity_rate", "Gate 2: the organic ambiguity rate is within the policy's band."),
    3: ("gate_3_relationship_determinism", "Gate 3 (critical): a stable user's relationship resolves the same."),
    4: ("gate_4_governor_regen", "Gate 4: the governor passes without regeneration often enough, and fast."),
    5: ("gate_5_identity_correctness", "Gate 5 (critical): identities resolve, link and never merge."),
}
SNAPSHOT_SCHEMA = pa.schema([("at", pa.timestamp("ms", tz="UTC")), ("line", pa.string()), ("snapshot", pa.string())])
HOURLY_REPORT_SCHEMA = pa.schema([("hour", pa.int32()), ("line", pa.string()), ("report", pa.string())])
# An hour whose probes never ran (it was over before its probe run could start) is a gap, not an error.
PROBES_OF_THE_HOUR = dg.AssetIn(metadata={"allow_missing_partitions": True})


def _float_or_none(value) -> dg.MetadataValue:
    return dg.MetadataValue.float(float(value)) if value is not None and not pd.isna(value) else dg.MetadataValue.null()


def _records_frame(probe_records: pa.Table | None) -> pd.DataFrame:
    return (probe_records if probe_records is not None else RECORD_SCHEMA.empty_table()).to_pandas()


def _is_stopped(store: CampaignStore, campaign: str) -> bool:
    return not store.load(campaign).status.collecting


def _stop_after_failed_deploy(store: CampaignStore, campaign: str, deploy) -> None:
    """The runbook: "Tests should pass 4/4. If not, something is broken. Stop." """
    if not store.load(campaign).status.collecting:
        return
    failed = [r for r in deploy.records if r.passed is False]
    first = min((r.time for r in failed), default=pd.Timestamp.now(tz="UTC"))
    stop_early(store.data_root, campaign, EarlyStop(
        gate=0, rule="early_stop.deploy_verification_failed", first_seen=str(first), hour=0,
        reason="deploy verification failed: " + "; ".join(deploy.failures),
        evidence=[{"time": str(r.time), "row": f"{r.case} {r.route} -> {r.outcome}: {r.error}"} for r in failed[:5]],
    ))


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
    makeup = makeup_for_hour(store.data_root, state, hour)
    if makeup is not None:
        context.log.info(f"making up the missed {makeup.value} step of an earlier hour")
    results = run_hour_probes(state, plan, makeup=makeup_phase(makeup) if makeup else None)
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
            "made_up_step": makeup.value if makeup else "none",
        },
    )
    deploy_failed = [r for r in results if r.probe == "deploy" and not r.passed]
    if deploy_failed:
        _stop_after_failed_deploy(store, campaign, deploy_failed[0])
    smoke = [r for r in results if r.probe in ("deploy", "smoke")]
    if plan.runs_smoke_tests and not smoke:
        yield dg.AssetCheckResult(check_name="smoke_tests_4_of_4", passed=False,
                                  severity=dg.AssetCheckSeverity.ERROR,
                                  description="The hour ended before its smoke tests could run.")
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
# A verdict run judges one round (`lifecycle.RoundSpec`): the one its run tag names, else the one the
# campaign's state calls for. Its decision is a pure function of the stored data and the round, and the
# round's transition and notification are recorded once, so re-materializing any verdict asset is safe.


def _round_to_judge(context: dg.AssetExecutionContext, state: CampaignState) -> RoundSpec:
    tags = context.run.tags
    requested = tags.get(TAG_HOUR) if tags.get(TAG_PHASE) == VERDICT_PHASE else None
    try:
        return state.round_to_judge(requested)
    except ConfigError as exc:
        raise dg.Failure(description=str(exc)) from None


@dg.asset(partitions_def=campaign_partitions, io_manager_key="parquet_io_manager", group_name=VERDICT_GROUP,
          kinds={"python", "parquet"})
def final_checks(context: dg.AssetExecutionContext, store: CampaignStore) -> dg.Output[pa.Table]:
    """The runbook's hour-24 tests: a discord and a sovereign identity, and consecutive requests of stable users.

    Run once per round against the target; a re-materialization returns the round's stored rows."""
    state = store.load(context.partition_key)
    round_spec = _round_to_judge(context, state)
    kept = store.layout(state.campaign).round_final_checks_file(round_spec.round_id)
    if kept.exists():
        table = pq.read_table(str(kept))
        return dg.Output(table, metadata={"round": round_spec.round_id, "probed_now": False,
                                          "requests": dg.MetadataValue.int(table.num_rows)})
    results = run_final_checks(state)
    table = records_to_table([record for result in results for record in result.records])
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd")
    atomic_write_bytes(kept, sink.getvalue())
    return dg.Output(table, metadata={"round": round_spec.round_id, "probed_now": True,
                                      **{r.probe: dg.MetadataValue.bool(r.passed) for r in results}})


# The verdict assets read these through `load_campaign_tables`, the loader the verdict CLI re-judges with,
# so both see the same rows (hours never stored are gaps, not errors); Dagster keeps them as lineage.
CAMPAIGN_TABLES = [probe_records, telemetry_events, final_checks]


@dg.asset(
    partitions_def=campaign_partitions,
    io_manager_key="json_io_manager",
    group_name=VERDICT_GROUP,
    kinds={"python"},
    deps=CAMPAIGN_TABLES,
    check_specs=[dg.AssetCheckSpec(name, asset="gate_results", description=description)
                 for name, description in GATE_CHECKS.values()],
)
def gate_results(context: dg.AssetExecutionContext, store: CampaignStore):
    """The five acceptance gates over the stored hours of the round being judged."""
    state = store.load(context.partition_key)
    round_spec = _round_to_judge(context, state)
    policy = campaign_policy(state)
    records, events = load_campaign_tables(store.layout(state.campaign), round_spec)
    gates = evaluate_gates(records, events, policy)
    yield dg.Output(
        {"round": round_spec.model_dump(mode="json"),
         "gates": [dataclasses.asdict(g) for g in gates],
         "hours_observed": sorted(set(events["hour"].astype(int).tolist()))},
        metadata={"round": round_spec.round_id, **{f"gate_{g.gate}": g.status for g in gates}},
    )
    for gate in gates:
        yield dg.AssetCheckResult(
            check_name=GATE_CHECKS[gate.gate][0],
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
    """ACCEPT, EXTEND, REJECT or INCONCLUSIVE for the round, with the rule that fired. The round is recorded once: its
    first record applies it (an EXTEND lengthens the campaign, anything else ends it), a re-run changes
    nothing and keeps the recorded time."""
    campaign = context.partition_key
    round_spec = RoundSpec.model_validate(gate_results["round"])
    state = store.load(campaign)
    policy = campaign_policy(state)
    records, _ = load_campaign_tables(store.layout(campaign), round_spec)
    validator = round_validator_coverage(store.layout(campaign), state, round_spec, records)
    decision, observed, share = decide_round(round_spec, _gate_objects(gate_results),
                                             gate_results["hours_observed"], policy, validator)
    try:
        _, recorded = record_verdict(store.data_root, campaign, VerdictRound(
            round_id=round_spec.round_id, judged_hours=round_spec.judged_hours,
            extension_count=round_spec.extension_count, decision=decision.decision, rule=decision.rule,
            extend_hours=decision.extend_hours, decided_at_ms=int(time.time() * 1000)))
    except IllegalTransition as exc:
        raise dg.Failure(description=str(exc)) from None
    same = (recorded.decision, recorded.rule) == (decision.decision, decision.rule)
    if not same:
        # The stored data changed since the round was decided (an hour re-collected, a policy edited):
        # the campaign keeps the recorded decision; this run shows what the data says now.
        context.log.warning(f"round {round_spec.round_id} was decided {recorded.decision} ({recorded.rule}); "
                            f"the stored data now gives {decision.decision} ({decision.rule})")
    payload = {
        **dataclasses.asdict(decision),
        "campaign": campaign,
        "round": round_spec.round_id,
        "decided_at": pd.Timestamp(recorded.decided_at_ms, unit="ms", tz="UTC").isoformat(),
        "observed_hours": observed,
        "judged_hours": round_spec.judged_hours,
        "coverage": share,
        "validator": validator.as_dict(),
        "extension_count": round_spec.extension_count,
    }
    return dg.Output(payload, metadata={"round": round_spec.round_id, "decision": decision.decision,
                                        "rule": decision.rule, "matches_recorded": same,
                                        "coverage": dg.MetadataValue.float(round(share, 3)),
                                        "probe_coverage": dg.MetadataValue.float(round(validator.probe_coverage, 3)),
                                        "telemetry_coverage": dg.MetadataValue.float(
                                            round(validator.telemetry_coverage, 3)),
                                        "validator_gaps": dg.MetadataValue.int(len(validator.gaps))})


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
    layout = store.layout(state.campaign)
    policy = campaign_policy(state)
    round_spec = RoundSpec.model_validate(gate_results["round"])
    records, events = load_campaign_tables(layout, round_spec)
    gates = _gate_objects(gate_results)
    decision = _decision_object(campaign_decision)
    message = compose_decision_message(decision, gates, policy, state.campaign, campaign_decision["observed_hours"])
    evidence = CampaignEvidence(
        campaign=state.campaign, state=state, records=records, events=events, gates=gates, decision=decision,
        alerts=_alerts(store, state.campaign), hours_observed=campaign_decision["observed_hours"],
        decided_at=pd.Timestamp(campaign_decision["decided_at"]), coverage=campaign_decision["coverage"],
        judged_hours=campaign_decision["judged_hours"], extension_count=campaign_decision["extension_count"],
        validator=coverage_from_dict(campaign_decision["validator"]) if campaign_decision.get("validator") else None,
    )
    paths = write_campaign_outputs(layout, evidence, message)
    report_path = paths["report"]
    return dg.Output(
        {"round": round_spec.round_id,
         "paths": {name: str(path) for name, path in paths.items()},
         "notification": {"subject": message.subject, "body": message.body}},
        metadata={"report": dg.MetadataValue.path(str(report_path)),
                  "round": round_spec.round_id,
                  "decision": decision.decision,
                  "summary": dg.MetadataValue.md(report_path.read_text(encoding="utf-8")[:20000])},
    )


@dg.asset(partitions_def=campaign_partitions, io_manager_key="json_io_manager", group_name=VERDICT_GROUP,
          kinds={"python", "email"})
def decision_notification(context: dg.AssetExecutionContext, store: CampaignStore,
                          acceptance_report: dict) -> dg.Output[dict]:
    """The runbook's message for the round's decision: email and webhook as configured, always a copy in the
    outbox. Sent once per round: a re-run returns the recorded delivery and sends nothing."""
    state = store.load(context.partition_key)
    round_id = acceptance_report["round"]
    recorded = state.verdict_round(round_id)
    if recorded is None:
        raise dg.Failure(description=f"campaign {state.campaign}: round {round_id} has no recorded decision")
    delivery = recorded.notified
    sent_now = delivery is None
    if delivery is None:
        notifier = Notifier(state.settings.notification, local_path(store.layout(state.campaign).outbox_dir))
        delivery = notifier.send(Message(**acceptance_report["notification"]))
        delivery = record_notification(store.data_root, state.campaign, round_id, delivery).notified
        assert delivery is not None
    return dg.Output(
        {"round": round_id, **delivery.model_dump(mode="json")},
        metadata={"round": round_id, "status": delivery.status, "sent_now": sent_now,
                  "eml": dg.MetadataValue.path(delivery.eml)},
    )


# The watch sensor and the run-failure sensor report their alerts against this asset, so they show in the
# UI beside the campaign.
monitor_alerts_asset = dg.AssetSpec(
    "monitor_alerts", partitions_def=campaign_partitions, group_name=VERDICT_GROUP, kinds={"python"},
    description="Alerts raised while the campaign runs (observations; the list lives in alerts.jsonl).",
)

PROBE_ASSETS = [probe_records]
INGESTION_ASSETS = [telemetry_events, metric_snapshots, hourly_report]
HOURLY_ASSETS = PROBE_ASSETS + INGESTION_ASSETS
VERDICT_ASSETS = [final_checks, gate_results, campaign_decision, acceptance_report, decision_notification]
