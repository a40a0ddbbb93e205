"""output.demux, which `logs` and `exec` print through (fast path and full CLI alike): a
container created with a TTY has its log sent raw (application/vnd.docker.raw-stream, as
dockerd sends it), which is printed as it is, not taken apart as 8-byte-headed frames."""

from __future__ import annotations

import _socket

import pytest

from tether.cli import output
from tether.client import Response


def _response(content_type: str, body: bytes) -> Response:
    a, b = _socket.socketpair()
    b.sendall(body)
    b.close()
    return Response(a, 200, {"content-type": content_type}, b"")


def test_a_raw_stream_is_printed_as_it_is(capfdbinary: pytest.CaptureFixture[bytes]) -> None:
    resp = _response("application/vnd.docker.raw-stream", b"hi\r\nthere, a longer line\r\n")
    output.demux(resp)
    resp.close()
    out, err = capfdbinary.readouterr()
    assert (out, err) == (b"hi\r\nthere, a longer line\r\n", b"")


def test_a_multiplexed_stream_goes_to_both_streams(
    capfdbinary: pytest.CaptureFixture[bytes],
) -> None:
    body = b"\x01\x00\x00\x00\x00\x00\x00\x03out" + b"\x02\x00\x00\x00\x00\x00\x00\x03err"
    resp = _response("application/vnd.docker.multiplexed-stream", body)
    output.demux(resp)
    resp.close()
    assert capfdbinary.readouterr() == (b"out", b"err")
