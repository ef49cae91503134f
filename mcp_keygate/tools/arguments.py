"""Tool arguments checked against the tool's own input schema before the SDK sees them, so a wrong
type or a value out of range gets one line in the style of every other argument error — the field,
what was given, what is expected — instead of pydantic's text with a link.

Only the shapes our tools use are understood (string, integer, number, boolean, arrays, objects
with `$ref`, `anyOf` with null, `enum`, `minimum`/`maximum`); anything else is left to the SDK.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

_WORDS = {
    "string": "text",
    "integer": "a whole number",
    "number": "a number",
    "boolean": "true or false",
    "array": "a list",
    "object": "an object",
    "null": "null",
}


def argument_problems(schema: Mapping[str, Any], arguments: Mapping[str, Any]) -> list[str]:
    """One line per argument that does not fit its declared type or range."""
    definitions = schema.get("$defs", {})
    properties = schema.get("properties", {})
    problems: list[str] = []
    for name, value in arguments.items():
        if name in properties:
            problems += _check(properties[name], value, name, definitions)
    return problems


def _check(schema: Mapping[str, Any], value: Any, where: str, definitions: Mapping[str, Any]) -> list[str]:
    if "$ref" in schema:
        schema = definitions.get(schema["$ref"].rsplit("/", 1)[-1], {})
    if "anyOf" in schema:
        options = [s for s in schema["anyOf"] if isinstance(s, Mapping)]
        for option in options:
            if not _check(option, value, where, definitions):
                return []
        fitting = [o for o in options if _type_fits(_resolve(o, definitions), value)]
        if fitting:  # the right type, but something inside it is wrong: say that
            return _check(fitting[0], value, where, definitions)
        real = [o for o in options if o.get("type") != "null"]
        expected = " or ".join(_describe(_resolve(o, definitions)) for o in real)
        optional = " (or leave it out)" if len(real) < len(options) else ""
        return [f"{where}: expected {expected}{optional}, got {_shown(value)}"]
    if not _type_fits(schema, value):
        return [f"{where}: expected {_describe(schema)}, got {_shown(value)}"] if "type" in schema else []
    if "enum" in schema and value not in schema["enum"]:
        allowed = ", ".join(repr(v) for v in schema["enum"])
        return [f"{where}: expected one of {allowed}, got {_shown(value)}"]
    if isinstance(value, int | float) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            return [f"{where}: must be at least {schema['minimum']:g}, got {_shown(value)}"]
        if "maximum" in schema and value > schema["maximum"]:
            return [f"{where}: must be at most {schema['maximum']:g}, got {_shown(value)}"]
    if isinstance(value, list) and isinstance(schema.get("items"), Mapping):
        return [p for i, item in enumerate(value) for p in _check(schema["items"], item, f"{where}[{i}]", definitions)]
    if isinstance(value, Mapping) and "properties" in schema:
        return [
            p
            for key, item in value.items()
            if key in schema["properties"]
            for p in _check(schema["properties"][key], item, f"{where}.{key}", definitions)
        ]
    return []


def _resolve(schema: Mapping[str, Any], definitions: Mapping[str, Any]) -> Mapping[str, Any]:
    if "$ref" in schema:
        return definitions.get(schema["$ref"].rsplit("/", 1)[-1], {})
    return schema


def _type_fits(schema: Mapping[str, Any], value: Any) -> bool:
    kind = schema.get("type")
    if kind is None:
        return True
    if kind == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    checks = {"string": str, "boolean": bool, "array": list, "object": Mapping, "null": type(None)}
    expected = checks.get(kind)
    return expected is None or isinstance(value, expected)


def _describe(schema: Mapping[str, Any]) -> str:
    kind = schema.get("type")
    words = _WORDS.get(kind, str(kind)) if isinstance(kind, str) else "a value"
    low, high = schema.get("minimum"), schema.get("maximum")
    if low is not None and high is not None:
        words += f" from {low:g} to {high:g}"
    return words


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "…"
