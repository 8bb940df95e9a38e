"""One campaign hour of the generated day ingested into its Parquet partition.

    .venv/bin/python benchmarks/bench_ingest.py            # an hour of the 550 MB day
    .venv/bin/python benchmarks/bench_ingest.py --quick    # an hour of the 20 MB day

The hour's lines (as the capture stores them in `telemetry/raw/<HH>.log`) are parsed with the campaign's
parser (`telemetry.parse.parse_log`, documented mapping) and written with `pyarrow.parquet.write_table`
(default options), each repetition in a fresh process, imports excluded from the time: "cold" times the
process's first hour (as a fresh Dagster step process runs it), "warm" its second. The default hour
is the one whose line count is nearest the day's mean; the row and unparsed counts are checked against
the generator's truth for that hour.
"""

from __future__ import annotations

import argparse
import statistics
import sys

from common import DEFAULT_SEED, OUT_DIR, cached_day, load_average, measure_interleaved, print_table

QUICK_MEGABYTES = 20


def ingest_hour(raw_path: str, parquet_path: str) -> dict:
    import pyarrow.parquet as pq

    from staging_validation.schemas.telemetry_mapping import TelemetryMapping
    from staging_validation.telemetry.parse import parse_log

    parsed = parse_log(raw_path, TelemetryMapping())
    pq.write_table(parsed.events, parquet_path)
    return {"rows": parsed.events.num_rows, "lines_total": parsed.lines_total, "unparsed": parsed.unparsed_lines}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--megabytes", type=float, default=550)
    parser.add_argument("--quick", action="store_true", help=f"an hour of a {QUICK_MEGABYTES} MB day")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--hour", type=int, help="0-23; default: the hour nearest the mean line count")
    parser.add_argument("--repetitions", type=int, default=7)
    args = parser.parse_args(argv)
    log, truth = cached_day(QUICK_MEGABYTES if args.quick else args.megabytes, args.seed)
    chunks = truth["chunks"]
    if args.hour is None:
        mean_lines = statistics.mean(chunk["lines"] for chunk in chunks)
        chunk = min(chunks, key=lambda c: abs(c["lines"] - mean_lines))
    elif 0 <= args.hour < len(chunks):
        chunk = chunks[args.hour]
    else:
        parser.error(f"--hour must be 0..{len(chunks) - 1}")
    raw_path = OUT_DIR / f"{log.stem}-hour{chunk['hour']:02d}.log"
    with open(log, "rb") as day:
        day.seek(chunk["offset"])
        raw_path.write_bytes(day.read(chunk["bytes"]))
    parquet_path = OUT_DIR / f"{log.stem}-hour{chunk['hour']:02d}.parquet"

    spec = {
        "call": "bench_ingest:ingest_hour",
        "args": [str(raw_path), str(parquet_path)],
        # what a campaign step process has loaded already (the lifecycle imports pandas, which pyarrow.compute
        # would otherwise import lazily inside the first parse: ~0.17 s)
        "imports": ["pyarrow.parquet", "staging_validation.lifecycle", "staging_validation.telemetry.parse"],
    }
    specs = {
        "cold: first hour in a fresh process": spec,
        "warm: after one hour in the same process": {**spec, "warm": True},
    }
    results = measure_interleaved(specs, {name: args.repetitions for name in specs})
    correct = all(
        result["result"]["rows"] == chunk["events"] and result["result"]["unparsed"] == chunk["unparsed"]
        for result in results.values()
    )
    print(
        f"\nIngest of hour {chunk['hour']:02d} of {log.name}: {chunk['lines']:,} lines, "
        f"{chunk['bytes'] / 1e6:.1f} MB; median of {args.repetitions} runs, each in a fresh process; "
        f"{load_average()}\n"
    )
    print_table(
        ["parse_log + write_table", "wall median", "peak RSS", "Parquet size", "rows (truth)", "unparsed (truth)"],
        [
            [
                name,
                f"{result['median_s']:.3f} s",
                f"{result['peak_rss_mb']:.0f} MB",
                f"{parquet_path.stat().st_size / 1e6:.1f} MB",
                f"{result['result']['rows']:,} ({chunk['events']:,})",
                f"{result['result']['unparsed']} ({chunk['unparsed']})",
            ]
            for name, result in results.items()
        ],
    )
    print(f"\nrow and unparsed counts {'equal' if correct else 'DIFFER FROM'} the ground truth")
    raw_path.unlink()
    parquet_path.unlink()
    return 0 if correct else 1


if __name__ == "__main__":
    sys.exit(main())
