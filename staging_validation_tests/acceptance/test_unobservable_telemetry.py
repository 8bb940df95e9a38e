"""Event kinds the target's telemetry never shows (declared `not_exposed`, or recognised by no mapping of
its sources): the gates that need them are NO_DATA naming the profile path, never PASS on a zero that was
never observable, and the report prints "not observed" where the count would be."""

from __future__ import annotations

import pandas as pd

from staging_validation.acceptance.gates import evaluate_gates
from staging_validation.acceptance.policy import Policy
from staging_validation.acceptance.report import _gate_measurements
from staging_validation.schemas.telemetry_mapping import unobservable_items
from staging_validation.target.profile import SPARSE_PROFILE, load_target_profile
from staging_validation_tests.acceptance.acceptance_tables import healthy_campaign

POLICY = Policy()


def sparse_unobservable(*source_names: str | None) -> dict[str, str]:
    telemetry = load_target_profile(SPARSE_PROFILE).telemetry
    return unobservable_items(telemetry.source_mappings_by_path(source_names))


def test_the_sparse_profile_names_each_kind_its_telemetry_cannot_show():
    with_governor = sparse_unobservable(None, "governor")
    assert with_governor["pack_missing"] == (
        "telemetry.not_exposed.pack_missing: the service does not log ContinuityPack builds")
    assert set(with_governor) == {"pack_built", "pack_missing", "pack_fallback", "ambiguity_check",
                                  "relationship_resolved"}
    # Without its second source nothing recognises the governor's events.
    assert sparse_unobservable(None)["governor_pass"] == "telemetry.rules: no rule recognises governor_pass"


def without(events: pd.DataFrame, *kinds: str) -> pd.DataFrame:
    return events[~events["kind"].isin(kinds)]


def test_gates_are_no_data_naming_what_the_telemetry_cannot_show():
    records, events = healthy_campaign(hours=6)
    unobservable = sparse_unobservable(None)  # pack, ambiguity, relationship and governor kinds
    shown = without(events, *unobservable)
    gates = {gate.gate: gate for gate in evaluate_gates(records, shown, POLICY, unobservable)}
    assert {n: (g.status, g.rule) for n, g in gates.items()} == {
        1: ("NO_DATA", "gate1.not_exposed"), 2: ("NO_DATA", "gate2.not_exposed"),
        3: ("NO_DATA", "gate3.not_exposed"), 4: ("NO_DATA", "gate4.not_exposed"), 5: ("PASS", "gate5.pass")}
    assert "telemetry.not_exposed.pack_missing: the service does not log ContinuityPack builds" in gates[1].reason
    assert "telemetry.not_exposed.ambiguity_check" in gates[2].reason and "prompt set:" in gates[2].reason
    assert "telemetry.not_exposed.relationship_resolved" in gates[3].reason
    assert "telemetry.rules: no rule recognises governor_pass" in gates[4].reason
    rows = {row[0]: row[2] for row in _gate_measurements(gates[1])}
    assert rows["Missing-pack events"] == rows["Packs built"] == "not observed"
    assert "telemetry.not_exposed.pack_built" in rows["Not exposed by the target (profile)"]
    rows3 = {row[0]: row[2] for row in _gate_measurements(gates[3])}
    assert rows3["Relationship resolutions in telemetry"] == "not observed"
    assert rows3["Context changes without locked-fact override"] == "not observed"


def test_a_missing_pack_the_telemetry_cannot_show_is_no_evidence_of_integrity():
    # Builds are logged, missing packs and fallbacks are not: 0 missing would read as clean.
    records, events = healthy_campaign(hours=6)
    unobservable = {"pack_missing": "telemetry.not_exposed.pack_missing: never logged",
                    "pack_fallback": "telemetry.not_exposed.pack_fallback: never logged"}
    gate1 = evaluate_gates(records, events, POLICY, unobservable)[0]
    assert (gate1.status, gate1.rule) == ("NO_DATA", "gate1.not_exposed")
    assert "never logged" in gate1.reason and gate1.metrics["pack_builds"] > 0
    # Judged without that knowledge (the documented contract), the same tables pass.
    assert evaluate_gates(records, events, POLICY)[0].status == "PASS"


def test_a_visible_failure_still_fails_whatever_else_is_not_observable():
    records, events = healthy_campaign(hours=6)
    missing = events.iloc[[0]].assign(kind="pack_missing", level=50)
    unobservable = {"pack_fallback": "telemetry.not_exposed.pack_fallback: never logged"}
    gate1 = evaluate_gates(records, pd.concat([events, missing]), POLICY, unobservable)[0]
    assert (gate1.status, gate1.rule) == ("FAIL", "gate1.missing_pack")
