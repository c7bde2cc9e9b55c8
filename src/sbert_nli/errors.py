"""Errors that end a run with one ``error: ...`` line; each kind has its own exit status.

Raise :class:`SbertNliError` where a user mistake is found, with a message that says what is wrong
and what to do. The CLI prints ``error: <message>`` and exits with the class's ``exit_code``:

====  =========================================================================
0     done
1     internal error (a bug: Python's traceback)
2     bad input (:class:`SbertNliError`)
3     the run diverged: loss or weights became non-finite (:class:`DivergedError`)
130   interrupted by Ctrl-C / SIGTERM, a checkpoint was written (:class:`Interrupted`)
====  =========================================================================
"""


class SbertNliError(Exception):
    """A mistake in the user's input (file, config, model, device): fixable without a code change."""

    exit_code = 2

    def __init__(self, message: str):
        # Keep the message on one line: the CLI promises one-line errors.
        super().__init__(" ".join(str(message).split()))


class DivergedError(SbertNliError):
    """Training produced a non-finite loss or weights; nothing non-finite was saved."""

    exit_code = 3


class Interrupted(SbertNliError):
    """Ctrl-C or SIGTERM stopped training after a checkpoint was written (the shell's 128 + SIGINT)."""

    exit_code = 130
