"""The one exception type that reaches users as a single line (the CLI prints it and exits 2)."""
from __future__ import annotations

# How the two entry points name one thing: (Python's words, the command line's words).
WORDS = {"resume": ("resume=True", "--resume"), "force": ("force=True", "--force"), "out": ("run_dir", "--out")}
_LINE_BREAKS = "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"


def one_line(text: str) -> str:
    """`text` with line breaks escaped (a path or value may hold one): an error is always exactly one line."""
    return "".join(repr(c)[1:-1] if c in _LINE_BREAKS else c for c in text)


class UserError(Exception):
    """Bad input from the user: the message says what was wrong and what is allowed, in one line (a line break
    in a path or value is escaped). str(e) names settings as a Python caller writes them (`resume=True`),
    `e.cli` as the command line does (`--resume`); the two differ only for messages built with `worded`."""

    def __init__(self, message: str, cli: str | None = None) -> None:
        super().__init__(one_line(message))
        self.cli = one_line(message if cli is None else cli)

    @classmethod
    def worded(cls, template: str, **fields: object) -> "UserError":
        """`template` filled in twice: {resume}, {force}, {out} and every (python, cli) pair among `fields` in
        Python's words for str(e), in the command line's for e.cli; other fields as given."""
        fields = {**WORDS, **fields}
        return cls(*(template.format(**{k: v[i] if isinstance(v, tuple) else v for k, v in fields.items()})
                     for i in (0, 1)))


class Interrupted(KeyboardInterrupt):
    """SIGINT/SIGTERM stopped a run (after writing a checkpoint where one was due): the CLI prints the
    one-line message and exits with `exit_code` (128 + the signal number: 130 for SIGINT, 143 for SIGTERM).
    A KeyboardInterrupt, so `except Exception` blocks never swallow it."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code
