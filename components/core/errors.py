"""Errors the user can act on. Adapters turn them into one-line messages and exit codes."""


class ServoptError(Exception):
    """A problem with the user's input or environment; the message says what to do."""

    exit_code = 2


class VerificationError(ServoptError):
    """A produced model does not match its source within the stated tolerance."""

    exit_code = 3


class StepSkipped(Exception):
    """A step that cannot be applied safely to this model; the message is the reason.

    Not an error: the model passes through unchanged and the reason is recorded.
    """
