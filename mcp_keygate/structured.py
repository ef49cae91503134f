"""Structured answers: a JSON Schema the answer must fit, asked of each provider in its own terms and
checked here, whatever the provider promised.

- OpenAI: `response_format: {type: json_schema, json_schema: {name, schema, strict}}`, strict when the
  schema meets strict mode's rules (every object closed and every property required).
- Anthropic: one forced tool (`tool_choice: {type: tool}`) whose input schema is the schema; a schema
  that is not an object is wrapped as `{"value": …}` (tool inputs are objects) and unwrapped after.
- Gemini: `responseMimeType: application/json` and `responseSchema`, the schema in Gemini's OpenAPI
  subset (upper-case types, no `additionalProperties`, `nullable` for `["x", "null"]`).

An answer that is not JSON or does not validate is a failed attempt (`invalid_output`), never an answer.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from .errors import InvalidRequest

TOOL_NAME = "answer"
WRAPPED = "value"
MAX_SCHEMA_CHARS = 50_000
_FENCE = re.compile(r"^\s*```(?:json)?\s*\n?(.*?)\n?```\s*$", re.S)
# What Gemini's Schema object takes; anything else in a schema is dropped before it is sent.
_GEMINI_FIELDS = {
    "type",
    "format",
    "title",
    "description",
    "nullable",
    "enum",
    "maxItems",
    "minItems",
    "properties",
    "required",
    "minProperties",
    "maxProperties",
    "minLength",
    "maxLength",
    "pattern",
    "anyOf",
    "propertyOrdering",
    "default",
    "items",
    "minimum",
    "maximum",
}


def checked_schema(schema: Any, where: str = "response_schema") -> dict[str, Any]:
    """The schema, if it is a JSON Schema this server can ask for and check; else InvalidRequest naming why."""
    if not isinstance(schema, Mapping):
        raise InvalidRequest(f'{where}: expected a JSON Schema object such as {{"type": "object", …}}')
    schema = dict(schema)
    if len(json.dumps(schema)) > MAX_SCHEMA_CHARS:
        raise InvalidRequest(f"{where}: the schema is over {MAX_SCHEMA_CHARS} characters of JSON")
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        path = "/".join(str(p) for p in exc.path) or "(top)"
        raise InvalidRequest(
            f"{where}: not a valid JSON Schema at {path}: {exc.message[:200]} "
            '(expected e.g. {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]})'
        ) from None
    if "$ref" in json.dumps(schema):
        raise InvalidRequest(f"{where}: $ref is not supported (write the schema out; providers differ on references)")
    return schema


def parse_answer(text: str, schema: Mapping[str, Any]) -> tuple[Any, str | None]:
    """(the answer as JSON, None), or (None, why it is not an answer to the schema)."""
    fenced = _FENCE.match(text)
    body = fenced.group(1) if fenced else text
    try:
        value = json.loads(body)
    except json.JSONDecodeError as exc:
        return None, f"the answer is not JSON ({exc.msg} at character {exc.pos}): {body[:80]!r}"
    errors = sorted(Draft202012Validator(schema).iter_errors(value), key=lambda e: list(e.path))
    if errors:
        first = errors[0]
        at = "/".join(str(p) for p in first.path) or "(top)"
        return None, f"the answer does not fit response_schema at {at}: {first.message[:160]}"
    return value, None


def strict_ok(schema: Any) -> bool:
    """Whether OpenAI's strict mode accepts the schema: every object lists its properties, requires
    all of them and forbids others; the top level is an object."""
    if not isinstance(schema, Mapping) or schema.get("type") != "object":
        return False
    return _closed(schema)


def _closed(node: Any) -> bool:
    if isinstance(node, list):
        return all(_closed(item) for item in node)
    if not isinstance(node, Mapping):
        return True
    if node.get("type") == "object" or "properties" in node:
        properties = node.get("properties")
        if not isinstance(properties, Mapping) or node.get("additionalProperties") is not False:
            return False
        if set(node.get("required") or []) != set(properties):
            return False
    return all(_closed(value) for key, value in node.items() if key not in ("enum", "const", "default"))


def openai_format(schema: Mapping[str, Any]) -> dict[str, Any]:
    return {"type": "json_schema", "json_schema": {"name": TOOL_NAME, "schema": schema, "strict": strict_ok(schema)}}


def is_object(schema: Mapping[str, Any]) -> bool:
    return schema.get("type") == "object"


def anthropic_tool(schema: Mapping[str, Any]) -> dict[str, Any]:
    """The one tool Anthropic is made to call; its input is the answer."""
    input_schema = (
        dict(schema)
        if is_object(schema)
        else {
            "type": "object",
            "properties": {WRAPPED: dict(schema)},
            "required": [WRAPPED],
        }
    )
    return {"name": TOOL_NAME, "description": "Give the answer in this exact structure.", "input_schema": input_schema}


def from_tool_input(value: Any, schema: Mapping[str, Any]) -> str:
    """The answer text from the forced tool's input (unwrapped when the schema was wrapped)."""
    if not is_object(schema) and isinstance(value, Mapping) and WRAPPED in value:
        value = value[WRAPPED]
    return json.dumps(value, ensure_ascii=False)


def gemini_schema(node: Any) -> Any:
    """A JSON Schema in Gemini's Schema subset (upper-case types, `nullable`, unknown keywords dropped)."""
    if isinstance(node, list):
        return [gemini_schema(item) for item in node]
    if not isinstance(node, Mapping):
        return node
    out: dict[str, Any] = {}
    kind = node.get("type")
    if isinstance(kind, list):
        real = [k for k in kind if k != "null"]
        if len(real) < len(kind):
            out["nullable"] = True
        kind = real[0] if real else "null"
    if isinstance(kind, str):
        out["type"] = kind.upper()
    if "const" in node:
        out["enum"] = [node["const"]]
    for key, value in node.items():
        if key in ("type", "const") or key not in _GEMINI_FIELDS:
            continue
        if key == "properties" and isinstance(value, Mapping):
            out[key] = {name: gemini_schema(sub) for name, sub in value.items()}
        elif key in ("items", "anyOf"):
            out[key] = gemini_schema(value)
        else:
            out[key] = value
    if "enum" in out and "type" not in out:
        out["type"] = "STRING"
    return out
