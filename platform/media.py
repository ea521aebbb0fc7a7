"""Decoding and validating media bytes and client input, with bounded sizes and precise errors."""

from __future__ import annotations

import io
import json
import warnings

from PIL import Image, UnidentifiedImageError

from .errors import InvalidInput, MalformedRequest, TooLarge, UnsupportedMedia

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


def sniff_content_type(data: bytes, filename: str = "") -> str:
    """Best guess of a file's content type from its name and first bytes."""
    name = filename.lower()
    if name.endswith((".txt", ".md", ".text")):
        return "text"
    try:
        Image.open(io.BytesIO(data))
        return "photo"
    except Exception:
        pass
    kind = av_content_type(data)  # before text: a WAV of quiet audio can be valid UTF-8
    if kind is not None:
        return kind
    try:
        data.decode("utf-8")
        return "text"
    except UnicodeDecodeError:
        raise UnsupportedMedia(f"unrecognised media{' in ' + filename if filename else ''}: not an image, video, audio or UTF-8 text") from None


def av_content_type(data: bytes) -> str | None:
    """"video" or "audio" when FFmpeg (PyAV) reads a container with such a stream and decodes a
    frame of it, else None. The frame is what counts: FFmpeg's weakest format guesses take a
    single stray byte for a stream (b"\\x04" opens as 'ea_cdata' audio) that holds nothing."""
    import av

    try:
        with av.open(io.BytesIO(data)) as container:
            if container.streams.video and container.format.name not in _STILL_IMAGE_FORMATS:
                kind, stream = "video", container.streams.video[0]
            elif container.streams.audio:
                kind, stream = "audio", container.streams.audio[0]
            else:
                return None
            return kind if next(container.decode(stream), None) is not None else None
    except (av.FFmpegError, ValueError, OSError):
        return None


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
