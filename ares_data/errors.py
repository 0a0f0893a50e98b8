"""One error hierarchy for the toolkit; the CLI turns these into `Error: ...` lines and exit codes."""

from __future__ import annotations


class AresError(Exception):
    """Base class for errors the user can act on. The CLI prints them without a traceback."""

    exit_code: int = 1
    hint: str | None = None

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        if hint is not None:
            self.hint = hint

    def render(self) -> str:
        msg = str(self)
        return f"{msg}\n  hint: {self.hint}" if self.hint else msg


class UsageError(AresError):
    """The command line itself is wrong (bad option combination, bad reference syntax)."""

    exit_code = 2


class InputError(AresError):
    """Bad input data: names the file, the row/line and the field."""

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        row: int | str | None = None,
        field: str | None = None,
        hint: str | None = None,
    ) -> None:
        self.file, self.row, self.field = file, row, field
        where = []
        if file is not None:
            where.append(str(file))
        if row is not None:
            where.append(f"row {row}")
        if field is not None:
            where.append(f"field '{field}'")
        prefix = (", ".join(where) + ": ") if where else ""
        super().__init__(prefix + message, hint=hint)


class StoreError(AresError):
    """Problems with the dataset store: unknown name, unknown version, corrupt manifest."""


class NotFoundError(StoreError):
    """A dataset name or version does not exist."""


class ConfigError(AresError):
    """A config file or option value is invalid (unknown key, wrong type)."""


class MissingKeyError(AresError):
    """An API key environment variable is not set."""

    def __init__(self, env_var: str, provider: str) -> None:
        super().__init__(
            f"{env_var} is not set; the {provider} teacher needs it.",
            hint=f"export {env_var}=... (keys are read from the environment only)",
        )


class TeacherError(AresError):
    """A teacher provider failed in a way that stops the whole run (auth, unknown model)."""


class BudgetExceeded(AresError):
    """--max-cost was reached; the run stopped cleanly and can be resumed."""


class TooFewUsable(AresError):
    """A teacher run published its rows, but too few are usable (every row failed, or fewer than
    --min-ok); exit code 3 tells it apart from a run that published nothing."""

    exit_code = 3


class DependencyError(AresError):
    """An optional dependency is missing (e.g. the [train] extra)."""
