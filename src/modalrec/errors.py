"""Exceptions for user mistakes: the CLI turns them into a one-line message and exit code 2."""

from __future__ import annotations


class ModalrecError(Exception):
    """A problem the user can fix (bad input, bad configuration); never a bug in modalrec."""


class DataError(ModalrecError):
    """Malformed or inconsistent data, with the file and row where it was found.

    Args:
        message: what is wrong.
        path: the file the problem is in, if any.
        row: 1-based line number in that file (header = line 1), if known.
    """

    def __init__(self, message: str, path: object | None = None, row: int | None = None) -> None:
        self.path = None if path is None else str(path)
        self.row = row
        where = ""
        if self.path is not None:
            where = self.path + (f", line {row}" if row is not None else "") + ": "
        super().__init__(where + message)


class ConfigError(ModalrecError):
    """An unknown key, a wrong type or an impossible value in the configuration."""
