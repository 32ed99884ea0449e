"""Reject reasons shared by the decoders and the ingest stage.

Every sticker that cannot be used is quarantined with one of these codes and a human-readable
message; the codes are stable strings because they are stored in quarantine Parquet files and
counted in Dagster asset metadata.
"""

from __future__ import annotations

from enum import StrEnum


class RejectReason(StrEnum):
    """Why a sticker (or a caption row) was quarantined."""

    EMPTY_FILE = "empty_file"  # zero-byte media file
    MISSING_FILE = "missing_file"  # caption row points at a file that does not exist
    READ_ERROR = "read_error"  # the storage backend failed to read the file
    FILE_TOO_LARGE = "file_too_large"  # source bytes above the configured cap
    UNSUPPORTED_FORMAT = "unsupported_format"  # magic bytes are not GIF/WebP/PNG/MP4/WebM
    DECODE_ERROR = "decode_error"  # truncated or corrupt stream
    PIXEL_LIMIT = "pixel_limit"  # decompression bomb: frame or total pixels above the cap
    TOO_MANY_FRAMES = "too_many_frames"  # more frames than the configured cap
    TOO_FEW_FRAMES = "too_few_frames"  # static image: not an animated sticker
    PATH_ESCAPE = "path_escape"  # manifest path is absolute, a URL, or climbs out with '..'
    SYMLINK_ESCAPE = "symlink_escape"  # the file (or a folder above it) is a symlink resolving outside the drop
    NOT_REGULAR_FILE = "not_regular_file"  # a FIFO, device, socket or directory: never opened or read
    DECODE_TIMEOUT = "decode_timeout"  # decoding took longer than decode_timeout_s (a CPU work bomb)
    DUPLICATE_ID = "duplicate_id"  # the same id appears twice in the caption table
    DUPLICATE_CONTENT = "duplicate_content"  # byte-identical to a sticker already kept
    BAD_CAPTION_ROW = "bad_caption_row"  # unparseable row or missing id/file fields
    CAPTION_NOT_UTF8 = "caption_not_utf8"  # caption bytes are not valid UTF-8 (quarantine policy)
    MISSING_CAPTION = "missing_caption"  # caption empty or absent (quarantine policy)


class StickerRejected(Exception):
    """Raised by per-sticker processing; carries a reject code and a message for the quarantine."""

    def __init__(self, reason: RejectReason, message: str):
        super().__init__(f"{reason.value}: {message}")
        self.reason = reason
        self.message = message
