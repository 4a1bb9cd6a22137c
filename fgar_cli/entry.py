"""The `fgar` executable. Signals are handled before anything heavy is imported, so that Ctrl-C
while torch loads ends as cleanly as Ctrl-C during an epoch."""

from __future__ import annotations

import sys

from fgar_cli.interrupts import EXIT_CODE, GENERAL, Interrupted, install


def main() -> None:
    install()
    try:
        from fgar_cli.cli import main as run
    except (Interrupted, KeyboardInterrupt):
        print(f"interrupted: {GENERAL.removeprefix('interrupted; ')}", file=sys.stderr)
        sys.exit(EXIT_CODE)
    run()
