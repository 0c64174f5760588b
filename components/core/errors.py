"""Errors the user can act on. Adapters turn them into one-line messages and exit codes."""


class ServoptError(Exception):
    """A problem with the user's input or environment; the message says what to do."""

    exit_code = 2


class VerificationError(ServoptError):
    """A produced model does not match its source within the stated tolerance."""

    exit_code = 3
