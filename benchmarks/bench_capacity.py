"""Capacity of one instance: K campaigns at once through the real dagster-daemon, per instance kind.

For each instance kind (SQLite: the repository's dagster.yaml; PostgreSQL: deploy/postgres/dagster.yaml)
and each K: a fresh instance, one simulator per campaign, the daemon started as a deployment starts it
(`dagster instance migrate` first), K `start_campaign` runs queued with `dagster job launch` (each campaign
ends at its first verdict), then the daemon's sensors and run queue drive every campaign to its verdict:
per campaign one collector run plays every hour's probe steps, and one hour run per hour ingests them.
Prints, per kind and K: campaigns, how many reached their verdict, hours, runs, median and p95 run start
latency (enqueued → run process started), validator gaps, ingestion lateness, failed runs, CPU seconds
per campaign-hour, and the largest K measured with zero gaps. The figures, each gap and each failure are
also written to `capacity.json` in the measurement's work folder under benchmarks/out/.

Gaps are the project's own (collection/validator_gaps.py): planned probe steps of the campaign's hours
that the collector did not run in their hour (recorded not run, with the reason, or never recorded),
counted whether a later hour made them up or not; read from the `validator` coverage the verdict stored
in decision.json, or, for a campaign that did not reach its verdict, computed the same way from its
recorded steps when the measurement stopped. Ingestion lateness is apart, not a gap (the collector's
probes do not wait for it): how long after its hour ended each hour run started (the clock requests it
once the hour's steps are recorded, so a step that overran its hour delays it too). A run that started
but failed is counted under "failed runs".

CPU seconds are those of the daemon and everything it starts (sensor threads, code servers, run
processes), read from the kernel's accounting when each process is reaped (this script makes itself the
child subreaper, so run processes that outlive their parent are reaped here too). The simulators (the
target, not the validator) and the migrate/launch commands are left out. The daemon's own start-up is in.

PostgreSQL: the server named by the DAGSTER_PG_* variables (a fresh database per measurement), or, when
they are unset, a throwaway server started with deploy/postgres/scratch_server.sh and stopped at the end.

Bounded: every measurement stops 600 s after its start if its campaigns' clocks (started by their
collectors) have not all started by then, else (hours + 3) hour lengths after the last clock start.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import ExitStack, contextmanager
from pathlib import Path

from common import OUT_DIR, REPO_ROOT, load_average, print_table

from staging_validation.acceptance.judge import round_validator_coverage
from staging_validation.collection.validator_gaps import Gap, ValidatorCoverage
from staging_validation.layout import CampaignLayout
from staging_validation.lifecycle import CampaignStatus, load_campaign_state
from staging_validation.plan import plan_for_hour
from staging_validation.schemas.timing import hour_key
from staging_validation.simulator.process import RunningSimulator, start_simulator

BIN = Path(sys.executable).parent
PR_SET_CHILD_SUBREAPER = 36
INSTANCE_FILES = {"sqlite": REPO_ROOT / "dagster.yaml", "postgres": REPO_ROOT / "deploy" / "postgres" / "dagster.yaml"}
SCRATCH_SERVER = REPO_ROOT / "deploy" / "postgres" / "scratch_server.sh"
# Daemon start, code server load, the launches, the start_campaign runs and the collectors' launches, on a
# loaded machine.
CLOCK_START_DEADLINE_S = 600


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--campaigns", default="4", help="K, or several K separated by commas (default 4)")
    parser.add_argument("--hour-seconds", type=float, default=20.0, help="length of a campaign hour (default 20)")
    parser.add_argument("--hours", type=int, default=8,
                        help="planned hours per campaign, 1-24 (default 8: deploy, smoke loop, prompt set, stress)")
    parser.add_argument("--instances", default="postgres,sqlite", help="instance kinds, in order of measurement")
    parser.add_argument("--organic-rps", type=float, default=2.0, help="organic traffic of each simulator")
    return parser.parse_args()


def set_child_subreaper() -> None:
    if ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")


def reap_children(excluded: set[int], deadline_s: float) -> tuple[float, int]:
    """Waits for every child (and orphan) still to end; CPU seconds of those not excluded, and how many
    processes were still running at the deadline (then killed, their CPU lost)."""
    cpu_s = 0.0
    deadline = time.monotonic() + deadline_s
    while True:
        try:
            pid, _status, usage = os.wait4(-1, os.WNOHANG)
        except ChildProcessError:
            return cpu_s, 0
        if pid:
            if pid not in excluded:
                cpu_s += usage.ru_utime + usage.ru_stime
            continue
        if time.monotonic() > deadline:
            stragglers = [int(p) for p in os.listdir("/proc") if p.isdigit() and _parent_of(int(p)) == os.getpid()]
            for straggler in stragglers:
                os.kill(straggler, signal.SIGKILL)
            more_cpu, _ = reap_children(excluded, 10)
            return cpu_s + more_cpu, len(stragglers)
        time.sleep(0.2)  # polling interval of a deadline wait


def _parent_of(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])


@contextmanager
def postgres_server():
    """The DAGSTER_PG_* variables of a server to use: the configured one, or a throwaway one."""
    if os.environ.get("DAGSTER_PG_HOST"):
        yield {name: value for name, value in os.environ.items() if name.startswith("DAGSTER_PG_")}
        return
    # In the system's temporary folder: the server's user must be able to reach it.
    server_dir = Path(tempfile.mkdtemp(prefix="sv-bench-pg-"))
    exports = subprocess.run(["bash", str(SCRATCH_SERVER), "start", str(server_dir)], check=True,
                             capture_output=True, text=True).stdout
    try:
        yield dict(line.removeprefix("export ").split("=", 1) for line in exports.splitlines() if line.strip())
    finally:
        subprocess.run(["bash", str(SCRATCH_SERVER), "stop", str(server_dir)], check=True, capture_output=True)


@contextmanager
def fresh_database(server: dict):
    import psycopg2

    database = f"sv_bench_{uuid.uuid4().hex[:10]}"
    connection = psycopg2.connect(host=server["DAGSTER_PG_HOST"], port=int(server["DAGSTER_PG_PORT"]),
                                  user=server["DAGSTER_PG_USERNAME"], password=server["DAGSTER_PG_PASSWORD"],
                                  dbname=server["DAGSTER_PG_DB"])
    connection.autocommit = True
    try:
        with connection.cursor() as cursor:
            cursor.execute(f'CREATE DATABASE "{database}"')
        yield {**server, "DAGSTER_PG_DB": database}
        with connection.cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    finally:
        connection.close()


def measure(kind: str, campaigns: int, args: argparse.Namespace, work: Path, pg_env: dict) -> dict:
    home, data_root = work / "dagster_home", work / "data"
    home.mkdir(parents=True)
    (home / "dagster.yaml").write_text(INSTANCE_FILES[kind].read_text())
    env = {**os.environ, **pg_env, "DAGSTER_HOME": str(home), "STAGING_VALIDATION_DATA": str(data_root),
           "STAGING_VALIDATION_SENSOR_INTERVAL_S": "1"}
    subprocess.run([str(BIN / "dagster"), "instance", "migrate"], cwd=REPO_ROOT, env=env, check=True,
                   capture_output=True)
    simulators = [start_simulator(work / "sims", hour_seconds=args.hour_seconds, organic_rps=args.organic_rps,
                                  seed=index + 1) for index in range(campaigns)]
    names = [f"cap-{kind}-{index}" for index in range(campaigns)]
    with open(work / "daemon.txt", "wb") as output:
        # Its own process group, so that the daemon, its code servers and its runs stop together.
        daemon = subprocess.Popen([str(BIN / "dagster-daemon"), "run", "-w", "workspace.yaml"], cwd=REPO_ROOT,
                                  env=env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        launches = [subprocess.Popen(
            [str(BIN / "dagster"), "job", "launch", "-w", "workspace.yaml", "-j", "start_campaign",
             "--config-json", json.dumps({"ops": {"register_campaign_op": {"config": {
                 "campaign": name, "base_url": simulator.base_url, "telemetry_path": str(simulator.log_path),
                 "hours": args.hours, "hour_seconds": args.hour_seconds, "stress_baseline_rps": 2.0,
                 # One verdict round per campaign: an EXTEND is decided, its extension hours are not run.
                 "first_verdict_only": True}}}})],
            cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            for name, simulator in zip(names, simulators)]
        for launch in launches:
            _, error = launch.communicate()
            if launch.returncode != 0:
                raise RuntimeError(f"dagster job launch failed: {error.decode()[-2000:]}")
        anchored: set[str] = set()
        deadline = time.monotonic() + CLOCK_START_DEADLINE_S
        all_started = False
        while time.monotonic() < deadline and not all(verdict_done(data_root, name) for name in names):
            anchor_simulators(data_root, names, simulators, anchored)
            if not all_started and len(anchored) == len(names):
                # The campaigns' hours, their verdicts and some slack, from the last clock start.
                all_started, deadline = True, time.monotonic() + (args.hours + 3) * args.hour_seconds
            if daemon.poll() is not None:
                raise RuntimeError(f"the daemon exited with {daemon.returncode}; see {work / 'daemon.txt'}")
            time.sleep(1)  # polling interval of a deadline wait
    finally:
        stopped_at = time.time()
        if daemon.poll() is None:
            os.killpg(daemon.pid, signal.SIGTERM)
        for simulator in simulators:
            simulator.process.kill()
        cpu_s, killed = reap_children({simulator.process.pid for simulator in simulators}, deadline_s=60)
    os.environ.update(pg_env)  # this process reads the instance too
    result = collect(home, data_root, names, args, stopped_at)
    hours = campaigns * args.hours
    result.update(kind=kind, campaigns=campaigns, hours=hours, cpu_s=cpu_s, cpu_per_campaign_hour=cpu_s / hours,
                  killed=killed, work=str(work))
    return result


def anchor_simulators(data_root: Path, names: list[str], simulators: list[RunningSimulator], anchored: set[str]):
    """Each simulator's campaign clock starts when its campaign's does: when the collector marks it running
    (registration leaves it registered, with no hour begun), as in the e2e test."""
    for name, simulator in zip(names, simulators):
        if name in anchored or not CampaignLayout.of(data_root, name).state_file.exists():
            continue
        state = load_campaign_state(data_root, name)
        if state.status is not CampaignStatus.REGISTERED:
            simulator.set_campaign_start(state.timing.start_ms)
            anchored.add(name)


def verdict_done(data_root: Path, name: str) -> bool:
    return CampaignLayout.of(data_root, name).decision_file.exists()


def validator_of(data_root: Path, name: str, args: argparse.Namespace, stopped_at: float) -> dict:
    """The campaign's ValidatorCoverage (as decision.json stores it) and where it was read: the verdict's,
    else computed by the verdict's own function from the recorded steps at the end of the measurement."""
    layout = CampaignLayout.of(data_root, name)
    if layout.decision_file.exists():
        decision = json.loads(layout.decision_file.read_text())
        return {**decision["validator"], "source": "decision.json",
                "decision": f"{decision['decision']} ({decision['rule']})"}
    state = load_campaign_state(data_root, name) if layout.state_file.exists() else None
    if state is None or state.status is CampaignStatus.REGISTERED:
        # No hour began: every planned step is missed (the registration's clock is not the campaign's).
        cause = "the campaign was never registered" if state is None else "no collector started its clock"
        missed = ValidatorCoverage(
            due_steps=sum(len(plan_for_hour(h, args.hours).steps) for h in range(args.hours)), ran_in_hour=0,
            gaps=[Gap(h, step, cause) for h in range(args.hours) for step in plan_for_hour(h, args.hours).steps],
            judged_hours=args.hours, telemetry_hours=[])
        return {**missed.as_dict(), "source": cause, "decision": None}
    coverage = round_validator_coverage(data_root, state, state.current_round(), now_s=stopped_at)
    return {**coverage.as_dict(), "source": f"recorded steps ({state.status.value})", "decision": None}


def collect(home: Path, data_root: Path, names: list[str], args: argparse.Namespace, stopped_at: float) -> dict:
    """Run start latencies and failures from the instance's run records; each campaign's validator coverage
    (its gaps) and its hour runs' lateness from the stored campaign and the runs.

    A run that failed because the measurement stopped it (it ended after `stopped_at`) is not a failure."""
    import dagster as dg

    latencies: list[float] = []
    failures: list[str] = []
    first_start: dict[str, float] = {}  # run key → earliest start of a run with that key (a retry keeps it)
    runs = 0
    with dg.DagsterInstance.from_config(str(home)) as instance:
        records = list(instance.get_run_records(dg.RunsFilter(job_name="start_campaign")))
        for name in names:
            records += instance.get_run_records(dg.RunsFilter(tags={"staging-validation/campaign": name}))
        for record in records:
            runs += 1
            run = record.dagster_run
            if run.status == dg.DagsterRunStatus.FAILURE and (record.end_time or stopped_at) < stopped_at:
                failures.append(f"failed: {run.tags.get('dagster/run_key', run.job_name)} ({run.run_id}): "
                                + failure_messages(instance, run.run_id))
            enqueued = instance.get_records_for_run(run.run_id, of_type=dg.DagsterEventType.RUN_ENQUEUED).records
            if enqueued and record.start_time:
                latencies.append(record.start_time - enqueued[0].timestamp)
            key = run.tags.get("dagster/run_key")
            if key and record.start_time:
                first_start[key] = min(first_start.get(key, record.start_time), record.start_time)
    validators = {name: validator_of(data_root, name, args, stopped_at) for name in names}
    lateness: list[float] = []
    not_ingested: list[str] = []
    for name in names:
        if not CampaignLayout.of(data_root, name).state_file.exists():
            continue
        state = load_campaign_state(data_root, name)
        last = state.stopped_at_hour if state.stopped_at_hour is not None else args.hours - 1
        for hour in range(min(last, args.hours - 1) + 1):
            started = first_start.get(f"{name}:hour:{hour_key(hour)}")
            if started is None:
                not_ingested.append(f"{name}:hour:{hour_key(hour)}")
            else:
                lateness.append(started - state.timing.hour_start_s(hour + 1))
    return {"runs": runs, "latencies": latencies, "failures": failures, "validators": validators,
            "ingestion_lateness": lateness, "not_ingested": not_ingested}


def failure_messages(instance, run_id: str) -> str:
    records = instance.get_records_for_run(run_id).records
    return " | ".join(record.event_log_entry.message for record in records
                      if record.event_log_entry.is_dagster_event
                      and record.event_log_entry.get_dagster_event().is_failure)[:500] or "no failure event"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    position = (len(ordered) - 1) * q
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def gap_lines(result: dict) -> list[str]:
    lines = []
    for name, validator in result["validators"].items():
        lines += [f"gap: {name}: hour {g['hour']} {g['step']}: {g['cause']}, "
                  + (f"made up in hour {g['made_up_in']}" if g["made_up_in"] is not None else "not made up")
                  for g in validator["gaps"]]
        if validator["telemetry_hours_missing"]:
            lines.append(f"telemetry not ingested: {name}: hours {validator['telemetry_hours_missing']}")
        if validator["failed_reason"]:
            lines.append(f"validator failed: {name}: {validator['failed_reason']}")
        if validator["decision"] is None:
            lines.append(f"no verdict: {name} (gaps from: {validator['source']})")
    return lines + [f"not ingested: {key}" for key in result["not_ingested"]]


def summary(result: dict) -> dict:
    validators = result["validators"].values()
    gaps = [g for v in validators for g in v["gaps"]]
    return {"due_steps": sum(v["due_steps"] for v in validators), "gaps": len(gaps),
            "made_up": sum(g["made_up_in"] is not None for g in gaps),
            "decided": sum(v["decision"] is not None for v in validators)}


def main() -> int:
    args = parse_args()
    counts = [int(k) for k in args.campaigns.split(",")]
    kinds = [kind.strip() for kind in args.instances.split(",")]
    OUT_DIR.mkdir(exist_ok=True)
    load_before = load_average()
    results = []
    # Kept (benchmarks/out is git-ignored): the daemon's output and the campaigns explain a gap.
    work_root = Path(tempfile.mkdtemp(prefix=time.strftime("capacity-%H%M%S-"), dir=OUT_DIR))
    with ExitStack() as stack:
        pg_server = stack.enter_context(postgres_server()) if "postgres" in kinds else {}
        # After the server has started: its postmaster must not become our child, reaped at the first end.
        set_child_subreaper()
        for kind in kinds:
            for k in counts:
                print(f"{kind}: {k} campaigns of {args.hours} hours of {args.hour_seconds:g} s ...",
                      file=sys.stderr, flush=True)
                work = work_root / f"{kind}-{k}"
                if kind == "postgres":
                    with fresh_database(pg_server) as database_env:
                        results.append(measure(kind, k, args, work, database_env))
                else:
                    results.append(measure(kind, k, args, work, {}))
                results[-1]["summary"] = summary(results[-1])
                for problem in gap_lines(results[-1]) + results[-1]["failures"]:
                    print(f"  {problem}", file=sys.stderr)
                if results[-1]["killed"]:
                    print(f"  {results[-1]['killed']} processes killed at the end: their CPU is not counted",
                          file=sys.stderr)
    load_after = load_average()
    heading = (f"{args.hour_seconds:g} s hours, {args.hours} planned hours per campaign, one simulator per campaign "
               f"({args.organic_rps:g} organic req/s); before: {load_before}; after: {load_after}")
    (work_root / "capacity.json").write_text(json.dumps(
        {"args": vars(args), "load_before": load_before, "load_after": load_after, "results": results}, indent=1)
        + "\n")
    print(f"work folders (daemon output, campaigns) and capacity.json: {work_root}", file=sys.stderr)
    print(heading)
    rows = []
    for result in results:
        zero_gap = [r["campaigns"] for r in results if r["kind"] == result["kind"] and r["summary"]["gaps"] == 0]
        latencies, lateness, figures = result["latencies"], result["ingestion_lateness"], result["summary"]
        ingestion = f"{statistics.median(lateness):.1f} / {max(lateness):.1f} s" if lateness else "-"
        if result["not_ingested"]:
            ingestion += f", {len(result['not_ingested'])} h not ingested"
        rows.append([
            result["kind"], str(result["campaigns"]), f"{figures['decided']} of {result['campaigns']}",
            str(result["hours"]), str(result["runs"]),
            f"{statistics.median(latencies):.1f} s" if latencies else "-",
            f"{percentile(latencies, 0.95):.1f} s" if latencies else "-",
            f"{figures['gaps']} of {figures['due_steps']} ({figures['made_up']} made up)", ingestion,
            str(len(result["failures"])), f"{result['cpu_per_campaign_hour']:.1f} s",
            f"{max(zero_gap)}" if zero_gap else "none measured",
        ])
    print_table(["instance", "campaigns", "decided", "hours", "runs", "start latency p50", "p95", "gaps of due steps",
                 "ingestion lateness p50 / max", "failed runs", "CPU per campaign-hour",
                 "largest K measured with 0 gaps"], rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
