"""Errors the user can act on. Adapters turn them into one-line messages and exit codes."""

from __future__ import annotations


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


def first_line(error: BaseException) -> str:
    """The error's message on one line, cause included.

    TensorFlow's runtime errors start with a header ("Graph execution error:", then an
    empty line) and put the cause below it ("...; No such file or directory"), sometimes
    after a Python stack ("Detected at node ... defined at (most recent call last):"
    ... "Node: ..."). The non-empty lines are joined, the stack dropped.
    """
    text = getattr(error, "message", None) or str(error)
    kept: list[str] = []
    in_stack = False
    for line in (raw.strip() for raw in text.splitlines()):
        if line.endswith("(most recent call last):"):
            in_stack = True
        elif in_stack and line.startswith("Node:"):
            in_stack = False
        elif line and not in_stack:
            kept.append(line)
    return " ".join(kept) or type(error).__name__
