"""A decided campaign's outputs: decision.json, the filled STAGING_ACCEPTANCE_REPORT.md with its charts,
and the runbook's staging-validation-metrics.txt. Every file is written atomically.
"""

from __future__ import annotations

import base64
import dataclasses
import io
import json
import re
import shlex
import textwrap
from collections.abc import Sequence
from datetime import datetime

import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from staging_validation.acceptance.alert_rules import Alert
from staging_validation.acceptance.decision import Decision
from staging_validation.acceptance.gates import (
    GateResult,
    StressResult,
    ambiguity_checks_counted,
    not_exposed_items,
    percent_text,
    stress_result,
)
from staging_validation.acceptance.notify import Message
from staging_validation.acceptance.policy import Policy, campaign_policy
from staging_validation.collection.validator_gaps import VALIDATOR_ALERT_PREFIX, ValidatorCoverage
from staging_validation.config_files import ConfigError
from staging_validation.layout import CHARTS_DIR, REPORT_NAME, CampaignLayout
from staging_validation.lifecycle import CampaignState
from staging_validation.probes.deploy_steps import DeployStepRun
from staging_validation.schemas.event_columns import EventKind
from staging_validation.schemas.outcome import NOT_SENT
from staging_validation.schemas.telemetry_mapping import TelemetryMapping
from staging_validation.storage import DataPath, atomic_write_bytes, atomic_write_text
from staging_validation.target.profile import ProbedRoute, load_target_profile
from staging_validation.telemetry.aggregates import (
    NOT_OBSERVED,
    LineCounts,
    final_metrics,
    render_final_metrics_text,
)

CHART_FILES = {
    "latency": "latency_by_hour.png",
    "ambiguity": "ambiguity_rate_by_hour.png",
    "governor": "governor_attempts.png",
    "requests": "requests_per_hour.png",
}
# Where the report links them: relative to the report, which sits in the campaign folder.
CHARTS = {key: f"{CHARTS_DIR}/{name}" for key, name in CHART_FILES.items()}


@dataclasses.dataclass
class CampaignEvidence:
    """What a decision was made on. `judged_hours` and `extension_count` are the campaign's as the decision
    saw them: `state` may already be lengthened by the EXTEND being reported."""

    campaign: str
    state: CampaignState
    records: pd.DataFrame
    events: pd.DataFrame
    gates: list[GateResult]
    decision: Decision
    alerts: list[Alert]
    hours_observed: list[int]
    decided_at: datetime
    coverage: float  # share of the judged hours with data, as the decision used it
    judged_hours: int  # hours 0..judged_hours-1 are the ones this decision covers
    extension_count: int  # extensions that ran before this decision
    # The captured log's line counts (its readable share) and the sources' mappings (which kinds the
    # telemetry could show); None: not known to the caller, the report then says nothing of them.
    telemetry_lines: LineCounts | None = None
    telemetry_mappings: list[TelemetryMapping] | None = None
    policy: Policy | None = None  # the policy the gates used; None: the campaign's own
    validator: ValidatorCoverage | None = None  # what the validator collected; None: not known to the caller
    deploy_steps: list[DeployStepRun] = dataclasses.field(default_factory=list)  # hour 0's, as recorded

    def stress(self) -> StressResult | None:
        return stress_result(self.records, self.policy or campaign_policy(self.state))

    def probed_routes(self) -> list[ProbedRoute]:
        """The target profile's routes (the probed ones), or none when the profile cannot be read any more."""
        try:
            return load_target_profile(self.state.settings.target_profile).probed_routes()
        except ConfigError:
            return []


def write_campaign_outputs(layout: CampaignLayout, evidence: CampaignEvidence,
                           notification: Message) -> dict[str, DataPath]:
    metrics = final_metrics(evidence.records, evidence.events, lines=evidence.telemetry_lines,
                            mappings=evidence.telemetry_mappings)
    hourly = hourly_series(evidence.events, evidence.probed_routes())
    written: dict[str, DataPath] = {}
    for key, name in CHART_FILES.items():
        written[f"chart_{key}"] = layout.chart_file(name)
        atomic_write_bytes(written[f"chart_{key}"], _CHART_RENDERERS[key](hourly, metrics, evidence))
    written["metrics"] = layout.metrics_file
    atomic_write_text(written["metrics"], render_final_metrics_text(metrics))
    written["decision"] = layout.decision_file
    atomic_write_text(written["decision"], json.dumps(decision_document(evidence, notification), indent=2) + "\n")
    # The report last: its presence means every file it links to is already in place.
    written["report"] = layout.report_file
    atomic_write_text(written["report"], render_report(evidence, notification, metrics, hourly))
    return written


CHART_LINK = re.compile(rf"!\[([^\]]*)\]\({CHARTS_DIR}/([\w.-]+\.png)\)")
UI_CODE_WIDTH = 110  # characters of a code line the UI's markdown view shows without scrolling sideways
UI_CODE_LINES_PER_ITEM = 4  # wrapped lines kept of one evidence line; the report file has it whole


def ui_markdown(report_markdown: str, layout: CampaignLayout) -> str:
    """The report as a browser shows it from anywhere, e.g. in the Dagster UI's markdown view: every chart
    embedded as a PNG data URI (a relative link would resolve against the viewer's own page, not the
    campaign folder), and long lines of code blocks (the evidence) wrapped, each cut after a few lines."""

    def embedded(match: re.Match) -> str:
        data = base64.b64encode(layout.chart_file(match.group(2)).read_bytes()).decode("ascii")
        return f"![{match.group(1)}](data:image/png;base64,{data})"

    lines, in_code = [], False
    for line in CHART_LINK.sub(embedded, report_markdown).split("\n"):
        if line.startswith("```"):
            in_code = not in_code
        elif in_code and len(line) > UI_CODE_WIDTH:
            wrapped = textwrap.wrap(line, UI_CODE_WIDTH, subsequent_indent="    ", break_long_words=True,
                                    break_on_hyphens=False)
            kept = wrapped[:UI_CODE_LINES_PER_ITEM]
            if len(wrapped) > len(kept):
                cut = f" … (cut: the whole line is in {REPORT_NAME})"
                kept[-1] = kept[-1][: UI_CODE_WIDTH - len(cut)] + cut
            lines += kept
            continue
        lines.append(line)
    return "\n".join(lines)


def decision_document(evidence: CampaignEvidence, notification: Message) -> dict:
    """decision.json; `extension.count` is how many extensions ran before this decision and
    `extension.hours` how many hours this decision adds (0 unless EXTEND continues the campaign)."""
    decision = evidence.decision
    return {
        "campaign": evidence.campaign,
        "decision": decision.decision,
        "rule": decision.rule,
        "decided_at": evidence.decided_at.isoformat(),
        "observed_hours": sorted(evidence.hours_observed),
        "coverage": evidence.coverage,
        "validator": evidence.validator.as_dict() if evidence.validator else None,
        "extension": {"count": evidence.extension_count, "hours": decision.extend_hours},
        "gates": [{"gate": g.gate, "name": g.name, "critical": g.critical, "status": g.status,
                   "metrics": g.metrics, "thresholds": g.thresholds, "samples": g.samples, "reason": g.reason}
                  for g in evidence.gates],
        "action_items": decision.action_items,
        "stress": dataclasses.asdict(stress) if (stress := evidence.stress()) is not None else None,
        "notification": {"subject": notification.subject, "body": notification.body},
    }


# --- numbers by hour ----------------------------------------------------------------------------


def _on_route(frame: pd.DataFrame, route: ProbedRoute) -> pd.DataFrame:
    paths = frame["route"].astype("string").fillna("")
    return frame[paths.map(route.matches).astype(bool)]


def hourly_series(events: pd.DataFrame, routes: list[ProbedRoute]) -> pd.DataFrame:
    """Per campaign hour: requests (all traffic), the chat route's latency p50/p95/p99 (ms; never mixed
    with other routes' traffic, such as unrelated 404s), ambiguity rate."""
    completed = events[events["kind"] == EventKind.REQUEST_COMPLETED.value]
    chat = next((route for route in routes if "chat" in route.operations), None)
    by_hour = (_on_route(completed, chat) if chat else completed.iloc[0:0]).groupby("hour")["duration_ms"]
    counted, _ = ambiguity_checks_counted(events)
    table = pd.DataFrame({
        "requests": completed.groupby("hour").size(),
        "p50_ms": by_hour.quantile(0.50),
        "p95_ms": by_hour.quantile(0.95),
        "p99_ms": by_hour.quantile(0.99),
        "ambiguity_rate": counted.groupby("hour")["status"].apply(lambda s: (s == "AMBIGUOUS").mean()),
    })
    table.index.name = "hour"
    return table.sort_index()


# --- charts -------------------------------------------------------------------------------------


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    FigureCanvasAgg(figure).print_png(buffer)
    return buffer.getvalue()


def _axes(title: str, ylabel: str):
    figure = Figure(figsize=(8, 3.6), dpi=100, layout="constrained")
    axes = figure.add_subplot()
    axes.set_title(title)
    axes.set_xlabel("campaign hour")
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))  # hours are whole: no 0.5 ticks
    axes.set_ylabel(ylabel)
    axes.grid(alpha=0.3)
    return figure, axes


def _no_data(axes, what: str) -> None:
    axes.text(0.5, 0.5, f"no {what} observed", ha="center", va="center", transform=axes.transAxes)


def _latency_chart(hourly: pd.DataFrame, metrics: dict, evidence: CampaignEvidence) -> bytes:
    figure, axes = _axes("Chat route latency by hour (telemetry duration_ms)", "ms")
    if hourly["p50_ms"].notna().any():
        for column, label in (("p50_ms", "p50"), ("p95_ms", "p95"), ("p99_ms", "p99")):
            axes.plot(hourly.index, hourly[column], marker="o", markersize=3, label=label)
        axes.legend()
    else:
        _no_data(axes, "requests")
    return _png(figure)


def _ambiguity_chart(hourly: pd.DataFrame, metrics: dict, evidence: CampaignEvidence) -> bytes:
    figure, axes = _axes("Ambiguity rate by hour", "% of requests flagged")
    rates = hourly["ambiguity_rate"].dropna()
    if len(rates):
        axes.plot(rates.index, rates * 100, marker="o", markersize=3, label="ambiguity rate")
        gate = next((g for g in evidence.gates if g.gate == 2), None)
        if gate:
            axes.axhline(gate.thresholds["rate_review_at_or_above"] * 100, color="orange", ls="--", label="review")
            axes.axhline(gate.thresholds["rate_extend_above"] * 100, color="red", ls="--", label="extend")
        axes.legend()
    else:
        _no_data(axes, "ambiguity checks")
    return _png(figure)


def _governor_chart(hourly: pd.DataFrame, metrics: dict, evidence: CampaignEvidence) -> bytes:
    figure, axes = _axes("Governor: attempt on which each request passed", "requests")
    axes.set_xlabel("attempt (1 = no regeneration)")
    distribution = metrics["governor"]["passed_attempt_distribution"]
    if distribution:
        attempts = sorted(distribution, key=int)
        axes.bar(attempts, [distribution[a] for a in attempts])
    else:
        _no_data(axes, "governor passes")
    return _png(figure)


def _requests_chart(hourly: pd.DataFrame, metrics: dict, evidence: CampaignEvidence) -> bytes:
    figure, axes = _axes("Requests per hour (all traffic, from telemetry)", "requests")
    if hourly["requests"].notna().any():
        axes.bar(hourly.index, hourly["requests"].fillna(0))
    else:
        _no_data(axes, "requests")
    return _png(figure)


def hourly_summary_chart(hours: pd.DataFrame, campaign: str) -> bytes:
    """One campaign's hours: requests as bars, p50/p99 latency as lines; hours without data stay empty.
    `hours` is indexed by hour with columns requests, latency_p50_ms, latency_p99_ms."""
    figure, axes = _axes(f"{campaign}: requests and latency by hour", "requests")
    axes.bar(hours.index, hours["requests"].astype(float).fillna(0), color="#9ecae1", label="requests")
    latency = axes.twinx()
    latency.set_ylabel("ms")
    for column, label in (("latency_p50_ms", "p50"), ("latency_p99_ms", "p99")):
        latency.plot(hours.index, hours[column].astype(float), marker="o", markersize=3, label=label)
    figure.legend(loc="outside upper right", ncols=3)
    return _png(figure)


_CHART_RENDERERS = {"latency": _latency_chart, "ambiguity": _ambiguity_chart, "governor": _governor_chart,
                    "requests": _requests_chart}


# --- the report ---------------------------------------------------------------------------------


def _fmt(value: object, unit: str = "") -> str:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return "not measured"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:,.0f}{unit}" if value.is_integer() else f"{value:,.1f}{unit}"
    return f"{value}{unit}"


def _table(header: list[str], rows: Sequence[Sequence[object]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell).replace("|", "\\|").replace("\n", " ") for cell in row) + " |"
              for row in rows]
    return lines


def _gate_measurements(gate: GateResult) -> list[list[str]]:
    """Metric / target / actual rows for one gate, and what the target profile declares not exposed."""
    unexposed = gate.metrics.get("not_exposed") or []
    return _measured_rows(gate) + [["Not exposed by the target (profile)", "—", "; ".join(unexposed)]
                                   for _ in unexposed[:1]]


def _measured_rows(gate: GateResult) -> list[list[str]]:
    m, t = gate.metrics, gate.thresholds
    min_samples = t["min_samples"]
    unseen = m.get("not_observed") or {}  # kinds the telemetry can never show: never a 0 that reads as clean

    def count(kind: EventKind, value: object) -> str:
        return NOT_OBSERVED if kind.value in unseen else _fmt(value)

    if gate.gate == 1:
        return [["Missing-pack events", "0", count(EventKind.PACK_MISSING, m["missing_packs"])],
                ["Default-pack fallbacks", "0", count(EventKind.PACK_FALLBACK, m["fallbacks"])],
                ["Packs built", f"≥ {min_samples}", count(EventKind.PACK_BUILT, m["pack_builds"])],
                ["Pack build latency p50", f"≤ {t['build_p50_ms_review_above']:g} ms",
                 _fmt(m["build_p50_ms"], " ms")],
                ["Pack size p50", f"≤ {t['size_p50_bytes_review_above']} bytes", _fmt(m["size_p50_bytes"], " bytes")]]
    if gate.gate == 2:
        return [["Ambiguity rate",
                 f"< {percent_text(t['rate_review_at_or_above'])} (review to {percent_text(t['rate_extend_above'])})",
                 NOT_OBSERVED if EventKind.AMBIGUITY_CHECK.value in unseen else
                 f"{percent_text(m['rate'])} ({m['ambiguous_counted']} of {m['checks_counted']})"],
                ["Denominator", "organic requests", m["denominator"]],
                ["Probe checks excluded", "—", count(EventKind.AMBIGUITY_CHECK, m["probe_checks_excluded"])],
                ["Prompt-set false-positive rate", f"≤ {percent_text(t['false_positive_rate_review_above'])}",
                 f"{percent_text(m['false_positive_rate'])} ({m['false_positives']} prompts)"],
                ["Prompt-set false-negative rate", f"≤ {percent_text(t['false_negative_rate_review_above'])}",
                 f"{percent_text(m['false_negative_rate'])} ({m['false_negatives']} prompts)"],
                ["Labelled prompt-set results", f"≥ {min_samples}", _fmt(m["prompt_set_labelled"])]]
    if gate.gate == 3:
        return [["Probe users with consecutive requests", f"≥ 1 user × {t['consecutive_requests']} requests",
                 _fmt(m["probe_users_checked"])],
                ["Probe users with differing contexts", "0", _fmt(m["probe_users_disagreeing"])],
                ["Relationship resolutions in telemetry", f"≥ {min_samples}",
                 NOT_OBSERVED if EventKind.RELATIONSHIP_RESOLVED.value in unseen else
                 f"{m['telemetry_resolutions']} for {m['telemetry_users']} users"],
                ["Context changes without locked-fact override", "0",
                 count(EventKind.RELATIONSHIP_RESOLVED, m["changes_unexplained"])],
                ["Context changes by locked-fact override", "0 (else REVIEW)",
                 count(EventKind.RELATIONSHIP_RESOLVED, m["changes_explained_by_locked_fact"])]]
    if gate.gate == 4:
        p99_target = f"≤ {t['regen_p99_ms_extend_above']:g} ms"
        p99_actual = _fmt(m["regen_p99_ms"], " ms") + ("" if m["regen_p99_judged"] else
                                                      f" (not judged: {m['regen_requests']} requests)")
        return [["Requests passing on 0 regenerations",
                 f"> {percent_text(t['zero_regen_pass_above'])} (fail < {percent_text(t['zero_regen_fail_below'])})",
                 NOT_OBSERVED if EventKind.GOVERNOR_PASS.value in unseen else
                 f"{percent_text(m['zero_regen_share'])} ({m['zero_regen_requests']} of {m['requests_passed']})"],
                ["Regen-path latency p99", p99_target, p99_actual]]
    return [["Accidental identity merges", "0", _fmt(m["merges"])],
            ["Failed identity checks", "0", f"{m['probe_checks_failed']} of {m['probe_checks']}"],
            ["Checks completed (create, lookup, link)", "all three",
             ", ".join(f"{name}: {'yes' if seen else 'no'}" for name, seen in m["checks_seen"].items())],
            ["Identity operations in telemetry", "—", count(EventKind.IDENTITY_OP, m["telemetry_identity_ops"])]]


def _evidence_lines(gate: GateResult) -> list[str]:
    if not gate.evidence:
        return ["No sample lines: nothing relevant was observed."]
    lines = ["```"]
    for item in gate.evidence:
        shown = item.get("line") if "line" in item else json.dumps(item.get("row"), default=str)
        lines.append(f"{item['time']} (hour {item['hour']}): {shown}")
    return lines + ["```"]


def _passed_text(rows: pd.DataFrame) -> str:
    return f"{int((rows['passed'] == True).sum())}/{len(rows)}"  # noqa: E712 (nullable column)


def _code_span(text: str) -> str:
    """`text` as inline code, whatever backticks it holds (the report does not control a command)."""
    fence = "`" * (1 + max((len(run) for run in re.findall(r"`+", text)), default=0))
    return f"{fence} {text} {fence}" if fence != "`" else f"`{text}`"


def _deploy_step_rows(steps: list[DeployStepRun]) -> list[list[str]]:
    rows = []
    for step in steps:
        result = "PASS" if step.passed else "FAIL"
        if step.exit_code is not None:
            detail = f"exit code {step.exit_code} after {step.duration_s:.1f} s"
        else:
            detail = f"{step.error} (after {step.duration_s:.1f} s)"
        rows.append([f"{step.step.capitalize()} step {_code_span(shlex.join(step.argv))}", result, detail])
    return rows


def _deploy_step_outputs(steps: list[DeployStepRun]) -> list[str]:
    """Each step's stored output, fenced: already bounded to its head and tail, secrets masked."""
    lines = []
    for step in steps:
        output = step.output.rstrip("\n") or "(no output)"
        fence = "`" * max(3, 1 + max((len(run) for run in re.findall(r"`+", output)), default=0))
        lines += [f"Output of the {step.step} step ({step.output_bytes} bytes printed; stored bounded to its head "
                  "and tail, secrets masked):", "", fence, output, fence, ""]
    return lines


def _deploy_section(records: pd.DataFrame, steps: list[DeployStepRun] | None = None) -> list[str]:
    """Hour 0's deploy steps (migrate, deploy: exit code, duration, output), the deploy verification (health
    with its feature check, the four smoke tests) and the smoke loop."""
    steps = steps or []
    deploy = records[records["probe"] == "deploy"]
    health = deploy[deploy["case"] == "health"].sort_values("time")
    first_smoke = deploy[deploy["case"] != "health"]
    loop = records[(records["probe"] == "smoke") & records["passed"].notna()]
    rows = _deploy_step_rows(steps)
    failed_step = next((step for step in steps if not step.passed), None)
    if not len(deploy) and failed_step is not None:
        not_run = f"not run: the {failed_step.step} step failed"
        rows += [["Health", "NOT RUN", not_run], ["Smoke tests (deploy verification)", "NOT RUN", not_run]]
    elif len(health):
        first = health.iloc[0]
        status = "n/a" if pd.isna(first["http_status"]) else int(first["http_status"])
        rows.append(["Health", "PASS" if first["outcome"] == "ok" else "FAIL",
                     f"HTTP {status} at {first['time'].isoformat()} ({first['outcome']})"])
        unexposed = not_exposed_items(health.iloc[[0]], "extract.health_features")
        if first["passed"] == True:  # noqa: E712 (nullable column)
            features = ("all enabled", "checked by deploy verification")
        elif unexposed and pd.isna(first["passed"]):
            features = ("CANNOT VERIFY", "not exposed: " + "; ".join(unexposed))
        else:
            features = ("NOT all enabled", first["error"] if isinstance(first["error"], str) else "not checked")
        rows.append(["Features (ambiguity gate, relationship model, identity spine, continuity pack)", *features])
    else:
        rows.append(["Health", "NOT RECORDED", "no deploy verification was stored for this campaign"])
    if len(deploy) or failed_step is None:
        failures = first_smoke[first_smoke["passed"] == False]  # noqa: E712
        unverified = first_smoke[first_smoke["passed"].isna()]
        cannot = "; ".join(f"{r.case}: cannot verify "
                           f"({r.not_exposed if isinstance(r.not_exposed, str) else r.outcome})"
                           for r in unverified.itertuples())
        problems = [*(f"{r.case}: {r.error}" for r in failures.itertuples()), *([cannot] if cannot else [])]
        rows.append(["Smoke tests (deploy verification)",
                     _passed_text(first_smoke) if len(first_smoke) else "NOT RECORDED",
                     "; ".join(problems) or ", ".join(first_smoke["case"].tolist()) or "no deploy smoke test stored"])
    loop_failures = loop[loop["passed"] == False]  # noqa: E712
    rows.append(["Smoke loop (every 5 minutes, hour 1)", _passed_text(loop) if len(loop) else "NOT RECORDED",
                 f"{len(loop_failures)} failed" + (f", first at {loop_failures['time'].min().isoformat()}"
                                                  if len(loop_failures) else "")])
    return ["## 1. Deployment status", "", *_table(["Check", "Result", "Detail"], rows), "",
            *_deploy_step_outputs(steps)]


def _route_latency_rows(evidence: CampaignEvidence) -> list[list[object]]:
    """Latency per probed route, telemetry and probes side by side: one route's figures are never mixed
    with another's (nor with traffic to routes the validator does not probe)."""
    completed = evidence.events[evidence.events["kind"] == EventKind.REQUEST_COMPLETED.value]
    sent = evidence.records[~evidence.records["outcome"].isin(NOT_SENT)]
    rows = []
    for route in evidence.probed_routes():
        logged = _on_route(completed, route)["duration_ms"].dropna()
        probed = _on_route(sent, route)["latency_ms"].dropna()
        if not len(logged) and not len(probed):
            continue
        rows.append([route.label, len(logged), *(_fmt(float(logged.quantile(q)) if len(logged) else None, " ms")
                                          for q in (0.5, 0.95, 0.99)),
                     len(probed), *(_fmt(float(probed.quantile(q)) if len(probed) else None, " ms")
                                    for q in (0.5, 0.95, 0.99))])
    return rows


def _stress_lines(stress: StressResult | None) -> list[str]:
    if stress is None:
        return ["### Stress test (hour 7)", "", "No stress request was stored.", ""]
    status = {True: "VALID", False: "INVALID", None: "NO DATA"}[stress.valid]
    outcomes = ", ".join(f"{n} {o}" for o, n in stress.outcomes.items()) or "none"
    lines = ["### Stress test (hour 7)", "",
             f"**{status}.** {stress.reason} Outcomes of the {stress.sent} sent: {outcomes}.", ""]
    if stress.latency_by_route:
        lines += _table(["Route (probe latency from intended send time)", "p50", "p95", "p99"],
                        [[route, _fmt(p["p50_ms"], " ms"), _fmt(p["p95_ms"], " ms"), _fmt(p["p99_ms"], " ms")]
                         for route, p in stress.latency_by_route.items()]) + [""]
    return lines


def _operational_section(metrics: dict, hourly: pd.DataFrame, evidence: CampaignEvidence) -> list[str]:
    requests, probes = metrics["requests"], metrics["probes"]
    per_hour = hourly["requests"].dropna()

    def share(count: int, total: int) -> str:
        return f"{count} ({count / total * 100:.2f} %)" if total else f"{count}"

    def hour_text(pick) -> str:
        return f"hour {pick(per_hour)}: {int(per_hour[pick(per_hour)])}" if len(per_hour) else "not measured"

    rows = [
        ["Requests", f"{requests['completed']} ({requests['organic']} organic, {requests['probe']} probe)",
         f"{probes['requests']} ({probes['dropped']} dropped)"],
        ["Requests per hour (mean)", _fmt(float(per_hour.mean())) if len(per_hour) else "not measured", "—"],
        ["Peak hour", hour_text(pd.Series.idxmax), "—"],
        ["Minimum hour", hour_text(pd.Series.idxmin), "—"],
        ["5xx", share(requests["http_5xx"], requests["completed"]), share(probes["http_5xx"], probes["requests"])],
        ["Timeouts", share(requests["timeouts"], requests["completed"]),
         share(probes["timeouts"], probes["requests"])],
        ["Rate-limited (429)", share(requests["rate_limited"], requests["completed"]),
         share(probes["rate_limited"], probes["requests"])],
        ["Connection errors", "—", share(probes["connection_errors"], probes["requests"])],
        ["Error lines (level ≥ 50)", str(metrics["error_lines"]), "—"],
    ]
    lines = metrics["lines"]
    if lines["readable_share"] is not None:
        rows.append(["Readable share of the log", f"{lines['readable_share'] * 100:.1f} % ({lines['readable']} of "
                     f"{lines['total']} lines are JSON log records)", "—"])
    notes = [*(f"**Warning:** {warning}." for warning in metrics["warnings"]),
             *(f"Not observed in telemetry: `{kind}` ({reason})." for kind, reason in metrics["not_observed"].items())]
    route_rows = _route_latency_rows(evidence)
    return ["## 7. Operational metrics", "",
            *_table(["Metric", "Telemetry (all traffic)", "Probes (validator's own requests)"], rows), "",
            *(line for note in notes for line in (note, "")),
            "Timeouts in telemetry are request-completed lines with HTTP 408 or 504; probes count requests that "
            "were sent and did not complete in time. Requests the validator dropped were never sent and are "
            "not counted against the target.", "",
            "Latency by probed route (telemetry `duration_ms`; probes from the intended send time):", "",
            *(_table(["Route", "Telemetry requests", "p50", "p95", "p99", "Probe requests", "p50", "p95", "p99"],
                     route_rows) if route_rows else ["No request on a probed route was observed."]), "",
            *_stress_lines(evidence.stress()),
            f"![Requests per hour]({CHARTS['requests']})", "",
            f"![Latency p50/p95/p99 by hour]({CHARTS['latency']})", "",
            f"![Ambiguity rate by hour]({CHARTS['ambiguity']})", "",
            f"![Governor attempt distribution]({CHARTS['governor']})", ""]


def _alert_rows(alerts: list[Alert]) -> list[list[object]]:
    return [[pd.Timestamp(a.time_ms, unit="ms", tz="UTC").isoformat(), a.severity, a.rule, a.count, a.message]
            for a in sorted(alerts, key=lambda a: a.time_ms)]


def _validator_alerts(evidence: CampaignEvidence) -> list[Alert]:
    return [a for a in evidence.alerts if a.rule.startswith(VALIDATOR_ALERT_PREFIX)]


def _incidents_section(evidence: CampaignEvidence) -> list[str]:
    """The target's incidents; the validator's own alerts are in the section on what it missed."""
    lines = ["## 8. Incidents", ""]
    target_alerts = [a for a in evidence.alerts if not a.rule.startswith(VALIDATOR_ALERT_PREFIX)]
    if not target_alerts:
        return lines + [f"The monitor raised no alert over the {len(evidence.hours_observed)} observed hour(s).", ""]
    return lines + _table(["Time (UTC)", "Severity", "Rule", "Count", "Message"], _alert_rows(target_alerts)) + [""]


def hour_ranges(hours: list[int]) -> str:
    """[2, 3, 4, 7] -> "2–4, 7"."""
    ranges: list[list[int]] = []
    for hour in sorted(hours):
        if ranges and hour == ranges[-1][1] + 1:
            ranges[-1][1] = hour
        else:
            ranges.append([hour, hour])
    return ", ".join(f"{a}–{b}" if a != b else str(a) for a, b in ranges)


def _anomalies_section(evidence: CampaignEvidence, metrics: dict) -> list[str]:
    found = []
    expected = range(evidence.judged_hours)
    missing = [h for h in expected if h not in set(evidence.hours_observed)]
    if missing:
        found.append(f"{len(missing)} of {len(expected)} campaign hours have no stored data: "
                     f"hours {hour_ranges(missing)}.")
    probed = set(evidence.records["hour"].astype(int))
    unprobed = [h for h in expected if h not in probed]
    if unprobed:
        # Every hour starts with a probe (at least the identity check), so an hour without one was skipped.
        found.append(f"{len(unprobed)} of {len(expected)} campaign hours have no probe result: "
                     f"hours {hour_ranges(unprobed)}.")
    if not metrics["probe_request_ids_seen"]:
        found.append("No probe request id was seen in telemetry, so the ambiguity rate counts all traffic.")
    dropped = metrics["probes"]["dropped"]
    if dropped:
        found.append(f"The validator dropped {dropped} stress request(s) (not sent on time or over its in-flight "
                     "cap): its own shortfall, not counted against the target.")
    stress = evidence.stress()
    if stress is not None and stress.valid is False:
        found.append(stress.reason)
    unexposed = not_exposed_items(evidence.records, "")
    if unexposed:
        found.append("Not exposed by the target (so not verified): " + "; ".join(unexposed) + ".")
    for gate in evidence.gates:
        if gate.status == "NO_DATA":
            found.append(f"Gate {gate.gate} ({gate.name}) had no usable evidence: {gate.reason}")
    lines = ["## 9. Anomalies", ""]
    if not found:
        return lines + ["None: every campaign hour has data, probe traffic was separated from organic traffic, "
                        "and every gate had enough samples.", ""]
    return lines + [f"- {item}" for item in found] + [""]


def _coverage_rows(validator: ValidatorCoverage | None) -> list[list[object]]:
    """Probe and telemetry coverage apart: telemetry is captured whatever the probes do, so it says nothing
    about whether the probes ran in their hours."""
    if validator is None:
        return [["Probe coverage", "not measured (no record of what the validator collected)"]]
    return [["Probe coverage", f"{validator.probe_coverage:.0%}: {validator.ran_in_hour} of {validator.due_steps} "
                               "due probe steps ran in their hour"],
            ["Telemetry coverage", f"{validator.telemetry_coverage:.0%}: {len(validator.telemetry_hours)} of "
                                   f"{validator.judged_hours} hours ingested"]]


def _validator_section(evidence: CampaignEvidence) -> list[str]:
    """What the validator missed: its own gaps and alerts, never evidence against the target."""
    validator = evidence.validator
    lines = ["## What the validator missed", ""]
    alerts = _validator_alerts(evidence)
    if alerts:
        lines += ["The validator's own alerts:", "",
                  *_table(["Time (UTC)", "Severity", "Rule", "Count", "Message"], _alert_rows(alerts)), ""]
    if validator is None:
        return [*lines, "Not measured: this decision was made without a record of what the validator collected.", ""]
    if not validator.gaps and not validator.telemetry_missing and not validator.failed_reason:
        return [*lines, "Nothing: every due probe step ran in its hour and every hour's telemetry was ingested.", ""]
    if validator.failed_reason:
        lines += [f"The campaign was stopped because the validator's own runs kept failing: "
                  f"{validator.failed_reason}", ""]
    if validator.gaps:
        lines += _table(["Hour", "Step", "Why it did not run", "Made up"],
                        [[g.hour, g.step.value, g.cause, f"in hour {g.made_up_in}" if g.made_up_in is not None
                          else "no"] for g in validator.gaps])
        lines.append("")
    if validator.telemetry_missing:
        lines += [f"Telemetry not ingested for hours {hour_ranges(validator.telemetry_missing)}.", ""]
    return [*lines, "These are the validator's gaps: the evidence they cost is never counted against the target.", ""]


def render_report(evidence: CampaignEvidence, notification: Message, metrics: dict, hourly: pd.DataFrame) -> str:
    decision, state = evidence.decision, evidence.state
    hours = sorted(evidence.hours_observed)
    extending = f", extending the campaign by {decision.extend_hours} hours" if decision.extend_hours else ""
    lines = [f"# Staging acceptance report: {evidence.campaign}", "",
             *_table(["Field", "Value"], [
                 ["Campaign", evidence.campaign],
                 ["Started", state.timing.start.isoformat()],
                 ["Decided", evidence.decided_at.isoformat()],
                 ["Planned hours", state.planned_hours],
                 ["Extensions before this decision", evidence.extension_count],
                 ["Observed hours", f"{len(hours)} of {evidence.judged_hours} (coverage {evidence.coverage:.0%}: "
                                    "hours with telemetry events)"],
                 *_coverage_rows(evidence.validator),
                 ["Decision", f"**{decision.decision}** (rule `{decision.rule}`){extending}"],
             ]), "", *_deploy_section(evidence.records, evidence.deploy_steps)]
    for section, gate in enumerate(evidence.gates, start=2):
        lines += [f"## {section}. Gate {gate.gate}: {gate.name}{' (critical)' if gate.critical else ''}", "",
                  *_table(["Metric", "Target", "Actual"], _gate_measurements(gate)), "",
                  f"**Status: {gate.status}** (rule `{gate.rule}`, {gate.samples} samples). {gate.reason}", ""]
        if gate.action_item:
            lines += [f"Action item: {gate.action_item}", ""]
        lines += ["Evidence:", "", *_evidence_lines(gate), ""]
    lines += _operational_section(metrics, hourly, evidence)
    lines += _incidents_section(evidence)
    lines += _anomalies_section(evidence, metrics)
    lines += _validator_section(evidence)
    lines += ["## 10. Final gate table", "",
              *_table(["#", "Gate", "Critical", "Status", "Rule", "Samples"],
                      [[g.gate, g.name, "yes" if g.critical else "no", g.status, f"`{g.rule}`", g.samples]
                       for g in evidence.gates]), ""]
    lines += ["## 11. Decision", "", f"**{decision.decision}**, by rule `{decision.rule}`.", "", decision.reason, ""]
    if decision.extend_hours:
        lines += [f"The campaign continues for {decision.extend_hours} more hours, then decides again.", ""]
    if decision.action_items:
        lines += ["Action items:", "", *(f"- {item}" for item in decision.action_items), ""]
    lines += ["## 12. Notification", "", f"Subject: {notification.subject}", "", "```",
              notification.body.rstrip("\n"), "```", ""]
    return "\n".join(lines)
