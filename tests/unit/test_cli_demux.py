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


def test_a_long_log_in_one_chunk_is_taken_apart_in_linear_time() -> None:
    """tetherd sends a log's whole history as one HTTP chunk: 100 000 lines (5 MB) took
    about 10 s when each frame cut the rest of the buffer off again (quadratic; a million
    lines, a quarter of an hour), and take a few tens of milliseconds read in place."""
    import time

    frame = b"\x01\x00\x00\x00\x00\x00\x00\x32" + b"x" * 49 + b"\n"
    body = frame * 100_000
    resp = _response("application/vnd.docker.multiplexed-stream", b"")
    resp.iter_body = lambda: iter([body[:7], body[7:]])  # type: ignore[method-assign]
    start = time.monotonic()
    got = list(resp.frames())
    elapsed = time.monotonic() - start
    resp.close()
    assert len(got) == 100_000
    assert got[0] == (1, b"x" * 49 + b"\n") and got[-1] == got[0]
    assert elapsed < 3.0, f"{elapsed:.1f} s for 100 000 frames"
