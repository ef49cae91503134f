"""Bearer tokens with names, and who the caller of a request is.

A team gives each client its own token so one can be revoked alone; logs and conversations
know a caller by the token's name, never by the token. Tokens are compared in constant time.

Identity has exactly one source: what `BearerAuth` (in `http_guards`) established for
the request, carried to the tool as the MCP SDK's authenticated user. Headers a tool could read
are client input, never an identity.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re
import socket
from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the MCP SDK is imported only by the server (check and status never load it)
    from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser

LOCAL_OWNER = "local"  # the owner of conversations made over stdio or an unauthenticated loopback server
RESERVED_TOKEN_NAMES = frozenset({LOCAL_OWNER})
# Token names appear in logs, metrics labels and the state store: plain words only.
TOKEN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")


class Unauthenticated(Exception):
    """Tokens are required, but this request carries no identity (it must never fall back to `local`)."""


class TokenRegistry:
    def __init__(self, tokens: Mapping[str, str]) -> None:
        # Only digests are kept: equal-length inputs to compare_digest, and no token in memory dumps of this object.
        self._digests = [(name, _digest(token)) for name, token in tokens.items() if token]

    @property
    def enabled(self) -> bool:
        return bool(self._digests)

    def names(self) -> list[str]:
        return [name for name, _ in self._digests]

    def name_for(self, token: str | None) -> str | None:
        """The name of a valid token, else None; every configured token is compared, in constant time."""
        if not token:
            return None
        offered = _digest(token)
        found = None
        for name, digest in self._digests:
            if hmac.compare_digest(offered, digest) and found is None:
                found = name
        return found

    def name_for_header(self, authorization: str | None) -> str | None:
        if not authorization or not authorization.lower().startswith("bearer "):
            return None
        return self.name_for(authorization[7:].strip())

    def caller(self) -> str:
        """The token name of the request being served; `local` only when no tokens are configured."""
        if not self.enabled:
            return LOCAL_OWNER
        from mcp.server.auth.middleware.auth_context import get_access_token

        token = get_access_token()
        if token is None:
            raise Unauthenticated("this request carries no verified bearer token")
        return token.client_id


def authenticated_user(name: str) -> AuthenticatedUser:
    """The SDK's user for a token name: sessions are bound to it, and tools read it back (never the token)."""
    from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
    from mcp.server.auth.provider import AccessToken

    return AuthenticatedUser(AccessToken(token="", client_id=name, scopes=[]))


def token_name_problems(names: list[str], where: str) -> list[str]:
    """Config problems with token names: reserved names, and names that are not plain words."""
    problems = []
    for name in names:
        if name in RESERVED_TOKEN_NAMES:
            problems.append(
                f"{where}: {name!r} is reserved for stdio and unauthenticated callers; choose another token name"
            )
        elif not TOKEN_NAME.match(name):
            problems.append(
                f"{where}: token name {name!r} must be 1-64 letters, digits, '.', '_' or '-' (it appears in logs)"
            )
    return problems


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def is_loopback(host: str) -> bool:
    """Only provably loopback addresses: an IP literal on loopback, or a name resolving only to loopback.

    Anything else — "" and "0.0.0.0" (every interface), public names, names that do not resolve —
    is reachable from other machines as far as we can tell.
    """
    host = host.strip().strip("[]")
    if not host:
        return False
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except (OSError, UnicodeError):
        return False
    addresses = {str(info[4][0]) for info in infos}
    return bool(addresses) and all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addresses)
