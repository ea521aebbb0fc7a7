"""Errors with a meaning at the edge: the CLI prints them in one line, the API maps them to a
status code (`status`) and the body `{"error": {"code": <code>, "message": <message>}}`."""


class MediamatchError(Exception):
    """Base: a message a user can act on."""

    code = "error"
    status = 400


class NotFound(MediamatchError):
    code = "not_found"
    status = 404


class Conflict(MediamatchError):
    code = "conflict"
    status = 409


class InvalidInput(MediamatchError):
    code = "invalid_input"
    status = 422


class MalformedRequest(InvalidInput):
    code = "malformed_request"
    status = 400


class UnsupportedMedia(InvalidInput):
    code = "unsupported_media"
    status = 422


class MediaMismatch(UnsupportedMedia):
    """The bytes do not decode as the media type the client declared for them."""

    code = "media_mismatch"
    status = 422


class UnsupportedContentType(InvalidInput):
    code = "unsupported_content_type"
    status = 415


class TooLarge(InvalidInput):
    code = "too_large"
    status = 413


class Unauthorized(MediamatchError):
    code = "unauthorized"
    status = 401


class Forbidden(MediamatchError):
    code = "forbidden"
    status = 403


class RateLimited(MediamatchError):
    code = "rate_limited"
    status = 429

    def __init__(self, message: str, retry_after: int):
        super().__init__(message)
        self.retry_after = retry_after


class StorageError(MediamatchError):
    code = "storage_unavailable"
    status = 503


class NotReady(MediamatchError):
    code = "not_ready"
    status = 503


class Overloaded(MediamatchError):
    """The ingress replica has as many requests waiting as it may queue: retry shortly."""

    code = "overloaded"
    status = 503
    retry_after = 1
