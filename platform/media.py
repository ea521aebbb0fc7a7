"""Decoding and validating media bytes and client input, with bounded sizes and precise errors."""

from __future__ import annotations

import io
import json
import os
import warnings

from PIL import Image, UnidentifiedImageError

from .errors import InvalidInput, MalformedRequest, MediaMismatch, TooLarge, UnsupportedMedia

CONTENT_TYPES = ("photo", "video", "audio", "text", "post")


def open_image(data: bytes, max_pixels: int) -> Image.Image:
    """A decoded RGB image (transparency composited onto white); UnsupportedMedia for non-images
    or truncated files, TooLarge for pixel bombs."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            if width * height > max_pixels:
                raise TooLarge(f"image has {width}x{height} pixels, over the limit of {max_pixels}")
            image.load()
    except TooLarge:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise UnsupportedMedia(f"not a decodable image: {exc}") from exc
    except (OSError, SyntaxError, ValueError) as exc:  # truncated or corrupt data
        raise UnsupportedMedia(f"image could not be decoded: {exc}") from exc
    return flatten(image)


def flatten(image: Image.Image) -> Image.Image:
    """RGB, with any transparency composited onto white, as a page shows it: the colour under a
    transparent pixel is arbitrary (often black, hiding black line art)."""
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB")
    return image.convert("RGB")


def decode_text(data: bytes | str, max_chars: int) -> str:
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise UnsupportedMedia(f"text is not valid UTF-8: {exc}") from exc
    if len(data) > max_chars:
        raise TooLarge(f"text has {len(data)} characters, over the limit of {max_chars}")
    if not data.strip():
        raise InvalidInput("text is empty")
    return data


def upload_content_type(data: bytes, filename: str = "", media_type: str | None = None, declared: str | None = None) -> str:
    """The content type of an uploaded file. What the client declares (the `content_type` field
    `declared`, else the part's media type, else an unambiguous file extension) must be what the
    bytes decode as, else MediaMismatch: a disguised or broken upload never passes for a clean
    photo. Only with nothing declared are the bytes sniffed."""
    if declared is not None and declared not in MEDIA_TYPES:
        raise InvalidInput(f"content_type must be one of {', '.join(MEDIA_TYPES)}, not {declared!r}")
    claim = ({declared}, f"content_type {declared!r}") if declared else declared_kinds(filename, media_type)
    if claim is None:
        return sniff_content_type(data, filename)
    kinds, source = claim
    for kind in (k for k in MEDIA_TYPES if k in kinds):
        if decodes_as(data, kind):
            return kind
    try:
        found = f"they read as {sniff_content_type(data, filename)}"
    except UnsupportedMedia:
        found = "they decode as none of the media types"
    raise MediaMismatch(f"{filename or 'the upload'} is declared {' or '.join(sorted(kinds))} by its {source}, but its bytes do not decode as that ({found})")


MEDIA_TYPES = ("photo", "video", "audio", "text")  # what an uploaded file can be (a post is JSON)
AV = frozenset({"video", "audio"})  # containers that hold either (an .mp4 may be sound alone)
EXTENSIONS = {
    **dict.fromkeys((".jpg", ".jpeg", ".png", ".gif", ".webp", ".bmp", ".tif", ".tiff"), {"photo"}),
    **dict.fromkeys((".avi", ".mkv", ".m4v", ".ogv", ".flv", ".wmv", ".mpg", ".mpeg"), {"video"}),
    **dict.fromkeys((".mp3", ".wav", ".flac", ".aac", ".m4a", ".oga", ".opus", ".wma", ".aif", ".aiff", ".mka"), {"audio"}),
    **dict.fromkeys((".txt", ".text", ".md", ".csv"), {"text"}),
    **dict.fromkeys((".mp4", ".mov", ".webm", ".ogg", ".3gp"), AV),
}
CONTAINER_MEDIA_TYPES = {"video/mp4", "audio/mp4", "video/webm", "audio/webm", "video/ogg", "audio/ogg", "application/ogg",
                         "video/quicktime", "video/3gpp", "audio/3gpp"}
MEDIA_FAMILIES = {"image": {"photo"}, "video": {"video"}, "audio": {"audio"}, "text": {"text"}}


def declared_kinds(filename: str, media_type: str | None) -> tuple[set[str], str] | None:
    """The content types a part's media type (image/..., video/..., audio/..., text/...) or else its
    file extension allows, and which said so; None when neither names one (application/octet-stream,
    no extension, an unknown one)."""
    media_type = (media_type or "").split(";")[0].strip().lower()
    kinds = AV if media_type in CONTAINER_MEDIA_TYPES else MEDIA_FAMILIES.get(media_type.partition("/")[0])
    if kinds:
        return kinds, f"media type {media_type}"
    extension = os.path.splitext(filename.lower())[1]
    if extension in EXTENSIONS:
        return EXTENSIONS[extension], f"file extension {extension}"
    return None


def sniff_content_type(data: bytes, filename: str = "") -> str:
    """What the bytes decode as, tried in this order: an image, a video or audio container (before
    text: a WAV of quiet audio can be valid UTF-8), UTF-8 text."""
    for kind in MEDIA_TYPES:
        if decodes_as(data, kind):
            return kind
    raise UnsupportedMedia(f"unrecognised media{' in ' + filename if filename else ''}: not an image, video, audio or UTF-8 text")


def decodes_as(data: bytes, kind: str) -> bool:
    if kind == "photo":
        try:
            Image.open(io.BytesIO(data))
            return True
        except Exception:
            return False
    if kind == "text":
        try:
            data.decode("utf-8")
            return True
        except UnicodeDecodeError:
            return False
    return av_decodes(data, kind)


def av_decodes(data: bytes, kind: str) -> bool:
    """True when FFmpeg (PyAV) reads a container with a `kind` ("video" or "audio") stream and
    decodes a frame of it. The frame is what counts: FFmpeg's weakest format guesses take a single
    stray byte for a stream (b"\\x04" opens as 'ea_cdata' audio) that holds nothing. A still
    image or an audio file's cover art is no video."""
    import av

    try:
        with av.open(io.BytesIO(data)) as container:
            if kind == "video":
                if container.format.name in _STILL_IMAGE_FORMATS:
                    return False
                streams = [s for s in container.streams.video if not s.disposition & av.stream.Disposition.attached_pic]
            else:
                streams = list(container.streams.audio)
            return bool(streams) and next(container.decode(streams[0]), None) is not None
    except (av.FFmpegError, ValueError, OSError):
        return False


_STILL_IMAGE_FORMATS = {"image2", "png_pipe", "jpeg_pipe", "gif", "webp_pipe", "bmp_pipe", "tiff_pipe"}


def json_object(text: str | None, what: str) -> dict:
    """A JSON object given as text (a CLI option, a form field); {} when empty."""
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise MalformedRequest(f"{what} is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise InvalidInput(f"{what} must be a JSON object")
    return value
