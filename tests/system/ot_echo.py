"""A TCP target on the OT network for the tunnel tests: echoes what it gets on every port it is
given and logs each connection's accept and close (with time.time()) as JSON lines, so a test
can see whether a byte reached the target and when the gateway cut a stream.

    python3 ot_echo.py LOGFILE HOST PORT [PORT ...]
"""
import asyncio
import json
import sys
import time

LOG = open(sys.argv[1], "a", buffering=1)


def log(**kw):
    kw["t"] = time.time()
    LOG.write(json.dumps(kw) + "\n")


def handler(port):
    async def handle(reader, writer):
        peer = "%s:%d" % writer.get_extra_info("peername")[:2]
        log(event="accept", port=port, peer=peer)
        total = 0
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                total += len(data)
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        log(event="close", port=port, peer=peer, bytes=total)
        writer.close()
    return handle


async def main():
    host = sys.argv[2]
    servers = [await asyncio.start_server(handler(int(p)), host, int(p)) for p in sys.argv[3:]]
    log(event="ready")
    await asyncio.gather(*(s.serve_forever() for s in servers))


asyncio.run(main())
