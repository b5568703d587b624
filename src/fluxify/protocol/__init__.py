"""The pure protocol core: bytes and numbers in, bytes and decisions out.

No sockets, no clock reads, no asyncio, no subprocess. Imports only the standard library and
``cryptography``.
"""
