"""Profiles that declare what the service does not expose: the probes record "not exposed" / "cannot
verify" instead of failing, the gates are NO_DATA naming the profile path, and the decision never ACCEPTs.
Against the real (documented) simulator on loopback."""

from __future__ import annotations

import pandas as pd
import pytest
import yaml

from staging_validation.acceptance.decision import decide
from staging_validation.acceptance.gates import evaluate_gates
from staging_validation.acceptance.policy import Policy
from staging_validation.config_files import ConfigError, validate_model
from staging_validation.probes.identity import determinism_check, identity_check
from staging_validation.probes.runner import run_probe
from staging_validation.probes.smoke import deploy_verification
from staging_validation.schemas.outcome import Outcome
from staging_validation.schemas.probe_records import records_to_table
from staging_validation.target.profile import DOCUMENTED_PROFILE, NotExposed, TargetProfile
from staging_validation_tests.acceptance.acceptance_tables import events
from staging_validation_tests.probes.conftest import campaign_at

NO_FLAGS = "health lists no feature flags"
NO_CONTEXT = "answers carry no relationship context"
NO_LINKS = "the service has no link API"


def documented() -> dict:
    return yaml.safe_load(DOCUMENTED_PROFILE.read_text())


def sparse_profile() -> TargetProfile:
    data = documented()
    data["extract"]["health_features"] = {"not_exposed": NO_FLAGS}
    data["extract"]["relationship"] = {"not_exposed": NO_CONTEXT}
    data["requests"]["identity_link"] = {"not_exposed": NO_LINKS}
    return TargetProfile.model_validate(data)


def test_not_exposed_is_accepted_for_operations_groups_and_single_paths():
    data = documented()
    data["extract"]["health_features"]["identity_spine"] = {"not_exposed": "no identity flag"}
    data["requests"]["stream"] = {"not_exposed": "no streaming"}
    profile = TargetProfile.model_validate(data)
    assert isinstance(profile.requests.stream, NotExposed)
    assert profile.not_exposed("requests.stream") == "requests.stream: no streaming"
    assert profile.not_exposed("extract.health_features.identity_spine") == (
        "extract.health_features.identity_spine: no identity flag")
    assert profile.not_exposed("extract.health_features.ambiguity_gate") is None
    assert profile.not_exposed_anywhere("extract.health_features") == [
        "extract.health_features.identity_spine: no identity flag"]
    assert [route.label for route in profile.probed_routes()][:2] == ["/health (health)", "/v1/chat (chat)"]


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (lambda d: d["extract"].update(relationship={"not_exposed": ""}), "extract.relationship.not_exposed"),
        (lambda d: d["extract"].update(relationship={"not_exposed": "x", "voice": 1}), "extract.relationship.voice"),
        (lambda d: d["requests"].update(chat={"rout": "/v1/chat"}), "requests.chat.route"),
        (lambda d: d["requests"]["identity_create"].update(query={"id": "{nope}"}), "requests.identity_create.query"),
        (lambda d: d["extract"].pop("relationship"), "extract.relationship"),
        (lambda d: d.update(prompts_file="p.yaml", prompts={"determinism": "x"}), "prompts_file"),
    ],
)
def test_validation_errors_name_the_field(change, named):
    data = documented()
    change(data)
    with pytest.raises(ConfigError, match=f"profile.yaml: .*{named.replace('.', '[.]')}"):
        validate_model(data, TargetProfile, "profile.yaml")


def test_deploy_verification_cannot_verify_what_is_not_exposed_and_does_not_fail(target):
    simulator, _ = target
    result = run_probe(sparse_profile(), lambda c: deploy_verification(c, campaign_at(0.1, 3600)),
                       base_url=simulator.base_url)
    assert result.passed, result.failures
    health = next(r for r in result.records if r.case == "health")
    relationship = next(r for r in result.records if r.case == "relationship")
    assert health.outcome == Outcome.OK and health.passed is None
    assert health.not_exposed == f"extract.health_features: {NO_FLAGS}"
    assert relationship.passed is None and NO_CONTEXT in relationship.not_exposed
    assert [r.passed for r in result.records if r.case in ("normal", "ambiguous", "stream")] == [True] * 3
    assert any(NO_FLAGS in note for note in result.notes) and any(NO_CONTEXT in note for note in result.notes)
    assert result.summary["features_not_exposed"] == list(result.summary["features"])


def test_a_feature_that_is_exposed_and_off_still_fails_deploy_verification(target):
    simulator, _ = target
    data = documented()
    data["extract"]["health_features"]["identity_spine"] = "config.noSuchFlag"  # absent: not enabled
    data["extract"]["health_features"]["ambiguity_gate"] = {"not_exposed": NO_FLAGS}
    profile = TargetProfile.model_validate(data)
    result = run_probe(profile, lambda c: deploy_verification(c, campaign_at(0.1, 3600)),
                       base_url=simulator.base_url)
    health = next(r for r in result.records if r.case == "health")
    assert not result.passed and health.passed is False and "identity_spine (absent)" in health.error


def gate_inputs(*results) -> pd.DataFrame:
    records = [record for result in results for record in result.records]
    return records_to_table(records).to_pandas().assign(hour=0)


def test_not_exposed_context_and_route_make_gates_3_and_5_no_data_naming_them(target):
    simulator, _ = target
    profile = sparse_profile()
    timing = campaign_at(24.1, 3600)
    identity = run_probe(profile, lambda c: identity_check(c, timing), base_url=simulator.base_url)
    determinism = run_probe(profile, lambda c: determinism_check(c, timing), base_url=simulator.base_url)

    link = next(r for r in identity.records if r.case == "link_astralis")
    assert link.outcome == Outcome.NOT_EXPOSED and link.passed is None and link.http_status is None
    assert identity.passed and not identity.failures
    assert determinism.passed and determinism.summary["consistent"] is None
    assert determinism.summary["users_inconsistent"] is None
    assert NO_CONTEXT in determinism.summary["no_data_reason"]

    gates = evaluate_gates(gate_inputs(identity, determinism), events([]), Policy())
    gate3, gate5 = gates[2], gates[4]
    assert (gate3.status, gate3.rule) == ("NO_DATA", "gate3.not_exposed")
    assert f"extract.relationship: {NO_CONTEXT}" in gate3.reason
    assert (gate5.status, gate5.rule) == ("NO_DATA", "gate5.not_exposed")
    assert f"requests.identity_link: {NO_LINKS}" in gate5.reason and "link" in gate5.reason
    assert all(g.status != "FAIL" for g in gates)
    assert decide(gates, 1.0, Policy()).decision != "ACCEPT"


def test_determinism_without_any_context_is_no_data_not_consistent(target):
    """A service that answers the determinism prompt by a path that skips relationship resolution: every
    request is answered, none carries a context. That is no evidence, not "0 users inconsistent"."""
    simulator, _ = target
    data = documented()
    data["extract"]["relationship"] = {"relationship_type": "nowhere.type", "voice_profile": "nowhere.voice",
                                       "trust_level": "nowhere.trust"}
    profile = TargetProfile.model_validate(data)
    result = run_probe(profile, lambda c: determinism_check(c, campaign_at(24.1, 3600)),
                       base_url=simulator.base_url)
    assert all(r.outcome == Outcome.OK for r in result.records)
    summary = result.summary
    assert summary["requests_with_context"] == 0
    assert summary["consistent"] is None and summary["users_inconsistent"] is None
    assert "none of the 50 requests" in summary["no_data_reason"]
    gate3 = evaluate_gates(gate_inputs(result), events([]), Policy())[2]
    assert (gate3.status, gate3.rule) == ("NO_DATA", "gate3.no_probe_data")
    assert "50 answered requests returned no relationship context" in gate3.reason
