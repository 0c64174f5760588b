"""What every `servopt` command shares: ServoptError becomes one line and an exit code.

Errors the user can fix end with `servopt: error: <message>` on stderr and the error's
exit code (2 bad input, 3 failed verification, 4 blocked gate); never a traceback.
"""

from __future__ import annotations

from typing import Any

import click

from components.core.errors import ServoptError, first_line


class LazyConsole:
    """A rich Console made when used, so that `--help` does not import rich. Made anew for
    each use: its width ($COLUMNS, the terminal's, else 80) and whether it writes to a
    terminal decide how components.core.table lays tables out, and both are read when a
    Console is made."""

    def __init__(self, stderr: bool = False) -> None:
        self._stderr = stderr

    def get(self):
        """A rich Console (for APIs that want one, such as Progress)."""
        from rich.console import Console

        return Console(stderr=self._stderr)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.get(), name)


class _HandlesServoptErrors:
    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except ServoptError as err:
            click.echo(f"servopt: error: {first_line(err)}", err=True)  # one line, always
            ctx.exit(err.exit_code)
        except KeyboardInterrupt:
            click.echo("servopt: interrupted; nothing was published", err=True)
            ctx.exit(130)


class ServoptGroup(_HandlesServoptErrors, click.Group):
    """A command group whose commands report ServoptError as one line."""


class ServoptCommand(_HandlesServoptErrors, click.Command):
    """A command that reports ServoptError as one line, also outside the `servopt` group."""


def op_list(text: str) -> tuple[str, ...]:
    """`--allow-unsafe-ops ReadFile,WriteFile` -> ("ReadFile", "WriteFile")."""
    return tuple(sorted({op.strip() for op in text.split(",") if op.strip()}))
