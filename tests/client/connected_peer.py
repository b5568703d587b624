"""A peer with a *connected* UDP socket, as the Go client has, run inside a test bed namespace.

It gets a session through the control plane at one server address, then sends a heartbeat to
another address of the same server over a connected socket. A connected socket only accepts
datagrams from the address it is connected to, so the echo arrives only if the server answers
from the address it was sent to. Prints "echo" or "no echo".
"""

import asyncio
import socket
import sys
import time
from pathlib import Path

from fluxify.client.config import ServerAddress
from fluxify.client.control import fetch_session
from fluxify.pki.client_material import load_client_material
from fluxify.protocol.control import SessionRequest
from fluxify.protocol.header import PacketType
from fluxify.protocol.session import DataSession


async def main(pki: str, control_host: str, data_host: str) -> None:
    material = load_client_material(Path(pki))
    response = await fetch_session(
        ServerAddress(control_host, 8443), material, SessionRequest(material.common_name)
    )
    codec = DataSession(response.session_id, response.session_key)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.connect((data_host, response.udp_port))
        sock.settimeout(0.5)
        for _ in range(6):  # bounded: 3 s at most
            sock.send(codec.seal_heartbeat(time.time_ns()))
            try:
                opened = codec.open(sock.recv(2048))
            except (TimeoutError, ConnectionRefusedError):
                continue
            if opened is not None and opened[0] == PacketType.HEARTBEAT:
                print("echo")
                return
    print("no echo")


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))
