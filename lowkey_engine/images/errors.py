"""Errors for photos the engine refuses, one hierarchy for decode and encode.

Every error carries `code`, one of the daemon protocol's error codes (`bad_image`, `too_large`),
and a one-line message meant for the person whose photo it is.
"""

from __future__ import annotations


class ImageError(ValueError):
    """Base: the input is not a photo the engine can protect. `code` is the protocol error code."""

    code = "bad_image"


class BadImageError(ImageError):
    """Not an image, or a damaged one."""

    code = "bad_image"


class TruncatedImageError(BadImageError):
    """The file ends before its image data does (an interrupted download or copy)."""


class UnsupportedFormatError(BadImageError):
    """An image in a format the engine does not read. `format_name` names it, e.g. "HEIC"."""

    def __init__(self, message: str, format_name: str):
        super().__init__(message)
        self.format_name = format_name


class AnimatedImageError(BadImageError):
    """More than one frame: protecting only the first would silently drop the others."""


class TooLargeError(ImageError):
    """Too many bytes or too many pixels (decompression-bomb guard)."""

    code = "too_large"
