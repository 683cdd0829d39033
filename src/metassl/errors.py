"""The one exception type that reaches users as a single line (the CLI prints it and exits 2)."""


class UserError(Exception):
    """Bad input from the user: the message says what was wrong and what is allowed, in one line."""
