"""Seeing what a running Fluxify does: its stats files, the ``status`` table, ``/metrics``.

Everything here reads the snapshot a runner writes to its state directory every second, so it
works beside any data plane and never touches a packet.
"""
