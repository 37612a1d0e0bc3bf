"""Stream reads cost the bytes they bring, not a 256 KiB block each (protocol/streams.py)."""

from __future__ import annotations

import asyncio
import tracemalloc

from protocol import streams


async def test_a_line_at_a_time_arrives_whole_and_costs_no_large_block() -> None:
    heard: list[bytes] = []

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while line := await reader.readline():
            heard.append(line)
            writer.write(b"200 result=0\n")
            await writer.drain()
        writer.close()

    server = await streams.start_server(echo, "127.0.0.1", 0, limit=2048)
    port = server.sockets[0].getsockname()[1]
    reader, writer = await streams.open_connection("127.0.0.1", port)
    writer.write(b"ANSWER\n")
    assert await reader.readline() == b"200 result=0\n"  # both ends' buffers now made
    tracemalloc.start()
    try:
        for n in range(200):
            writer.write(f"STREAM FILE nobat/fa/menu-{n} 123\n".encode())
            assert await reader.readline() == b"200 result=0\n"
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    writer.close()
    server.close()
    await server.wait_closed()
    assert heard[-1] == b"STREAM FILE nobat/fa/menu-199 123\n" and len(heard) == 201
    assert peak < 64 * 1024, f"{peak} bytes at the peak: a read allocated a large block"


async def test_a_message_longer_than_one_read_arrives_whole() -> None:
    got: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    async def take(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        got.set_result(await reader.readexactly(3 * streams.READ_SIZE + 7))
        writer.close()

    server = await streams.start_server(take, "127.0.0.1", 0, limit=2**20)
    _, writer = await streams.open_connection("127.0.0.1", server.sockets[0].getsockname()[1])
    sent = (bytes(range(256)) * (3 * streams.READ_SIZE // 256 + 1))[:3 * streams.READ_SIZE + 7]
    writer.write(sent)
    assert await asyncio.wait_for(got, 10) == sent
    writer.close()
    server.close()
    await server.wait_closed()
