"""A fresh database on the PostgreSQL server named by the DAGSTER_PG_* variables, for one test.

`.ci/run` starts a throwaway server (deploy/postgres/scratch_server.sh) and exports the variables. Without
them a test that needs the server is skipped locally, and fails in CI (CI=true): there it must run.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

SERVER_VARIABLES = ("DAGSTER_PG_HOST", "DAGSTER_PG_PORT", "DAGSTER_PG_USERNAME", "DAGSTER_PG_PASSWORD", "DAGSTER_PG_DB")


def _connect(database: str):
    import psycopg2  # installed with dagster-postgres

    connection = psycopg2.connect(
        host=os.environ["DAGSTER_PG_HOST"], port=int(os.environ["DAGSTER_PG_PORT"]),
        user=os.environ["DAGSTER_PG_USERNAME"], password=os.environ["DAGSTER_PG_PASSWORD"], dbname=database,
    )
    connection.autocommit = True  # CREATE/DROP DATABASE cannot run inside a transaction
    return connection


@pytest.fixture
def postgres_database(monkeypatch) -> Iterator[str]:
    """Creates a database of its own, points DAGSTER_PG_DB at it (for this process and the services it
    starts), drops it at the end."""
    missing = [name for name in SERVER_VARIABLES if not os.environ.get(name)]
    if missing:
        reason = (f"no PostgreSQL server configured ({', '.join(missing)} unset); "
                  "`.ci/run` starts one with deploy/postgres/scratch_server.sh")
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but {reason}")
        pytest.skip(reason)
    database = f"sv_test_{uuid.uuid4().hex[:12]}"
    server = _connect(os.environ["DAGSTER_PG_DB"])
    try:
        with server.cursor() as cursor:
            cursor.execute(f'CREATE DATABASE "{database}"')
        monkeypatch.setenv("DAGSTER_PG_DB", database)
        yield database
        with server.cursor() as cursor:
            # FORCE: a service that was killed may leave a connection open for a moment.
            cursor.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    finally:
        server.close()
