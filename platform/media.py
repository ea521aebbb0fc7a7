"""Decoding and validating media bytes and client input, with bounded sizes and precise errors."""

from __future__ import annotations

import io
import json
import warnings

from PIL import Image, UnidentifiedImageError

from .errors import InvalidInput, MalformedRequest, TooLarge, UnsupportedMedia

CONTENT_TYPES = ("photo", "video", "audio", "text", "post")


def open_image(data: bytes, max_pixels: int) -> Image.Image:
    """A decoded RGB image; UnsupportedMedia for non-images or truncated files, TooLarge for pixel bombs."""
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
    try:
        data.decode("utf-8")
        return "text"
    except UnicodeDecodeError:
        raise UnsupportedMedia(f"unrecognised media{' in ' + filename if filename else ''}: not an image or UTF-8 text")


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
