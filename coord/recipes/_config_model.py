"""Turning stored configuration into a model instance (private to :mod:`coord.recipes.config`).

Models: a dataclass (values coerced here to the annotated field types), a pydantic v2 model (validated by pydantic,
imported lazily and only when such a model is used), or None (a plain dict). Every failure raises
:class:`~coord.recipes._support.ConfigInvalid` with a message naming the key or field.

Per-key values are JSON when they parse as JSON, else plain text: ``8080`` is the int 8080, ``true`` is True,
``["a", "b"]`` a list, ``hello`` the string "hello". A field annotated ``str`` keeps the text as written (``123``
stays "123"; write ``"123"`` in quotes only if you want the quotes stripped).
"""

from __future__ import annotations

import collections.abc as abc
import dataclasses
import datetime
import enum
import json
import types
import typing
from collections.abc import Mapping
from pathlib import PurePath
from typing import Any, Literal, Union, get_args, get_origin

from coord.recipes._support import ConfigInvalid

__all__ = ["build", "check_model", "decode_value", "field_names", "parse_document"]

_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}
_SEQUENCES = {list, tuple, abc.Sequence, abc.MutableSequence}
_SETS = {set, frozenset, abc.Set, abc.MutableSet}


def _is_pydantic(model: type[Any]) -> bool:
    return hasattr(model, "model_validate") and hasattr(model, "model_fields")


def check_model(model: object) -> None:
    """Raise TypeError unless ``model`` is None, a dataclass type or a pydantic v2 model type."""
    if model is None:
        return
    if isinstance(model, type) and (dataclasses.is_dataclass(model) or _is_pydantic(model)):
        return
    raise TypeError(f"model must be a dataclass, a pydantic model or None, not {model!r}")


def _hints(model: type[Any]) -> dict[str, Any]:
    if _is_pydantic(model):
        return {name: f.annotation for name, f in model.model_fields.items()}
    try:
        hints = typing.get_type_hints(model)
    except Exception as exc:  # an unresolvable annotation is a programming error: say which
        raise TypeError(f"cannot resolve the field types of {model.__name__}: {exc}") from exc
    return {f.name: hints.get(f.name, Any) for f in dataclasses.fields(model) if f.init}


def field_names(model: type[Any] | None) -> dict[str, Any] | None:
    """Field name -> annotation (None for model None: every key is taken)."""
    return None if model is None else _hints(model)


def _prefers_text(annotation: Any) -> bool:
    if annotation is str:
        return True
    if get_origin(annotation) in (Union, types.UnionType):
        return [a for a in get_args(annotation) if a is not type(None)] == [str]
    return False


def decode_value(key: str, raw: bytes, annotation: Any = Any) -> Any:
    """One per-key value: JSON if it parses, else the text (see the module docstring)."""
    try:
        text = raw.decode()
    except UnicodeDecodeError:
        raise ConfigInvalid(f"{key}: not UTF-8 text") from None
    try:
        value = json.loads(text)
    except ValueError:
        return text
    if _prefers_text(annotation) and not isinstance(value, str):
        return text
    return value


def parse_document(key: str, raw: bytes, fmt: str) -> Any:
    """A JSON or YAML document (``fmt`` "json", "yaml" or "auto": JSON, else YAML when PyYAML is installed)."""
    try:
        text = raw.decode()
    except UnicodeDecodeError:
        raise ConfigInvalid(f"{key}: not UTF-8 text") from None
    if fmt in ("json", "auto"):
        try:
            return json.loads(text)
        except ValueError as exc:
            if fmt == "json":
                raise ConfigInvalid(f"{key}: invalid JSON: {exc}") from None
    try:
        import yaml
    except ImportError:
        raise ConfigInvalid(
            f"{key}: not valid JSON, and PyYAML is not installed to read YAML (pip install pyyaml)"
        ) from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigInvalid(f"{key}: invalid YAML: {exc}") from None


def build(model: type[Any] | None, data: Mapping[str, Any], where: str) -> Any:
    """An instance of ``model`` from ``data`` (a dict for model None). Raises ConfigInvalid."""
    if model is None:
        return dict(data)
    if _is_pydantic(model):
        from pydantic import ValidationError

        try:
            return model.model_validate(dict(data))
        except ValidationError as exc:
            raise ConfigInvalid(f"{where}: {exc}") from None
    return _dataclass(model, data, where)


def _dataclass(model: type[Any], data: object, path: str) -> Any:
    if not isinstance(data, Mapping):
        raise ConfigInvalid(f"{path}: expected an object for {model.__name__}, got {type(data).__name__}")
    hints = _hints(model)
    kwargs = {}
    for f in dataclasses.fields(model):
        if not f.init:
            continue
        where = f"{path}{f.name}" if path.endswith("/") else f"{path}.{f.name}"  # a key under a prefix, or a field
        if f.name in data:
            kwargs[f.name] = coerce(data[f.name], hints[f.name], where)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigInvalid(f"{where}: missing (required, no default)")
    try:
        return model(**kwargs)
    except (ValueError, TypeError) as exc:  # the model's own validation (__post_init__)
        raise ConfigInvalid(f"{path}: {model.__name__} rejected the values: {exc}") from None


def coerce(value: Any, tp: Any, path: str) -> Any:
    """``value`` (decoded JSON/YAML, or text) as type ``tp``. Raises ConfigInvalid."""
    if tp is Any or tp is object:
        return value
    origin = get_origin(tp)
    if origin is typing.Annotated:
        return coerce(value, get_args(tp)[0], path)
    if origin in (Union, types.UnionType):
        return _union(value, get_args(tp), path)
    if origin is Literal:
        for option in get_args(tp):
            if value == option and type(value) is type(option):
                return option
            if isinstance(value, str) and not isinstance(option, str) and str(option) == value:
                return option
        raise ConfigInvalid(f"{path}: {value!r} is not one of {list(get_args(tp))}")
    if tp is type(None):
        if value is None:
            return None
        raise ConfigInvalid(f"{path}: expected null, got {value!r}")
    if origin in _SEQUENCES or origin in _SETS:
        return _collection(value, tp, origin, path)
    if tp in _SEQUENCES or tp in _SETS:
        return _collection(value, tp, tp, path)
    if origin in (dict, abc.Mapping, abc.MutableMapping) or tp in (dict, abc.Mapping):
        args = get_args(tp) or (Any, Any)
        if not isinstance(value, Mapping):
            raise ConfigInvalid(f"{path}: expected an object, got {type(value).__name__}")
        return {coerce(k, args[0], f"{path}[{k!r}]"): coerce(v, args[1], f"{path}[{k!r}]") for k, v in value.items()}
    if isinstance(tp, type):
        return _scalar(value, tp, path)
    raise ConfigInvalid(f"{path}: unsupported field type {tp!r}")


def _union(value: Any, options: tuple[Any, ...], path: str) -> Any:
    if value is None and type(None) in options:
        return None
    for option in options:  # an exact type match wins (so 1 stays an int in int | str)
        if isinstance(option, type) and type(value) is option:
            return value
    errors = []
    for option in options:
        if option is type(None):
            continue
        try:
            return coerce(value, option, path)
        except ConfigInvalid as exc:
            errors.append(str(exc))
    raise ConfigInvalid(f"{path}: {value!r} fits none of the allowed types ({'; '.join(errors)})")


def _collection(value: Any, tp: Any, origin: Any, path: str) -> Any:
    if not isinstance(value, list | tuple):
        raise ConfigInvalid(f"{path}: expected an array, got {type(value).__name__}")
    args = get_args(tp)
    if origin is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
        if len(args) != len(value):
            raise ConfigInvalid(f"{path}: expected {len(args)} items, got {len(value)}")
        return tuple(coerce(v, a, f"{path}[{i}]") for i, (v, a) in enumerate(zip(value, args, strict=True)))
    item = args[0] if args else Any
    items = [coerce(v, item, f"{path}[{i}]") for i, v in enumerate(value)]
    if origin is frozenset:
        return frozenset(items)
    if origin in _SETS:
        return set(items)
    if origin is tuple:
        return tuple(items)
    return items


def _scalar(value: Any, tp: type[Any], path: str) -> Any:
    if dataclasses.is_dataclass(tp):
        return _dataclass(tp, value, path)
    if _is_pydantic(tp):
        return build(tp, value, path) if isinstance(value, Mapping) else _bad(value, tp, path)
    if issubclass(tp, enum.Enum):
        for member in tp:
            if member.value == value or (
                isinstance(value, str) and (member.name == value or str(member.value) == value)
            ):
                return member
        raise ConfigInvalid(f"{path}: {value!r} is not a {tp.__name__} ({', '.join(m.name for m in tp)})")
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        return _bad(value, tp, path)
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                pass
        return _bad(value, tp, path)
    if tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value.strip())
            except ValueError:
                pass
        return _bad(value, tp, path)
    if tp is str:
        return value if isinstance(value, str) else _bad(value, tp, path)
    if tp is bytes:
        return value.encode() if isinstance(value, str) else _bad(value, tp, path)
    if tp in (datetime.datetime, datetime.date, datetime.time):
        if isinstance(value, tp):
            return value
        if isinstance(value, str):
            try:
                return tp.fromisoformat(value)
            except ValueError:
                pass
        return _bad(value, tp, path)
    if tp is datetime.timedelta:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return datetime.timedelta(seconds=value)
        return _bad(value, tp, path)
    if issubclass(tp, PurePath):
        return tp(value) if isinstance(value, str) else _bad(value, tp, path)
    if isinstance(value, tp):
        return value
    return _bad(value, tp, path)


def _bad(value: Any, tp: Any, path: str) -> Any:
    name = getattr(tp, "__name__", repr(tp))
    raise ConfigInvalid(f"{path}: expected {name}, got {type(value).__name__} {value!r}")
