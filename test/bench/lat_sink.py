#!/usr/bin/python3
"""Latency sink for test/bench/run.sh: a small HTTPS server (asyncio, standard
library only) that stamps every request with time.time() the moment its body
is fully read, and answers in ONE write (TCP_NODELAY is asyncio's default), so
it adds no Nagle / delayed-ACK stalls of its own.

    lat_sink.py --cert C --key K --port-file F --log L

Paths: /slow/<ms> sleeps ms before answering 200 "ok"; anything else answers
200 "ok" at once.  HTTP/1.1 with keep-alive (ALPN offers http/1.1 only).
Each request is one JSON line in --log: {"t", "path", "id" (webhook-id), "body",
"conn" (connection number, from 1), "n" (request number on that connection)}.
"""

import asyncio
import itertools
import os
import signal
import ssl
import sys
import time

# the receivers' common parts are in test/
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from receiver_common import JsonLog, arg_parser, parse_head, tls_context, write_port_file  # noqa: E402

OK = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok"
BAD = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


CONNS = itertools.count(1)


async def handle(reader, writer, log):
    """Serve one HTTP/1.1 connection (keep-alive): stamp, log, answer."""
    conn = next(CONNS)
    n_on_conn = 0
    try:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, ssl.SSLError):
                return
            parts, headers = parse_head(head)
            if len(parts) < 2:
                writer.write(BAD)
                return
            path = parts[1]
            n = int(headers.get("content-length", "0") or 0)
            body = await reader.readexactly(n) if n else b""
            t = time.time()
            n_on_conn += 1
            log.write({"t": t, "path": path, "id": headers.get("webhook-id"),
                       "body": body.decode("utf-8", "replace"), "conn": conn, "n": n_on_conn})
            if path.startswith("/slow/"):
                try:
                    await asyncio.sleep(float(path.split("/")[2]) / 1000.0)
                except ValueError:
                    pass
            writer.write(OK)
            await writer.drain()
    except (ConnectionError, ssl.SSLError, asyncio.IncompleteReadError):
        pass
    finally:
        try:
            writer.close()
        except Exception:
            pass


async def main():
    """Parse the command line, listen, write the port file, serve until SIGTERM or SIGINT."""
    opts = arg_parser().parse_args()

    ctx = tls_context(opts.cert, opts.key, ["http/1.1"])
    log = JsonLog(opts.log)
    server = await asyncio.start_server(lambda r, w: handle(r, w, log), "127.0.0.1", 0, ssl=ctx,
                                        backlog=512)
    write_port_file(opts.port_file, server.sockets[0].getsockname()[1])
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()
    log.close()


if __name__ == "__main__":
    asyncio.run(main())
