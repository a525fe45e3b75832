"""A stalled destination for the outbound benchmark: accept SMTP connections, never answer.

Listens on each given 127.0.0.x address at one port and holds every connection open without
sending a greeting, as a dead or overloaded MX does; the sending MTA waits for its greeting
timeout. Prints ``ready`` once listening and, on SIGTERM, the number of connections it held.

    python bench/outbound_tarpit.py PORT 127.0.0.97 127.0.0.98 ...
"""

from __future__ import annotations

import asyncio
import ipaddress
import signal
import sys


async def main(port: int, hosts: list[str]) -> None:
    for h in hosts:
        if not ipaddress.ip_address(h).is_loopback:
            raise SystemExit(f"refusing non-loopback address {h}")
    held: list[asyncio.StreamWriter] = []
    total = 0

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal total
        total += 1
        held.append(writer)
        try:
            await reader.read()  # until the client gives up
        except OSError:
            pass
        writer.close()

    servers = [await asyncio.start_server(hold, h, port, backlog=1024) for h in hosts]
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    print("ready", flush=True)
    await stop.wait()
    for s in servers:
        s.close()
    print(f"tarpit: {total} connection(s) held, none answered", flush=True)


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), sys.argv[2:]))
