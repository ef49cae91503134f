"""Prompt templates of presets: `{name}` placeholders filled with typed parameters.

Checked once, when the config is read (`mcp-keygate check` and start-up), so an agent never meets
a template error at call time: every placeholder must be a declared parameter, every parameter must
be used, and only plain `{name}` is allowed (no `{x.attr}`, `{x[0]}`, `{x!r}` or `{x:>10}` — a
template is text, not code). `{{` and `}}` are literal braces.
"""

from __future__ import annotations

import re
import string
from typing import Any

TYPES: dict[str, type] = {"str": str, "int": int, "float": float, "bool": bool}
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# `text: str`, `language: str = "English"`, `bullets: int = 5` — the shorthand for a parameter.
_SHORTHAND = re.compile(r"^\s*(?P<type>str|int|float|bool)\s*(?:=\s*(?P<default>.+?))?\s*$")


def placeholders(template: str) -> list[str]:
    """The placeholder names, in order; ValueError naming the problem if the template is malformed."""
    names = []
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ValueError(f"malformed template ({exc}); write literal braces as {{{{ and }}}}") from None
    for _, field_name, spec, conversion in parsed:
        if field_name is None:
            continue
        if not _IDENTIFIER.match(field_name):
            raise ValueError(f"placeholder {{{field_name}}} must be a plain parameter name such as {{text}}")
        if spec or conversion:
            raise ValueError(f"placeholder {{{field_name}}} may not carry a format or conversion")
        names.append(field_name)
    return names


def parse_shorthand(text: str) -> dict[str, Any]:
    """`'str = "English"'` → {"type": "str", "default": "English"}; ValueError when it does not parse."""
    match = _SHORTHAND.match(text)
    if not match:
        raise ValueError(f'expected a type (str, int, float, bool), optionally "= default" (got {text!r})')
    spec: dict[str, Any] = {"type": match["type"]}
    if match["default"] is not None:
        spec["default"] = _literal(match["default"], match["type"])
    return spec


def _literal(raw: str, type_name: str) -> Any:
    raw = raw.strip()
    if type_name == "str":
        if len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in "\"'":
            return raw[1:-1]
        return raw
    if type_name == "bool":
        if raw.lower() in ("true", "false"):
            return raw.lower() == "true"
        raise ValueError(f"a bool default must be true or false (got {raw!r})")
    try:
        return TYPES[type_name](raw)
    except ValueError:
        raise ValueError(f"default {raw!r} is not a valid {type_name}") from None


def check_default(value: Any, type_name: str) -> None:
    expected = TYPES[type_name]
    ok = isinstance(value, expected) and not (expected is int and isinstance(value, bool))
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        ok = True
    if not ok:
        raise ValueError(f"default {value!r} is not a {type_name}")


def render(template: str, values: dict[str, Any]) -> str:
    """Fill the (already checked) template; booleans read as true/false."""
    shown = {k: (str(v).lower() if isinstance(v, bool) else v) for k, v in values.items()}
    return template.format_map(shown)
