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


def outcome_for_status(status: int) -> Outcome:
    if status == 429:
        return Outcome.RATE_LIMITED
    if status >= 500:
        return Outcome.SERVER_ERROR
    if status >= 400:
        return Outcome.CLIENT_ERROR
    return Outcome.OK
