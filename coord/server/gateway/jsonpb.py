"""Protobuf <-> JSON as etcd's gateway does it (grpc-gateway's JSONPb with ``OrigName: true``).

Output (:func:`to_json`): proto field names, fields at their default value omitted, bytes as standard base64, 64-bit
integers as decimal strings, 32-bit integers as numbers, enums by name.

Input (:func:`from_json`) follows golang/protobuf's ``jsonpb.Unmarshaler`` as etcd 3.4 runs it: a field may be named
by its proto name or its lowerCamel JSON name (the camel one wins if both are given); unknown fields are ignored;
``null`` leaves a field unset; integers may be numbers or strings holding a number; enums may be names or numbers;
bytes are standard base64. Every mismatch raises :class:`~coord.server.gateway.gojson.GoJSONError` with the message
Go gives (``json: cannot unmarshal string into Go value of type bool``, ``unknown value "X" for enum ...``).
"""

from __future__ import annotations

import base64
import json
from typing import Any, TypeVar

from google.protobuf import json_format
from google.protobuf.descriptor import EnumDescriptor, FieldDescriptor
from google.protobuf.message import Message

from coord.server.gateway.gojson import GoJSONError, Number, kind_of, parse_integer, parse_value

M = TypeVar("M", bound=Message)

_INT_RANGES: dict[int, tuple[str, int, int]] = {
    FieldDescriptor.CPPTYPE_INT64: ("int64", -(2**63), 2**63 - 1),
    FieldDescriptor.CPPTYPE_UINT64: ("uint64", 0, 2**64 - 1),
    FieldDescriptor.CPPTYPE_INT32: ("int32", -(2**31), 2**31 - 1),
    FieldDescriptor.CPPTYPE_UINT32: ("uint32", 0, 2**32 - 1),
}
_MESSAGE_GO_TYPE = "map[string]json.RawMessage"
TOO_DEEP = "coord: the request is nested too deeply"
_REPEATED_GO_TYPE = "[]json.RawMessage"


def to_json(message: Message) -> dict[str, Any]:
    """``message`` as etcd's gateway renders it (a dict ready for ``json.dumps``)."""
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def dumps(obj: Any) -> bytes:
    """Compact JSON bytes, as Go writes them."""
    return json.dumps(obj, separators=(",", ":")).encode()


def from_json(value: Any, message_type: type[M]) -> M:
    """Build a ``message_type`` from an already parsed JSON value (see :func:`gojson.parse_value`).

    Raises GoJSONError when the value does not fit the message.
    """
    message = message_type()
    try:
        _fill(message, value)
    except RecursionError:
        raise GoJSONError(TOO_DEEP) from None
    return message


def from_text(text: str, message_type: type[M]) -> M:
    """Parse one JSON value from ``text`` into a ``message_type``; raises GoJSONError."""
    return from_json(parse_value(text, top_level_message=True), message_type)


def _fill(message: Message, value: Any) -> None:
    if value is None:
        return
    if not isinstance(value, dict):
        raise GoJSONError(f"json: cannot unmarshal {kind_of(value)} into Go value of type {_MESSAGE_GO_TYPE}")
    fields: list[FieldDescriptor] = list(message.DESCRIPTOR.fields)  # type: ignore[arg-type]
    # jsonpb sets plain fields in declaration order, then the members of oneofs.
    plain = [f for f in fields if f.containing_oneof is None]
    in_oneof = [f for f in fields if f.containing_oneof is not None]
    for field in plain + in_oneof:
        found, raw = _take(value, field)
        if not found:
            continue
        if field.containing_oneof is not None and raw is None:
            if field.cpp_type != FieldDescriptor.CPPTYPE_MESSAGE:
                # Go sets the oneof to the member's zero value; a null message member stays unset.
                setattr(message, field.name, _zero(field))
            continue
        _set_field(message, field, raw)


def _take(obj: dict[str, Any], field: FieldDescriptor) -> tuple[bool, Any]:
    """The JSON value of ``field``: by its lowerCamel name if present, else by its proto name."""
    if field.json_name in obj:
        return True, obj[field.json_name]
    if field.name in obj:
        return True, obj[field.name]
    return False, None


def _zero(field: FieldDescriptor) -> Any:
    if field.cpp_type == FieldDescriptor.CPPTYPE_STRING:
        return b"" if field.type == FieldDescriptor.TYPE_BYTES else ""
    if field.cpp_type == FieldDescriptor.CPPTYPE_BOOL:
        return False
    if field.cpp_type in (FieldDescriptor.CPPTYPE_FLOAT, FieldDescriptor.CPPTYPE_DOUBLE):
        return 0.0
    return 0


def _set_field(message: Message, field: FieldDescriptor, raw: Any) -> None:
    if raw is None:
        return
    if field.is_repeated:
        if not isinstance(raw, list):
            raise GoJSONError(f"json: cannot unmarshal {kind_of(raw)} into Go value of type {_REPEATED_GO_TYPE}")
        container = getattr(message, field.name)
        for item in raw:
            if field.cpp_type == FieldDescriptor.CPPTYPE_MESSAGE:
                _fill(container.add(), item)
            else:
                container.append(_zero(field) if item is None else _scalar(field, item))
        return
    if field.cpp_type == FieldDescriptor.CPPTYPE_MESSAGE:
        child = getattr(message, field.name)
        child.SetInParent()
        _fill(child, raw)
        return
    setattr(message, field.name, _scalar(field, raw))


def _scalar(field: FieldDescriptor, raw: Any) -> Any:
    cpp = field.cpp_type
    if field.type == FieldDescriptor.TYPE_BYTES:
        return _bytes(raw)
    if cpp == FieldDescriptor.CPPTYPE_ENUM:
        assert field.enum_type is not None
        return _enum(field.enum_type, raw)
    if cpp in _INT_RANGES:
        go_type, low, high = _INT_RANGES[cpp]
        return _integer(raw, go_type, low, high)
    if cpp == FieldDescriptor.CPPTYPE_BOOL:
        if not isinstance(raw, bool):
            raise GoJSONError(f"json: cannot unmarshal {kind_of(raw)} into Go value of type bool")
        return raw
    if cpp == FieldDescriptor.CPPTYPE_STRING:
        if not isinstance(raw, str):
            raise GoJSONError(f"json: cannot unmarshal {kind_of(raw)} into Go value of type string")
        # Go replaces invalid UTF-16 surrogates with U+FFFD; protobuf strings must be valid Unicode.
        return raw.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    if cpp in (FieldDescriptor.CPPTYPE_FLOAT, FieldDescriptor.CPPTYPE_DOUBLE):
        return _float(raw, "float32" if cpp == FieldDescriptor.CPPTYPE_FLOAT else "float64")
    raise GoJSONError(f"unsupported field type of {field.full_name}")


def _unquote_number(raw: Any) -> Any:
    """jsonpb strips the quotes of a string given for a number and decodes what is inside as JSON."""
    if isinstance(raw, str):
        return parse_value(raw)
    return raw


def _integer(raw: Any, go_type: str, low: int, high: int) -> int:
    value = _unquote_number(raw)
    if value is None:
        return 0
    if not isinstance(value, Number):
        raise GoJSONError(f"json: cannot unmarshal {kind_of(value)} into Go value of type {go_type}")
    return parse_integer(value.literal, go_type, low, high)


def _float(raw: Any, go_type: str) -> float:
    value = _unquote_number(raw)
    if value is None:
        return 0.0
    if not isinstance(value, Number):
        raise GoJSONError(f"json: cannot unmarshal {kind_of(value)} into Go value of type {go_type}")
    return float(value.literal)


def _go_enum_type(enum: EnumDescriptor) -> str:
    """Go's type name of a generated enum: ``etcdserverpb.Compare_CompareTarget``."""
    package = enum.file.package
    local = enum.full_name[len(package) + 1 :] if package else enum.full_name
    return f"{package}.{local.replace('.', '_')}" if package else local.replace(".", "_")


def _enum(enum: EnumDescriptor, raw: Any) -> int:
    go_type = _go_enum_type(enum)
    if isinstance(raw, str):
        value = enum.values_by_name.get(raw)
        if value is None:
            raise GoJSONError(f"unknown value {json.dumps(raw)} for enum {go_type}")
        return int(value.number)
    if not isinstance(raw, Number):
        raise GoJSONError(f"json: cannot unmarshal {kind_of(raw)} into Go value of type {go_type}")
    return parse_integer(raw.literal, go_type, -(2**31), 2**31 - 1)


def _bytes(raw: Any) -> bytes:
    if isinstance(raw, str):
        src = raw.encode("utf-8", "surrogatepass")
        bad = _base64_error_offset(src)
        if bad is not None:
            raise GoJSONError(f"illegal base64 data at input byte {bad}")
        return base64.b64decode(src.replace(b"\r", b"").replace(b"\n", b""))
    if isinstance(raw, list):
        out = bytearray()
        for item in raw:
            if item is None:
                out.append(0)
                continue
            if not isinstance(item, Number):
                raise GoJSONError(f"json: cannot unmarshal {kind_of(item)} into Go value of type uint8")
            out.append(parse_integer(item.literal, "uint8", 0, 255))
        return bytes(out)
    raise GoJSONError(f"json: cannot unmarshal {kind_of(raw)} into Go value of type []uint8")


_ALPHABET = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")
_NEWLINES = (0x0A, 0x0D)
_PAD = 0x3D


def _base64_error_offset(src: bytes) -> int | None:
    """Where Go's ``base64.StdEncoding`` rejects ``src`` (the offset its CorruptInputError names), or None if it
    decodes: four-character quanta, padding required, CR and LF skipped anywhere."""
    si, n = 0, len(src)
    while True:
        j = 0
        while j < 4:
            if si == n:
                return None if j == 0 else si - j
            c = src[si]
            si += 1
            if c in _ALPHABET:
                j += 1
                continue
            if c in _NEWLINES:
                continue
            if c != _PAD or j < 2:
                return si - 1
            if j == 2:  # a second "=" must follow
                while si < n and src[si] in _NEWLINES:
                    si += 1
                if si == n:
                    return n
                if src[si] != _PAD:
                    return si - 1
                si += 1
            while si < n and src[si] in _NEWLINES:
                si += 1
            return si if si < n else None
