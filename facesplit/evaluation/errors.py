"""The one error type every dataset reader raises: its message names the file (and line) at fault."""

from facesplit.errors import FrostedError


class DatasetError(FrostedError, ValueError):
    """A missing, unreadable or malformed dataset file; ``str()`` is one line naming file and line."""
