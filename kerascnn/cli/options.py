"""The command line's building blocks: click options made from FitConfig's
fields (`config_option`, `config_options`), `--backend` and `--unsafe`, and
the command group that turns a user's mistake into one line on stderr and a
non-zero exit (`Group`)."""

import os
import sys

import click
from click.shell_completion import CompletionItem

from kerascnn.runtime.backend import DEBUG_ENV
from kerascnn.config.choices import BACKENDS
from kerascnn.config.options import FIELDS, coerce_option
from kerascnn.config.spelling import OptionError, cli_spelling, flag
from kerascnn.errors import KerasCNNError


# click's metavar for a FitConfig field's kind (FitConfig reads and checks the value itself)
METAVARS = {"int": "N", "float": "X", "size": "N|FRACTION", "ints": "N,N", "path": "PATH", "str": "TEXT"}


def _check(name):
    """A click callback that reads and checks a value as FitConfig does."""
    def check(ctx, param, value):
        if value is None or value == ():
            return value
        try:
            return coerce_option(name, value)
        except OptionError as e:
            raise click.UsageError(str(e)) from None
    return check


def _completer(choices, kind):
    """Shell completion (docs/cli.md) of a field's values: its choices, or
    file names for a path; click cannot infer them, as FitConfig checks them."""
    def complete(ctx, param, incomplete):
        if kind == "path":
            return [CompletionItem(incomplete, type="file")]
        return [c for c in choices or () if c.startswith(incomplete)]
    return complete


def config_option(name, **overrides):
    """The click option of a FitConfig field, with its flags, help, default
    and check: one definition serves fit, evaluate, summary and the rest."""
    field = FIELDS[name]
    meta = field.metadata
    flags = meta.get("flags") or (flag(name),)
    settings = {"help": meta["help"], "callback": _check(name)}
    if meta["kind"] == "flag":
        settings.update(is_flag=True, default=field.default)
    elif meta["kind"] == "bool":
        settings.update(default=None)
        if "/" not in flags[0]:
            flags = (f"{flag(name)}/--no-{flag(name)[2:]}",)
    else:
        choices = meta.get("choices")
        folders = ("DIR", "tfds:NAME") if meta.get("folders") else ()
        metavar = f"[{'|'.join((*choices, *folders))}]" if choices and meta["kind"] == "choice" else None
        settings.update(metavar=metavar or meta.get("metavar") or METAVARS.get(meta["kind"]),
                        multiple=meta["kind"] == "names")
        if field.default not in (None, ()):
            settings.update(default=str(field.default), show_default=True)
        settings["shell_complete"] = _completer(choices, meta["kind"])
    settings.update(overrides)
    return click.option(*flags, name, **settings)


def config_options(*names):
    """Decorate a command with the options of these FitConfig fields."""
    def decorate(f):
        for name in reversed(names):
            f = config_option(name)(f)
        return f
    return decorate


def _set_backend(ctx, param, value):
    """Select the Keras backend before anything imports Keras; check the
    one KERAS_BACKEND names when --backend is not given."""
    if value is None:
        named = os.environ.get("KERAS_BACKEND")
        if named and named not in BACKENDS and "keras" not in sys.modules:
            raise click.UsageError(f"KERAS_BACKEND={named} is not a Keras backend kerascnn runs on; "
                                   f"choose one of: {', '.join(BACKENDS)}")
        return None
    if "keras" in sys.modules:
        import keras

        if keras.backend.backend() != value:
            raise click.BadParameter(f"Keras is already running on {keras.backend.backend()} in this process; "
                                     f"set KERAS_BACKEND={value} before starting it")
        return value
    os.environ["KERAS_BACKEND"] = value
    return value


def _warn_unsafe(ctx, param, value):
    if value:
        click.echo("warning: --unsafe: code a model file holds will run as it loads; use it only for files "
                   "you trust", err=True)
    return value


def unsafe_option(f):
    """--unsafe on the commands that load a model: the one way to load a model that holds code."""
    return click.option("--unsafe", is_flag=True, callback=_warn_unsafe,
                        help="Load a model that holds Python code (a Lambda layer), which is refused by default. "
                             "Its code runs: only for files you trust.")(f)


def backend_option(f):
    """--backend on every command (and on the group): KERAS_BACKEND for this run."""
    return click.option("--backend", type=click.Choice(BACKENDS), callback=_set_backend, expose_value=False,
                        is_eager=True, help="Keras backend [env KERAS_BACKEND, else tensorflow].")(f)


class Group(click.Group):
    """Turns every user mistake, a bad option or a KerasCNNError, into one
    line on stderr and a non-zero exit: 1 for errors, 2 for bad usage
    (click's own, and a bad option value: kerascnn.config.options.OptionError).
    Within it, messages name options by their flags."""

    def main(self, args=None, prog_name=None, standalone_mode=True, **extra):
        with cli_spelling():
            if not standalone_mode:
                return super().main(args, prog_name, standalone_mode=False, **extra)
            try:
                rv = super().main(args, prog_name, standalone_mode=False, **extra)
            except OptionError as e:
                rv = _fail(click.UsageError(str(e)))
            except KerasCNNError as e:
                rv = _fail(click.ClickException(str(e)))
            except click.ClickException as e:
                rv = _fail(e)
            except Exception:  # a bug: with --debug its traceback, else one line saying how to get it
                if os.environ.get(DEBUG_ENV):
                    raise
                rv = _fail(click.ClickException(f"{sys.exc_info()[1]!r}; run again with --debug for the traceback"))
            except click.exceptions.Abort:
                click.echo("error: interrupted; nothing was saved", err=True)
                rv = 130
        sys.exit(rv if isinstance(rv, int) else 0)


def _fail(error):
    if os.environ.get(DEBUG_ENV):
        import traceback

        traceback.print_exc()
    click.echo(f"error: {error.format_message()}", err=True)
    return error.exit_code


def debug_callback(ctx, param, value):
    if value:
        os.environ[DEBUG_ENV] = "1"
    return value
