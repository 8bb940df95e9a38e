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
from staging_validation.acceptance.report import CampaignEvidence, ui_markdown, write_campaign_outputs
from staging_validation.campaign.metadata import (
    DECISION_CHECK,
    DECISION_CHECK_DESCRIPTION,
    TAG_DECISION,
    decision_check_result,
    gate_check_result,
    hour_check_result,
    number,
)
from staging_validation.campaign.partitions import (
    campaign_hour_partitions,
    campaign_partitions,
    split_campaign_hour,
)
from staging_validation.campaign.resources import CampaignStore
from staging_validation.campaign.run_tags import TAG_HOUR, TAG_PHASE, VERDICT_PHASE
from staging_validation.campaign_target import log_follower, unobservable_event_kinds
from staging_validation.collection.recorded_steps import StepStatus, hour_outcomes, hour_records
from staging_validation.config_files import ConfigError
from staging_validation.final_checks import run_final_checks
from staging_validation.hour_capture import capture_until_hour_end, hour_telemetry
from staging_validation.lifecycle import (
    CampaignState,
    IllegalTransition,
    RoundSpec,
    VerdictRound,
    close_campaign,
    record_notification,
    record_verdict,
)
from staging_validation.plan import SNAPSHOT_EVERY_CAMPAIGN_S, ProbeStep, plan_for_hour
from staging_validation.probes.deploy_steps import stored_deploy_steps
from staging_validation.schemas.event_columns import EventKind
from staging_validation.schemas.events import EVENT_SCHEMA
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
GATE_CHECKS = {
    1: ("gate_1_continuity_pack",
        "Gate 1 (critical): every request had its ContinuityPack, none fell back to the default pack, packs built "
        "fast and small enough. FAIL rejects; REVIEW or NO_DATA (too few samples) extends."),
    2: ("gate_2_ambiguity_rate",
        "Gate 2: the organic ambiguity rate and the prompt set's false positives/negatives are within the "
        "policy's band. REVIEW or NO_DATA extends; never a rejection."),
    3: ("gate_3_relationship_determinism",
        "Gate 3 (critical): a stable user's relationship resolves the same on consecutive requests unless a "
        "locked fact overrides it. FAIL rejects; REVIEW or NO_DATA extends."),
    4: ("gate_4_governor_regen",
        "Gate 4: the governor passes without regeneration often enough, and the regen path's p99 latency is "
        "within the policy. FAIL rejects; REVIEW or NO_DATA extends."),
    5: ("gate_5_identity_correctness",
        "Gate 5 (critical): identities resolve, link and never merge. FAIL rejects; NO_DATA extends."),
}
SNAPSHOT_SCHEMA = pa.schema([("at", pa.timestamp("ms", tz="UTC")), ("line", pa.string()), ("snapshot", pa.string())])
HOURLY_REPORT_SCHEMA = pa.schema([("hour", pa.int32()), ("line", pa.string()), ("report", pa.string())])
PACK_KINDS = [EventKind.PACK_BUILT.value, EventKind.PACK_MISSING.value, EventKind.PACK_FALLBACK.value]


def _percent(share: float | None) -> dg.MetadataValue:
    return number(None if share is None or pd.isna(share) else share * 100, 1)


def _is_stopped(store: CampaignStore, campaign: str) -> bool:
    return not store.load(campaign).status.collecting


# --- hourly ---------------------------------------------------------------------------------------


@dg.asset(
    partitions_def=campaign_hour_partitions,
    io_manager_key="parquet_io_manager",
    group_name=HOURLY_GROUP,
    kinds={"python", "parquet"},
    check_specs=[
        dg.AssetCheckSpec("smoke_tests_4_of_4", asset="probe_records",
                          description="Every round of the four smoke tests passed (hours 0 and 1; other hours "
                                      "have none and pass)."),
        dg.AssetCheckSpec("no_identity_merge_by_probe", asset="probe_records",
                          description="The hourly identity watch saw no two identities share an id."),
        dg.AssetCheckSpec("probe_rows_stored", asset="probe_records",
                          description="The hour stored at least one probe request (every hour probes at least "
                                      "identity); 0 rows is a gap in the campaign, flagged as a warning."),
    ],
)
def probe_records(context: dg.AssetExecutionContext, store: CampaignStore):
    """The hour's probe requests, one row each, as the collector recorded them while the hour was current.

    Reads the recorded steps only (never probes): re-materializing an hour gives the same table."""
    campaign, hour = split_campaign_hour(context.partition_key)
    state = store.load(campaign)
    plan = plan_for_hour(hour, state.planned_hours)
    table = hour_records(store.data_root, campaign, hour)
    outcomes = hour_outcomes(store.data_root, campaign, hour)
    frame = table.to_pandas()
    ran = [o for o in outcomes.values() if o.status is StepStatus.RAN]
    failures = [f"{o.step}: {failure}" for o in ran for failure in o.failures]
    yield dg.Output(
        table,
        metadata={
            "phase": plan.phase.value,
            "requests": dg.MetadataValue.int(table.num_rows),
            "steps_ran": dg.MetadataValue.json(sorted(o.step.value for o in ran)),
            "steps_not_run": dg.MetadataValue.json({o.step.value: o.reason for o in outcomes.values()
                                                    if o.status is StepStatus.NOT_RUN}),
            "steps_unrecorded": dg.MetadataValue.json([s.value for s in plan.steps if s not in outcomes]),
            "failed_probes": dg.MetadataValue.int(sum(not o.passed for o in ran)),
            "connection_errors": dg.MetadataValue.int(int((frame["outcome"] == "connection_error").sum())),
            "failures": dg.MetadataValue.md("\n".join(f"- {f}" for f in failures) or "none"),
        },
    )
    smoke = [o for o in ran if o.step in (ProbeStep.DEPLOY_VERIFICATION, ProbeStep.SMOKE_LOOP)]
    smoke_failed = sum(o.passed is False for o in smoke)
    if plan.runs_smoke_tests and not smoke:
        yield hour_check_result("smoke_tests_4_of_4", campaign, hour, False,
                                "FAIL: the smoke tests were not run in their hour (a validator gap).",
                                dg.AssetCheckSeverity.ERROR, value=None, threshold=0, samples=0)
    else:
        yield hour_check_result(
            "smoke_tests_4_of_4", campaign, hour, all(o.passed for o in smoke),
            (f"no smoke tests in the {plan.phase.value} phase" if not smoke else "all smoke tests passed"
             if all(o.passed for o in smoke) else "FAIL: " + "; ".join(o.failures[0] for o in smoke if o.failures)),
            dg.AssetCheckSeverity.ERROR, value=smoke_failed, threshold=0, samples=len(smoke),
            value_is="failed smoke steps", threshold_is="failed smoke steps allowed",
        )
    merges = identity_merges(with_hour(frame, state.timing), EVENT_SCHEMA.empty_table().to_pandas())
    yield hour_check_result(
        "no_identity_merge_by_probe", campaign, hour, merges.empty,
        "no two identities share an id" if merges.empty else f"FAIL: {len(merges)} accidental identity merge(s)",
        dg.AssetCheckSeverity.ERROR, value=len(merges), threshold=0, samples=int((frame["probe"] == "identity").sum()),
        value_is="merged identities", threshold_is="merges allowed",
    )
    yield hour_check_result(
        "probe_rows_stored", campaign, hour, len(frame) > 0,
        f"{len(frame)} probe requests stored" if len(frame) else
        "no probe request stored: this hour is a gap (its probes did not run)",
        dg.AssetCheckSeverity.WARN, value=len(frame), threshold=1, samples=len(frame),
        value_is="probe rows", threshold_is="rows expected at least",
    )


@dg.asset(
    partitions_def=campaign_hour_partitions,
    io_manager_key="parquet_io_manager",
    group_name=HOURLY_GROUP,
    kinds={"python", "parquet"},
    check_specs=[
        dg.AssetCheckSpec("no_missing_pack", asset="telemetry_events",
                          description="No request of the hour ran without a ContinuityPack (monitor rule, critical)."),
        dg.AssetCheckSpec("no_identity_merge", asset="telemetry_events",
                          description="No two identities of the hour's telemetry share an id (monitor rule, "
                                      "critical)."),
        dg.AssetCheckSpec("errors_within_monitor_threshold", asset="telemetry_events",
                          description="No 5-minute window of the hour had more error lines (level ≥ 50) than the "
                                      "monitor allows (a warning, not a gate)."),
        dg.AssetCheckSpec("slow_requests_within_monitor_threshold", asset="telemetry_events",
                          description="No 5-minute window of the hour had more slow requests than the monitor "
                                      "allows (a warning, not a gate)."),
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
    share = parsed.line_counts().readable_share
    events = parsed.events.to_pandas()
    kinds = events["kind"].value_counts().to_dict()
    yield dg.Output(
        parsed.events,
        metadata={
            "lines": dg.MetadataValue.int(parsed.lines_total),
            "unparsed_lines": dg.MetadataValue.int(parsed.unparsed_lines),
            # JSON log records over all lines; unparsed lines by reason (not JSON, oversize, bad/out-of-window time)
            "readable_share": number(share),
            "unparsed_by_reason": dg.MetadataValue.json(parsed.rejected),
            "invalid_utf8_lines": dg.MetadataValue.int(parsed.invalid_utf8_lines),
            "lines_by_source": dg.MetadataValue.json(parsed.by_source),
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

    rules = policy.monitor
    completed = int((events["kind"] == EventKind.REQUEST_COMPLETED.value).sum())

    def check(name: str, rule_prefix: str, severity: dg.AssetCheckSeverity, threshold: object, samples: int,
              value_is: str, threshold_is: str):
        hits = [a for a in alerts if a.rule.startswith(rule_prefix)]
        label = "FAIL" if severity == dg.AssetCheckSeverity.ERROR else "WARNING"
        return hour_check_result(
            name, campaign, hour, not hits,
            f"{label}: " + "; ".join(a.message for a in hits) if hits else "within the monitor's rules",
            severity, value=max((a.count for a in hits), default=0), threshold=threshold, samples=samples,
            value_is=value_is, threshold_is=threshold_is, alerts=dg.MetadataValue.int(len(hits)),
        )

    yield check("no_missing_pack", "monitor.missing_pack", dg.AssetCheckSeverity.ERROR, 0,
                int(events["kind"].isin(PACK_KINDS).sum()),
                "missing packs in the worst window", "missing packs allowed")
    yield check("no_identity_merge", "monitor.identity_merge", dg.AssetCheckSeverity.ERROR, 0,
                int((events["kind"] == EventKind.IDENTITY_OP.value).sum()), "merges in the worst window",
                "merges allowed")
    yield check("errors_within_monitor_threshold", "monitor.errors", dg.AssetCheckSeverity.WARN,
                rules.errors_warning_above, len(events), "error lines in the worst window",
                "error lines allowed per window")
    yield check("slow_requests_within_monitor_threshold", "monitor.slow", dg.AssetCheckSeverity.WARN,
                rules.slow_requests_warning_above, completed,
                f"requests ≥ {rules.slow_request_ms:g} ms in the worst window", "slow requests allowed per window")


@dg.asset(
    partitions_def=campaign_hour_partitions,
    io_manager_key="parquet_io_manager",
    group_name=HOURLY_GROUP,
    kinds={"python", "parquet"},
)
def metric_snapshots(context: dg.AssetExecutionContext, store: CampaignStore, probe_records: pa.Table,
                     telemetry_events: pa.Table) -> dg.Output[pa.Table]:
    """metrics-snapshot.sh every 30 campaign-minutes, computed from the hour's stored data."""
    campaign, hour = split_campaign_hour(context.partition_key)
    state = store.load(campaign)
    records, events = probe_records.to_pandas(), telemetry_events.to_pandas()
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
)
def hourly_report(context: dg.AssetExecutionContext, probe_records: pa.Table,
                  telemetry_events: pa.Table) -> dg.Output[pa.Table]:
    """hourly-report.sh: the hour's numbers, also as metadata so the UI plots them across hours."""
    _, hour = split_campaign_hour(context.partition_key)
    report = summarize_hour(probe_records.to_pandas(), telemetry_events, hour=hour)
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
            "latency_p50_ms": number(latency["p50"], 1),
            "latency_p99_ms": number(latency["p99"], 1),
            "ambiguity_rate_percent": _percent(report["ambiguity"]["organic_rate"]),
            "zero_regen_share_percent": _percent(report["governor"]["zero_regeneration_share"]),
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
    gates = evaluate_gates(records, events, policy, unobservable_event_kinds(state))
    hours_observed = sorted(set(events["hour"].astype(int).tolist()))
    yield dg.Output(
        {"round": round_spec.model_dump(mode="json"),
         "gates": [dataclasses.asdict(g) for g in gates],
         "hours_observed": hours_observed},
        metadata={"round": round_spec.round_id, **{f"gate_{g.gate}": g.status for g in gates}},
    )
    for gate in gates:
        yield gate_check_result(GATE_CHECKS[gate.gate][0], gate, state.campaign, hours_observed)


def _gate_objects(payload: dict) -> list[GateResult]:
    return [GateResult(**g) for g in payload["gates"]]


@dg.asset(partitions_def=campaign_partitions, io_manager_key="json_io_manager", group_name=VERDICT_GROUP,
          kinds={"python"},
          check_specs=[dg.AssetCheckSpec(DECISION_CHECK, asset="campaign_decision",
                                         description=DECISION_CHECK_DESCRIPTION)])
def campaign_decision(context: dg.AssetExecutionContext, store: CampaignStore, gate_results: dict):
    """ACCEPT, EXTEND, REJECT or INCONCLUSIVE (the validator missed the evidence) for the round, with the rule
    that fired. The round is recorded once: its
    first record applies it (an EXTEND lengthens the campaign, anything else ends it), a re-run changes
    nothing and keeps the recorded time."""
    campaign = context.partition_key
    round_spec = RoundSpec.model_validate(gate_results["round"])
    state = store.load(campaign)
    validator = round_validator_coverage(store.data_root, state, round_spec)
    decision, observed, share = decide_round(round_spec, _gate_objects(gate_results),
                                             gate_results["hours_observed"], campaign_policy(state), validator)
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
        "extension_count": round_spec.extension_count,
        "validator": validator.as_dict(),
    }
    if store.load(campaign).settings.first_verdict_only:
        close_campaign(store.data_root, campaign)  # the EXTEND is recorded and notified, its hours not run
    # The verdict run carries its decision, so the runs list shows it without opening anything.
    context.instance.add_run_tags(context.run.run_id, {TAG_DECISION: decision.decision})
    yield dg.Output(payload, metadata={"round": round_spec.round_id, "decision": decision.decision,
                                       "rule": decision.rule, "matches_recorded": same,
                                       "coverage": dg.MetadataValue.float(round(share, 3)),
                                       "probe_coverage": dg.MetadataValue.float(round(validator.probe_coverage, 3)),
                                       "validator_gaps": dg.MetadataValue.int(len(validator.gaps))})
    yield decision_check_result(payload)


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
    telemetry = log_follower(store.data_root, state)
    evidence = CampaignEvidence(
        campaign=state.campaign, state=state, records=records, events=events, gates=gates, decision=decision,
        alerts=_alerts(store, state.campaign), hours_observed=campaign_decision["observed_hours"],
        decided_at=pd.Timestamp(campaign_decision["decided_at"]), coverage=campaign_decision["coverage"],
        judged_hours=campaign_decision["judged_hours"], extension_count=campaign_decision["extension_count"],
        telemetry_lines=telemetry.line_counts(), telemetry_mappings=telemetry.mappings,
        validator=round_validator_coverage(store.data_root, state, round_spec),
        deploy_steps=stored_deploy_steps(store.data_root, state.campaign),
    )
    paths = write_campaign_outputs(layout, evidence, message)
    report_path = paths["report"]
    return dg.Output(
        {"round": round_spec.round_id,
         "paths": {name: str(path) for name, path in paths.items()},
         "notification": {"subject": message.subject, "body": message.body}},
        metadata={"round": round_spec.round_id,
                  "decision": decision.decision,
                  "rule": decision.rule,
                  # Charts embedded: a relative link would resolve against the UI's own page.
                  "report": dg.MetadataValue.md(ui_markdown(report_path.read_text(encoding="utf-8"), layout)),
                  "report_file": dg.MetadataValue.path(str(report_path)),
                  "decision_file": dg.MetadataValue.path(str(paths["decision"]))},
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

HOURLY_ASSETS = [probe_records, telemetry_events, metric_snapshots, hourly_report]
VERDICT_ASSETS = [final_checks, gate_results, campaign_decision, acceptance_report, decision_notification]
