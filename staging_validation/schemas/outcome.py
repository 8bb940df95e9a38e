"""How a probe request ended: the `outcome` column of a probe record (RECORD_SCHEMA).

Kept apart from the record's Arrow schema, so that reading outcomes (as `analyze` does) imports no Arrow.
"""

from __future__ import annotations

from enum import StrEnum


class Outcome(StrEnum):
    OK = "ok"
    CLIENT_ERROR = "4xx"
    RATE_LIMITED = "rate_limited"
    SERVER_ERROR = "5xx"
    TIMEOUT = "timeout"
    CONNECTION_ERROR = "connection_error"
    # Never sent by the validator (stress: too late for its slot, or over the in-flight cap): the
    # validator's own shortfall, never evidence about the target.
    DROPPED = "dropped"
    # Never sent because the target profile declares the operation not exposed.
    NOT_EXPOSED = "not_exposed"


# Outcomes of requests the validator never sent: no rule, gate or report counts them against the target.
NOT_SENT = frozenset({Outcome.DROPPED.value, Outcome.NOT_EXPOSED.value})


def outcome_for_status(status: int) -> Outcome:
    if status == 429:
        return Outcome.RATE_LIMITED
    if status >= 500:
        return Outcome.SERVER_ERROR
    if status >= 400:
        return Outcome.CLIENT_ERROR
    return Outcome.OK
