"""The project's error classes: what a user can fix, told apart from bugs.

``HwrError`` marks an error the user can act on (bad input, a missing file, an unreachable database); the CLI
prints its message as one line and exits with code 2. Anything else that escapes a command is a bug in hwr and
exits with code 1 (``--debug`` shows the traceback). Each concrete class also derives from the built-in its
callers would expect (``ValueError``, ``KeyError``, ``OSError``), so library users can catch either.
"""

from __future__ import annotations

__all__ = ["HwrError", "InputError", "UnknownNameError"]


class HwrError(Exception):
    """An error the user can fix; its message names the problem and the fix."""


class InputError(HwrError, ValueError):
    """A value hwr cannot use: a config field out of range, an image it cannot read, a malformed option."""


class UnknownNameError(HwrError, KeyError):
    """A name that is not registered (model family, recipe); the message lists the choices."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""
