"""Stripe's form encoding: `metadata[k]=v`, `items[0][price]=p`, `expand[]=x`.

Stripe's v1 API takes `application/x-www-form-urlencoded` bodies (and query strings)
whose keys nest with brackets. This turns them into plain dicts and lists, and gives
the typed readers every endpoint uses, each failing with the error Stripe gives.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import parse_qsl

from standins.stripe.errors import ApiError

_KEY = re.compile(r"^([^\[\]]+)((?:\[[^\[\]]*\])*)$")
_PART = re.compile(r"\[([^\[\]]*)\]")
#: Hashes whose keys are free text: never read `{"0": ...}` in them as a list.
_FREE_KEYS = frozenset({"metadata"})
_APPEND = "\0append"


def parse_form(raw: bytes | str) -> dict[str, Any]:
    text = raw.decode() if isinstance(raw, bytes) else raw
    return decode_pairs(parse_qsl(text, keep_blank_values=True))


def decode_pairs(pairs: Iterable[tuple[str, str]]) -> dict[str, Any]:
    root: dict[str, Any] = {}
    for key, value in pairs:
        match = _KEY.match(key)
        if match is None:
            raise ApiError.invalid(f"Invalid parameter name: {key}", param=key)
        parts = [match.group(1), *_PART.findall(match.group(2))]
        node = root
        for depth, part in enumerate(parts):
            name = part if part else f"{_APPEND}{len(node)}"
            last = depth == len(parts) - 1
            if last:
                if isinstance(node.get(name), dict):
                    raise ApiError.invalid(f"Invalid value for {key}: expected a hash", param=key)
                node[name] = value
            else:
                child = node.setdefault(name, {})
                if not isinstance(child, dict):
                    # `metadata=` (blank) followed by `metadata[k]=v`: the later keys win.
                    if child == "":
                        child = node[name] = {}
                    else:
                        raise ApiError.invalid(
                            f"Invalid value for {parts[0]}: cannot mix a value and a hash",
                            param=parts[0],
                        )
                node = child
    return {k: _listify(k, v) for k, v in root.items()}


def _listify(name: str, value: Any) -> Any:
    if not isinstance(value, dict):
        return value
    items = {k: _listify(k, v) for k, v in value.items()}
    if name in _FREE_KEYS or not items:
        return items
    keys = list(items)
    if all(k.startswith(_APPEND) or k.isdigit() for k in keys):
        order = sorted(keys, key=lambda k: int(k.removeprefix(_APPEND)))
        return [items[k] for k in order]
    return items


# Typed readers. Stripe names the parameter in `param` and uses these messages' shape.


def check_known(params: Mapping[str, Any], allowed: Iterable[str], *, prefix: str = "") -> None:
    known = set(allowed) | {"expand"}
    for name in params:
        if name not in known:
            full = f"{prefix}[{name}]" if prefix else name
            raise ApiError.invalid(
                f"Received unknown parameter: {full}", param=full, code="parameter_unknown"
            )


def required(params: Mapping[str, Any], name: str) -> Any:
    value = params.get(name)
    if value is None or value == "":
        raise ApiError.invalid(
            f"Missing required param: {name}.", param=name, code="parameter_missing"
        )
    return value


def opt_str(params: Mapping[str, Any], name: str, *, max_len: int = 5000) -> str | None:
    value = params.get(name)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ApiError.invalid(f"Invalid string: {name}", param=name)
    if len(value) > max_len:
        raise ApiError.invalid(
            f"Invalid string: {name} must be at most {max_len} characters", param=name
        )
    return value


def req_str(params: Mapping[str, Any], name: str, *, max_len: int = 5000) -> str:
    required(params, name)
    value = opt_str(params, name, max_len=max_len)
    assert value is not None
    return value


def opt_int(params: Mapping[str, Any], name: str, *, minimum: int | None = None) -> int | None:
    value = params.get(name)
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not re.fullmatch(r"-?\d+", value):
        raise ApiError.invalid(
            f"Invalid integer: {value}", param=name, code="parameter_invalid_integer"
        )
    number = int(value)
    if minimum is not None and number < minimum:
        raise ApiError.invalid(
            f"This value must be greater than or equal to {minimum}.", param=name
        )
    return number


def opt_decimal(params: Mapping[str, Any], name: str) -> Decimal | None:
    value = params.get(name)
    if value is None or value == "":
        return None
    try:
        if not isinstance(value, str):
            raise InvalidOperation
        number = Decimal(value)
        if not number.is_finite():
            raise InvalidOperation
    except InvalidOperation:
        raise ApiError.invalid(f"Invalid decimal: {value}", param=name) from None
    return number


def opt_bool(params: Mapping[str, Any], name: str) -> bool | None:
    value = params.get(name)
    if value is None or value == "":
        return None
    if value not in ("true", "false"):
        raise ApiError.invalid(f"Invalid boolean: {value}", param=name)
    return bool(value == "true")


def opt_enum(params: Mapping[str, Any], name: str, choices: Iterable[str]) -> str | None:
    value = opt_str(params, name)
    options = list(choices)
    if value is not None and value not in options:
        raise ApiError.invalid(f"Invalid {name}: must be one of {', '.join(options)}", param=name)
    return value


def opt_hash(params: Mapping[str, Any], name: str) -> dict[str, Any] | None:
    value = params.get(name)
    if value is None:
        return None
    if value == "":
        return {}
    if not isinstance(value, dict):
        raise ApiError.invalid(f"Invalid object: {name} must be a hash", param=name)
    return value


def opt_list(params: Mapping[str, Any], name: str) -> list[Any] | None:
    value = params.get(name)
    if value is None:
        return None
    if value == "":
        return []
    if not isinstance(value, list):
        raise ApiError.invalid(f"Invalid array: {name} must be an array", param=name)
    return value


def currency(params: Mapping[str, Any], name: str = "currency") -> str | None:
    value = opt_str(params, name)
    if value is None:
        return None
    if not re.fullmatch(r"[A-Za-z]{3}", value):
        raise ApiError.invalid(f"Invalid currency: {value}.", param=name)
    return value.lower()


def metadata(params: Mapping[str, Any], current: Mapping[str, str] | None = None) -> dict[str, str]:
    """Stripe merges metadata on update; a blank value deletes a key, a blank hash all."""
    given = opt_hash(params, "metadata")
    result = dict(current or {})
    if given is None:
        return result
    if not given:
        return {}
    for key, value in given.items():
        if not isinstance(value, str):
            raise ApiError.invalid("Invalid metadata value", param=f"metadata[{key}]")
        if len(key) > 40:
            raise ApiError.invalid(
                "Metadata keys can have up to 40 characters", param=f"metadata[{key}]"
            )
        if len(value) > 500:
            raise ApiError.invalid(
                "Metadata values can have up to 500 characters", param=f"metadata[{key}]"
            )
        if value == "":
            result.pop(key, None)
        else:
            result[key] = value
    if len(result) > 50:
        raise ApiError.invalid("Metadata can have up to 50 keys", param="metadata")
    return result
