"""The `fgar` command line: a thin Typer layer over the stages.

This module registers the commands that live in `fgar_cli.commands`; each command parses its
options into a config, calls one function, and prints a summary. Every user-facing failure is an
`FgarError`, printed as one line (`error: FILE: what is wrong`) with exit code 1; an interruption
(Ctrl-C, SIGTERM) is one line saying what was kept, with exit code 130 (`fgar_cli.interrupts`).
Nothing here catches more than that, so real bugs still show their traceback.
"""

from __future__ import annotations

import sys

import typer

from fgar_cli import __version__, interrupts, runlog
from fgar_cli.commands import config_cmd, data, features, report, reproduce, stages, summary, synth
from fgar_cli.errors import FgarError
from fgar_cli.interrupts import Interrupted

app = typer.Typer(
    name="fgar",
    help="Semi-supervised fine-grained action recognition with FinePseudo.\n\n"
    "Stages talk through files (index/split JSON, HDF5 artifacts, .pt checkpoints), so each reruns "
    "on its own. Start with `fgar synth --out-dir data/synth` for a dataset that needs no download.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"fgar {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    """fgar: FinePseudo for fine-grained action recognition."""


app.command("synth", epilog=synth.SYNTH_EPILOG)(synth.synth_command)
data.data_app.command("features", epilog=features.FEATURES_EPILOG)(features.features_command)
app.add_typer(data.data_app, name="data")
app.add_typer(config_cmd.config_app, name="config")
app.command("pretrain")(stages.pretrain)
app.command("fit-labeled")(stages.fit_labeled)
app.command("pseudolabel")(stages.pseudolabel)
app.command("selftrain")(stages.selftrain)
app.command("evaluate")(stages.evaluate)
app.command("openworld")(stages.openworld)
app.command("predict")(stages.predict)
app.command("export")(stages.export)
app.command("summary")(summary.summary)
app.command("report")(report.report)
app.command("reproduce", epilog=reproduce.REPRODUCE_EPILOG)(reproduce.reproduce)


def main(argv: list[str] | None = None) -> None:
    runlog.record_command_line(sys.argv[1:] if argv is None else argv)  # log.txt says how a run was made
    try:
        app(args=argv, standalone_mode=True)
    except (Interrupted, KeyboardInterrupt, Exception) as exc:
        if isinstance(exc, Interrupted | KeyboardInterrupt) or interrupts.received():
            typer.secho(interrupts.message(exc), err=True)
            sys.exit(interrupts.EXIT_CODE)
        if isinstance(exc, FgarError):
            typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
            sys.exit(1)
        raise


if __name__ == "__main__":
    main()
