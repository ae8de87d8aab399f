"""Errors raised on bad data: each names the file (and record index) and what was expected.

All are ``ValueError`` subclasses, so the command line prints them as one clear line
instead of a traceback. They pickle with their attributes, so an error raised in a worker
process reaches the caller intact.
"""

from __future__ import annotations

from pathlib import Path


class DataError(ValueError):
    """Bad or missing Shepard-Metzler data. ``path`` is the offending file or folder."""

    def __init__(self, message: str, path: str | Path | None = None, record: int | None = None) -> None:
        super().__init__(message)
        self.path = None if path is None else Path(path)
        self.record = record

    def __reduce__(self):  # noqa: ANN204 - keep path/record across process boundaries
        return (type(self), (self.args[0], self.path, self.record))


class MissingDataError(DataError, FileNotFoundError):
    """A dataset folder, split folder or shard is missing or holds no TFRecord files."""


class CorruptRecordError(DataError):
    """A TFRecord is truncated or fails its CRC32C check (framing level)."""


class RecordFormatError(DataError):
    """A record parses but is not a Shepard-Metzler scene: wrong features, counts, or frames."""


def where(path: str | Path, record: int | None = None) -> str:
    """``'<path>, record 3'``: the location prefix every message starts with."""
    return f"{path}" if record is None else f"{path}, record {record}"
