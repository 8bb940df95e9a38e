"""`staging-validation analyze LOGFILE`: the runbook's final analysis of a log, in one pass, counted right.

A count of an event kind the log could not show prints "not observed" (text and --json), never 0; the
readable share of the log is printed, with a warning on stderr when it is below the mapping's minimum.
`analyze` reads one log with the profile's main mapping; a further source's log is analysed with
`--source NAME` (its mapping under the profile's `telemetry.sources`).

Exit status: 0 analysed, 2 unreadable log file or profile.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
import duckdb
import yaml

from staging_validation.config_files import ConfigError, StrictModel, load_yaml_model
from staging_validation.schemas.telemetry_mapping import TelemetryMapping
from staging_validation.storage import atomic_write_text
from staging_validation.target.profile import load_target_profile
from staging_validation.telemetry.aggregates import (
    final_metrics_from_summary,
    render_final_metrics_text,
    reported_metrics,
    summarize_log_file,
)


class TelemetryOnlyProfile(StrictModel):
    """A file holding just the `telemetry` section of a target profile (analysing a log needs no more)."""

    name: str = "unnamed"
    telemetry: TelemetryMapping = TelemetryMapping()


def load_telemetry_mapping(path: str | Path | None) -> TelemetryMapping:
    """The telemetry section of a target profile, or of a telemetry-only file; the documented default."""
    if path is None:
        return TelemetryMapping()
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        data = None  # the loader below reports the problem with the file's name
    if isinstance(data, dict) and set(data) <= set(TelemetryOnlyProfile.model_fields):
        return load_yaml_model(path, TelemetryOnlyProfile).telemetry
    return load_target_profile(path).telemetry


def _fail(message: str) -> None:
    click.echo(f"Error: {message}", err=True)
    sys.exit(2)


@click.command()
@click.argument("logfile")
@click.option("--profile", "profile_path", default=None,
              help="Target profile YAML whose telemetry section says how to read the log (default: documented).")
@click.option("--out", "out_path", default=None,
              help="Also write the metrics text here (e.g. staging-validation-metrics.txt).")
@click.option("--source", "source_name", default=None,
              help="Read LOGFILE with this mapping of the profile's telemetry.sources (default: the main one).")
@click.option("--json", "as_json", is_flag=True, help="Print every metric as JSON instead of the text.")
def analyze(logfile: str, profile_path: str | None, out_path: str | None, source_name: str | None,
            as_json: bool) -> None:
    """Analyse LOGFILE as the runbook's final analysis does: every metric, plus latency p50/p95/p99."""
    try:
        mapping = load_telemetry_mapping(profile_path).for_source(source_name)
    except ConfigError as exc:
        _fail(str(exc))
    except ValueError as exc:
        _fail(f"{profile_path}: {exc}")
    try:
        summary, lines = summarize_log_file(logfile, mapping)
    except OSError as exc:
        _fail(f"{logfile}: cannot read: {exc.strerror or exc}")
    except duckdb.Error as exc:
        _fail(f"{logfile}: cannot read: {str(exc).splitlines()[0]}")
    metrics = final_metrics_from_summary(summary, lines=lines, mappings=[mapping])
    text = render_final_metrics_text(metrics)
    if out_path is not None:
        try:
            atomic_write_text(out_path, text)
        except OSError as exc:
            _fail(f"{out_path}: cannot write: {exc.strerror or exc}")
    for warning in metrics["warnings"]:
        click.echo(f"Warning: {warning}", err=True)
    click.echo(json.dumps(reported_metrics(metrics), indent=2) if as_json else text, nl=as_json)
