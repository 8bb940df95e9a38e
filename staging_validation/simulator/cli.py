"""`staging-validation simulate`: run the built-in staging service on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path

import click

from staging_validation.config_files import ConfigError
from staging_validation.schemas.timing import CampaignTiming
from staging_validation.simulator.app import build_app
from staging_validation.simulator.engine import DIALECTS, DOCUMENTED, SPARSE, StagingService
from staging_validation.simulator.profiles import DEFAULT_PROFILE_FILE, load_profile
from staging_validation.simulator.server import HOST, bind_listening_socket, serve
from staging_validation.simulator.sparse_log import SparseTelemetry, events_log_path
from staging_validation.simulator.telemetry_log import TelemetryLog
from staging_validation.storage import atomic_write_text


@click.command()
@click.option(
    "--port", type=click.IntRange(0, 65535), default=8765, show_default=True, help="0 picks a free port."
)
@click.option(
    "--port-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the bound port here once listening.",
)
@click.option("--profile", "profile_name", default="healthy", show_default=True, help="Fault profile name.")
@click.option(
    "--profile-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help=f"Profiles YAML (default: the shipped {DEFAULT_PROFILE_FILE.name}; copy it to edit).",
)
@click.option(
    "--log",
    "log_path",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="Telemetry log (appended).",
)
@click.option("--seed", type=int, default=1, show_default=True)
@click.option(
    "--hour-seconds",
    type=click.FloatRange(min=0, min_open=True),
    default=3600.0,
    show_default=True,
    help="Length of a campaign hour in seconds.",
)
@click.option("--campaign-start-ms", type=int, help="Campaign hour 0 (epoch ms); default: now.")
@click.option("--dialect", type=click.Choice(DIALECTS), default=DOCUMENTED, show_default=True)
@click.option(
    "--events-log",
    "events_log",
    type=click.Path(dir_okay=False, path_type=Path),
    help="sparse dialect: the governor's JSONL file (default: <log stem>.events.jsonl beside --log).",
)
@click.option(
    "--organic-rps",
    type=click.FloatRange(min=0),
    default=0.0,
    show_default=True,
    help="Background user requests per second.",
)
@click.option(
    "--stats-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="On shutdown, write the final GET /_sim/stats JSON here (ground truth after the process is gone).",
)
@click.option(
    "--token-env",
    metavar="VAR",
    help="Require `Authorization: Bearer <token>`, the token read from this environment variable.",
)
def simulate(
    port: int,
    port_file: Path | None,
    profile_name: str,
    profile_file: Path | None,
    log_path: Path,
    seed: int,
    hour_seconds: float,
    campaign_start_ms: int | None,
    dialect: str,
    events_log: Path | None,
    organic_rps: float,
    token_env: str | None,
    stats_file: Path | None,
) -> None:
    """Serve a simulated staging chat service and write its pino telemetry to --log."""
    try:
        profile = load_profile(profile_name, profile_file)
    except ConfigError as exc:
        raise click.ClickException(" ".join(str(exc).split())) from None  # YAML errors span lines
    token = None
    if token_env is not None:
        token = os.environ.get(token_env)
        if not token:
            raise click.ClickException(f"--token-env: environment variable {token_env} is not set or empty")
    try:
        sock = bind_listening_socket(port)
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {HOST}:{port}: {exc.strerror or exc}") from None
    if events_log is not None and dialect != SPARSE:
        sock.close()
        raise click.UsageError("--events-log is only for --dialect sparse (the others log to --log only)")
    log: TelemetryLog | SparseTelemetry
    try:
        if dialect == SPARSE:
            log = SparseTelemetry(log_path, events_log or events_log_path(log_path))
        else:
            log = TelemetryLog(log_path)
    except OSError as exc:
        sock.close()
        raise click.ClickException(f"cannot write the log {exc.filename or log_path}: {exc.strerror or exc}") from None

    start_ms = campaign_start_ms if campaign_start_ms is not None else int(time.time() * 1000)
    service = StagingService(
        profile, log, seed, CampaignTiming(start_ms=start_ms, hour_seconds=hour_seconds), dialect
    )
    bound_port = sock.getsockname()[1]
    log.write(f"Server listening at http://{HOST}:{bound_port}", profile=profile.name, dialect=dialect)
    if port_file is not None:
        atomic_write_text(port_file, str(bound_port))
    click.echo(
        f"simulator ({profile.name}, {dialect}) listening on http://{HOST}:{bound_port}, log {log_path}",
        err=True,
    )
    asyncio.run(serve(service, build_app(service, token), sock, organic_rps))
    if stats_file is not None:
        atomic_write_text(stats_file, json.dumps(service.stats(), indent=1))
