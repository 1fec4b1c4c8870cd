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

import argparse
import asyncio
import itertools
import json
import os
import signal
import ssl
import time

OK = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok"
BAD = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


CONNS = itertools.count(1)


async def handle(reader, writer, logf):
    conn = next(CONNS)
    n_on_conn = 0
    try:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, ssl.SSLError):
                return
            lines = head.decode("latin-1").split("\r\n")
            parts = lines[0].split(" ")
            if len(parts) < 2:
                writer.write(BAD)
                return
            path = parts[1]
            headers = {}
            for line in lines[1:]:
                k, _, v = line.partition(":")
                if k:
                    headers[k.strip().lower()] = v.strip()
            n = int(headers.get("content-length", "0") or 0)
            body = await reader.readexactly(n) if n else b""
            t = time.time()
            n_on_conn += 1
            logf.write(json.dumps({"t": t, "path": path, "id": headers.get("webhook-id"),
                                   "body": body.decode("utf-8", "replace"), "conn": conn, "n": n_on_conn},
                                  separators=(",", ":")) + "\n")
            logf.flush()
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
    ap = argparse.ArgumentParser()
    ap.add_argument("--cert", required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--port-file", required=True)
    ap.add_argument("--log", required=True)
    opts = ap.parse_args()

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(opts.cert, opts.key)
    ctx.set_alpn_protocols(["http/1.1"])
    logf = open(opts.log, "a", encoding="utf-8")
    server = await asyncio.start_server(lambda r, w: handle(r, w, logf), "127.0.0.1", 0, ssl=ctx,
                                        backlog=512)
    port = server.sockets[0].getsockname()[1]
    tmp = opts.port_file + ".tmp"
    with open(tmp, "w") as f:
        f.write("%d\n" % port)
    os.replace(tmp, opts.port_file)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()
    logf.close()


if __name__ == "__main__":
    asyncio.run(main())
