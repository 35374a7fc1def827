"""The one exception type for mistakes a user can make."""


class KerasCNNError(Exception):
    """A user-facing error: the message says what was wrong and what to do.

    The CLI prints the message as one line and exits non-zero.
    """
