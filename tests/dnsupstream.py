"""A tiny authoritative "upstream" DNS server for tests, run inside a test's own namespace.

    python dnsupstream.py ADDRESS PORT LOGFILE LIFETIME_SECONDS

Answers (UDP and TCP):
  *.anchor.test  A 198.18.0.1, AAAA: NOERROR without data
  big.anchor.test   40 A records (too big for 512-byte UDP: the answer goes out truncated)
  everything else   NXDOMAIN
Every query is logged as "<proto> <source address> <name> <type>".  It exits by itself after
LIFETIME_SECONDS, so a failed test cannot leave it running.
"""

from __future__ import annotations

import socket
import struct
import sys
import threading
import time


def parse(req: bytes) -> tuple[str, int, int]:
    labels, off = [], 12
    while req[off]:
        n = req[off]
        labels.append(req[off + 1 : off + 1 + n].decode(errors="replace"))
        off += 1 + n
    qtype = struct.unpack_from(">H", req, off + 1)[0]
    return ".".join(labels).lower() + ".", qtype, off + 5


def respond(req: bytes, udp: bool) -> bytes:
    qid, flags = struct.unpack_from(">HH", req, 0)
    name, qtype, end = parse(req)
    question = req[12:end]
    answers = b""
    count = 0
    rcode = 0 if name.endswith(".anchor.test.") else 3
    if rcode == 0 and qtype == 1:
        ips = (
            [bytes([198, 18, 0, i + 1]) for i in range(40)]
            if name == "big.anchor.test."
            else [bytes([198, 18, 0, 1])]
        )
        for ip in ips:
            answers += b"\xc0\x0c" + struct.pack(">HHIH", 1, 1, 60, 4) + ip
        count = len(ips)
    out_flags = 0x8000 | 0x0400 | (flags & 0x0100) | 0x0080 | rcode
    msg = struct.pack(">HHHHHH", qid, out_flags, 1, count, 0, 0) + question + answers
    if udp and len(msg) > 512:
        msg = struct.pack(">HHHHHH", qid, out_flags | 0x0200, 1, 0, 0, 0) + question
    return msg


def main() -> None:
    addr, port, logfile, lifetime = sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4])
    family = socket.AF_INET6 if ":" in addr else socket.AF_INET
    lock = threading.Lock()

    def log(proto: str, src: str, req: bytes) -> None:
        name, qtype, _ = parse(req)
        with lock, open(logfile, "a") as f:
            f.write(f"{proto} {src} {name} {qtype}\n")

    u = socket.socket(family, socket.SOCK_DGRAM)
    u.bind((addr, port))
    t = socket.socket(family, socket.SOCK_STREAM)
    t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    t.bind((addr, port))
    t.listen(16)

    def udp_loop() -> None:
        while True:
            data, peer = u.recvfrom(4096)
            try:
                log("udp", peer[0], data)
                u.sendto(respond(data, True), peer)
            except (IndexError, struct.error):
                pass

    def tcp_loop() -> None:
        while True:
            c, peer = t.accept()
            with c:
                c.settimeout(3)
                try:
                    size = struct.unpack(">H", c.recv(2))[0]
                    data = b""
                    while len(data) < size:
                        data += c.recv(size - len(data))
                    log("tcp", peer[0], data)
                    out = respond(data, False)
                    c.sendall(struct.pack(">H", len(out)) + out)
                except (OSError, struct.error, IndexError):
                    pass

    for fn in (udp_loop, tcp_loop):
        threading.Thread(target=fn, daemon=True).start()
    with open(logfile, "a"):
        pass  # the log exists: the test knows the server is up
    time.sleep(lifetime)


if __name__ == "__main__":
    main()
