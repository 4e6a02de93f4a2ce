"""Hostile bytes an operator's command may read from a topic or a row (Rich markup, escape sequences, bidi
overrides, bytes that are not UTF-8, deep brackets), and the check that none of it reaches the terminal."""

from __future__ import annotations

import re

SGR = re.compile(r"\x1b\[[0-9;]*m")  # the colours Rich itself writes; anything else escaping is a leak
HOSTILE = [
    b"bk_1[/x]",
    b"[link=https://evil.example]click[/link]",
    b"\x1b[31mred\x1b[0m",
    b"\x1b]0;owned window title\x07",
    b"\x1b]8;;https://evil.example\x1b\\link\x1b]8;;\x1b\\",
    b"\x9b31m",
    "\u202eevil".encode(),
    b"\xff\xfe not utf-8",
    b"trailing backslash\\",
    b":smile: [bold]",
    b"[" * 5000,
]


def assert_safe(output: str) -> None:
    """``output`` holds no escape sequence but Rich's own colours, no other control character, and no OSC."""
    stripped = SGR.sub("", output)
    assert "\x1b" not in stripped, repr(stripped)
    assert not [c for c in stripped if (ord(c) < 0x20 and c not in "\n\t") or 0x7F <= ord(c) < 0xA0], repr(stripped)
    assert "\x1b]" not in output  # no OSC: no hyperlink, no window title
