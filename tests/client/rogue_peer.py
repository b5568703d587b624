"""A misbehaving peer for the drop-counting test, run inside a test bed namespace.

It gets a real session for its own certificate, then sends what a hostile or broken peer
would: garbage, a datagram of an unknown session, a good packet twice (replay), one with a bad
tag, and one whose inner source claims another client's address. Prints a JSON report.
"""

import asyncio
import json
import socket
import struct
import sys
from ipaddress import ip_address
from pathlib import Path

from fluxify.client.config import ServerAddress
from fluxify.client.control import fetch_session
from fluxify.pki.client_material import load_client_material
from fluxify.protocol.control import SessionRequest
from fluxify.protocol.session import DataSession


def icmp_echo(src: bytes, dst: bytes) -> bytes:
    icmp = struct.pack(">BBHHH", 8, 0, 0, 0x1234, 1) + b"rogue"
    header = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + len(icmp), 0, 0, 64, 1, 0, src, dst)
    return header + icmp


async def main(pki: str, server: str, victim: str, target: str) -> None:
    material = load_client_material(Path(pki))
    response = await fetch_session(
        ServerAddress(server, 8443), material, SessionRequest(material.common_name)
    )
    codec = DataSession(response.session_id, response.session_key)
    own = response.client_ip.packed
    good = codec.seal_ip(icmp_echo(own, ip_address(target).packed))
    spoofed = codec.seal_ip(icmp_echo(ip_address(victim).packed, ip_address(target).packed))
    assert good is not None and spoofed is not None
    # a number not seen yet (a seen one is refused as a replay before any crypto)
    bad_tag = spoofed[:-1] + bytes([spoofed[-1] ^ 0xFF])
    unknown = bytes([1, 1]) + struct.pack(">I", response.session_id ^ 0xFFFF) + good[6:]
    sent = {
        "garbage": [b"\x00" * 10, b"hello fluxify"],
        "unknown_session": [unknown],
        "good": [codec.seal_handshake(), good],
        "replay": [good],
        "bad_tag": [bad_tag],
        "spoofed_source": [spoofed],
    }
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for datagrams in sent.values():
            for datagram in datagrams:
                sock.sendto(datagram, (server, response.udp_port))
                await asyncio.sleep(0.02)
    print(json.dumps({kind: len(d) for kind, d in sent.items()}))


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:5]))
