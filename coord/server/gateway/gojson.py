"""JSON reading with Go's ``encoding/json`` behaviour and error messages, as etcd's grpc-gateway shows them.

etcd's gateway decodes request bodies with Go's ``json.Decoder``: a body is a sequence of JSON values (a unary call
reads the first and ignores the rest; a streaming call reads them one by one), and a syntax error is reported with
Go's wording (``invalid character 'x' looking for beginning of value``, ``unexpected EOF``). This module reproduces
that on top of Python's :mod:`json`:

* :class:`ValueSplitter` cuts a byte stream into complete top-level JSON values without parsing them, so a streaming
  body is decoded value by value as bytes arrive (in linear time);
* :func:`parse_value` parses one value into plain Python objects, keeping every number as a :class:`Number` holding
  its literal text (Go's messages quote it: ``cannot unmarshal number 1.5 into Go value of type int64``).

Errors are raised as :class:`GoJSONError` whose ``str`` is Go's message.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

_WHITESPACE = b" \t\r\n"
_OPEN = (ord("{"), ord("["))
_CLOSE = (ord("}"), ord("]"))
_QUOTE = ord('"')
_BACKSLASH = ord("\\")
_NON_WHITESPACE = re.compile(rb"[^ \t\r\n]")
_STRING_STOP = re.compile(rb'["\\]')
_STRUCTURE_STOP = re.compile(rb'["{}\[\]]')
# A scalar (number or literal) at top level ends before whitespace or the start of another value.
_SCALAR_STOP = re.compile(rb'[ \t\r\n{\["]')


class GoJSONError(ValueError):
    """Malformed JSON, or JSON of the wrong shape; ``str(error)`` is the message Go's encoding/json would give."""


@dataclass(frozen=True, slots=True)
class Number:
    """A JSON number, kept as its literal text (Go converts it only once the target type is known)."""

    literal: str


def kind_of(value: Any) -> str:
    """The JSON kind Go names in ``cannot unmarshal <kind> into ...``: object, array, string, number or bool."""
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "array"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool):
        return "bool"
    return "number"


def quote_char(c: str) -> str:
    """A character quoted as Go's JSON scanner quotes it in error messages: ``'x'``, ``'\\''``, ``'"'``, ``'\\n'``."""
    if c == "'":
        return "'\\''"
    if c == '"':
        return "'\"'"
    return "'" + json.dumps(c)[1:-1] + "'"


class _Rejected(Exception):
    def __init__(self, constant: str) -> None:
        self.constant = constant


def _reject_constant(name: str) -> Any:
    raise _Rejected(name)


_DECODER = json.JSONDecoder(parse_int=Number, parse_float=Number, parse_constant=_reject_constant)


def parse_value(text: str, *, top_level_message: bool = False) -> Any:
    """Parse exactly one JSON value (``text`` holds nothing else but whitespace).

    Objects become dicts (a repeated name keeps its last value, as Go's map decoding does), numbers :class:`Number`.
    ``top_level_message=False`` reports a truncated value as Go's ``json.Unmarshal`` does (``unexpected end of JSON
    input``); ``True`` as ``json.Decoder`` does (``unexpected EOF``). Raises :class:`GoJSONError`.
    """
    stripped = text.lstrip(" \t\r\n")
    offset = len(text) - len(stripped)
    eof = "unexpected EOF" if top_level_message else "unexpected end of JSON input"
    if not stripped:
        raise GoJSONError(eof)
    try:
        value, end = _DECODER.raw_decode(stripped)
    except _Rejected as rejected:
        # NaN, Infinity and -Infinity are Python extensions; Go stops at their first letter.
        letter = rejected.constant.lstrip("-")[0]
        where = "in numeric literal" if rejected.constant.startswith("-") else "looking for beginning of value"
        raise GoJSONError(f"invalid character {quote_char(letter)} {where}") from None
    except json.JSONDecodeError as error:
        raise GoJSONError(_syntax_message(text, offset + error.pos, error.msg, eof)) from None
    except RecursionError:
        # Go stops at 10000 levels, Python's parser near 1000: either way the value is refused.
        raise GoJSONError(f"invalid character {quote_char(stripped[0])} exceeded max depth") from None
    rest = stripped[end:].lstrip(" \t\r\n")
    if rest:
        raise GoJSONError(f"invalid character {quote_char(rest[0])} after top-level value")
    return value


def _syntax_message(doc: str, pos: int, python_message: str, eof: str) -> str:
    """Go's wording for the syntax error Python's decoder reported at ``pos``."""
    if python_message.startswith("Unterminated string"):
        return eof
    if python_message.startswith("Invalid \\uXXXX"):
        return _bad_unicode_escape(doc, pos, eof)
    if python_message.startswith("Invalid \\escape"):
        # Python points at the backslash; Go names the character after it.
        return f"invalid character {quote_char(doc[pos + 1])} in string escape code"
    if python_message.startswith("Invalid control character"):
        return f"invalid character {quote_char(doc[pos])} in string literal"
    while pos < len(doc) and doc[pos] in " \t\r\n":
        pos += 1
    if pos >= len(doc):
        return eof
    c = quote_char(doc[pos])
    if python_message.startswith("Expecting property name"):
        return f"invalid character {c} looking for beginning of object key string"
    if python_message == "Expecting ':' delimiter":
        return f"invalid character {c} after object key"
    if python_message == "Expecting ',' delimiter":
        if _innermost_container(doc, pos) == "{":
            return f"invalid character {c} after object key:value pair"
        return f"invalid character {c} after array element"
    if doc[pos] == "-":
        following = doc[pos + 1 : pos + 2]
        return f"invalid character {quote_char(following)} in numeric literal" if following else eof
    return f"invalid character {c} looking for beginning of value"


def _bad_unicode_escape(doc: str, pos: int, eof: str) -> str:
    # Python points at the backslash of ``\uXXXX``; Go names the first character that is not a hex digit.
    for i in range(pos + 2, pos + 6):
        if i >= len(doc):
            return eof
        if doc[i] not in "0123456789abcdefABCDEF":
            return f"invalid character {quote_char(doc[i])} in \\u hexadecimal character escape"
    return f"invalid character {quote_char(doc[pos + 1])} in string escape code"


def _innermost_container(doc: str, pos: int) -> str:
    """``{`` or ``[``: the container open at ``pos`` (strings skipped)."""
    stack: list[str] = []
    in_string = escaped = False
    for c in doc[:pos]:
        if in_string:
            if escaped:
                escaped = False
            elif c == "\\":
                escaped = True
            elif c == '"':
                in_string = False
        elif c == '"':
            in_string = True
        elif c in "{[":
            stack.append(c)
        elif c in "}]" and stack:
            stack.pop()
    return stack[-1] if stack else "{"


_INTEGER = re.compile(r"-?(?:0|[1-9][0-9]*)\Z")


def parse_integer(literal: str, go_type: str, low: int, high: int) -> int:
    """A JSON number literal as a Go integer of ``go_type`` within [low, high] (``strconv.ParseInt`` rules: no
    fraction, no exponent). Raises :class:`GoJSONError` with Go's message otherwise."""
    if not _INTEGER.match(literal):
        raise GoJSONError(f"json: cannot unmarshal number {literal} into Go value of type {go_type}")
    value = int(literal)
    if not low <= value <= high:
        raise GoJSONError(f"json: cannot unmarshal number {literal} into Go value of type {go_type}")
    return value


class ValueSplitter:
    """Cuts a stream of bytes into complete top-level JSON values, as Go's ``json.Decoder`` reads them.

    Feed bytes with :meth:`feed`; each call returns the values completed so far as raw bytes (whitespace between
    values dropped). :meth:`finish` returns what is left at the end of the stream (an incomplete value, which the
    parser then reports as ``unexpected EOF``). Splitting is structural only (strings, escapes and bracket depth), so
    malformed values are cut somewhere and reported by the parser; it runs in linear time. ``max_value_bytes``
    bounds one value: a longer one raises :class:`ValueTooLarge`.
    """

    def __init__(self, max_value_bytes: int) -> None:
        self._max = max_value_bytes
        self._buf = bytearray()
        self._scan = 0  # bytes of _buf already scanned
        self._start = 0  # where the current value starts in _buf
        self._started = False
        self._kind = 0  # first byte of the current value
        self._depth = 0
        self._in_string = False
        self._escaped = False

    def feed(self, data: bytes) -> list[bytes]:
        values: list[bytes] = []
        buf = self._buf
        buf += data
        i, start, n = self._scan, self._start, len(buf)
        while i < n:
            if not self._started:
                m = _NON_WHITESPACE.search(buf, i)
                if m is None:
                    i = n
                    break
                start = m.start()
                self._kind = buf[start]
                self._depth = 1 if self._kind in _OPEN else 0
                self._in_string = self._kind == _QUOTE
                self._escaped = False
                self._started = True
                i = start + 1
                continue
            if self._in_string:
                if self._escaped:
                    self._escaped = False
                    i += 1
                    continue
                m = _STRING_STOP.search(buf, i)
                if m is None:
                    i = n
                    break
                i = m.start() + 1
                if buf[i - 1] == _BACKSLASH:
                    self._escaped = True
                    continue
                self._in_string = False
                if self._kind == _QUOTE:
                    values.append(bytes(buf[start:i]))
                    self._started = False
                continue
            if self._kind in _OPEN:
                m = _STRUCTURE_STOP.search(buf, i)
                if m is None:
                    i = n
                    break
                i = m.start() + 1
                b = buf[i - 1]
                if b == _QUOTE:
                    self._in_string = True
                elif b in _OPEN:
                    self._depth += 1
                else:
                    self._depth -= 1
                    if self._depth == 0:
                        values.append(bytes(buf[start:i]))
                        self._started = False
                continue
            m = _SCALAR_STOP.search(buf, i)
            if m is None:
                i = n
                break
            i = m.start()  # the stop byte starts the next value (or is whitespace)
            values.append(bytes(buf[start:i]))
            self._started = False
        cut = start if self._started else i
        del buf[:cut]
        self._scan, self._start = i - cut, 0
        if self._started and len(buf) > self._max:
            raise ValueTooLarge(len(buf), self._max)
        return values

    def finish(self) -> bytes | None:
        """The incomplete value left when the stream ended, or None if there is none."""
        rest = bytes(self._buf).strip(_WHITESPACE)
        self._buf.clear()
        self._scan = self._start = 0
        self._started = False
        return rest or None


class ValueTooLarge(Exception):
    """One JSON value in a request body is longer than the gateway accepts."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"a JSON value of at least {size} bytes is larger than the limit of {limit} bytes")
        self.size = size
        self.limit = limit
