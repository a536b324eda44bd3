"""Errors a user can fix. Each message is one line that names what was expected and where."""


class FrostedError(Exception):
    """Base of the errors the CLI turns into one line and a non-zero exit."""
