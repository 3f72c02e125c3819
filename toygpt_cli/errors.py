"""Errors a user can cause and fix. The CLI prints them as one line, never a traceback."""


class ToygptError(Exception):
    """A problem with the user's input or environment (exit code 1)."""

    exit_code = 1


class UsageError(ToygptError):
    """An invalid option or combination of options (exit code 2, like a CLI usage error)."""

    exit_code = 2
