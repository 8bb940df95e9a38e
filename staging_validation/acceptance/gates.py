"""The five acceptance gates as pure functions of the probe-record and telemetry-event tables.

Each gate returns its status, the measured values, the thresholds it applied, its sample count, the
rule that decided (a stable id such as `gate2.rate_review`), a sentence with the numbers, and a few
rows of evidence. A gate with no signal, or fewer samples than the policy's minimum, is NO_DATA:
absence of evidence is never a PASS. What the target profile declares not exposed (named in the probe
records' `not_exposed`) makes the gates that need it NO_DATA naming the profile path and reason, never
FAIL; what was measured is still used (gate 2 reviews prompt-set errors even when the organic rate is
unmeasured). Event kinds that no telemetry mapping of the campaign's sources recognises (`unobservable`:
kind → `"<profile path>: <reason>"`, see `schemas.telemetry_mapping.unobservable_items`) are never
counted as 0: a gate that needs them is NO_DATA naming them, and its metrics list them under
`not_observed`. Requests the validator never sent (`NOT_SENT` outcomes) are never evidence against the target.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, Literal

import pandas as pd

from staging_validation.acceptance.policy import GATE_KEYS, Policy
from staging_validation.probes.prompt_set import ambiguity_confusion
from staging_validation.schemas.event_columns import EventKind
from staging_validation.schemas.outcome import NOT_SENT, Outcome
from staging_validation.telemetry.aggregates import final_metrics

Status = Literal["PASS", "REVIEW", "FAIL", "NO_DATA"]
EVIDENCE_ROWS = 3
RELATIONSHIP_CONTEXT = ["relationship_type", "voice_profile", "trust_level"]
# The identity probe's three checks, recognised by the words in its case names.
IDENTITY_CHECKS = ("create", "lookup", "link")
_EVENT_LINE_FIELDS = ["request_id", "origin", "user_hash", "size_bytes", "built_in_ms", "status", "reason",
                      "source", *RELATIONSHIP_CONTEXT, "attempt", "violation_type", "regen_in_ms", "http_status",
                      "duration_ms", "identity_op", "provider", "provider_user_id", "vi_user_id"]
_PROBE_ROW_FIELDS = ["probe", "case", "user", "outcome", "http_status", "passed", "ambiguous",
                     "expected_ambiguous", *RELATIONSHIP_CONTEXT, "vi_user_id", "request_id", "error"]


@dataclasses.dataclass
class GateResult:
    gate: int
    key: str
    name: str
    critical: bool
    status: Status
    metrics: dict
    thresholds: dict
    samples: int
    rule: str
    reason: str
    forces_extend: bool = False
    evidence: list[dict] = dataclasses.field(default_factory=list)
    action_item: str | None = None


def evaluate_gates(records: pd.DataFrame, events: pd.DataFrame, policy: Policy,
                   unobservable: Mapping[str, str] | None = None) -> list[GateResult]:
    """`unobservable`: event kind → `"<profile path>: <reason>"` for the kinds the campaign's telemetry can
    never show (None or empty: every kind is observable, the documented contract)."""
    unobservable = dict(unobservable or {})
    return [
        _continuity_pack(events, policy, unobservable),
        _ambiguity(records, events, policy, unobservable),
        _relationship_determinism(records, events, policy, unobservable),
        _governor(events, policy, unobservable),
        _identity(records, events, policy, unobservable),
    ]


# --- shared helpers -----------------------------------------------------------------------------


def _number(value: Any) -> Any:
    """A JSON-safe number: numpy scalars become Python numbers, NaN becomes None."""
    if value is None or pd.isna(value):
        return None
    return value.item() if hasattr(value, "item") else value


def _median(values: pd.Series) -> float | None:
    """Median of the logged values; None when the target never logged the field."""
    logged = values.dropna()
    return _number(logged.median()) if len(logged) else None


def _time_text(value: object) -> str:
    return pd.Timestamp(value).isoformat() if not pd.isna(value) else "unknown time"


def percent_text(share: float | None) -> str:
    """A share as the gates and the report print it."""
    return "not measured" if share is None else f"{share * 100:.2f} %"


def _field_text(value: object) -> str:
    # Nullable integer columns come back as floats from pandas; print 2, not 2.0.
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


def event_line(event: dict) -> str:
    """The log line as captured when the parser kept it (errors and warnings), else its message with the
    structured fields that were parsed from it."""
    if isinstance(event.get("raw"), str):
        return event["raw"]
    fields = " ".join(f"{name}={_field_text(event[name])}" for name in _EVENT_LINE_FIELDS
                      if name in event and not pd.isna(event[name]))
    return f"{event.get('msg') or event.get('kind')} {fields}".strip()


def event_evidence(events: pd.DataFrame, limit: int = EVIDENCE_ROWS, by_time: bool = True) -> list[dict]:
    """The first lines in time order, or in the caller's order (e.g. slowest first) when not by_time."""
    ordered = (events.sort_values("time") if by_time else events).head(limit)
    return [{"time": _time_text(row["time"]), "hour": int(row["hour"]), "line": event_line(row)}
            for row in ordered.to_dict("records")]


def record_evidence(records: pd.DataFrame, limit: int = EVIDENCE_ROWS) -> list[dict]:
    ordered = records.sort_values("time").head(limit)
    return [
        {"time": _time_text(row["time"]), "hour": int(row["hour"]),
         "row": {k: _number(row[k]) for k in _PROBE_ROW_FIELDS if k in row and not pd.isna(row[k])}}
        for row in ordered.to_dict("records")
    ]


def _of_kind(events: pd.DataFrame, kind: EventKind) -> pd.DataFrame:
    return events[events["kind"] == kind.value]


def _first_time(frame: pd.DataFrame) -> str:
    return _time_text(frame["time"].min()) if len(frame) else "unknown time"


def not_exposed_items(records: pd.DataFrame, prefix: str) -> list[str]:
    """The distinct `"<profile path>: <reason>"` declarations under `prefix` (e.g. `extract.relationship`)
    named by the records' `not_exposed` column (absent in tables written before it existed)."""
    if "not_exposed" not in records:
        return []
    items = {item for value in records["not_exposed"].dropna() for item in str(value).split("; ")}
    return sorted(item for item in items if item.startswith(prefix))


def _not_exposed_text(items: list[str]) -> str:
    return "not exposed by the target (profile: " + "; ".join(items) + ")"


def _unobserved(unobservable: Mapping[str, str], *kinds: EventKind) -> dict[str, str]:
    """Of `kinds`, those the telemetry can never show: kind → `"<profile path>: <reason>"`."""
    return {kind.value: unobservable[kind.value] for kind in kinds if kind.value in unobservable}


def _telemetry_not_exposed_text(unobserved: Mapping[str, str]) -> str:
    return "not observable in the target's telemetry (profile: " + "; ".join(unobserved.values()) + ")"


def _result(number: int, policy: Policy, thresholds: dict, **fields) -> GateResult:
    config = policy.gate(number)
    return GateResult(gate=number, key=GATE_KEYS[number], name=config.name, critical=config.critical,
                      thresholds={**thresholds, "min_samples": policy.min_samples}, **fields)


# --- gate 1: ContinuityPack integrity -----------------------------------------------------------


def _continuity_pack(events: pd.DataFrame, policy: Policy, unobservable: Mapping[str, str]) -> GateResult:
    config = policy.gates.continuity_pack
    built = _of_kind(events, EventKind.PACK_BUILT)
    missing = _of_kind(events, EventKind.PACK_MISSING)
    fallbacks = _of_kind(events, EventKind.PACK_FALLBACK)
    samples = len(built) + len(missing) + len(fallbacks)
    build_p50 = _median(built["built_in_ms"])
    size_p50 = _median(built["size_bytes"])
    unobserved = _unobserved(unobservable, EventKind.PACK_BUILT, EventKind.PACK_MISSING, EventKind.PACK_FALLBACK)
    metrics: dict[str, Any] = {"pack_builds": len(built), "missing_packs": len(missing), "fallbacks": len(fallbacks),
               "build_p50_ms": build_p50, "size_p50_bytes": size_p50, "not_observed": unobserved,
               "not_exposed": sorted(unobserved.values())}
    thresholds = {"missing_packs_max": 0, "fallbacks_max": 0,
                  "build_p50_ms_review_above": config.build_p50_review_ms,
                  "size_p50_bytes_review_above": config.size_p50_review_bytes}
    common: dict[str, Any] = dict(metrics=metrics, thresholds=thresholds, samples=samples)

    if len(missing) or len(fallbacks):
        failing = pd.concat([missing, fallbacks])
        first = _first_time(failing)
        return _result(
            1, policy, status="FAIL", rule="gate1.missing_pack" if len(missing) else "gate1.fallback",
            reason=(f"{len(missing)} missing-pack event(s) and {len(fallbacks)} default-pack fallback(s) "
                    f"among {samples} pack outcomes (allowed: 0); first at {first}."),
            evidence=event_evidence(failing),
            action_item=(f"Find why requests ran without their own ContinuityPack (missing or default pack, first "
                         f"at {first}) and redeploy."),
            **common)
    if unobserved:
        # A missing pack the telemetry cannot show is no evidence of integrity, however many builds it shows.
        return _result(1, policy, status="NO_DATA", rule="gate1.not_exposed",
                       reason=(f"ContinuityPack events are {_telemetry_not_exposed_text(unobserved)}: pack integrity "
                               f"cannot be judged ({len(built)} builds observed)."),
                       evidence=[], **common)
    if len(built) < policy.min_samples:
        return _result(1, policy, status="NO_DATA", rule="gate1.no_data",
                       reason=(f"Only {len(built)} ContinuityPack builds observed in telemetry "
                               f"(minimum {policy.min_samples}); pack integrity cannot be judged."),
                       evidence=[], **common)
    reviews = []
    if build_p50 is not None and build_p50 > config.build_p50_review_ms:
        reviews.append(("gate1.build_latency_review",
                        f"pack build latency p50 {build_p50:.1f} ms > {config.build_p50_review_ms:g} ms"))
    if size_p50 is not None and size_p50 > config.size_p50_review_bytes:
        reviews.append(("gate1.pack_size_review",
                        f"pack size p50 {size_p50:.0f} bytes > {config.size_p50_review_bytes} bytes"))
    if reviews:
        findings = "; ".join(text for _, text in reviews)
        return _result(1, policy, status="REVIEW", rule=reviews[0][0],
                       reason=f"No missing or fallback packs in {len(built)} builds, but {findings}.",
                       evidence=event_evidence(built.sort_values("built_in_ms", ascending=False), by_time=False),
                       action_item=f"Profile ContinuityPack building: {findings}.", **common)
    return _result(1, policy, status="PASS", rule="gate1.pass",
                   reason=(f"{len(built)} packs built, 0 missing, 0 fallbacks; build p50 "
                           f"{'not logged' if build_p50 is None else f'{build_p50:.1f} ms'}, size p50 "
                           f"{'not logged' if size_p50 is None else f'{size_p50:.0f} bytes'}."),
                   evidence=event_evidence(built), **common)


# --- gate 2: AmbiguityGate rate -----------------------------------------------------------------


def ambiguity_checks_counted(events: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """The ambiguity checks the rate counts, and the denominator's name: organic traffic only, unless no
    probe request id was ever seen in telemetry (then nothing can be separated and all traffic counts)."""
    checks = _of_kind(events, EventKind.AMBIGUITY_CHECK)
    if (events["origin"] == "probe").any():
        return checks[checks["origin"] == "organic"], "organic requests"
    return checks, "all traffic (no probe request id seen in telemetry)"


def _ambiguity(records: pd.DataFrame, events: pd.DataFrame, policy: Policy,
               unobservable: Mapping[str, str]) -> GateResult:
    config = policy.gates.ambiguity
    checks = _of_kind(events, EventKind.AMBIGUITY_CHECK)
    counted, denominator = ambiguity_checks_counted(events)
    ambiguous = counted[counted["status"] == "AMBIGUOUS"]
    rate = len(ambiguous) / len(counted) if len(counted) else None

    confusion = ambiguity_confusion(records[records["probe"] == "prompt_set"])
    false_positives, false_negatives = confusion.false_positives, confusion.false_negatives
    fp_rate, fn_rate = confusion.fp_rate, confusion.fn_rate

    rate_measured = len(counted) >= policy.min_samples
    prompt_rows = records[records["probe"] == "prompt_set"]
    verdict_unexposed = not_exposed_items(prompt_rows, "extract.ambiguity")
    metrics: dict[str, Any] = {"rate": rate, "rate_measured": rate_measured, "denominator": denominator,
               "checks_counted": len(counted),
               "ambiguous_counted": len(ambiguous), "probe_checks_excluded": len(checks) - len(counted),
               "prompt_set_labelled": confusion.labelled, "false_positives": len(false_positives),
               "false_negatives": len(false_negatives), "false_positive_rate": fp_rate,
               "false_negative_rate": fn_rate, "not_exposed": verdict_unexposed}
    unobserved = _unobserved(unobservable, EventKind.AMBIGUITY_CHECK)
    if unobserved:
        metrics["not_observed"] = unobserved
        metrics["not_exposed"] = sorted([*verdict_unexposed, *unobserved.values()])
    thresholds = {"rate_review_at_or_above": config.rate_review, "rate_extend_above": config.rate_extend,
                  "false_positive_rate_review_above": config.false_positive_review,
                  "false_negative_rate_review_above": config.false_negative_review}
    common: dict[str, Any] = dict(metrics=metrics, thresholds=thresholds, samples=len(counted))
    measured = (f"{len(ambiguous)} of {len(counted)} {denominator} flagged ambiguous"
                + (f" ({percent_text(rate)})" if rate is not None else ""))

    rate_no_data = (f"rate NO_DATA: ambiguity checks are {_telemetry_not_exposed_text(unobserved)}" if unobserved
                    else f"rate NO_DATA: {measured}, fewer than {policy.min_samples} ambiguity checks to judge "
                    "the rate")
    prompt_set_text = (f"prompt set: {_not_exposed_text(verdict_unexposed)}" if verdict_unexposed and
                       not confusion.labelled else
                       f"prompt set: {len(false_positives)} of {len(confusion.normal)} normal prompts flagged, "
                       f"{len(false_negatives)} of {len(confusion.ambiguous)} ambiguous prompts not flagged")
    judged_rate = rate if rate_measured else None
    if judged_rate is not None and judged_rate > config.rate_extend:
        return _result(2, policy, status="REVIEW", rule="gate2.rate_extend", forces_extend=True,
                       reason=(f"{measured}, above {percent_text(config.rate_extend)} (first at "
                               f"{_first_time(ambiguous)}): more data needed, not a rejection."),
                       evidence=event_evidence(ambiguous),
                       action_item=(f"Compare organic ambiguity reasons with development traffic "
                                    f"(rate {percent_text(rate)})."), **common)
    # Misjudged labelled prompts are observed errors: they are reviewed however few the prompts were, and
    # whether or not the organic rate could be measured (partial evidence is used, not dropped).
    reviews = []
    if fp_rate is not None and fp_rate > config.false_positive_review:
        reviews.append(("gate2.false_positive_review", false_positives,
                        f"{len(false_positives)} of {len(confusion.normal)} normal prompts flagged ambiguous "
                        f"({percent_text(fp_rate)} > {percent_text(config.false_positive_review)})"))
    if fn_rate is not None and fn_rate > config.false_negative_review:
        reviews.append(("gate2.false_negative_review", false_negatives,
                        f"{len(false_negatives)} of {len(confusion.ambiguous)} ambiguous prompts not flagged "
                        f"({percent_text(fn_rate)} > {percent_text(config.false_negative_review)})"))
    if judged_rate is not None and judged_rate >= config.rate_review:
        reviews.append(("gate2.rate_review", None,
                        f"{measured}, within the review band {percent_text(config.rate_review)}–"
                        f"{percent_text(config.rate_extend)}"))
    if reviews:
        findings = "; ".join(text for _, _, text in reviews)
        rows = reviews[0][1]
        evidence = record_evidence(rows) if rows is not None else event_evidence(ambiguous)
        # A critical gate whose rate is unmeasured still lacks evidence: the REVIEW asks for more data,
        # so the decision cannot ACCEPT on it.
        return _result(2, policy, status="REVIEW", rule=reviews[0][0], forces_extend=not rate_measured,
                       reason=f"{findings}." + ("" if rate_measured else f" The organic {rate_no_data}."),
                       evidence=evidence,
                       action_item=f"Review AmbiguityGate behaviour with the product owner: {findings}.",
                       **common)
    if unobserved:
        return _result(2, policy, status="NO_DATA", rule="gate2.not_exposed",
                       reason=f"The organic {rate_no_data}; {prompt_set_text}.", evidence=[], **common)
    if not rate_measured:
        return _result(2, policy, status="NO_DATA", rule="gate2.no_data",
                       reason=f"{measured}; fewer than {policy.min_samples} ambiguity checks to judge the rate; "
                              f"{prompt_set_text}.",
                       evidence=[], **common)
    if confusion.labelled < policy.min_samples:
        unknown = (_not_exposed_text(verdict_unexposed) if verdict_unexposed else
                   f"known for only {confusion.labelled} labelled prompts (minimum {policy.min_samples})")
        return _result(2, policy, status="NO_DATA", rule="gate2.no_prompt_set",
                       reason=(f"{measured}, but the prompt set's ambiguity verdict is {unknown}: the gate's "
                               "false-positive and false-negative rates are unknown."),
                       evidence=event_evidence(ambiguous), **common)
    return _result(2, policy, status="PASS", rule="gate2.pass",
                   reason=(f"{measured}, below {percent_text(config.rate_review)}; prompt set: "
                           f"{len(false_positives)} false positives, {len(false_negatives)} false negatives "
                           f"in {confusion.labelled} labelled prompts."),
                   evidence=event_evidence(ambiguous), **common)


# --- gate 3: relationship determinism -----------------------------------------------------------


def relationship_changes(events: pd.DataFrame) -> pd.DataFrame:
    """Resolutions whose context differs from the same user's previous one, with `explained` set when
    the new context came from a locked-fact override."""
    resolved = _of_kind(events, EventKind.RELATIONSHIP_RESOLVED)
    resolved = resolved[resolved["user_hash"].notna()].sort_values("time", kind="stable")
    context = resolved[RELATIONSHIP_CONTEXT].astype("string").fillna("")
    previous = context.groupby(resolved["user_hash"]).shift(1)
    changed = previous.notna().all(axis=1) & (context != previous).any(axis=1)
    changes = resolved[changed].copy()
    changes["explained"] = changes["source"] == "locked_fact"
    return changes


def _relationship_determinism(records: pd.DataFrame, events: pd.DataFrame, policy: Policy,
                              unobservable: Mapping[str, str]) -> GateResult:
    config = policy.gates.relationship_determinism
    probe_rows = records[(records["probe"] == "determinism") & (records["outcome"] == "ok")
                         & records["relationship_type"].notna()]
    per_user = probe_rows.groupby("user")
    request_counts = per_user.size()
    checked_users = request_counts[request_counts >= config.consecutive_requests].index
    distinct_contexts = per_user[RELATIONSHIP_CONTEXT].nunique(dropna=False).max(axis=1)
    disagreeing_users = distinct_contexts[distinct_contexts > 1].index
    determinism_rows = records[records["probe"] == "determinism"]
    answered = determinism_rows[determinism_rows["outcome"] == Outcome.OK.value]
    context_unexposed = not_exposed_items(determinism_rows, "extract.relationship")
    resolutions = _of_kind(events, EventKind.RELATIONSHIP_RESOLVED)
    changes = relationship_changes(events)
    unexplained = changes[~changes["explained"]]
    explained = changes[changes["explained"]]

    metrics = {"probe_users_checked": len(checked_users), "probe_users_disagreeing": len(disagreeing_users),
               "probe_requests": len(probe_rows), "telemetry_resolutions": len(resolutions),
               "telemetry_users": int(resolutions["user_hash"].nunique()),
               "changes_explained_by_locked_fact": len(explained), "changes_unexplained": len(unexplained),
               "probe_requests_without_context": len(answered) - len(probe_rows),
               "not_exposed": context_unexposed}
    unobserved = _unobserved(unobservable, EventKind.RELATIONSHIP_RESOLVED)
    if unobserved:
        metrics["not_observed"] = unobserved
        metrics["not_exposed"] = sorted([*context_unexposed, *unobserved.values()])
    telemetry_text = (f"relationship resolutions {_telemetry_not_exposed_text(unobserved)}" if unobserved
                      else f"{len(resolutions)} relationship resolutions in telemetry")
    thresholds = {"consecutive_requests": config.consecutive_requests, "unexplained_changes_max": 0}
    common: dict[str, Any] = dict(metrics=metrics, thresholds=thresholds, samples=len(probe_rows) + len(resolutions))

    failures = []  # (rule, sentence, evidence): the probe's check first, then telemetry
    if len(disagreeing_users):
        rows = probe_rows[probe_rows["user"].isin(disagreeing_users)]
        failures.append(("gate3.probe_disagreement",
                         f"{len(disagreeing_users)} of {len(per_user)} probe users got different relationship "
                         f"contexts for consecutive requests, first at {_first_time(rows)}",
                         record_evidence(rows, limit=config.consecutive_requests)))
    if len(unexplained):
        failures.append(("gate3.unexplained_change",
                         f"{len(unexplained)} relationship context change(s) for "
                         f"{unexplained['user_hash'].nunique()} user(s) in telemetry without a locked-fact "
                         f"override (allowed: 0), first at {_first_time(unexplained)}",
                         event_evidence(unexplained)))
    if failures:
        return _result(3, policy, status="FAIL", rule=failures[0][0],
                       reason="; ".join(sentence for _, sentence, _ in failures) + ".",
                       evidence=[item for _, _, evidence in failures for item in evidence],
                       action_item="Find why a user's relationship context changes without a locked fact and "
                                   "redeploy.", **common)
    if not len(checked_users) and context_unexposed:
        return _result(3, policy, status="NO_DATA", rule="gate3.not_exposed",
                       reason=(f"The relationship context is {_not_exposed_text(context_unexposed)}: the "
                               f"determinism probe cannot compare contexts ({len(determinism_rows)} determinism "
                               f"requests; {telemetry_text})."),
                       evidence=[], **common)
    if not len(checked_users):
        without = len(answered) - len(probe_rows)
        return _result(3, policy, status="NO_DATA", rule="gate3.no_probe_data",
                       reason=(f"No probe user completed {config.consecutive_requests} consecutive requests "
                               f"with a relationship context ({len(probe_rows)} determinism rows with one"
                               + (f"; {without} answered requests returned no relationship context"
                                  if without else "") + ")."),
                       evidence=record_evidence(answered) if without else [], **common)
    if unobserved:
        return _result(3, policy, status="NO_DATA", rule="gate3.not_exposed",
                       reason=(f"{len(checked_users)} probe user(s) got the same context on "
                               f"{config.consecutive_requests}+ consecutive requests, but {telemetry_text}: "
                               "mid-campaign changes cannot be ruled out."),
                       evidence=[], **common)
    if len(resolutions) < policy.min_samples:
        return _result(3, policy, status="NO_DATA", rule="gate3.no_telemetry",
                       reason=(f"Only {len(resolutions)} relationship resolutions in telemetry (minimum "
                               f"{policy.min_samples}): mid-campaign changes cannot be ruled out."),
                       evidence=[], **common)
    if len(explained):
        return _result(3, policy, status="REVIEW", rule="gate3.locked_fact_override",
                       reason=(f"{len(explained)} relationship context change(s), each explained by a locked-fact "
                               f"override; first at {_first_time(explained)}."),
                       evidence=event_evidence(explained),
                       action_item=(f"Confirm the {len(explained)} locked-fact override(s) were intended "
                                    f"(first at {_first_time(explained)})."), **common)
    return _result(3, policy, status="PASS", rule="gate3.pass",
                   reason=(f"{len(checked_users)} probe user(s) got the same context on "
                           f"{config.consecutive_requests}+ consecutive requests; {len(resolutions)} resolutions "
                           f"for {metrics['telemetry_users']} users showed no context change."),
                   evidence=record_evidence(probe_rows), **common)


# --- gate 4: governor regen health --------------------------------------------------------------


def _governor(events: pd.DataFrame, policy: Policy, unobservable: Mapping[str, str]) -> GateResult:
    config = policy.gates.governor
    # The numbers the metrics text and the hourly reports print, so the gate judges exactly those.
    governor = final_metrics(None, events)["governor"]
    requests_passed, share = governor["passed_requests"], governor["zero_regeneration_share"]
    zero_regen = governor["passed_attempt_distribution"].get("1", 0)
    regen_requests = governor["regen_path_requests"]
    p99_judged = regen_requests >= policy.min_samples
    p99 = governor["regen_path_latency_ms"]["p99"]
    metrics = {"requests_passed": requests_passed, "zero_regen_requests": zero_regen, "zero_regen_share": share,
               "regen_requests": regen_requests, "regen_p99_ms": p99, "regen_p99_judged": p99_judged}
    unobserved = _unobserved(unobservable, EventKind.GOVERNOR_PASS)
    if unobserved:
        metrics.update(not_observed=unobserved, not_exposed=sorted(unobserved.values()))
    thresholds = {"zero_regen_pass_above": config.zero_regen_pass_above,
                  "zero_regen_fail_below": config.zero_regen_fail_below,
                  "regen_p99_ms_extend_above": config.regen_p99_extend_ms}
    common: dict[str, Any] = dict(metrics=metrics, thresholds=thresholds, samples=requests_passed)
    passes = _of_kind(events, EventKind.GOVERNOR_PASS)
    measured = f"{zero_regen} of {requests_passed} requests passed on 0 regenerations"
    if share is not None:
        measured += f" ({percent_text(share)})"
    p99_text = (f"regen-path p99 {p99:.0f} ms over {regen_requests} regenerated requests" if p99_judged
                else f"regen-path p99 not judged ({regen_requests} regenerated requests, minimum {policy.min_samples})")

    if unobserved:
        return _result(4, policy, status="NO_DATA", rule="gate4.not_exposed",
                       reason=f"Governor passes are {_telemetry_not_exposed_text(unobserved)}: regeneration health "
                              "cannot be judged.", evidence=[], **common)
    if requests_passed < policy.min_samples:
        return _result(4, policy, status="NO_DATA", rule="gate4.no_data",
                       reason=f"{measured}; fewer than {policy.min_samples} governed requests to judge.",
                       evidence=[], **common)
    regenerated = passes[(passes["status"] == "passed") & (passes["attempt"] > 1)]
    if share < config.zero_regen_fail_below:
        return _result(4, policy, status="FAIL", rule="gate4.zero_regen_fail",
                       reason=f"{measured}, below {percent_text(config.zero_regen_fail_below)}; {p99_text}.",
                       evidence=event_evidence(regenerated),
                       action_item="Find why the Governor regenerates so often before re-measuring.", **common)
    if share <= config.zero_regen_pass_above:
        return _result(4, policy, status="REVIEW", rule="gate4.zero_regen_review",
                       forces_extend=p99_judged and p99 > config.regen_p99_extend_ms,
                       reason=(f"{measured}, within {percent_text(config.zero_regen_fail_below)}–"
                               f"{percent_text(config.zero_regen_pass_above)}; {p99_text}."),
                       evidence=event_evidence(regenerated),
                       action_item="Re-measure Governor regenerations over the extension.", **common)
    if p99_judged and p99 > config.regen_p99_extend_ms:
        # The p99 is over each request's summed regenerations, so its slowest requests are quoted, line by line.
        regenerations = passes[passes["attempt"] >= 2]
        path_ms = regenerations.groupby("request_id")["regen_in_ms"].transform("sum")
        slowest = regenerations.assign(path_ms=path_ms).sort_values(["path_ms", "request_id", "attempt"],
                                                                    ascending=[False, True, True])
        return _result(4, policy, status="REVIEW", rule="gate4.regen_p99_extend", forces_extend=True,
                       reason=(f"{measured}, but {p99_text} > {config.regen_p99_extend_ms:g} ms: more data "
                               "needed, not a rejection."),
                       evidence=event_evidence(slowest, by_time=False),
                       action_item="Find which requests make Governor regeneration slow.", **common)
    return _result(4, policy, status="PASS", rule="gate4.pass",
                   reason=f"{measured}, above {percent_text(config.zero_regen_pass_above)}; {p99_text}.",
                   evidence=event_evidence(regenerated), **common)


# --- gate 5: identity correctness ---------------------------------------------------------------


def identity_merges(records: pd.DataFrame, events: pd.DataFrame) -> pd.DataFrame:
    """Accidental merges: probe `create` rows of different identities sharing one id, and telemetry
    create/resolve operations returning an id that belongs to another, never linked, identity.
    Returns `time`, `hour`, `source` ("probe"|"telemetry"), `detail` and an evidence `line`."""
    found = []
    creates = records[(records["probe"] == "identity") & records["case"].str.contains("create")
                      & records["vi_user_id"].notna()].sort_values("time")
    for vi_user_id, rows in creates.groupby("vi_user_id"):
        if rows["case"].nunique() > 1 or rows["user"].nunique() > 1:
            later = rows.iloc[1]
            found.append({"time": later["time"], "hour": int(later["hour"]), "source": "probe",
                          "detail": (f"probe cases {', '.join(rows['case'].unique())} got the same id "
                                     f"{vi_user_id}"),
                          "line": record_evidence(rows.iloc[[1]])[0]["row"]})
    ops = _of_kind(events, EventKind.IDENTITY_OP)
    ops = ops[ops["vi_user_id"].notna() & (ops["level"].fillna(0) < 50)].sort_values("time", kind="stable")
    owners: dict[str, set[tuple]] = {}
    for op in ops.itertuples():
        identity = (op.provider, op.provider_user_id)
        known = owners.setdefault(op.vi_user_id, set())
        if op.identity_op in ("create", "resolve") and known and identity not in known:
            found.append({"time": op.time, "hour": int(op.hour), "source": "telemetry",
                          "detail": (f"{op.identity_op} of {op.provider}:{op.provider_user_id} returned "
                                     f"{op.vi_user_id}, already owned by "
                                     f"{', '.join(f'{p}:{u}' for p, u in sorted(known, key=str))}"),
                          "line": event_line(op._asdict())})
        if op.identity_op in ("create", "resolve", "link"):
            known.add(identity)
    return pd.DataFrame(found, columns=["time", "hour", "source", "detail", "line"])


def merge_evidence(merges: pd.DataFrame) -> list[dict]:
    return [{"time": _time_text(m.time), "hour": int(m.hour), ("row" if m.source == "probe" else "line"): m.line}
            for m in merges.sort_values("time").head(EVIDENCE_ROWS).itertuples()]


# An identity check the target never answered (refused, timed out, throttled) or the validator never sent
# (not exposed, dropped) is a gap in the evidence, not a wrong id: the outage and rate-limit alerts report
# it, gate 5 does not fail on it.
UNANSWERED_OUTCOMES = (Outcome.CONNECTION_ERROR.value, Outcome.TIMEOUT.value, Outcome.RATE_LIMITED.value,
                       *sorted(NOT_SENT))


def _identity(records: pd.DataFrame, events: pd.DataFrame, policy: Policy,
              unobservable: Mapping[str, str]) -> GateResult:
    rows = records[records["probe"] == "identity"]
    judged = rows[rows["passed"].notna() & ~rows["outcome"].isin(UNANSWERED_OUTCOMES)]
    unexposed = not_exposed_items(rows, "")
    failed = judged[judged["passed"] == False]  # noqa: E712
    merges = identity_merges(records, events)
    checks_seen = {check: bool(judged["case"].str.contains(check).any()) for check in IDENTITY_CHECKS}
    ops = _of_kind(events, EventKind.IDENTITY_OP)
    metrics: dict[str, Any] = {"probe_checks": len(judged), "probe_checks_failed": len(failed), "merges": len(merges),
               "telemetry_identity_ops": len(ops), "checks_seen": checks_seen, "not_exposed": unexposed}
    unobserved = _unobserved(unobservable, EventKind.IDENTITY_OP)
    if unobserved:
        metrics["not_observed"] = unobserved
        metrics["not_exposed"] = sorted([*unexposed, *unobserved.values()])
    telemetry_text = (f"identity operations are {_telemetry_not_exposed_text(unobserved)}, so merges are judged "
                      "by the probe alone" if unobserved
                      else f"no merge among {len(ops)} identity operations in telemetry")
    thresholds = {"merges_max": 0, "failed_checks_max": 0, "required_checks": list(IDENTITY_CHECKS)}
    common: dict[str, Any] = dict(metrics=metrics, thresholds=thresholds, samples=len(judged) + len(ops))

    if len(merges):
        first = merges.sort_values("time").iloc[0]
        return _result(5, policy, status="FAIL", rule="gate5.identity_merge",
                       reason=(f"{len(merges)} accidental identity merge(s): {first['detail']} "
                               f"(first at {_time_text(first['time'])})."),
                       evidence=merge_evidence(merges),
                       action_item="Stop production plans: find why two identities share one id, then redeploy.",
                       **common)
    if len(failed):
        cases = ", ".join(sorted(failed["case"].unique()))
        return _result(5, policy, status="FAIL", rule="gate5.check_failed",
                       reason=(f"{len(failed)} of {len(judged)} identity checks failed ({cases}); first at "
                               f"{_first_time(failed)}: {failed.sort_values('time').iloc[0]['error']}."),
                       evidence=record_evidence(failed),
                       action_item=f"Fix the identity spine ({cases}) and redeploy.", **common)
    missing_checks = [check for check, seen in checks_seen.items() if not seen]
    if missing_checks and unexposed:
        return _result(5, policy, status="NO_DATA", rule="gate5.not_exposed",
                       reason=(f"The identity probe's {', '.join(missing_checks)} check(s) cannot run: "
                               f"{_not_exposed_text(unexposed)} ({len(judged)} judged identity rows; "
                               + (f"identity operations {_telemetry_not_exposed_text(unobserved)}" if unobserved
                                  else f"{len(ops)} identity operations in telemetry") + ")."),
                       evidence=[], **common)
    if missing_checks:
        return _result(5, policy, status="NO_DATA", rule="gate5.no_data",
                       reason=(f"The identity probe's {', '.join(missing_checks)} check(s) never completed "
                               f"({len(judged)} judged identity rows)."),
                       evidence=record_evidence(rows), **common)
    return _result(5, policy, status="PASS", rule="gate5.pass",
                   reason=(f"All {len(judged)} identity checks passed (distinct ids, reverse lookups, linking); "
                           f"{telemetry_text}."),
                   evidence=record_evidence(judged), **common)


# --- stress validity ----------------------------------------------------------------------------


@dataclasses.dataclass
class StressResult:
    """The stress hour's requests as the target answered them. `valid` is False when the target's rate
    limit or errors answered more than the policy's share of the requests sent: the latency figures then
    measure the limiter, not the service under load. Drops (never sent) are the validator's and are
    outside every share."""

    planned: int
    sent: int
    dropped: int
    outcomes: dict[str, int]
    rate_limited_share: float | None
    error_share: float | None
    valid: bool | None  # None: nothing was sent, so nothing can be said
    reason: str
    latency_by_route: dict[str, dict[str, float | None]]


def _percentiles(latencies: pd.Series) -> dict[str, float | None]:
    logged = latencies.dropna()
    if not len(logged):
        return {"p50_ms": None, "p95_ms": None, "p99_ms": None}
    return {f"p{q}_ms": round(float(logged.quantile(q / 100)), 1) for q in (50, 95, 99)}


def stress_result(records: pd.DataFrame, policy: Policy) -> StressResult | None:
    """The stress probe's rows judged for validity, with latency per probed route; None without stress rows."""
    rows = records[records["probe"] == "stress"]
    if not len(rows):
        return None
    limits = policy.stress
    not_sent = rows["outcome"].isin(NOT_SENT) | rows["dropped"].fillna(False).astype(bool)
    sent = rows[~not_sent]
    outcomes = {str(k): int(v) for k, v in sent["outcome"].value_counts().sort_index().items()}
    limited = outcomes.get(Outcome.RATE_LIMITED.value, 0)
    errors = len(sent) - outcomes.get(Outcome.OK.value, 0) - limited
    limited_share = limited / len(sent) if len(sent) else None
    error_share = errors / len(sent) if len(sent) else None
    by_route = {f"{method} {route}": _percentiles(group["latency_ms"])
                for (method, route), group in sent.groupby(["method", "route"], sort=True)}
    shares = (f"{limited} of {len(sent)} sent requests rate-limited ({percent_text(limited_share)}), "
              f"{errors} answered with another error ({percent_text(error_share)})")
    dropped_text = f"; {int(not_sent.sum())} not sent by the validator (not counted)" if not_sent.any() else ""
    valid: bool | None
    if limited_share is None or error_share is None:
        valid, reason = None, f"No stress request was sent ({len(rows)} planned, all dropped by the validator)."
    elif limited_share > limits.rate_limited_share_max or error_share > limits.error_share_max:
        valid = False
        reason = (f"Stress result INVALID: {shares}, over the policy's "
                  f"{percent_text(limits.rate_limited_share_max)} rate-limited / "
                  f"{percent_text(limits.error_share_max)} error maximum: the figures measure the target's "
                  f"rate limit or failures, not its behaviour at the stress rate{dropped_text}.")
    else:
        valid, reason = True, f"Stress result valid: {shares}{dropped_text}."
    return StressResult(planned=len(rows), sent=len(sent), dropped=int(not_sent.sum()), outcomes=outcomes,
                        rate_limited_share=limited_share, error_share=error_share, valid=valid, reason=reason,
                        latency_by_route=by_route)
