"""The telemetry classifier in SQL: which line is which event, and its EVENT_COLUMNS, by structured fields.

`reader_sql` is the DuckDB relation reading a log file; `classification_sql` classifies its rows. The
parser (`telemetry.parse.parse_log`, for the campaign's hourly ingestion and the monitor) materializes
the result as Arrow; `analyze` (`telemetry.aggregates.summarize_log_file`) aggregates over it in SQL
instead of materializing every line. Neither DuckDB nor this module needs Arrow or numpy.

DuckDB's newline-delimited JSON reader does the work: every field the mapping names is read from its
(possibly nested) path, typed as its event column, with `ignore_errors`: a line that is not valid JSON,
or not an object, becomes a row whose fields are all null (that is what makes it *unparsed*), a field of
an unexpected type becomes null, and nothing is fatal. The reader skips whitespace-only lines (the same
set of characters as `bytes.strip()`).

Measured on DuckDB 2.0: deep nesting (100 000 levels) is read without harm; a line with invalid UTF-8 is
rejected whole (every field null), which is why `parse_log` repairs such lines before the reader sees
them; a non-finite or out-of-range time is read as a value, which is why the classifier tests it.
"""

from __future__ import annotations

import dataclasses
import os
import threading
from pathlib import Path

import duckdb

from staging_validation.schemas.event_columns import EVENT_COLUMNS, EventKind
from staging_validation.schemas.telemetry_mapping import TelemetryMapping

# Bounded resources: the readers stream; these cap what an aggregation or a large hour may hold.
DUCKDB_MEMORY_LIMIT = "256MB"
DUCKDB_THREADS = 2

_DERIVED_COLUMNS = ("kind", "origin", "request_id", "raw")

_database: tuple[int, duckdb.DuckDBPyConnection] | None = None
_database_lock = threading.Lock()


def connect() -> duckdb.DuckDBPyConnection:
    """A new connection (close it) to this process's in-memory DuckDB database, created once: opening a
    database costs more than parsing a monitor tick's worth of lines. A forked child makes its own."""
    global _database
    with _database_lock:
        if _database is None or _database[0] != os.getpid():
            database = duckdb.connect(config={"memory_limit": DUCKDB_MEMORY_LIMIT, "threads": DUCKDB_THREADS})
            _database = (os.getpid(), database)
        con = _database[1].cursor()
    con.execute("SET TimeZone = 'UTC'")
    return con


def _sql_string(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _identifier(name: str) -> str:
    return '"' + name + '"'  # the mapping forbids double quotes in field names


_READ_TYPES = {"VARCHAR": "VARCHAR", "SMALLINT": "BIGINT", "INTEGER": "BIGINT", "BIGINT": "BIGINT", "DOUBLE": "DOUBLE"}
# Epoch ms of 10000-01-01: the end of what a timestamp column holds; the default window ends there.
LATEST_MS = 253_402_300_800_000


@dataclasses.dataclass(frozen=True)
class TimeWindow:
    """The epoch-ms times `[earliest_ms, end_ms)` a line may carry and still be an event; a line with
    another time (or none) is unparsed. The default admits every representable time from 1970 on."""

    earliest_ms: int = 0
    end_ms: int = LATEST_MS

    def admits(self, time_ms: int) -> bool:
        return self.earliest_ms <= time_ms < self.end_ms


ALL_TIME = TimeWindow()


def _time_read_type(mapping: TelemetryMapping) -> str:
    # Epoch formats are read as numbers (natively, cheaper); auto and ISO may be text.
    return "DOUBLE" if mapping.time_format in ("epoch_ms", "epoch_s") else "VARCHAR"


def _leaf_read_types(mapping: TelemetryMapping) -> dict[str, str]:
    """The type each source path is read as: the reader converts numbers natively (cheaper than casting
    strings), a field of another type becomes null. `time` (see `_time_read_type`), a level with names,
    the request ids, the ok flag, the fields rules match on and any path shared by columns of different
    types are read as VARCHAR."""
    wanted: dict[str, set[str]] = {}
    for column, path in mapping.fields.model_dump().items():
        if column == "time":
            sql_type = _time_read_type(mapping)
        elif column == "level" and mapping.level_names:
            sql_type = "VARCHAR"
        else:
            sql_type = _READ_TYPES[EVENT_COLUMNS[column]]
        wanted.setdefault(path, set()).add(sql_type)
    rule_fields = [rule.field for rule in mapping.rules if rule.field is not None]
    for path in (*mapping.request_id_fields, mapping.identity_ok_field, *rule_fields):
        wanted.setdefault(path, set()).add("VARCHAR")
    return {path: types.pop() if len(types) == 1 else "VARCHAR" for path, types in wanted.items()}


def _path_tree(leaf_types: dict[str, str]) -> dict:
    """Nested dict of path segments with the leaf's read type (the mapping rules out leaf/parent clashes)."""
    tree: dict = {}
    for path, sql_type in leaf_types.items():
        node = tree
        *parents, leaf = path.split(".")
        for segment in parents:
            node = node.setdefault(segment, {})
        node[leaf] = sql_type
    return tree


def _duckdb_type(node: dict | str) -> str:
    if isinstance(node, str):
        return node
    return "STRUCT(" + ", ".join(f"{_identifier(k)} {_duckdb_type(v)}" for k, v in node.items()) + ")"


def _column_ref(path: str) -> str:
    return ".".join(_identifier(segment) for segment in path.split("."))


def _cast(value: str, read_type: str, sql_type: str) -> str:
    if read_type == sql_type:
        return value
    if read_type == "VARCHAR" and sql_type in ("SMALLINT", "INTEGER", "BIGINT"):
        return f"TRY_CAST(TRY_CAST({value} AS DOUBLE) AS {sql_type})"  # "30.0" and "3e1" are integers too
    return f"TRY_CAST({value} AS {sql_type})"


def _literal(value: str | float) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return _sql_string(value) if isinstance(value, str) else repr(value)


def reader_sql(file_path: str | Path, mapping: TelemetryMapping) -> str:
    """The DuckDB relation reading every mapped field of each non-blank line of a log file."""
    tree = _path_tree(_leaf_read_types(mapping))
    columns = ", ".join(f"{_sql_string(key)}: {_sql_string(_duckdb_type(node))}" for key, node in tree.items())
    return (
        f"read_json({_sql_string(str(file_path))}, format='newline_delimited', ignore_errors=true, "
        f"maximum_object_size={max(mapping.max_line_bytes, 16 << 20)}, columns={{{columns}}})"
    )


def _rule_conditions(mapping: TelemetryMapping, msg: str) -> list[str]:
    conditions = []
    for rule in mapping.rules:
        text = msg if rule.field is None else _column_ref(rule.field)
        if rule.equals is not None:
            conditions.append(f"{text} = {_sql_string(rule.equals)}")
        elif rule.prefix is not None:
            conditions.append(f"starts_with({text}, {_sql_string(rule.prefix)})")
        else:
            assert rule.regex is not None  # MsgRule requires exactly one of equals, prefix, regex
            conditions.append(f"regexp_matches({text}, {_sql_string(rule.regex)})")
    return conditions


def _kind_expression(mapping: TelemetryMapping, msg: str, level: str) -> str:
    branches = [f"WHEN {condition} THEN {_sql_string(rule.kind.value)}"
                for rule, condition in zip(mapping.rules, _rule_conditions(mapping, msg), strict=True)]
    branches.append(f"WHEN {level} >= {mapping.error_level} THEN {_sql_string(EventKind.ERROR.value)}")
    return f"CASE {' '.join(branches)} ELSE {_sql_string(EventKind.OTHER.value)} END"


def _rule_index_expression(mapping: TelemetryMapping, msg: str) -> str:
    branches = [f"WHEN {condition} THEN {index}" for index, condition in enumerate(_rule_conditions(mapping, msg))]
    return f"CASE {' '.join(branches)} END"


def _level_expression(mapping: TelemetryMapping, ref: str, read_type: str) -> str:
    numeric = _cast(ref, read_type, "SMALLINT")
    if not mapping.level_names:
        return numeric
    names = " ".join(f"WHEN {_sql_string(name)} THEN {level}" for name, level in mapping.level_names.items())
    return f"CASE lower({ref}) {names} ELSE {numeric} END"


def _time_ms_expression(mapping: TelemetryMapping, ref: str) -> str:
    """The line's time in epoch ms (floored, as the capture files it), or null when it is no real time
    (not a number or ISO string, infinite, NaN, beyond BIGINT)."""
    iso = f"epoch_ms(TRY_CAST({ref} AS TIMESTAMPTZ))"
    if mapping.time_format == "epoch_ms":
        return f"TRY_CAST(floor({ref}) AS BIGINT)"
    if mapping.time_format == "epoch_s":
        return f"TRY_CAST(floor({ref} * 1000) AS BIGINT)"
    if mapping.time_format == "iso8601":
        return iso
    return f"COALESCE(TRY_CAST(floor(TRY_CAST({ref} AS DOUBLE)) AS BIGINT), {iso})"


def classification_sql(reader: str, mapping: TelemetryMapping, window: TimeWindow = ALL_TIME) -> str:
    """SELECT of EVENT_COLUMNS (minus `raw`) plus `record` and `parsed` over `reader` (see `reader_sql`).

    `record` is false for a line that is not a JSON object with a level or a msg; `parsed` (an event) is
    a record whose time is a real moment inside `window`. The other columns of a row that is not parsed
    are meaningless. Row order is the reader's (log order).
    """
    fields = mapping.fields.model_dump()
    read_types = _leaf_read_types(mapping)
    ref = {column: _column_ref(path) for column, path in fields.items()}
    level = _level_expression(mapping, ref["level"], read_types[fields["level"]])
    msg = ref["msg"]
    request_id = "COALESCE(" + ", ".join(_column_ref(p) for p in mapping.request_id_fields) + ")"
    identity_ok = _column_ref(mapping.identity_ok_field)
    selects = {
        "time": f"CASE WHEN _sv_time_ms >= 0 AND _sv_time_ms < {LATEST_MS} THEN epoch_ms(_sv_time_ms) END",
        "kind": "_sv_kind",
        "level": "_sv_level",
        "request_id": "_sv_request_id",
        "origin": (
            f"CASE WHEN starts_with(_sv_request_id, {_sql_string(mapping.probe_request_id_prefix)}) "
            "THEN 'probe' ELSE 'organic' END"
        ),
        "msg": msg,
    }
    constant_rules = [(index, rule) for index, rule in enumerate(mapping.rules) if rule.constants]
    for name, sql_type in EVENT_COLUMNS.items():
        if name in selects or name in _DERIVED_COLUMNS:
            continue
        value = _cast(ref[name], read_types[fields[name]], sql_type)
        constants = [(index, rule.constants[name]) for index, rule in constant_rules if name in rule.constants]
        if constants:  # set by the matching rule, else read from the line
            whens = " ".join(f"WHEN {index} THEN TRY_CAST({_literal(c)} AS {sql_type})" for index, c in constants)
            value = f"CASE _sv_rule {whens} ELSE {value} END"
        if name == "identity_op":
            value = (
                f"CASE WHEN _sv_kind = {_sql_string(EventKind.IDENTITY_OP.value)} "
                f"AND lower({identity_ok}) = 'false' THEN {value} || '_failed' ELSE {value} END"
            )
        selects[name] = value
    # The window test reads `time` on every record; the fast paths above keep that a numeric comparison.
    record = f"({ref['level']} IS NOT NULL OR {msg} IS NOT NULL)"
    timed = f"(_sv_time_ms >= {window.earliest_ms} AND _sv_time_ms < {window.end_ms})"
    select_list = ",\n  ".join(f"{expr} AS {_identifier(name)}" for name, expr in selects.items())
    rule_index = f", {_rule_index_expression(mapping, msg)} AS _sv_rule" if constant_rules else ""
    # Derived columns carry a prefix so they cannot collide with a JSON key the reader exposes.
    return (
        f"SELECT\n  {select_list},\n  _sv_record AS record,\n  coalesce(_sv_record AND {timed}, false) AS parsed\n"
        f"FROM (SELECT *, {level} AS _sv_level, {_kind_expression(mapping, msg, level)} AS _sv_kind, "
        f"{_time_ms_expression(mapping, ref['time'])} AS _sv_time_ms, "
        f"{request_id} AS _sv_request_id, {record} AS _sv_record{rule_index} FROM {reader}) AS line"
    )
