"""Errors the exporter reports to a user as a message (no traceback)."""


class UserError(Exception):
    """A problem the user can fix: bad name, bad option, missing file, no network.

    ``python -m exporter`` prints the message and exits with status 2.
    """


class WeightsUnavailable(UserError):
    """Pretrained weights or a TF Hub handle could not be fetched (typically: no network)."""
