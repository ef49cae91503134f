"""Tool inputs and results: the typed contract agents see in the MCP tool schemas."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class InputMessage(_Strict):
    role: Literal["system", "user", "assistant"]
    content: str


class UsageOut(BaseModel):
    input_tokens: int
    output_tokens: int


class AttemptOut(BaseModel):
    model: str
    key_id: str
    outcome: str = Field(description="ok, rate_limited, quota_exhausted, auth_failed, overloaded, …")
    status_code: int | None
    retry_after_s: float | None


class CompleteResult(BaseModel):
    model_config = ConfigDict(populate_by_name=True, serialize_by_alias=True)

    text: str
    json_answer: Any = Field(
        None,
        alias="json",
        description="with response_schema: the answer parsed as JSON, validated against the schema",
    )
    model: str = Field(description="the model (config name) that answered")
    provider: str
    key_id: str
    conversation_id: str
    finish_reason: str
    usage: UsageOut
    cost_usd: float | None = Field(
        None, description="what this call cost in US dollars (from the model's price); null when the price is unknown"
    )
    attempts: list[AttemptOut]
    trimmed_turns: int = Field(0, description="oldest turns left out to fit the answering model's window")


class ModelInfo(BaseModel):
    name: str
    provider: str
    upstream_model: str
    context_window: int | None
    keys_total: int
    keys_ready: int
    available: bool
    ready_in_s: float | None = Field(description="0 when a key is ready now; null when no key will recover by itself")


class ModelsResult(BaseModel):
    models: list[ModelInfo]
    routes: dict[str, list[str]]


class KeyStatusRow(BaseModel):
    key_id: str
    provider: str
    mask: str
    state: Literal["ready", "cooling", "exhausted", "disabled"]
    model: str | None = Field(description="set when the state applies to one model only")
    ready_in_s: float | None = Field(description="seconds until usable; null when ready or disabled")
    reason: str | None
    requests: int
    failures: int
    last_status: int | None
    last_used: str | None = Field(description="ISO 8601 UTC")


class KeyStatusResult(BaseModel):
    keys: list[KeyStatusRow]


class ConversationSummary(BaseModel):
    conversation_id: str
    turns: int
    created_at: str
    updated_at: str


class ConversationsResult(BaseModel):
    conversations: list[ConversationSummary]


class AttachmentRef(BaseModel):
    name: str = Field(description="the path or name it was sent with")
    media_type: str
    sha256: str = Field(description="the content hash it is stored under (once, however often it is sent)")
    size: int = Field(description="bytes")


class ConversationTurn(BaseModel):
    role: str
    content: str
    attachments: list[AttachmentRef] = Field(default_factory=list, description="files and images, as references")
    model: str | None = Field(description="for answers: the model (config name) that wrote it")
    provider: str | None
    key_id: str | None
    created_at: str | None


class ConversationResult(BaseModel):
    conversation_id: str
    turns: list[ConversationTurn]


class ResetResult(BaseModel):
    key_id: str
    state: str


class UsageLine(BaseModel):
    owner: str = Field(description="the token name (local: stdio and unauthenticated callers)")
    model: str
    key_id: str
    requests: int
    input_tokens: int
    output_tokens: int
    cost_usd: float | None = Field(description="US dollars for the priced requests; null when none had a known price")
    unpriced_requests: int = Field(0, description="requests whose price was unknown (not counted in cost_usd)")


class UsageResult(BaseModel):
    since: str = Field(description="first UTC day counted (YYYY-MM-DD)")
    lines: list[UsageLine]
    total_requests: int
    total_input_tokens: int
    total_output_tokens: int
    total_cost_usd: float | None = Field(description="US dollars for the priced requests; null when none was priced")
    unpriced_requests: int = Field(0, description="requests whose price was unknown (not in total_cost_usd)")
