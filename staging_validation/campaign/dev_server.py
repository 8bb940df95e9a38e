"""`make ui`: `dagster dev` (webserver and daemon) that stops cleanly on SIGTERM as it does on Ctrl-C.

`dagster dev` turns only SIGINT into an orderly shutdown of its webserver and daemon; a SIGTERM (`kill`, a
service manager, the end of a background job) ended it alone and left both running. Started in the
background, a shell also hands it SIGINT ignored. Here both signals raise KeyboardInterrupt in the main
thread, where `dagster dev` waits for exactly that.
"""

from __future__ import annotations

import signal
import sys

from dagster._cli import main as dagster_cli  # the `dagster` command's own entry point


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main() -> None:
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    sys.argv = ["dagster", "dev", *sys.argv[1:]]
    sys.exit(dagster_cli())


if __name__ == "__main__":
    main()
