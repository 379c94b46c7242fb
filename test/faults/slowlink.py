"""A TCP relay that can delay one direction of a link: `slowlink.py LISTEN_PORT TARGET_PORT DELAY_MS`.

Relays every connection on 127.0.0.1:LISTEN_PORT to 127.0.0.1:TARGET_PORT. After SIGUSR1 every
chunk sent towards the target is held DELAY_MS before it is written (order kept, pipelining kept:
a delay line, not a pause per request); after SIGUSR2 it relays at once again. Used by
netfaults.SlowLink, since this kernel has no `tc netem`.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import time

delay = 0.0


async def relay_delayed(reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
    """Client → target, through a delay line."""
    line: asyncio.Queue = asyncio.Queue()

    async def pump():
        while True:
            due, data = await line.get()
            if data is None:
                break
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            writer.write(data)
            await writer.drain()

    pumping = asyncio.create_task(pump())
    try:
        while data := await reader.read(65536):
            line.put_nowait((time.monotonic() + delay, data))
    finally:
        line.put_nowait((0.0, None))
        try:
            await pumping
        finally:
            writer.close()


async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
    """Target → client, at once."""
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    finally:
        writer.close()


async def main(listen: int, target: int, delay_ms: int):
    def slow():
        global delay
        delay = delay_ms / 1000

    def heal():
        global delay
        delay = 0.0

    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGUSR1, slow)
    loop.add_signal_handler(signal.SIGUSR2, heal)

    async def handle(client_r, client_w):
        try:
            target_r, target_w = await asyncio.open_connection("127.0.0.1", target)
        except OSError:
            client_w.close()
            return
        await asyncio.gather(relay_delayed(client_r, target_w), relay(target_r, client_w),
                             return_exceptions=True)

    server = await asyncio.start_server(handle, "127.0.0.1", listen, backlog=1024)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])))
