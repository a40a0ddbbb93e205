"""Parsing `-o key=value` network options the way dockerd's Go code does (pure).

Drivers read their options through these so the error texts are Docker's, byte for byte
(`strconv.Atoi: parsing "abc": invalid syntax`).
"""

from __future__ import annotations

from tether.errors import InvalidParameter

# The generic option every driver that makes interfaces honours.
OPT_MTU = "com.docker.network.driver.mtu"


def parse_go_bool(key: str, value: str) -> bool:
    if value in ("1", "t", "T", "TRUE", "true", "True"):
        return True
    if value in ("0", "f", "F", "FALSE", "false", "False"):
        return False
    raise InvalidParameter(
        f'failed to parse {key} value: {value} (strconv.ParseBool: parsing "{value}": invalid syntax)'
    )


def parse_go_int(key: str, value: str) -> int:
    text = value[1:] if value[:1] in "+-" else value
    if not text or not text.isdigit() or not text.isascii():
        raise InvalidParameter(
            f'failed to parse {key} value: {value} (strconv.Atoi: parsing "{value}": invalid syntax)'
        )
    n = int(value)
    if not -(2**63) <= n < 2**63:
        raise InvalidParameter(
            f'failed to parse {key} value: {value} (strconv.Atoi: parsing "{value}": value out of range)'
        )
    return n


def parse_mtu(value: str) -> int:
    """`com.docker.network.driver.mtu`: 0 means the kernel's default."""
    mtu = parse_go_int(OPT_MTU, value)
    if mtu != 0 and not 68 <= mtu <= 65535:
        raise InvalidParameter(f"invalid MTU number: {mtu}")
    return mtu
