"""No patient data in logs or files others can read.

- :func:`restrict_process`: umask 077, so every folder and file the process makes is owner-only.
- :func:`quiet_third_party_loggers`: httpx/httpcore (request URLs carry identifiers) at WARNING,
  pydicom (value warnings) at ERROR, pynetdicom at INFO with its identifier dumps off.
- :class:`PhiScrubFilter`: the last resort on every handler: bytes literals and quoted values in
  messages and tracebacks (what a parser error prints of a malformed element) are withheld.
- :func:`scrub_text`: the same for error strings stored in the store (rejection reasons).
- :func:`disable_onnx_telemetry`: onnxruntime's telemetry events off.
"""

from __future__ import annotations

import logging
import os
import re

_BYTES = re.compile(r"""b(['"])(?:\\.|(?!\1).)*\1""")
_QUOTED = re.compile(r"""(['"])(?:\\.|(?!\1).){1,200}\1""")
# pydicom and numpy messages that quote a value without quotes: "... value: XYZ" / "... of 'XYZ'"
_AFTER_VALUE = re.compile(r"(?i)(\bvalues?\b\s*[:=]?\s*)(?!withheld)([^\s,;()]+)")
WITHHELD = "<withheld>"


def scrub_text(text: str) -> str:
    """``text`` with bytes literals, quoted strings and ``value X`` operands replaced."""
    text = _BYTES.sub(f"b'{WITHHELD}'", text)
    text = _QUOTED.sub(f"'{WITHHELD}'", text)
    return _AFTER_VALUE.sub(lambda m: m.group(1) + WITHHELD, text)


_FRAME = re.compile(r'^(\s*File "[^"]*", line \d+(?:, in \S+)?)(.*)$')


def scrub_traceback(text: str) -> str:
    """Like :func:`scrub_text`, but a frame's code location (``File "...", line N, in f``) is
    kept: it names the project's source, not the data, and a traceback without it is useless."""
    out = []
    for line in text.splitlines():
        frame = _FRAME.match(line)
        out.append(frame.group(1) + scrub_text(frame.group(2)) if frame else scrub_text(line))
    return "\n".join(out)


class PhiScrubFilter(logging.Filter):
    """Withholds values in third-party messages and in every traceback (see module docstring).

    The project's own messages log UIDs, job ids and patient keys only; they are left as they are
    (quoted AE titles and reasons stay readable), except for their tracebacks.
    """

    OWN = ("cds", "app", "listeners", "models", "reports")

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[0] is not None:
            formatter = logging.Formatter()
            record.exc_text = scrub_traceback(formatter.formatException(record.exc_info))
            record.exc_info = None
        if record.name.split(".")[0] not in self.OWN:
            record.msg = scrub_text(record.getMessage())
            record.args = None
        return True


def install_log_privacy(root: logging.Logger | None = None) -> None:
    """Quiet third-party loggers and put :class:`PhiScrubFilter` on every root handler."""
    quiet_third_party_loggers()
    logging.captureWarnings(True)  # pydicom warns with the offending value: through the filter
    root = root or logging.getLogger()
    for handler in root.handlers:
        if not any(isinstance(f, PhiScrubFilter) for f in handler.filters):
            handler.addFilter(PhiScrubFilter())


def quiet_third_party_loggers() -> None:
    for name in ("httpx", "httpcore", "hpack", "urllib3", "weasyprint", "fontTools", "apscheduler"):
        logging.getLogger(name).setLevel(logging.WARNING)
    logging.getLogger("pydicom").setLevel(logging.ERROR)
    # never DEBUG (it dumps PDUs and datasets); and no quieter than the site asked: INFO logs a line
    # per received instance, which CDS_LOG_LEVEL=WARNING must silence
    logging.getLogger("pynetdicom").setLevel(max(logging.INFO, logging.getLogger().level))
    try:
        from pynetdicom import _config
    except ImportError:  # pragma: no cover - pynetdicom is a runtime dependency
        return
    _config.LOG_REQUEST_IDENTIFIERS = False
    _config.LOG_RESPONSE_IDENTIFIERS = False


def restrict_process() -> None:
    """Owner-only files and folders from here on (umask 077)."""
    os.umask(0o077)


def disable_onnx_telemetry() -> None:
    try:
        import onnxruntime
    except ImportError:
        return
    disable = getattr(onnxruntime, "disable_telemetry_events", None)
    if callable(disable):
        disable()
