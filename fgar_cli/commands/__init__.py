"""Typer sub-commands; each module owns one group of commands."""
