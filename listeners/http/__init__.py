"""The HTTP surface of `cds serve`: API, web pages, metrics, health, STOW-RS input.

:mod:`listeners.http.app` builds the FastAPI application from one module per concern; each
module exposes ``router() -> APIRouter`` and reads what it needs from ``request.app.state.ctx``
(:class:`listeners.http.context.HttpContext`), never from module-level state.
"""
