"""How an option is named to the user who typed it: as a keyword in Python
(`batch_size=64`), as a flag on the command line (`--batch-size 64`) within
`cli_spelling()`; and `OptionError`, the error a bad option value raises."""

import contextlib
import contextvars

from kerascnn.errors import KerasCNNError

# The flags of FitConfig's fields that are not "--" + their name (kerascnn.config.options fills it in).
FIELD_FLAGS = {}

_CLI = contextvars.ContextVar("kerascnn_cli_spelling", default=False)


class OptionError(KerasCNNError):
    """A bad option value: the CLI exits 2 with it, as for its own usage errors."""


@contextlib.contextmanager
def cli_spelling():
    """Within this block, options are named as flags (`--batch-size`)."""
    token = _CLI.set(True)
    try:
        yield
    finally:
        _CLI.reset(token)


# Keyword arguments whose flag is not their name: explain(indices=, class_index=) is --index, --class.
FLAGS = {"indices": "--index", "class_index": "--class", "run": "--model"}


def flag(name):
    """The command-line flag of a keyword argument (a FitConfig field or
    another function's): "batch_size" -> "--batch-size", "indices" -> "--index"."""
    spelled = FIELD_FLAGS.get(name)
    default = FLAGS.get(name, "--" + name.replace("_", "-"))
    return next((f.split("/")[0] for f in spelled or () if f.startswith("--")), default)


def spell(name):
    """An option's name as the user typed it: its flag in the CLI, else its keyword."""
    return flag(name) if _CLI.get() else name


def spell_set(name, value=True):
    """How to set an option, as the user would type it: `--resume` or
    `--image-size 224` on the command line, `resume=True` or
    `image_size=224` in Python."""
    if not _CLI.get():
        return f"{name}={value!r}"
    return flag(name) if value is True else f"{flag(name)} {value}"
