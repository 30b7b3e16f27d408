"""The ConfigError exception shared by the pgpool.conf parser, side-file readers and PGPOOL commands."""


class ConfigError(Exception):
    """A pgpool.conf problem that stops pgpool from starting (or a reload from applying)."""

    def __init__(self, message: str, *, file: str | None = None, line: int | None = None,
                 parameter: str | None = None, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.file = file
        self.line = line
        self.parameter = parameter
        self.hint = hint
