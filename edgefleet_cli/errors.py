"""The one error the CLI shows: a single clear line on stderr and a non-zero exit."""


class CliError(Exception):
    """A failure to show the user as one line, e.g. ``error: model 'iris' has no version 9``."""

    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(message)
        self.exit_code = exit_code
