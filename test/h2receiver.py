#!/usr/bin/python3
"""HTTPS receiver speaking HTTP/2 (and HTTP/1.1) for the webhooks TAP tests.

    h2receiver.py --cert C --key K --port-file F --log L [--early]
                  [--exit-with-parent]

Listens on 127.0.0.1 (an ephemeral port), offers "h2" and "http/1.1" by
ALPN, and answers every POST with 200 "ok".  Each request is appended to
--log as one JSON line once it is answered:

    protocol        "HTTP/2" or "HTTP/1.1" (what was negotiated)
    path, method    as sent
    headers         {lower-cased name: value}
    body            the request body as text (what arrived of it)
    body_complete   whether the whole body had arrived when it was answered
    conn            connection number (from 1)

--early makes it a receiver that answers without waiting for the body, the
way "return 200" in nginx does: its HTTP/2 SETTINGS give every stream a
flow-control window of 0 bytes, so the client can send the request headers
but no body; the complete response (200 "ok", END_STREAM) goes out as soon
as the headers arrive, followed by RST_STREAM(NO_ERROR), which RFC 9113
section 8.1 describes as "abort transmission of a request without error".
(A request sent before the client acknowledged those SETTINGS, such as the
first of a connection, may still carry its body; it is answered normally.)

Needs python3-h2 (Debian's package, installed by test/setup.sh).
SIGTERM stops it (exit 0).
"""

import asyncio
import signal
import ssl

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings

from receiver_common import JsonLog, arg_parser, exit_with_parent, parse_head, tls_context, write_port_file


async def serve_h2(reader, writer, log, conn_no, early):
    """Serve one HTTP/2 connection."""
    config = h2.config.H2Configuration(client_side=False, header_encoding="utf-8")
    conn = h2.connection.H2Connection(config=config)
    conn.initiate_connection()
    if early:
        # in force once the client acknowledges it: streams it opened before
        # still have the default window, and their body may come
        conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 0})
    writer.write(conn.data_to_send())
    await writer.drain()
    streams = {}        # stream id -> {"headers": {...}, "body": bytearray}

    def answer(sid, complete):
        """Log stream sid's request and answer it 200 "ok"."""
        st = streams.pop(sid)
        log.write({"protocol": "HTTP/2", "method": st["headers"].get(":method"),
                   "path": st["headers"].get(":path"),
                   "headers": {k: v for k, v in st["headers"].items() if not k.startswith(":")},
                   "body": st["body"].decode("utf-8", "replace"), "body_complete": complete,
                   "conn": conn_no})
        conn.send_headers(sid, [(":status", "200"), ("content-type", "text/plain"),
                                ("content-length", "2")])
        conn.send_data(sid, b"ok", end_stream=True)
        if not complete:
            # the response is complete, the request is not: stop its upload
            conn.reset_stream(sid, error_code=h2.errors.ErrorCodes.NO_ERROR)

    while True:
        data = await reader.read(65536)
        if not data:
            break
        try:
            events = conn.receive_data(data)
        except h2.exceptions.ProtocolError:
            break
        for ev in events:
            if isinstance(ev, h2.events.RequestReceived):
                streams[ev.stream_id] = {"headers": dict(ev.headers), "body": bytearray()}
                if ev.stream_ended is not None:
                    answer(ev.stream_id, True)
                elif early and conn.local_settings.initial_window_size == 0:
                    # the acknowledged window is 0: no body can come
                    answer(ev.stream_id, False)
            elif isinstance(ev, h2.events.DataReceived):
                if ev.stream_id in streams:
                    streams[ev.stream_id]["body"] += ev.data
                if ev.flow_controlled_length:
                    try:
                        conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                    except h2.exceptions.StreamClosedError:
                        pass
            elif isinstance(ev, h2.events.StreamEnded):
                if ev.stream_id in streams:
                    answer(ev.stream_id, True)
            elif isinstance(ev, h2.events.SettingsAcknowledged) and early:
                # the zero window now holds for the streams already open too
                # (RFC 9113 section 6.9.2): answer those still waiting for a body
                for sid in list(streams):
                    answer(sid, False)
            elif isinstance(ev, h2.events.ConnectionTerminated):
                writer.write(conn.data_to_send())
                writer.close()
                return
        writer.write(conn.data_to_send())
        await writer.drain()
    writer.close()


async def serve_h1(reader, writer, log, conn_no):
    """Serve one HTTP/1.1 connection (keep-alive)."""
    while True:
        request_line, headers = parse_head(await reader.readuntil(b"\r\n\r\n"))
        method, path = request_line[0], request_line[1]
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        log.write({"protocol": "HTTP/1.1", "method": method, "path": path, "headers": headers,
                   "body": body.decode("utf-8", "replace"), "body_complete": True, "conn": conn_no})
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()


async def main():
    """Parse the command line, listen, write the port file, serve until SIGTERM."""
    ap = arg_parser()
    ap.add_argument("--early", action="store_true")
    ap.add_argument("--exit-with-parent", action="store_true")
    args = ap.parse_args()

    ctx = tls_context(args.cert, args.key, ["h2", "http/1.1"])
    log = JsonLog(args.log, compact=False)
    conns = [0]

    async def handle(reader, writer):
        """One connection, by the protocol ALPN chose."""
        conns[0] += 1
        proto = writer.get_extra_info("ssl_object").selected_alpn_protocol()
        try:
            if proto == "h2":
                await serve_h2(reader, writer, log, conns[0], args.early)
            else:
                await serve_h1(reader, writer, log, conns[0])
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=ctx)
    write_port_file(args.port_file, server.sockets[0].getsockname()[1])
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    if args.exit_with_parent:
        exit_with_parent()
    async with server:
        await stop.wait()


if __name__ == "__main__":
    asyncio.run(main())
