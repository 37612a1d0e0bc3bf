"""Byte framing for line protocols: frames come out whole, so a character is never split."""

from __future__ import annotations


class Frames:
    """Cuts a byte stream at a terminator, with a size limit, and hands out raw frames.

    Decoding is left to the caller, after framing: a Persian character whose bytes arrive
    in two reads is decoded once, whole.
    """

    def __init__(self, max_bytes: int, error: type[Exception], what: str) -> None:
        self._buffer = bytearray()
        self._scanned = 0
        self._max_bytes = max_bytes
        self._error = error
        self._what = what

    def __bool__(self) -> bool:
        return bool(self._buffer)

    def feed(self, data: bytes) -> None:
        """Append bytes just read."""
        self._buffer += data

    def next_frame(self, terminator: bytes) -> bytes | None:
        """The next frame without its terminator, or None until one is complete."""
        end = self._buffer.find(terminator, self._scanned)
        self._scanned = max(len(self._buffer) - len(terminator) + 1, 0) if end < 0 else 0
        if max(end, self._scanned) > self._max_bytes:
            raise self._error(f"{self._what} longer than {self._max_bytes} bytes")
        if end < 0:
            return None
        frame = bytes(self._buffer[:end])
        del self._buffer[: end + len(terminator)]
        return frame
