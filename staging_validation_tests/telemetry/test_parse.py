"""parse_log: every event kind classified by structured fields, every non-JSON form counted as unparsed,
custom mappings honoured."""

from __future__ import annotations

import json

import pytest

from staging_validation.config_files import ConfigError, validate_model
from staging_validation.schemas.event_columns import EventKind
from staging_validation.schemas.events import EVENT_SCHEMA
from staging_validation.schemas.telemetry_mapping import (
    DEFAULT_MSG_RULES,
    MsgRule,
    TelemetryMapping,
)
from staging_validation.telemetry.parse import parse_log

T0 = 1_795_392_000_000


def pino(msg: str, level: int = 30, req_id: str | None = "req-1", **fields) -> str:
    record = {"level": level, "time": T0, "pid": 7, "hostname": "stg"}
    if req_id is not None:
        record["reqId"] = req_id
    record.update(fields)
    record["msg"] = msg
    return json.dumps(record, separators=(",", ":"))


DOCUMENTED_LINES = [
    pino("[Staging] ContinuityPack built", hashedUserId="ab12", total_facts=9,
         authority_breakdown={"locked": 1, "explicit": 2, "inferred": 3, "ephemeral": 3},
         historical_summaries=2, engagement_history=5, size_bytes=48213, built_in_ms=17.5),
    pino("[Staging] ContinuityPack missing: no continuity pack for request", level=50, hashedUserId="ab12"),
    pino("[Staging] ContinuityPack fallback: using default pack", level=40, hashedUserId="ab12",
         reason="pack_store_timeout"),
    pino("[Staging] Ambiguity check completed", status="AMBIGUOUS", reason="DANGLING_REFERENCE",
         input_length=11, confidence=0.91, checked_in_ms=6.25),
    pino("[Staging] Relationship resolved", hashedUserId="ab12", source="locked_fact",
         relationship_type="owner", voice_profile="warm", trust_level="high", resolved_in_ms=3),
    pino("[Staging] Governor pass 2/5", status="passed", violation_type="none", attempt=2,
         max_attempts=5, regen_in_ms=311.5),
    pino("[Staging] Identity operation", op="link", provider="discord", provider_user_id="d-1",
         vi_user_id="u-9", ok=True),
    pino("[Staging] Identity operation", level=50, op="link", provider="discord", provider_user_id="d-2",
         vi_user_id="u-9", ok=False),
    pino("request completed", req_id="sv-smoke-1", req={"method": "POST", "url": "/v1/chat"},
         res={"statusCode": 503}, duration_ms=812.0),
    pino("Unhandled error in chat handler", level=50, err={"type": "TypeError", "message": "x", "stack": "s"}),
    pino("server listening", req_id=None),
]


def test_every_documented_event_kind_is_classified_with_its_fields():
    parsed = parse_log(("\n".join(DOCUMENTED_LINES) + "\n").encode())
    assert parsed.lines_total == len(DOCUMENTED_LINES) and parsed.unparsed_lines == 0
    assert parsed.events.schema == EVENT_SCHEMA
    rows = parsed.events.to_pylist()
    assert [row["kind"] for row in rows] == [
        "pack_built", "pack_missing", "pack_fallback", "ambiguity_check", "relationship_resolved",
        "governor_pass", "identity_op", "identity_op", "request_completed", "error", "other",
    ]  # fmt: skip
    built, missing, fallback, ambiguity, relationship, governor, link, failed_link, completed, error, other = rows
    assert (built["user_hash"], built["size_bytes"], built["built_in_ms"]) == ("ab12", 48213, 17.5)
    assert missing["level"] == 50 and missing["user_hash"] == "ab12"
    assert fallback["reason"] == "pack_store_timeout"
    assert (ambiguity["status"], ambiguity["reason"]) == ("AMBIGUOUS", "DANGLING_REFERENCE")
    assert ambiguity["input_length"] == 11
    assert (ambiguity["confidence"], ambiguity["checked_in_ms"]) == (0.91, 6.25)
    assert (relationship["source"], relationship["relationship_type"]) == ("locked_fact", "owner")
    assert (relationship["voice_profile"], relationship["trust_level"]) == ("warm", "high")
    assert (governor["attempt"], governor["max_attempts"], governor["status"]) == (2, 5, "passed")
    assert (governor["violation_type"], governor["regen_in_ms"]) == ("none", 311.5)
    assert (link["identity_op"], link["provider"], link["provider_user_id"], link["vi_user_id"]) == (
        "link", "discord", "d-1", "u-9")  # fmt: skip
    assert failed_link["identity_op"] == "link_failed"
    assert (completed["route"], completed["method"], completed["http_status"], completed["duration_ms"]) == (
        "/v1/chat", "POST", 503, 812.0)  # fmt: skip
    assert completed["origin"] == "probe" and completed["request_id"] == "sv-smoke-1"
    assert built["origin"] == "organic" and built["request_id"] == "req-1"
    assert other["request_id"] is None and other["origin"] == "organic"
    assert error["level"] == 50
    assert all(row["time"].timestamp() * 1000 == T0 for row in rows)
    # Evidence: warnings and errors keep their line, routine events do not.
    assert [row["raw"] is not None for row in rows] == [
        False, True, True, False, False, False, False, True, False, True, False]  # fmt: skip
    assert json.loads(missing["raw"])["msg"].startswith("[Staging] ContinuityPack missing")


def test_lines_that_are_not_json_objects_are_counted_and_sampled_never_fatal():
    good = pino("request completed", req={"method": "GET", "url": "/health"}, res={"statusCode": 200}, duration_ms=3)
    data = b"\n".join([
        good.encode(),
        b"[nodemon] watching 214 files",
        b"Error: connect ECONNRESET 10.0.4.17:6379",
        b"    at TCPConnectWrap.afterConnect [as oncomplete] (node:net:1555:16)",
        good[: len(good) // 2].encode(),  # truncated JSON
        b"[1, 2, 3]",
        b'"just a string"',
        b"42",
        b"\xff\xfe\x00 garbage \xc3",
        b"",
        b"   \t",
        good.encode() + b" trailing",
        b'{"level":30,"msg":{"nested":true}',
        good.encode(),
    ])  # fmt: skip
    parsed = parse_log(data)  # the last line has no newline: still a line
    assert parsed.lines_total == 14
    assert parsed.events.num_rows == 2
    assert parsed.unparsed_lines == 12
    assert parsed.unparsed_samples[:3] == [
        "[nodemon] watching 214 files",
        "Error: connect ECONNRESET 10.0.4.17:6379",
        "    at TCPConnectWrap.afterConnect [as oncomplete] (node:net:1555:16)",
    ]
    assert "\ufffd" in parsed.unparsed_samples[7]  # invalid UTF-8 shown, replaced


def test_a_file_and_its_bytes_parse_the_same(tmp_path):
    path = tmp_path / "staging.log"
    path.write_bytes(("\n".join(DOCUMENTED_LINES) + "\nplain\n\n").encode())
    from_path, from_bytes = parse_log(path), parse_log(path.read_bytes())
    assert from_path.events.equals(from_bytes.events)
    assert (from_path.lines_total, from_path.unparsed_lines) == (from_bytes.lines_total, from_bytes.unparsed_lines) == (
        len(DOCUMENTED_LINES) + 2, 2)  # fmt: skip


def test_an_empty_log_has_no_events():
    parsed = parse_log(b"")
    assert (parsed.events.num_rows, parsed.lines_total, parsed.unparsed_lines) == (0, 0, 0)
    assert parsed.events.schema == EVENT_SCHEMA


def test_types_are_tolerated_field_by_field():
    lines = [
        json.dumps({"level": "50", "time": T0, "msg": "boom"}),  # level as a string
        json.dumps({"level": 30, "time": "2026-11-23T00:00:01Z", "msg": "request completed",
                    "res": {"statusCode": "not a number"}, "duration_ms": "12.5"}),
        json.dumps({"level": 30, "time": T0, "msg": "request completed", "res": "flat", "req": [1]}),
    ]  # fmt: skip
    rows = parse_log(("\n".join(lines) + "\n").encode()).events.to_pylist()
    assert [row["kind"] for row in rows] == ["error", "request_completed", "request_completed"]
    assert rows[1]["http_status"] is None and rows[1]["duration_ms"] == 12.5
    assert rows[1]["time"].timestamp() == T0 / 1000 + 1
    assert rows[2]["http_status"] is None and rows[2]["route"] is None


def test_a_custom_mapping_reads_another_dialect_of_fields_and_messages():
    mapping = validate_model(
        {
            "rules": [
                {"kind": "request_completed", "prefix": "HTTP "},
                {"kind": "governor_pass", "regex": r"^governor attempt \d+$"},
                {"kind": "pack_missing", "equals": "no pack"},
            ],
            "fields": {"msg": "message", "level": "severity", "time": "ts", "http_status": "http.response.status",
                       "route": "http.request.path", "duration_ms": "elapsed", "attempt": "gov.n"},
            "request_id_fields": ["trace.id", "reqId"],
            "probe_request_id_prefix": "validator-",
            "error_level": 60,
        },
        TelemetryMapping,
        "profile.yaml: telemetry",
    )  # fmt: skip
    lines = [
        {"severity": 30, "ts": T0, "message": "HTTP GET /x", "trace": {"id": "validator-7"},
         "http": {"response": {"status": 502}, "request": {"path": "/x"}}, "elapsed": 9},
        {"severity": 30, "ts": T0, "message": "governor attempt 3", "gov": {"n": 3}, "reqId": "r-2"},
        {"severity": 30, "ts": T0, "message": "governor attempt three"},
        {"severity": 50, "ts": T0, "message": "no pack"},
        {"severity": 50, "ts": T0, "message": "below the error level of this mapping"},
        {"severity": 60, "ts": T0, "message": "fatal"},
        {"level": 50, "time": T0, "msg": "[Staging] ContinuityPack missing: no continuity pack for request"},
    ]  # fmt: skip
    parsed = parse_log(("\n".join(json.dumps(line) for line in lines) + "\n").encode(), mapping)
    rows = parsed.events.to_pylist()
    assert [row["kind"] for row in rows] == [
        "request_completed", "governor_pass", "other", "pack_missing", "other", "error"]  # fmt: skip
    assert parsed.unparsed_lines == 1  # a JSON object with neither this mapping's level nor its msg
    assert (rows[0]["http_status"], rows[0]["route"], rows[0]["duration_ms"]) == (502, "/x", 9.0)
    assert (rows[0]["request_id"], rows[0]["origin"]) == ("validator-7", "probe")
    assert (rows[1]["attempt"], rows[1]["request_id"], rows[1]["origin"]) == (3, "r-2", "organic")


@pytest.mark.parametrize(
    "data, problem",
    [
        ({"rules": [{"kind": "pack_built"}]}, "rules.0: .*exactly one of equals, prefix, regex"),
        ({"rules": [{"kind": "other", "equals": "x"}]}, "cannot be a rule's kind"),
        ({"rules": [{"kind": "pack_built", "regex": "("}]}, "does not compile"),
        ({"rules": [{"kind": "pack_built", "regex": "a(?=b)"}]}, "does not compile"),  # Python yes, RE2 no
        ({"rules": [{"kind": "no_such_kind", "equals": "x"}]}, "rules.0.kind"),
        ({"fields": {"route": "req..url"}}, "fields.route: .*not a dotted field path"),
        ({"fields": {"route": "req", "method": "req.method"}}, "'req' is mapped as a value"),
        ({"fields": {"no_such_column": "x"}}, "fields.no_such_column"),
        ({"request_id_fields": []}, "at least one request-id field"),
        ({"probe_request_id_prefix": ""}, "probe_request_id_prefix"),
    ],
)
def test_a_bad_mapping_is_a_config_error_naming_the_field(data, problem):
    with pytest.raises(ConfigError, match=problem):
        validate_model(data, TelemetryMapping, "profile.yaml: telemetry")


def test_the_default_mapping_covers_every_event_kind_but_error_and_other():
    kinds = {rule.kind for rule in TelemetryMapping().rules}
    assert kinds == set(EventKind) - {EventKind.ERROR, EventKind.OTHER}


def test_the_default_rules_pass_the_validation_they_are_built_without():
    for rule in DEFAULT_MSG_RULES:
        assert MsgRule.model_validate(rule.model_dump()) == rule
