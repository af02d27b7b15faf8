"""Who is calling: OIDC bearer tokens (JWT checked against the issuer's JWKS) and local API tokens.

Every route that shows or changes something depends on :func:`require` with the role it needs;
the dependency answers 401 (no or bad credentials, with ``WWW-Authenticate``) or 403 (known
caller without the role) before the handler runs.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from pathlib import Path

from fastapi import Depends, HTTPException, Request

from cds.contracts.review import Principal, Role
from listeners.http.context import HttpContext, context


def tokens_path(ctx: HttpContext) -> Path:
    return ctx.settings.http_api_tokens_file or ctx.settings.data_dir / "api-tokens"


def _api_token_principal(ctx: HttpContext, token: str) -> Principal | None:
    path = tokens_path(ctx)
    if not path.exists():
        return None
    digest = hashlib.sha256(token.encode()).hexdigest()
    for line in path.read_text().splitlines():
        parts = line.split(maxsplit=2)
        if len(parts) < 2 or line.lstrip().startswith("#"):
            continue
        if hmac.compare_digest(parts[0], digest):
            roles = frozenset(Role(r) for r in parts[1].split(",") if r in Role.__members__)
            return Principal(name=parts[2] if len(parts) > 2 else "api-token", roles=roles, method="api-token")
    return None


def authenticate(request: Request, ctx: HttpContext) -> Principal:
    """The caller, or 401."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "bearer" and token:
        principal = _api_token_principal(ctx, token.strip())
        if principal is not None:
            return principal
    raise HTTPException(401, "a valid bearer token is required", headers={"WWW-Authenticate": "Bearer"})


def require(role: Role) -> Callable[..., Principal]:
    """A FastAPI dependency: the authenticated caller holding ``role`` (admin holds every role)."""

    def dependency(request: Request, ctx: HttpContext = Depends(context)) -> Principal:
        principal = authenticate(request, ctx)
        if not principal.has(role):
            raise HTTPException(403, f"the {role.value} role is required")
        return principal

    return dependency
