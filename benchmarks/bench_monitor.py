"""One monitor tick over 1 MB of new lines, on a 10 MB log and on a 550 MB log: ours vs the runbook's.

    .venv/bin/python benchmarks/bench_monitor.py            # 10 MB and 550 MB logs
    .venv/bin/python benchmarks/bench_monitor.py --quick    # 10 MB and 20 MB logs

Ours is the monitor's fast path: `CampaignTelemetry.poll()` (capture what the target's log gained since
the cursor into the raw hour files, fsync included) then `CampaignTelemetry.read_new` (`parse_log` over
exactly those new bytes of the raw files, in the campaign's time window), as
`watch.telemetry_watch.TelemetryWatch` does. The runbook's monitor.sh greps the whole log three times
(`RUNBOOK_MONITOR_SH`). The base log is captured once (untimed: the monitor has followed it all day);
each repetition starts from that state — log cut back to its base size, cursor and raw files as
committed — appends the same 1 MB of new lines (whole lines from the middle of the large day), then
times both, in this process (a long-running monitor), alternating between the two logs. Medians over
repetitions (and our fastest tick, the cost without interference from other processes).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from common import DEFAULT_SEED, MB, OUT_DIR, cached_day, load_average, print_table

RUNBOOK_MONITOR_SH = r"""
LOG="$1"
ERRORS=$(grep -ci error "$LOG")
MISSING=$(grep -ci 'missing.*pack' "$LOG")
SLOW=$(grep -cE '"duration_ms":([2-9][0-9]{3}|[1-9][0-9]{4,})[.,}]' "$LOG")
echo "errors=$ERRORS missing=$MISSING slow=$SLOW"
"""
SMALL_MEGABYTES = 10
QUICK_LARGE_MEGABYTES = 20


def new_lines(day: Path, truth: dict, megabytes: float) -> bytes:
    """About `megabytes` of whole lines from the middle of the day."""
    middle = truth["chunks"][len(truth["chunks"]) // 2]
    with open(day, "rb") as handle:
        handle.seek(middle["offset"])
        block = handle.read(int(megabytes * MB) + 64 * 1024)
    start = block.index(b"\n") + 1
    end = block.index(b"\n", start + int(megabytes * MB)) + 1
    return block[start:end]


class TickBench:
    """A working copy of a base log, captured once; every tick starts from that captured state."""

    def __init__(self, base: Path, truth: dict, label: str):
        from staging_validation.schemas.timing import CampaignTiming
        from staging_validation.telemetry.capture import TelemetrySource
        from staging_validation.telemetry.sources import CampaignTelemetry

        self.base_size = base.stat().st_size
        self.work = OUT_DIR / f"monitor-{label}.log"
        self.store = OUT_DIR / f"monitor-{label}-store"
        shutil.copyfile(base, self.work)
        shutil.rmtree(self.store, ignore_errors=True)
        timing = CampaignTiming(start_ms=truth["generator"]["day_start_ms"], hour_seconds=3600)
        self.telemetry = CampaignTelemetry((TelemetrySource(path=str(self.work)),), self.store, timing)
        (self.follower,) = self.telemetry.followers
        started = time.perf_counter()
        while not self.follower.poll().caught_up:  # the monitor has been following the log all along
            pass
        print(f"  {label}: initial capture of the base log took {time.perf_counter() - started:.1f} s (untimed)",
              file=sys.stderr, flush=True)
        self.captured_cursor = self.follower.cursor_path.read_text()
        self.captured_sizes = self.follower.load_cursor().store_sizes

    def reset(self) -> None:
        """Back to the captured state: the log at its base size, the cursor and raw files as committed."""
        os.truncate(self.work, self.base_size)
        self.follower.cursor_path.write_text(self.captured_cursor)
        for path in (self.store / "raw").glob("*.log"):
            os.truncate(path, self.captured_sizes.get(path.name, 0))

    def append(self, payload: bytes) -> None:
        with open(self.work, "ab") as handle:
            handle.write(payload)

    def our_tick(self) -> tuple[float, float, int]:
        """poll, then parse of the new bytes of every raw hour file as the monitor reads them:
        (poll seconds, parse seconds, events)."""
        started = time.perf_counter()
        seen = {path.name: path.stat().st_size for path in (self.store / "raw").glob("*.log")}
        self.telemetry.poll()
        polled = time.perf_counter()
        events = self.telemetry.read_new(seen).events.num_rows
        return polled - started, time.perf_counter() - polled, events

    def runbook_tick(self) -> tuple[float, str]:
        started = time.perf_counter()
        completed = subprocess.run(
            ["bash", "-c", RUNBOOK_MONITOR_SH, "monitor.sh", str(self.work)],
            stdout=subprocess.PIPE,
            text=True,
            check=True,
        )
        return time.perf_counter() - started, completed.stdout.strip()

    def cleanup(self) -> None:
        self.work.unlink(missing_ok=True)
        shutil.rmtree(self.store, ignore_errors=True)


def bench(benches: dict[str, TickBench], payload: bytes, repetitions: int) -> dict[str, dict]:
    """Ticks on every log in turn, round-robin, so a change in the machine's load hits each alike."""
    timings: dict[str, dict[str, list[float]]] = {
        label: {"poll": [], "parse": [], "ours": [], "runbook": []} for label in benches
    }
    events = set()
    for index in range(repetitions + 1):  # the first round warms up the process, not counted
        for label, tick in benches.items():
            tick.reset()
            tick.append(payload)
            poll_s, parse_s, parsed = tick.our_tick()
            runbook_s, _ = tick.runbook_tick()
            if index:
                for name, seconds in (("poll", poll_s), ("parse", parse_s), ("ours", poll_s + parse_s),
                                      ("runbook", runbook_s)):
                    timings[label][name].append(seconds)
                events.add(parsed)
            print(f"  {label} run {index}/{repetitions}: ours {(poll_s + parse_s) * 1000:.1f} ms "
                  f"(poll {poll_s * 1000:.1f}), runbook {runbook_s * 1000:.0f} ms", file=sys.stderr, flush=True)
    return {
        label: {name: statistics.median(values) for name, values in measured.items()}
        | {"ours_min": min(measured["ours"]), "events": events, "log_mb": benches[label].base_size / MB}
        for label, measured in timings.items()
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--megabytes", type=float, default=550, help="the large log")
    parser.add_argument("--quick", action="store_true", help=f"a {QUICK_LARGE_MEGABYTES} MB large log")
    parser.add_argument("--new-megabytes", type=float, default=1.0, help="new lines per tick")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--repetitions", type=int, default=15)
    args = parser.parse_args(argv)
    large_mb = QUICK_LARGE_MEGABYTES if args.quick else args.megabytes
    small_log, small_truth = cached_day(SMALL_MEGABYTES, args.seed)
    large_log, large_truth = cached_day(large_mb, args.seed)
    payload = new_lines(large_log, large_truth, args.new_megabytes)

    benches = {
        "small": TickBench(small_log, small_truth, f"{SMALL_MEGABYTES:g}mb"),
        "large": TickBench(large_log, large_truth, f"{large_mb:g}mb"),
    }
    try:
        results = bench(benches, payload, args.repetitions)
    finally:
        for tick in benches.values():
            tick.cleanup()
    small, large = results["small"], results["large"]
    new_line_count = payload.count(b"\n")
    print(
        f"\nMonitor tick over {len(payload) / MB:.2f} MB of new lines ({new_line_count:,} lines) appended to "
        f"a {small['log_mb']:.0f} MB and a {large['log_mb']:.0f} MB log; medians of {args.repetitions} ticks; "
        f"{load_average()}\n"
    )
    print_table(
        ["monitor tick", f"{small['log_mb']:.0f} MB log", f"{large['log_mb']:.0f} MB log", "large / small"],
        [
            [
                "ours: CampaignTelemetry.poll + read_new (new bytes)",
                f"{small['ours'] * 1000:.1f} ms",
                f"{large['ours'] * 1000:.1f} ms",
                f"{large['ours'] / small['ours']:.2f}",
            ],
            [
                "ours, fastest tick",
                f"{small['ours_min'] * 1000:.1f} ms",
                f"{large['ours_min'] * 1000:.1f} ms",
                f"{large['ours_min'] / small['ours_min']:.2f}",
            ],
            [
                "  of which poll (capture, fsync)",
                f"{small['poll'] * 1000:.1f} ms",
                f"{large['poll'] * 1000:.1f} ms",
                f"{large['poll'] / small['poll']:.2f}",
            ],
            [
                "  of which read_new (parse_log)",
                f"{small['parse'] * 1000:.1f} ms",
                f"{large['parse'] * 1000:.1f} ms",
                f"{large['parse'] / small['parse']:.2f}",
            ],
            [
                "runbook monitor.sh: 3 whole-file greps",
                f"{small['runbook'] * 1000:.0f} ms",
                f"{large['runbook'] * 1000:.0f} ms",
                f"{large['runbook'] / small['runbook']:.2f}",
            ],
        ],
    )
    same_events = len(small["events"]) == 1
    print(f"\nevents parsed per tick: {sorted(small['events'])}{'' if same_events else ' (DIFFERENT between ticks)'}")
    return 0 if same_events else 1


if __name__ == "__main__":
    sys.exit(main())
