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
"""

from __future__ import annotations

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
            config = {"memory_limit": DUCKDB_MEMORY_LIMIT, "threads": DUCKDB_THREADS}
            _database = (os.getpid(), duckdb.connect(config=config))
        con = _database[1].cursor()
    con.execute("SET TimeZone = 'UTC'")
    return con


def _sql_string(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _identifier(name: str) -> str:
    return '"' + name + '"'  # the mapping forbids double quotes in field names


_READ_TYPES = {"VARCHAR": "VARCHAR", "SMALLINT": "BIGINT", "INTEGER": "BIGINT", "BIGINT": "BIGINT", "DOUBLE": "DOUBLE"}


def _leaf_read_types(mapping: TelemetryMapping) -> dict[str, str]:
    """The type each source path is read as: the reader converts numbers natively (cheaper than casting
    strings), a field of another type becomes null. `time` (a number or an ISO string), the request ids,
    the ok flag and any path shared by columns of different types are read as VARCHAR."""
    wanted: dict[str, set[str]] = {}
    for column, path in mapping.fields.model_dump().items():
        sql_type = "VARCHAR" if column == "time" else _READ_TYPES[EVENT_COLUMNS[column]]
        wanted.setdefault(path, set()).add(sql_type)
    for path in (*mapping.request_id_fields, mapping.identity_ok_field):
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


def reader_sql(file_path: str | Path, mapping: TelemetryMapping) -> str:
    """The DuckDB relation reading every mapped field of each non-blank line of a log file."""
    tree = _path_tree(_leaf_read_types(mapping))
    columns = ", ".join(f"{_sql_string(key)}: {_sql_string(_duckdb_type(node))}" for key, node in tree.items())
    return (
        f"read_json({_sql_string(str(file_path))}, format='newline_delimited', ignore_errors=true, "
        f"maximum_object_size=16777216, columns={{{columns}}})"
    )


def _kind_expression(mapping: TelemetryMapping, msg: str, level: str) -> str:
    branches = []
    for rule in mapping.rules:
        if rule.equals is not None:
            condition = f"{msg} = {_sql_string(rule.equals)}"
        elif rule.prefix is not None:
            condition = f"starts_with({msg}, {_sql_string(rule.prefix)})"
        else:
            condition = f"regexp_matches({msg}, {_sql_string(rule.regex)})"
        branches.append(f"WHEN {condition} THEN {_sql_string(rule.kind.value)}")
    branches.append(f"WHEN {level} >= {mapping.error_level} THEN {_sql_string(EventKind.ERROR.value)}")
    return f"CASE {' '.join(branches)} ELSE {_sql_string(EventKind.OTHER.value)} END"


def classification_sql(reader: str, mapping: TelemetryMapping) -> str:
    """SELECT of EVENT_COLUMNS (minus `raw`) plus `parsed` over `reader` (see `reader_sql`).

    `parsed` is false for a line that is not a JSON object with a level or a msg; the other columns of
    such a row are meaningless. Row order is the reader's (log order).
    """
    fields = mapping.fields.model_dump()
    read_types = _leaf_read_types(mapping)
    ref = {column: _column_ref(path) for column, path in fields.items()}
    level = _cast(ref["level"], read_types[fields["level"]], "SMALLINT")
    msg = ref["msg"]
    request_id = "COALESCE(" + ", ".join(_column_ref(p) for p in mapping.request_id_fields) + ")"
    time = (
        f"COALESCE(epoch_ms(TRY_CAST(TRY_CAST({ref['time']} AS DOUBLE) AS BIGINT)), "
        f"TRY_CAST(TRY_CAST({ref['time']} AS TIMESTAMPTZ) AS TIMESTAMP))"
    )
    identity_ok = _column_ref(mapping.identity_ok_field)
    selects = {
        "time": time,
        "kind": "_sv_kind",
        "level": "_sv_level",
        "request_id": "_sv_request_id",
        "origin": (
            f"CASE WHEN starts_with(_sv_request_id, {_sql_string(mapping.probe_request_id_prefix)}) "
            "THEN 'probe' ELSE 'organic' END"
        ),
        "msg": msg,
    }
    for name, sql_type in EVENT_COLUMNS.items():
        if name in selects or name in _DERIVED_COLUMNS:
            continue
        value = ref[name]
        if name == "identity_op":
            value = (
                f"CASE WHEN _sv_kind = {_sql_string(EventKind.IDENTITY_OP.value)} "
                f"AND lower({identity_ok}) = 'false' THEN {value} || '_failed' ELSE {value} END"
            )
        selects[name] = _cast(value, read_types[fields[name]], sql_type)
    # Not `time`: read as text (it may be ISO), it would cost every line of an aggregate a string.
    parsed = f"({ref['level']} IS NOT NULL OR {msg} IS NOT NULL)"
    select_list = ",\n  ".join(f"{expr} AS {_identifier(name)}" for name, expr in selects.items())
    # Derived columns carry a prefix so they cannot collide with a JSON key the reader exposes.
    return (
        f"SELECT\n  {select_list},\n  _sv_parsed AS parsed\n"
        f"FROM (SELECT *, {level} AS _sv_level, {_kind_expression(mapping, msg, level)} AS _sv_kind, "
        f"{request_id} AS _sv_request_id, {parsed} AS _sv_parsed FROM {reader}) AS line"
    )
