"""What the benchmarks share: where files live, the cached generated day, and measurement in a fresh child.

Every measured thing runs in its own fresh child process (`measure`), which reports its own wall time and
peak RSS: `ru_maxrss` of RUSAGE_SELF for a Python call, of RUSAGE_CHILDREN for a command (the child's only
child is that command, so the maximum over children is the command's own peak — for a shell pipeline the
peak of its largest single process). `RUSAGE_CHILDREN` of the benchmark itself would be the maximum over
every child it ever ran, which is why the parent never reads it.
"""

from __future__ import annotations

import importlib
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
OUT_DIR = BENCH_DIR / "out"  # git-ignored
DEFAULT_RUNBOOK_SCRIPT = REPO_ROOT.parent / "shared" / "bench" / "runbook_final_analysis.sh"
DEFAULT_SEED = 7
MB = 1e6

sys.path.insert(0, str(BENCH_DIR))
import generate_day  # noqa: E402  (a sibling script, not a package)


def cached_day(megabytes: float, seed: int = DEFAULT_SEED) -> tuple[Path, dict]:
    """The generated day of that size (generated on first use), with its ground truth."""
    log = OUT_DIR / f"day-{megabytes:g}mb-seed{seed}.log"
    truth_path = log.with_name(log.name + ".truth.json")
    if not (log.exists() and truth_path.exists()):
        print(f"generating {log.name} ...", file=sys.stderr, flush=True)
        generate_day.generate(
            log,
            megabytes=megabytes,
            lines=None,
            seed=seed,
            day_start_ms=generate_day.DEFAULT_DAY_START_MS,
            workers=os.cpu_count() or 1,
        )
    warm_page_cache(log)
    return log, json.loads(truth_path.read_text())


def warm_page_cache(path: Path) -> None:
    """Read the file once so every contender starts from the same (cached) state."""
    with open(path, "rb") as handle:
        while handle.read(1 << 24):
            pass


def measure(spec: dict) -> dict:
    """Run one measurement in a fresh child; returns {"seconds", "peak_rss_mb", "result"}.

    spec is {"command": [argv...]} (timed around the whole command, stdout returned as result) or
    {"call": "module:function", "args": [...], "imports": [modules], "warm": bool} (the imports, and with
    "warm" one untimed call, are done before the clock starts; the function's JSON-serialisable return
    value is the result).
    """
    with tempfile.NamedTemporaryFile("r", suffix=".json", dir=OUT_DIR) as report:
        completed = subprocess.run(
            [sys.executable, str(Path(__file__)), "--measure", json.dumps(spec), report.name],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        if completed.returncode != 0:
            raise RuntimeError(f"measurement {spec} failed:\n{completed.stderr[-3000:]}")
        return json.loads(Path(report.name).read_text())


def _measure_in_this_process(spec: dict, report_path: str) -> None:
    if "command" in spec:
        started = time.perf_counter()
        completed = subprocess.run(spec["command"], stdout=subprocess.PIPE, text=True, check=True)
        seconds = time.perf_counter() - started
        peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        result = completed.stdout
    else:
        for module in spec.get("imports", []):
            importlib.import_module(module)
        module_name, function_name = spec["call"].split(":")
        function = getattr(importlib.import_module(module_name), function_name)
        if spec.get("warm"):
            function(*spec.get("args", []))
        started = time.perf_counter()
        result = function(*spec.get("args", []))
        seconds = time.perf_counter() - started
        peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    Path(report_path).write_text(json.dumps({"seconds": seconds, "peak_rss_mb": peak_kb * 1024 / MB, "result": result}))


def measure_interleaved(specs: dict[str, dict], repetitions: dict[str, int]) -> dict[str, dict]:
    """Each spec measured `repetitions[name]` times, round-robin (so a change in the machine's load hits
    every contender alike): the median wall time and the largest peak RSS of each."""
    runs: dict[str, list[dict]] = {name: [] for name in specs}
    for round_index in range(max(repetitions.values())):
        for name, spec in specs.items():
            if round_index < repetitions[name]:
                runs[name].append(measure(spec))
                print(f"  {name} run {round_index + 1}/{repetitions[name]}: {runs[name][-1]['seconds']:.3f} s",
                      file=sys.stderr, flush=True)
    return {
        name: {
            "median_s": statistics.median(run["seconds"] for run in measured),
            "peak_rss_mb": max(run["peak_rss_mb"] for run in measured),
            "result": measured[-1]["result"],
        }
        for name, measured in runs.items()
    }


def load_average() -> str:
    """What else the machine was doing: timings on a shared machine are only as good as this."""
    one, five, _ = os.getloadavg()
    return f"load average {one:.2f} (1 min), {five:.2f} (5 min) on {os.cpu_count()} CPUs"


def print_table(headers: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows)]
    line = "  ".join(f"{{:<{width}}}" if index == 0 else f"{{:>{width}}}" for index, width in enumerate(widths))
    print(line.format(*headers))
    print(line.format(*("-" * width for width in widths)))
    for row in rows:
        print(line.format(*row))


if __name__ == "__main__" and len(sys.argv) == 4 and sys.argv[1] == "--measure":
    _measure_in_this_process(json.loads(sys.argv[2]), sys.argv[3])
