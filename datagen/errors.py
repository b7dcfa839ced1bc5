"""One exception type for mistakes a user can fix; the CLI prints it as one line, no traceback."""


class UserError(Exception):
    """Bad input or configuration. The message names what was wrong and how to fix it."""
