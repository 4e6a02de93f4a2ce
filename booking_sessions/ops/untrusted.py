"""Pure: bytes from a topic or a row, made safe to show an operator and to parse.

Every key, value, header and row the operators' commands print passes through here: a record is written by
whoever can write to the input topic, and the tool for reading poison must never be poisoned by it. Shown text
carries no terminal control (escape sequences, BEL, window titles: each control or format character is written
out as ``\\x1b``, ``\\u202e`` ...) and no Rich markup (``Text`` objects are never parsed for ``[link=...]``).
"""

from __future__ import annotations

import json
import unicodedata

from rich.text import Text

MAX_JSON_BYTES = 16 * 1024 * 1024  # above any record a broker accepts by default; bigger is not read as JSON

# Cc: C0, DEL, C1 (0x9b is CSI on some terminals); Cf: bidi overrides and invisible marks; Zl/Zp: line breaks
# a terminal may honour; Cs: lone surrogates (not encodable).
_HIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
_KEPT = frozenset("\n\t")


def visible(text: str | bytes | None, *, keep_lines: bool = False) -> str:
    """``text`` (bytes decoded as UTF-8, bad bytes replaced) with each control or format character written out.

    With ``keep_lines`` newline and tab stay as they are (multi-line output); otherwise they are written out too.
    None is the empty string. Never raises.
    """
    if text is None:
        return ""
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    if text.isprintable():  # the common case, at C speed (space counts as printable, newline does not)
        return text
    return "".join(
        ch
        if (keep_lines and ch in _KEPT) or unicodedata.category(ch) not in _HIDDEN_CATEGORIES
        else ch.encode("unicode_escape", errors="backslashreplace").decode("ascii")
        for ch in text
    )


def cell(text: str | bytes | None) -> Text:
    """``visible(text)`` as a Rich ``Text``: shown literally, never read as markup or emoji codes."""
    return Text(visible(text), end="")


def line(*parts: str | tuple[str, str]) -> Text:
    """One line for the terminal from parts of untrusted text; a ``(text, style)`` pair is styled, as in
    ``Text.assemble``. Every part is made ``visible`` first."""
    return Text.assemble(
        *((visible(p[0]), p[1]) if isinstance(p, tuple) else visible(p) for p in parts),
        end="\n",
    )


def parse_json(data: bytes | None) -> object | None:
    """The JSON document in ``data``, or None when it is empty, not JSON, over ``MAX_JSON_BYTES``, or nested
    deeper than the interpreter's recursion limit (``"[" * 5000``). Never raises."""
    if not data or len(data) > MAX_JSON_BYTES:
        return None
    try:
        parsed: object = json.loads(data)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return None
    return parsed
