#!/usr/bin/env python3
"""A TCP relay that adds latency: each chunk is forwarded ``--delay-ms`` after it arrived, in
each direction, in order. A round trip through it gains twice the delay.

``scripts/bench.py`` puts it between docnum's shard workers and MariaDB to model a database
across a network (docs/benchmarks.md#method); ``tc netem`` needs privileges this machine's
benchmark runs do not have. Each direction is a reader that stamps chunks with their due time
and a writer that sleeps until then, so the delay adds latency without limiting throughput.

Usage: scripts/delay_relay.py --listen 127.0.0.1:0 --target 127.0.0.1:3306 --delay-ms 25
(prints ``listening HOST PORT`` once it accepts connections; runs until SIGTERM/SIGINT).
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys

CHUNK = 65536


async def _forward(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                   delay_s: float) -> None:
    """Copy ``reader`` to ``writer``, each chunk ``delay_s`` after it arrived; EOF last."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def receive() -> None:
        try:
            while True:
                data = await reader.read(CHUNK)
                queue.put_nowait((loop.time() + delay_s, data))
                if not data:
                    return
        except ConnectionError:
            queue.put_nowait((loop.time() + delay_s, b""))

    async def send() -> None:
        while True:
            due, data = await queue.get()
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            if not data:
                if writer.can_write_eof():
                    writer.write_eof()
                return
            writer.write(data)
            await writer.drain()

    receiving = asyncio.create_task(receive())
    try:
        await send()
    finally:
        receiving.cancel()


class DelayRelay:
    """Listens on ``listen``; every connection is relayed to ``target`` with ``delay_ms`` added
    in each direction."""

    def __init__(self, target: tuple[str, int], delay_ms: float) -> None:
        self.target = target
        self.delay_s = delay_ms / 1000
        self.server: asyncio.Server | None = None

    async def start(self, host: str, port: int) -> tuple[str, int]:
        self.server = await asyncio.start_server(self._relay, host, port)
        return self.server.sockets[0].getsockname()[:2]

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    async def _relay(self, client_reader: asyncio.StreamReader,
                     client_writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self.target)
        except OSError:
            client_writer.close()
            return
        try:
            await asyncio.gather(_forward(client_reader, upstream_writer, self.delay_s),
                                 _forward(upstream_reader, client_writer, self.delay_s))
        except ConnectionError:
            pass
        finally:
            for writer in (client_writer, upstream_writer):
                writer.close()
                with contextlib.suppress(ConnectionError):
                    await writer.wait_closed()


def _address(raw: str) -> tuple[str, int]:
    host, _, port = raw.rpartition(":")
    return host or "127.0.0.1", int(port)


async def _serve(listen: tuple[str, int], target: tuple[str, int], delay_ms: float) -> None:
    relay = DelayRelay(target, delay_ms)
    host, port = await relay.start(*listen)
    print(f"listening {host} {port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await relay.close()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--listen", default="127.0.0.1:0", help="HOST:PORT (port 0: any free)")
    parser.add_argument("--target", required=True, help="HOST:PORT to relay to")
    parser.add_argument("--delay-ms", type=float, required=True,
                        help="added to each direction (half the added round trip)")
    args = parser.parse_args(argv)
    asyncio.run(_serve(_address(args.listen), _address(args.target), args.delay_ms))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
