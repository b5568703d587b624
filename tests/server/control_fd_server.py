"""A control server in a process of its own with a tiny open-file limit (argv: PKI dir, limit).

Writes its port to ``<pki>/port`` and logs to stderr; used by ``test_control_fd_exhaustion``.
"""

import asyncio
import logging
import resource
import sys
from pathlib import Path

from fluxify.pki.files import ServerPkiLayout
from fluxify.pki.tls import server_context
from fluxify.server.control import ControlServer
from fluxify.server.sessions import SessionTable


async def main(root: Path, limit: int) -> None:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))
    # caps far above the descriptor limit, so accept() itself runs out (EMFILE)
    server = ControlServer(
        server_context(ServerPkiLayout(root)),
        SessionTable(),
        8000,
        max_connections=10_000,
        max_per_source=10_000,
        new_per_source_per_s=1e9,
        handshake_deadline_s=1.0,
    )
    await server.start("127.0.0.1", 0)
    (root / "port").write_text(str(server.port))
    await asyncio.Event().wait()


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    asyncio.run(main(Path(sys.argv[1]), int(sys.argv[2])))
