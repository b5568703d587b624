"""The lab flooder's batched sender: every payload its own datagram, in turn, over loopback."""

import socket

from fluxify.lab.mmsg import RingSender


def test_the_ring_is_sent_in_turn_each_payload_a_datagram_of_its_own_size() -> None:
    with (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as receiver,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender_sock,
    ):
        receiver.bind(("127.0.0.1", 0))
        receiver.settimeout(5.0)
        sender_sock.connect(receiver.getsockname())
        payloads = [bytes([index]) * (10 + index) for index in range(5)]
        sender = RingSender(sender_sock, payloads)
        sent = 0
        while sent < 12:
            sent += sender.send(12 - sent)  # wraps around the ring of 5 within the calls
        got = [receiver.recv(2048) for _ in range(12)]
    assert sender.sent == 12
    assert got == [payloads[index % 5] for index in range(12)]
