"""Who is calling: OIDC bearer tokens (JWT checked against the issuer's JWKS), local API tokens,
and, for the browser pages, a cookie session opened with ``POST /login``.

Every route that shows or changes something depends on :func:`require` with the role it needs;
the dependency answers 401 (no or bad credentials, with ``WWW-Authenticate``) or 403 (known
caller without the role, or a cookie-authenticated change without the CSRF token) before the
handler runs. The session cookie holds the token itself (HttpOnly, SameSite=Strict); the
``cds_csrf`` cookie is readable by the page, which echoes it in ``X-CSRF-Token`` or the form
field ``csrf_token`` (double-submit: another site can neither read nor set it).
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Awaitable, Callable

from fastapi import APIRouter, Depends, Form, HTTPException, Request
from fastapi.responses import RedirectResponse

from cds.contracts.review import Principal, Role
from listeners.http.context import HttpContext, context
from listeners.http.oidc import OidcVerifier, TokenRejected
from listeners.http.tokens import token_principal, tokens_path

SESSION_COOKIE = "cds_session"
CSRF_COOKIE = "cds_csrf"
CSRF_HEADER = "x-csrf-token"
_SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}
_FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


def _unauthorized(detail: str, *, bad_token: bool) -> HTTPException:
    challenge = 'Bearer realm="cds"' + (', error="invalid_token"' if bad_token else "")
    return HTTPException(401, detail, headers={"WWW-Authenticate": challenge})


def _verifier(request: Request, ctx: HttpContext) -> OidcVerifier:
    verifier: OidcVerifier | None = getattr(request.app.state, "oidc", None)
    if verifier is None:  # one per application: PyJWKClient caches the issuer's keys
        verifier = request.app.state.oidc = OidcVerifier(ctx.settings)
    return verifier


def principal_for_token(request: Request, ctx: HttpContext, token: str) -> Principal:
    """The caller a bearer token (API token or OIDC JWT) names, or 401 saying why."""
    principal = token_principal(tokens_path(ctx.settings), token)
    if principal is not None:
        return principal
    verifier = _verifier(request, ctx)
    if token.count(".") == 2 and verifier.enabled:
        try:
            return verifier.verify(token)
        except TokenRejected as exc:
            raise _unauthorized(str(exc), bad_token=True) from exc
    raise _unauthorized("the bearer token is not a known API token" +
                        ("" if verifier.enabled else " (no OIDC issuer is configured)"), bad_token=True)


def _bearer(request: Request) -> str:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def current_principal(request: Request, ctx: HttpContext) -> Principal | None:
    """The caller by header or session cookie, None when there is none or it is not valid.

    For the pages to decide what to show; it does not check CSRF, so changes go through
    :func:`require`, which does.
    """
    token = _bearer(request) or request.cookies.get(SESSION_COOKIE, "")
    if not token:
        return None
    try:
        return principal_for_token(request, ctx, token)
    except HTTPException:
        return None


def csrf_token(request: Request) -> str:
    """The value a page embeds as ``csrf_token`` in its forms ("" when not using a cookie session)."""
    if _bearer(request) or not request.cookies.get(SESSION_COOKIE):
        return ""
    return request.cookies.get(CSRF_COOKIE, "")


async def _check_csrf(request: Request) -> None:
    expected = request.cookies.get(CSRF_COOKIE, "")
    given = request.headers.get(CSRF_HEADER, "")
    if not given and request.headers.get("content-type", "").startswith(_FORM_TYPES):
        value = (await request.form()).get("csrf_token")  # cached by Starlette for the handler
        given = value if isinstance(value, str) else ""
    if not expected or not given or not hmac.compare_digest(expected, given):
        raise HTTPException(403, "a change made with the session cookie needs the X-CSRF-Token header "
                                 "or the csrf_token form field equal to the cds_csrf cookie")


async def authenticate(request: Request, ctx: HttpContext) -> Principal:
    """The caller (bearer header first, then the session cookie with its CSRF check), or 401."""
    token = _bearer(request)
    if token:
        return principal_for_token(request, ctx, token)
    cookie = request.cookies.get(SESSION_COOKIE, "")
    if cookie:
        principal = principal_for_token(request, ctx, cookie)
        if request.method not in _SAFE_METHODS:
            await _check_csrf(request)
        return principal
    raise _unauthorized("a bearer token (Authorization: Bearer ...) or a login session is required",
                        bad_token=False)


def require(role: Role) -> Callable[..., Awaitable[Principal]]:
    """A FastAPI dependency: the authenticated caller holding ``role`` (admin holds every role)."""

    async def dependency(request: Request, ctx: HttpContext = Depends(context)) -> Principal:
        principal = await authenticate(request, ctx)
        if not principal.has(role):
            raise HTTPException(403, f"the {role.value} role is required (you have: "
                                     f"{', '.join(sorted(principal.roles)) or 'no role'})")
        return principal

    return dependency


def require_any(*roles: Role) -> Callable[..., Awaitable[Principal]]:
    """Like :func:`require`, for a route open to any of ``roles`` (STOW-RS: sender or operator)."""

    async def dependency(request: Request, ctx: HttpContext = Depends(context)) -> Principal:
        principal = await authenticate(request, ctx)
        if not any(principal.has(r) for r in roles):
            raise HTTPException(403, f"one of the roles {', '.join(r.value for r in roles)} is required")
        return principal

    return dependency


def _safe_next(target: str) -> str:
    return target if target.startswith("/") and not target.startswith("//") and "\\" not in target else "/"


def router() -> APIRouter:
    r = APIRouter(tags=["session"])

    @r.post("/login", status_code=303, response_class=RedirectResponse,
            responses={401: {"description": "the token is not valid"}})
    def login(request: Request, token: str = Form(..., min_length=1), next: str = Form("/"),
              ctx: HttpContext = Depends(context)) -> RedirectResponse:
        """Open a browser session: the token goes into an HttpOnly cookie, with a CSRF cookie."""
        principal_for_token(request, ctx, token.strip())
        response = RedirectResponse(_safe_next(next), status_code=303)
        secure = request.url.scheme == "https"
        response.set_cookie(SESSION_COOKIE, token.strip(), httponly=True, samesite="strict", secure=secure,
                            path="/")
        response.set_cookie(CSRF_COOKIE, secrets.token_urlsafe(24), httponly=False, samesite="strict",
                            secure=secure, path="/")
        return response

    @r.post("/logout", status_code=303, response_class=RedirectResponse)
    def logout() -> RedirectResponse:
        """Close the browser session (both cookies are removed)."""
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path="/")
        response.delete_cookie(CSRF_COOKIE, path="/")
        return response

    return r
