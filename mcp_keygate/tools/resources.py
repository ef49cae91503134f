"""Resources for clients that browse them: keygate://keys, keygate://models, keygate://conversations
and keygate://conversations/{id}.

A static resource cannot tell who reads it: where what a caller may see depends on its token, the
static ones point to the tools instead.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ResourceError, ResourceNotFoundError

from ..auth import LOCAL_OWNER
from ..conversations import InvalidConversationId, UnknownConversation
from ..errors import KeygateError
from ..views import Views
from .services import ToolServices

_JSON = "application/json"


def _note(text: str) -> str:
    return '{"note": "' + text + '"}'


def register_resources(server: MCPServer, services: ToolServices) -> None:

    def views() -> Views:
        return services.gateway.views  # the current ones: a reload replaces them

    def per_token() -> bool:
        return bool(services.config.policies) and services.multi_user

    @server.resource("keygate://keys", name="keys", mime_type=_JSON)
    async def keys_resource() -> str:
        """Every key's state, why, and for how long (the key_status table)."""
        if per_token():
            return _note("what a caller may see depends on its token's policy: use the key_status tool")
        with resource_errors(services):
            return (await views().key_status()).model_dump_json(indent=2)

    @server.resource("keygate://models", name="models", mime_type=_JSON)
    async def models_resource() -> str:
        """Models and routes, with how many keys are ready."""
        if per_token():
            return _note("what a caller may see depends on its token's policy: use the list_models tool")
        with resource_errors(services):
            return (await views().list_models()).model_dump_json(indent=2)

    @server.resource("keygate://conversations", name="conversations", mime_type=_JSON)
    async def conversations_resource() -> str:
        """This server's local conversations (over HTTP with tokens, use the list_conversations tool)."""
        if services.multi_user:
            return _note("conversations belong to each token: use the list_conversations tool")
        with resource_errors(services):
            return (await views().list_conversations(LOCAL_OWNER, 50)).model_dump_json(indent=2)

    @server.resource("keygate://conversations/{conversation_id}", name="conversation", mime_type=_JSON)
    async def conversation_resource(conversation_id: str) -> str:
        """One conversation, with which model answered each turn."""
        with resource_errors(services):
            return (await views().get_conversation(conversation_id, services.caller())).model_dump_json(indent=2)


@contextmanager
def resource_errors(services: ToolServices) -> Iterator[None]:
    """A KeygateError reading a resource becomes the resource error's message (scrubbed)."""
    try:
        yield
    except (UnknownConversation, InvalidConversationId) as exc:
        raise ResourceNotFoundError(services.scrubbed(exc)) from None
    except KeygateError as exc:
        raise ResourceError(services.scrubbed(exc)) from None
