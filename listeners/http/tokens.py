"""Local API tokens: the file format, reading it, and `cds token create`.

Only the SHA-256 of a token is kept (one line ``<sha256 hex> <role>[,<role>] <name>``), so the
file gives nobody a usable token; the token itself is printed once, when it is created.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

from cds.contracts.review import Principal, Role
from cds.contracts.settings import Settings


def tokens_path(settings: Settings) -> Path:
    return settings.http_api_tokens_file or settings.data_dir / "api-tokens"


def token_principal(path: Path, token: str) -> Principal | None:
    """The principal a token file line grants to ``token``, or None (compared in constant time)."""
    if not token or not path.exists():
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


def create_token(path: Path, roles: list[Role], name: str) -> str:
    """Append a new token's hash line (file mode 0600) and return the token (shown once)."""
    if not name or any(c.isspace() for c in name):
        raise ValueError(f"token name {name!r} must be one word without spaces (it names the caller in audit records)")
    if not roles:
        raise ValueError("a token needs at least one role: " + ", ".join(r.value for r in Role))
    token = secrets.token_urlsafe(32)
    digest = hashlib.sha256(token.encode()).hexdigest()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, f"{digest} {','.join(r.value for r in roles)} {name}\n".encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    return token
