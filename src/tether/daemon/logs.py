"""Structured, readable daemon logs: one logfmt line per event.

    time=2026-11-28T01:40:00.123Z level=info component=networks msg="network created" ...

Messages written as "text key=value key=value" keep their key=value pairs as fields, so the
lines read well and still split cleanly with grep/awk or any logfmt parser.
"""

from __future__ import annotations

import logging
import sys
import time


class LogfmtFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        t = time.gmtime(record.created)
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", t) + f".{int(record.msecs):03d}Z"
        component = record.name.removeprefix("tether.")
        text = record.getMessage()
        msg, fields = _split_fields(text)
        line = (
            f'time={stamp} level={record.levelname.lower()} component={component} msg="{_esc(msg)}"'
        )
        if fields:
            line += " " + fields
        if record.exc_info:
            line += f' error="{_esc(self.formatException(record.exc_info))}"'
        return line


def _split_fields(text: str) -> tuple[str, str]:
    """'network created name=a id=b' -> ('network created', 'name=a id=b')."""
    words = text.split(" ")
    for i, w in enumerate(words):
        if "=" in w and not w.startswith("="):
            return " ".join(words[:i]), " ".join(words[i:])
    return text, ""


def _esc(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def setup(debug: bool, stream: object = None) -> None:
    handler = logging.StreamHandler(stream or sys.stderr)  # type: ignore[arg-type]
    handler.setFormatter(LogfmtFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if debug else logging.INFO)
    # pyroute2 is chatty at debug level; its warnings are still worth seeing.
    logging.getLogger("pyroute2").setLevel(logging.WARNING)
    logging.getLogger("asyncio").setLevel(logging.WARNING)
