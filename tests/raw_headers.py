"""Header names as raw bytes: aiokafka's record builder writes only ``str`` names, so a test that needs a name
that is not UTF-8 on the wire (issue 12) passes a ``str`` that encodes to the bytes it wants."""

from __future__ import annotations

from typing import Any


class RawName(str):
    """A header name the builder writes as these bytes (aiokafka's builder encodes names with str.encode)."""

    raw: bytes = b""

    def encode(self, *_: Any, **__: Any) -> bytes:
        return self.raw


def raw_name(raw: bytes) -> str:
    """A header name the builder writes as ``raw``."""
    name = RawName("x")
    name.raw = raw
    return name
