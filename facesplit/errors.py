"""Errors a user can fix. Each message is one line that names what was expected and where."""


class FrostedError(Exception):
    """Base of the errors the CLI turns into one line and a non-zero exit."""


class ConflictError(FrostedError):
    """Settings that contradict each other (two options, an option and the profile it names): the user fixes the
    command line, so the CLI says it as a usage error (exit status 2), not as a run that failed (1)."""
