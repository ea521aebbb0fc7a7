"""Errors with a meaning at the edge: the CLI prints them in one line, the API maps them to 4xx/5xx."""


class MediamatchError(Exception):
    """Base: a message a user can act on."""

    code = "error"


class NotFound(MediamatchError):
    code = "not_found"


class Conflict(MediamatchError):
    code = "conflict"


class InvalidInput(MediamatchError):
    code = "invalid_input"


class UnsupportedMedia(InvalidInput):
    code = "unsupported_media"


class TooLarge(InvalidInput):
    code = "too_large"


class StorageError(MediamatchError):
    code = "storage_unavailable"
