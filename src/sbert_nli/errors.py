"""The one error type for user mistakes.

Raise :class:`SbertNliError` where a mistake is found, with a message that says what is wrong and
what to do. The CLI prints it as a single ``error: ...`` line and exits with status 2.
"""


class SbertNliError(Exception):
    """A mistake in the user's input (file, config, model, device): fixable without a code change."""

    def __init__(self, message: str):
        # Keep the message on one line: the CLI promises one-line errors.
        super().__init__(" ".join(str(message).split()))
