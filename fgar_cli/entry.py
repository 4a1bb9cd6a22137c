"""The `fgar` executable. Signals are handled before anything heavy is imported, so that Ctrl-C
while torch loads ends as cleanly as Ctrl-C during an epoch."""

from __future__ import annotations

import sys

from fgar_cli import interrupts


def main() -> None:
    interrupts.install()
    try:
        from fgar_cli.cli import main as run
    except BaseException as exc:
        if not (isinstance(exc, interrupts.Interrupted | KeyboardInterrupt) or interrupts.received()):
            raise
        print(interrupts.message(exc), file=sys.stderr)
        sys.exit(interrupts.EXIT_CODE)
    run()
