"""The one exception type that reaches users as a single line (the CLI prints it and exits 2)."""


class UserError(Exception):
    """Bad input from the user: the message says what was wrong and what is allowed, in one line."""


class Interrupted(KeyboardInterrupt):
    """SIGINT/SIGTERM stopped a run (after writing a checkpoint where one was due): the CLI prints the
    one-line message and exits with `exit_code` (128 + the signal number: 130 for SIGINT, 143 for SIGTERM).
    A KeyboardInterrupt, so `except Exception` blocks never swallow it."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code
