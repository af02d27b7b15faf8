"""Settings of the HTTP surface: API, pages, metrics, STOW-RS input, and who may use them.

:class:`HttpSettings` is a base of :class:`cds.contracts.settings.Settings` (flat ``CDS_*``
names, like the security settings). The server binds to loopback by default: exposing patient
data on a network is a decision a site takes explicitly, with OIDC or API tokens configured.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings


class HttpSettings(BaseSettings):
    """The HTTP fields of the one settings object (see the module docstring)."""

    http_enabled: bool = Field(True, description="`cds serve` also serves the HTTP API, pages, metrics and STOW-RS.")
    http_host: str = Field("127.0.0.1", description="Address the HTTP server binds to (loopback by default).")
    http_port: int = Field(8080, description="HTTP server port.")
    http_oidc_issuer: str = Field("", description="OIDC issuer whose bearer tokens (JWT) are accepted; empty = no OIDC.")
    http_oidc_jwks_url: str = Field("", description="JWKS URL of the issuer; empty = <issuer>/.well-known/jwks.json.")
    http_oidc_audience: str = Field("", description="Audience (aud) the tokens must carry; empty = not checked.")
    http_oidc_roles_claim: str = Field(
        "roles", description="Claim holding the user's roles (a list, or a space-separated string); dotted "
        "paths reach nested claims (e.g. realm_access.roles for Keycloak).")
    http_oidc_algorithms: str = Field("RS256,ES256,RS384,ES384", description="JWS algorithms accepted from the issuer.")
    http_api_tokens_file: Path | None = Field(
        None, description="Local API tokens for scripts: one per line, '<sha256 hex of the token> <role>[,<role>] <name>'; "
        "`cds token create` writes one. Empty = <data_dir>/api-tokens.")
    http_stow_max_bytes: int = Field(
        4 << 30, ge=1, description="Largest STOW-RS request body accepted (bytes); larger ones get 413.")
    ready_min_free_bytes: int = Field(
        1 << 30, ge=0, description="/ready answers 503 when the spool's filesystem has less free space than this.")
