"""Structured output as the three APIs take it: each request shape checked the way the API checks it
(with its own error wording), and an answer that fits the schema — or, for `sim-badjson-*` keys,
valid JSON that does not (the attack a caller of `response_schema` must be protected from).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
GEMINI_SCHEMA_FIELDS = {
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
    "example",
    "anyOf",
    "propertyOrdering",
    "default",
    "items",
    "minimum",
    "maximum",
}
GEMINI_TYPES = {"TYPE_UNSPECIFIED", "STRING", "NUMBER", "INTEGER", "BOOLEAN", "ARRAY", "OBJECT", "NULL"}


def example_for(schema: Any, depth: int = 0) -> Any:
    """A deterministic value that fits the schema (JSON Schema, or Gemini's upper-case subset)."""
    if not isinstance(schema, Mapping) or depth > 8:
        return None
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    for key in ("anyOf", "oneOf"):
        if schema.get(key):
            return example_for(schema[key][0], depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    kind = str(kind or ("object" if "properties" in schema else "string")).lower()
    if kind == "object":
        properties = schema.get("properties") or {}
        return {name: example_for(sub, depth + 1) for name, sub in properties.items()}
    if kind == "array":
        count = max(1, int(schema.get("minItems") or 1))
        return [example_for(schema.get("items") or {}, depth + 1) for _ in range(count)]
    if kind == "integer":
        return int(schema.get("minimum") or 1)
    if kind == "number":
        return float(schema.get("minimum") or 1.5)
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    text = "sim answer"
    return text + "x" * max(0, int(schema.get("minLength") or 0) - len(text))


def violating(schema: Any) -> Any:
    """Valid JSON of the wrong shape for the schema (a model that ignored it)."""
    kind = schema.get("type") if isinstance(schema, Mapping) else None
    kind = str(kind[0] if isinstance(kind, list) else kind or "").lower()
    if kind == "object":
        properties = schema.get("properties") or {}
        return {name: ["not", "this", "type"] for name in properties} or ["not", "an", "object"]
    return {"string": 12345, "array": {"not": "a list"}}.get(kind, "not what the schema asked for")


def openai_format_problem(response_format: Any) -> str | None:
    """Why OpenAI would refuse this `response_format` (None: it is fine)."""
    if not isinstance(response_format, Mapping) or response_format.get("type") not in (
        "text",
        "json_object",
        "json_schema",
    ):
        return "Invalid value for 'response_format.type': expected one of 'text', 'json_object' or 'json_schema'."
    if response_format["type"] != "json_schema":
        return None
    spec = response_format.get("json_schema")
    if not isinstance(spec, Mapping) or not isinstance(spec.get("name"), str) or not _NAME.match(spec["name"]):
        return "Invalid 'response_format.json_schema.name': must be a-z, A-Z, 0-9, underscores and dashes (max 64)."
    schema = spec.get("schema")
    if not isinstance(schema, Mapping):
        return "Missing required parameter: 'response_format.json_schema.schema'."
    if spec.get("strict"):
        return _strict_problem(spec["name"], schema, ())
    return None


def _strict_problem(name: str, node: Any, context: tuple[str, ...]) -> str | None:
    if not isinstance(node, Mapping):
        return None
    where = f"Invalid schema for response_format '{name}': In context=({', '.join(repr(c) for c in context)}), "
    if not context and node.get("type") != "object":
        kind = node.get("type")
        return where + f"schema must be a JSON Schema of 'type: \"object\"', got 'type: \"{kind}\"'."
    if node.get("type") == "object":
        properties = node.get("properties") or {}
        if node.get("additionalProperties") is not False:
            return where + "'additionalProperties' is required to be supplied and to be false."
        missing = [p for p in properties if p not in (node.get("required") or [])]
        if missing:
            return (
                where + "'required' is required to be supplied and to be an array including every key in properties. "
                f"Missing '{missing[0]}'."
            )
        for key, sub in properties.items():
            found = _strict_problem(name, sub, (*context, "properties", key))
            if found:
                return found
    if isinstance(node.get("items"), Mapping):
        return _strict_problem(name, node["items"], (*context, "items"))
    return None


def anthropic_tool_problem(tools: Any, tool_choice: Any) -> str | None:
    """Why Anthropic would refuse these `tools` / `tool_choice` (None: fine)."""
    if tools is None:
        return "tool_choice: may only be specified while providing tools." if tool_choice is not None else None
    if not isinstance(tools, list) or not tools:
        return "tools: Input should be a valid list"
    names = []
    for i, tool in enumerate(tools):
        if not isinstance(tool, Mapping) or not isinstance(tool.get("name"), str) or not _NAME.match(tool["name"]):
            return f"tools.{i}.custom.name: String should match pattern '^[a-zA-Z0-9_-]{{1,64}}$'"
        schema = tool.get("input_schema")
        if not isinstance(schema, Mapping) or schema.get("type") != "object":
            return f"tools.{i}.custom.input_schema.type: Input should be 'object'"
        names.append(tool["name"])
    if tool_choice is not None:
        if not isinstance(tool_choice, Mapping) or tool_choice.get("type") not in ("auto", "any", "tool", "none"):
            return "tool_choice: Input tag does not match any of the expected tags: 'auto', 'any', 'tool', 'none'"
        if tool_choice["type"] == "tool" and tool_choice.get("name") not in names:
            return f"tool_choice.name: Tool '{tool_choice.get('name')}' not found in provided tools"
    return None


def gemini_config_problem(config: Mapping[str, Any]) -> str | None:
    """Why Gemini would refuse this generationConfig's structured-output fields (None: fine)."""
    mime = config.get("responseMimeType", config.get("response_mime_type"))
    schema = config.get("responseSchema", config.get("response_schema"))
    json_schema = config.get("responseJsonSchema", config.get("response_json_schema"))
    if mime not in (None, "text/plain", "application/json", "text/x.enum"):
        return (
            f"* GenerationConfig.response_mime_type: {mime!r} is not supported. "
            "Allowed mimetypes are text/plain, application/json, text/x.enum."
        )
    if (schema is not None or json_schema is not None) and mime != "application/json":
        return "* GenerationConfig.response_schema: only supported with response_mime_type: application/json"
    if schema is not None:
        return _gemini_schema_problem(camel_schema(schema), "generation_config.response_schema")
    return None


def camel_schema(node: Any) -> Any:
    """A Gemini Schema with proto field names in lowerCamelCase (the API takes `property_ordering` and
    `propertyOrdering` alike; the Python SDK sends the first). Property names are left as they are."""
    if isinstance(node, list):
        return [camel_schema(item) for item in node]
    if not isinstance(node, Mapping):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        name = re.sub(r"_([a-z])", lambda m: m.group(1).upper(), key)
        if name == "properties" and isinstance(value, Mapping):
            out[name] = {prop: camel_schema(sub) for prop, sub in value.items()}
        elif name in ("items", "anyOf"):
            out[name] = camel_schema(value)
        else:
            out[name] = value
    return out


def _gemini_schema_problem(node: Any, where: str) -> str | None:
    if not isinstance(node, Mapping):
        return f"Invalid JSON payload received. Expected an object at '{where}'."
    for key, value in node.items():
        if key not in GEMINI_SCHEMA_FIELDS:
            return f"Invalid JSON payload received. Unknown name \"{key}\" at '{where}': Cannot find field."
        if key == "type" and str(value).upper() not in GEMINI_TYPES:
            return f"Invalid JSON payload received. Invalid value at '{where}.type' ({value!r})"
        if key == "properties" and isinstance(value, Mapping):
            for name, sub in value.items():
                found = _gemini_schema_problem(sub, f"{where}.properties[{name}].value")
                if found:
                    return found
        if key == "items":
            found = _gemini_schema_problem(value, f"{where}.items")
            if found:
                return found
    return None
