"""The lean output schemas (tools/lean_schemas.py) accept and refuse exactly what pydantic's schemas do.

Every published tool schema is checked against its original on real results and on hostile
variants of them: a required field dropped, a field of the wrong type, null where null is not
allowed, a nested object or list item broken."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jsonschema.validators import validator_for
from pydantic import TypeAdapter
from pydantic.json_schema import GenerateJsonSchema

from mcp_keygate.config import parse_config
from mcp_keygate.gateway import Keygate
from mcp_keygate.schemas import CompleteResult, ConversationResult, KeyStatusResult, ModelsResult, UsageResult
from mcp_keygate.server import build_server
from mcp_keygate.tools.lean_schemas import lean

COMPLETE = {
    "text": "hi",
    "json": None,
    "model": "mini",
    "provider": "p",
    "key_id": "p:1",
    "conversation_id": "c_1",
    "finish_reason": "stop",
    "usage": {"input_tokens": 5, "output_tokens": 23},
    "cost_usd": 0.0000388,
    "attempts": [
        {"model": "mini", "key_id": "p:0", "outcome": "rate_limited", "status_code": 429, "retry_after_s": 2.5},
        {"model": "mini", "key_id": "p:1", "outcome": "ok", "status_code": 200, "retry_after_s": None},
    ],
    "trimmed_turns": 0,
}
WRONG = [None, "x", 1, 1.5, True, [], {}, [1], {"a": 1}]


def original(model: type) -> dict[str, Any]:
    return TypeAdapter(model).json_schema(schema_generator=GenerateJsonSchema)


def paths(doc: Any, prefix: tuple = ()) -> list[tuple]:
    """Every place in `doc` a value sits (dict keys and list indexes)."""
    found = [prefix] if prefix else []
    if isinstance(doc, dict):
        for key, value in doc.items():
            found += paths(value, (*prefix, key))
    elif isinstance(doc, list):
        for index, value in enumerate(doc):
            found += paths(value, (*prefix, index))
    return found


def mutated(doc: Any, path: tuple, value: Any, drop: bool) -> Any:
    doc = copy.deepcopy(doc)
    target = doc
    for step in path[:-1]:
        target = target[step]
    if drop and isinstance(target, dict):
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return doc


def same_verdicts(model: type, doc: Any) -> None:
    full, slim = original(model), lean(original(model))
    expected = validator_for(full)(full).is_valid(doc)
    assert validator_for(slim)(slim).is_valid(doc) == expected, json.dumps(doc)[:300]


def test_the_lean_complete_schema_has_no_references_or_unions_and_takes_a_real_result():
    slim = lean(original(CompleteResult))
    text = json.dumps(slim)
    assert "$defs" not in text and "$ref" not in text and "anyOf" not in text
    assert validator_for(slim)(slim).is_valid(CompleteResult.model_validate(COMPLETE).model_dump(by_alias=True))


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_a_broken_result_is_refused_by_the_lean_schema_exactly_when_by_the_original(data):
    where = data.draw(st.sampled_from(paths(COMPLETE)))
    doc = mutated(COMPLETE, where, data.draw(st.sampled_from(WRONG)), data.draw(st.booleans()))
    same_verdicts(CompleteResult, doc)


@pytest.mark.parametrize("model", [KeyStatusResult, ModelsResult, UsageResult, ConversationResult])
def test_every_view_schema_keeps_its_verdicts(model):
    """Each view's schema, leaned, still refuses the wrong types the original refuses."""
    full = original(model)
    for name in full.get("properties", {}):
        for value in WRONG:
            same_verdicts(model, {name: value})


def test_a_recursive_schema_is_left_as_it_is():
    schema = {
        "$defs": {"node": {"type": "object", "properties": {"next": {"$ref": "#/$defs/node"}}}},
        "$ref": "#/$defs/node",
    }
    assert lean(schema) == schema


def test_the_server_publishes_lean_schemas_for_every_tool():
    config = parse_config(
        {
            "providers": {"p": {"base_url": "http://127.0.0.1:9", "keys": ["k"]}},
            "models": {"m": {"provider": "p"}},
            "presets": {
                "review": {
                    "route": "m",
                    "description": "review code",
                    "template": "Review {code}",
                    "parameters": {"code": {"type": "str"}},
                }
            },
            "state": {"backend": "memory"},
        }
    )
    server = build_server(Keygate(config))
    published = {t.name: t.output_schema for t in server._tool_manager.list_tools() if t.output_schema}
    assert {"complete", "review", "key_status"} <= set(published)
    for name, schema in published.items():
        assert "$ref" not in json.dumps(schema), name


def test_fields_named_like_keywords_are_still_schemas():
    """A field called `default`, `enum`, `const` or `examples` holding a model is inlined like any
    other (skipping it left a `$ref` into removed `$defs`: every client check would fail)."""
    from pydantic import BaseModel

    class Sub(BaseModel):
        x: int

    class Odd(BaseModel):
        default: Sub | None = None
        enum: list[Sub]
        const: Sub
        title: str

    slim = lean(original(Odd))
    assert "$ref" not in json.dumps(slim)
    good = {"default": {"x": 1}, "enum": [{"x": 2}], "const": {"x": 3}, "title": "t"}
    for doc in (good, {**good, "enum": [{"x": "no"}]}, {**good, "const": None}, {**good, "default": {"x": []}}):
        same_verdicts(Odd, doc)


def test_a_reference_with_constraints_beside_it_keeps_both():
    """In JSON Schema 2020-12 a `$ref` and the keywords beside it all apply: merging them would let
    the sibling's `properties` replace the definition's."""
    schema = {
        "$defs": {"S": {"type": "object", "properties": {"x": {"type": "integer"}}, "required": ["x"]}},
        "type": "object",
        "properties": {"a": {"$ref": "#/$defs/S", "properties": {"y": {"type": "string"}}}},
    }
    slim = lean(schema)
    for doc in ({"a": {"x": "not-int", "y": "s"}}, {"a": {"x": 1, "y": 2}}, {"a": {"x": 1, "y": "s"}}, {"a": {}}):
        assert validator_for(slim)(slim).is_valid(doc) == validator_for(schema)(schema).is_valid(doc), doc
