"""The `kerascnn` command line: its commands (`commands`) and the options
and error handling they share (`options`). The top layer: it may import
every other."""

from kerascnn.cli.commands import cli, main

__all__ = ["cli", "main"]
