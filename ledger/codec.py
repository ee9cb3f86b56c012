"""Strict, canonical binary encoding shared by receipts, audit reports and fraud proofs.

All integers are big-endian and unsigned; 64-bit ones must stay below 2**63 so that every
value fits a signed SQL BIGINT. Variable-length fields carry a length prefix. A `Reader`
refuses anything that could give two encodings of one value: short input, trailing bytes,
invalid UTF-8, over-long fields. Every failure raises `InvalidRecord(MALFORMED)` (or the
subclass the caller chooses) with the field's name.
"""

from __future__ import annotations

import struct

from ledger.errors import InvalidRecord, Reason

MAX_U63 = (1 << 63) - 1

_U8 = struct.Struct(">B")
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")


class Writer:
    """Appends fields; `bytes()` gives the encoding. Values are checked as they are written."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def raw(self, value: bytes, length: int, name: str) -> Writer:
        if not isinstance(value, bytes | bytearray) or len(value) != length:
            raise ValueError(f"{name} must be {length} bytes")
        self._parts.append(bytes(value))
        return self

    def u8(self, value: int, name: str) -> Writer:
        self._parts.append(_U8.pack(_checked(value, 0xFF, name)))
        return self

    def u16(self, value: int, name: str) -> Writer:
        self._parts.append(_U16.pack(_checked(value, 0xFFFF, name)))
        return self

    def u32(self, value: int, name: str) -> Writer:
        self._parts.append(_U32.pack(_checked(value, 0xFFFFFFFF, name)))
        return self

    def u63(self, value: int, name: str) -> Writer:
        self._parts.append(_U64.pack(_checked(value, MAX_U63, name)))
        return self

    def text8(self, value: str, name: str, max_len: int = 255) -> Writer:
        """UTF-8 text of 1..max_len bytes behind a one-byte length."""
        data = value.encode("utf-8")
        if not 1 <= len(data) <= min(max_len, 0xFF):
            raise ValueError(f"{name} must be 1..{min(max_len, 0xFF)} UTF-8 bytes")
        return self.u8(len(data), name).raw(data, len(data), name)

    def blob32(self, value: bytes, name: str, max_len: int) -> Writer:
        """Bytes of 0..max_len behind a four-byte length."""
        if len(value) > max_len:
            raise ValueError(f"{name} must be at most {max_len} bytes")
        return self.u32(len(value), name).raw(value, len(value), name)

    def __bytes__(self) -> bytes:
        return b"".join(self._parts)


def _checked(value: int, maximum: int, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= maximum:
        raise ValueError(f"{name} must be an integer in 0..{maximum}")
    return value


class Reader:
    """Consumes fields from `data`; call `end()` last to refuse trailing bytes."""

    def __init__(self, data: bytes, error: type[InvalidRecord] = InvalidRecord) -> None:
        if not isinstance(data, bytes | bytearray | memoryview):
            raise error(Reason.MALFORMED, "not bytes")
        self._data = bytes(data)
        self._pos = 0
        self._error = error

    def fail(self, detail: str, reason: Reason = Reason.MALFORMED) -> InvalidRecord:
        return self._error(reason, detail)

    def raw(self, length: int, name: str) -> bytes:
        end = self._pos + length
        if end > len(self._data):
            raise self.fail(f"truncated in {name}")
        value = self._data[self._pos : end]
        self._pos = end
        return value

    def u8(self, name: str) -> int:
        return _U8.unpack(self.raw(1, name))[0]

    def u16(self, name: str) -> int:
        return _U16.unpack(self.raw(2, name))[0]

    def u32(self, name: str) -> int:
        return _U32.unpack(self.raw(4, name))[0]

    def u63(self, name: str) -> int:
        value = _U64.unpack(self.raw(8, name))[0]
        if value > MAX_U63:
            raise self.fail(f"{name} is 2**63 or more")
        return value

    def text8(self, name: str, max_len: int = 255) -> str:
        length = self.u8(name)
        if not 1 <= length <= max_len:
            raise self.fail(f"{name} length {length} not in 1..{max_len}")
        data = self.raw(length, name)
        try:
            return data.decode("utf-8", errors="strict")
        except UnicodeDecodeError as exc:
            raise self.fail(f"{name} is not UTF-8") from exc

    def blob32(self, name: str, max_len: int) -> bytes:
        length = self.u32(name)
        if length > max_len:
            raise self.fail(f"{name} length {length} over {max_len}")
        return self.raw(length, name)

    @property
    def position(self) -> int:
        return self._pos

    def end(self) -> None:
        if self._pos != len(self._data):
            raise self.fail(f"{len(self._data) - self._pos} trailing bytes")
