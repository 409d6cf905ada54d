"""The data side's one error type."""


class DatasetError(ValueError):
    """A problem with data on disk or a data setting that the user can fix; the message says how."""
