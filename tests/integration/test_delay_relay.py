"""``scripts/delay_relay.py``: a round trip through it gains twice the delay, bytes arrive whole
and in order, and the delay is paid once per chunk in flight, not once per chunk in turn."""
from __future__ import annotations

import asyncio
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[2]
DELAY_MS = 40


def _load_relay() -> ModuleType:
    spec = importlib.util.spec_from_file_location("delay_relay", REPO / "scripts" /
                                                  "delay_relay.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    writer.close()


async def _measure() -> dict:
    relay_module = _load_relay()
    loop = asyncio.get_running_loop()
    echo = await asyncio.start_server(_echo, "127.0.0.1", 0)
    target = echo.sockets[0].getsockname()[:2]
    relay = relay_module.DelayRelay(target, DELAY_MS)
    host, port = await relay.start("127.0.0.1", 0)
    out: dict = {}

    async def round_trips(address: tuple[str, int]) -> list[float]:
        reader, writer = await asyncio.open_connection(*address)
        times = []
        for n in range(3):
            started = loop.time()
            writer.write(b"ping%d" % n)
            await writer.drain()
            assert await reader.readexactly(5) == b"ping%d" % n
            times.append(loop.time() - started)
        writer.close()
        return times

    out["direct"] = await round_trips(target)
    out["relayed"] = await round_trips((host, port))

    # 40 small messages 5 ms apart, echoed back: in order, and done in about 40 x 5 ms plus
    # one round trip, where a relay that held each chunk for the whole delay in turn would
    # need 40 x 40 ms in each direction.
    reader, writer = await asyncio.open_connection(host, port)
    messages = [n.to_bytes(4, "big") * 256 for n in range(40)]
    started = loop.time()

    async def send() -> None:
        for message in messages:
            writer.write(message)
            await writer.drain()
            await asyncio.sleep(0.005)

    sending = asyncio.create_task(send())
    echoed = await reader.readexactly(sum(map(len, messages)))
    await sending
    out["stream_s"] = loop.time() - started
    out["stream_intact"] = echoed == b"".join(messages)
    writer.close()
    await relay.close()
    echo.close()
    await echo.wait_closed()
    return out


def test_relay_adds_the_delay_both_ways_in_order() -> None:
    result = asyncio.run(_measure())
    added = 2 * DELAY_MS / 1000
    assert min(result["relayed"]) >= added
    # The round trip is the direct one plus the delay, not a multiple of it (generous bound:
    # the machine's other load only ever adds).
    assert min(result["relayed"]) < min(result["direct"]) + added + 0.5
    assert result["stream_intact"]
    assert result["stream_s"] < 40 * DELAY_MS / 1000
