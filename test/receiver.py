#!/usr/bin/python3
"""HTTPS webhook receiver for the webhooks TAP tests (Python 3 standard library only).

    receiver.py --cert C --key K --port-file F --log L
                [--port 0] [--host 127.0.0.1] [--secret whsec_...]...
                [--secret-file S] [--exit-with-parent] [--verbose]

Listens on 127.0.0.1 (an ephemeral port unless --port is given), speaks
HTTP/1.1 with keep-alive over TLS, one daemon thread per connection.  The TLS
handshake runs in the connection's thread, so a client that stalls or rejects
the certificate never blocks the others.  Once listening it writes the bound
port to --port-file (write to a temporary file, then rename).

Every request is appended to --log as one JSON line, written and flushed under
a lock once the request (headers and body) has been fully received and BEFORE
the answer is sent (for /slow and /stall: before sleeping), so a request that
the client gave up on is still in the log:

    t                 epoch seconds (float) when the request was fully received
    method, path      path as sent, query string included
    headers           {lower-cased name: value}; repeated headers joined by ", "
    body              the body as text (UTF-8, invalid bytes replaced)
    body_b64          the exact body bytes, base64
    body_len          number of body bytes
    sig_ok            Standard Webhooks v1 check of webhook-id/-timestamp/-signature
                      against the secrets (true if any v1 entry matches any secret),
                      null when no secret is configured
    sig_ok_by_secret  one boolean per configured secret, in order
    ts_ok             webhook-timestamp is whole seconds within 5 minutes of t
                      (null when the header is absent)
    status            the status this request is answered with
    conn, n_on_conn   connection number (from 1) and request number on that
                      connection (from 1): shows keep-alive reuse

Secrets come from --secret (repeatable) plus --secret-file (one per line,
re-read on every request, so a test can set the secret after the receiver
started).

Answers, chosen by the first path segment (query string ignored):
    /ok...                   200 "ok"  (also anything unmatched)
    /status/<code>           <code> "error body <code>"; 3xx add "Location: /ok";
                             204 and 304 have no body
    /slow/<ms>               sleep ms, then 200 "ok"
    /retry-after/<v>         429 "slow down" with "Retry-After: <v>" (v sent verbatim)
    /unavailable-date/<s>    503 "unavailable" with Retry-After: HTTP-date of now+s
    /flaky/<n>/<key>         500 "flaky failure" to the first n requests for key, then 200 "ok"
    /gone                    410 "gone"
    /redirect                302 with "Location: https://127.0.0.1:<port>/ok"
    /trickle/<secs>          200 with Content-Length secs, one byte per second
    /big/<bytes>             200 with a body of that many bytes, streamed in 64 KiB chunks
    /bigheaders/<n>          200 with n response headers of 1000 bytes each
    /stall/<secs>            send nothing for secs, then 200 "ok"
A malformed number in a path answers 400 "bad request".

SIGTERM and SIGINT stop it cleanly (exit 0).  Quiet unless --verbose.
"""

import base64
import binascii
import email.utils
import hashlib
import hmac
import itertools
import re
import signal
import socket
import socketserver
import ssl
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from receiver_common import JsonLog, arg_parser, exit_with_parent, tls_context, write_port_file

CHUNK = 64 * 1024
TOLERANCE_S = 300


def decode_secret(secret):
    """Key bytes of a whsec_ secret (standard base64), or None if it is not base64."""
    s = secret.strip()
    if s.startswith("whsec_"):
        s = s[len("whsec_"):]
    try:
        return base64.b64decode(s, validate=True)
    except (binascii.Error, ValueError):
        return None


def verify(secrets, headers, body):
    """(sig_ok, [ok per secret]) by the Standard Webhooks v1 scheme."""
    if not secrets:
        return None, []
    msg_id = headers.get("webhook-id")
    ts = headers.get("webhook-timestamp")
    sig = headers.get("webhook-signature")
    if msg_id is None or ts is None or sig is None:
        return False, [False] * len(secrets)
    signed = msg_id.encode("utf-8") + b"." + ts.encode("utf-8") + b"." + body
    given = [p[3:] for p in sig.split(" ") if p.startswith("v1,")]
    per = []
    for secret in secrets:
        key = decode_secret(secret)
        if key is None:
            per.append(False)
            continue
        want = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode("ascii")
        per.append(any(hmac.compare_digest(want, g) for g in given))
    return any(per), per


class BadRequest(Exception):
    """A request this receiver cannot parse: answered 400."""


class Receiver(ThreadingHTTPServer):
    """The HTTPS server: TLS per connection thread, the secrets, the request log."""
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address, ctx, opts):
        self.ctx = ctx
        self.opts = opts
        self.log = JsonLog(opts.log)
        self.flaky_lock = threading.Lock()
        self.flaky = {}
        self.conn_seq = itertools.count(1)
        super().__init__(address, Handler)

    def server_bind(self):
        """Bind without the DNS lookup of HTTPServer.server_bind."""
        # HTTPServer.server_bind would call socket.getfqdn(), a DNS lookup.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = host
        self.server_port = port

    def get_request(self):
        """Accept a connection, its TLS handshake left to its own thread."""
        sock, addr = self.socket.accept()
        # Handshake later, in the connection's own thread (Handler.setup).
        conn = self.ctx.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return conn, addr

    def handle_error(self, request, client_address):
        """Report a failed connection only with --verbose."""
        # Failed handshakes (a client rejecting our cert) and dropped
        # connections are expected in these tests.
        if self.opts.verbose:
            super().handle_error(request, client_address)

    def secrets(self):
        """The secrets to verify with: --secret, then those in --secret-file now."""
        out = list(self.opts.secret or [])
        if self.opts.secret_file:
            try:
                with open(self.opts.secret_file, encoding="utf-8") as f:
                    out += [line.strip() for line in f if line.strip()]
            except FileNotFoundError:
                pass
        return out

    def write_log(self, entry):
        """Append one request to the log."""
        self.log.write(entry)


class Handler(BaseHTTPRequestHandler):
    """One connection: reads each request, logs it, answers as its path says."""
    protocol_version = "HTTP/1.1"
    server_version = "webhooks-test-receiver/1.0"
    sys_version = ""
    timeout = 300  # idle keep-alive connections are closed after this

    def setup(self):
        """TLS handshake and connection numbering, in the connection's thread."""
        self.request.settimeout(30)
        # headers and body go out in separate writes: without this, Nagle's
        # algorithm and delayed ACKs hold the second one back ~40 ms
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.request.do_handshake()
        self.conn_id = next(self.server.conn_seq)
        self.n_on_conn = 0
        super().setup()

    def version_string(self):
        """The Server header (no Python version)."""
        return self.server_version

    def log_message(self, fmt, *args):
        """Access log on stderr, only with --verbose."""
        if self.server.opts.verbose:
            super().log_message(fmt, *args)

    # every method goes through the same code
    def do_any(self):
        """Handle a request of any method; a dropped connection just closes."""
        try:
            self.handle_request()
        except (BrokenPipeError, ConnectionError, TimeoutError, ssl.SSLError):
            self.close_connection = True

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = do_any

    def read_body(self):
        """The request body, by Content-Length or chunked."""
        te = (self.headers.get("Transfer-Encoding") or "").lower()
        if "chunked" in te:
            parts = []
            while True:
                line = self.rfile.readline(65537)
                if not line:
                    raise ConnectionError("eof in chunked body")
                try:
                    size = int(line.split(b";", 1)[0].strip(), 16)
                except ValueError:
                    raise BadRequest("bad chunk size")
                if size == 0:
                    while True:  # trailers up to the empty line
                        line = self.rfile.readline(65537)
                        if line in (b"\r\n", b"\n", b""):
                            break
                    return b"".join(parts)
                data = self.rfile.read(size)
                if len(data) < size:
                    raise ConnectionError("eof in chunk")
                parts.append(data)
                self.rfile.readline(65537)
        cl = self.headers.get("Content-Length")
        if not cl:
            return b""
        try:
            n = int(cl)
        except ValueError:
            raise BadRequest("bad content-length")
        if n < 0:
            raise BadRequest("bad content-length")
        data = self.rfile.read(n)
        if len(data) < n:
            raise ConnectionError("eof in body")
        return data

    def header_dict(self):
        """The request headers as {lower-cased name: value}, repeated ones joined."""
        out = {}
        for name, value in self.headers.items():
            # http.client decodes header bytes as latin-1; recover UTF-8 text
            try:
                value = value.encode("latin-1").decode("utf-8", "replace")
            except UnicodeEncodeError:
                pass
            name = name.lower()
            out[name] = out[name] + ", " + value if name in out else value
        return out

    def route(self, segs):
        """(status, [(header, value)], action, arg)"""
        ok = (200, [], "body", b"ok")
        head = segs[0] if segs else ""

        def num(i, conv=int):
            try:
                return conv(segs[i])
            except (IndexError, ValueError):
                raise BadRequest("bad number in path")

        if head == "status":
            code = num(1)
            if not 200 <= code <= 599:
                raise BadRequest("bad status code")
            hdrs = [("Location", "/ok")] if 300 <= code <= 399 else []
            return code, hdrs, "body", ("error body %d" % code).encode()
        if head == "slow":
            return 200, [], "sleep", (num(1, float) / 1000.0, b"ok")
        if head == "retry-after":
            if len(segs) < 2:
                raise BadRequest("missing value")
            return 429, [("Retry-After", segs[1])], "body", b"slow down"
        if head == "unavailable-date":
            when = time.time() + num(1, float)
            return 503, [("Retry-After", email.utils.formatdate(when, usegmt=True))], "body", b"unavailable"
        if head == "flaky":
            n = num(1)
            key = "/".join(segs[2:])
            with self.server.flaky_lock:
                seen = self.server.flaky.get(key, 0) + 1
                self.server.flaky[key] = seen
            if seen <= n:
                return 500, [], "body", b"flaky failure"
            return ok
        if head == "gone":
            return 410, [], "body", b"gone"
        if head == "redirect":
            loc = "https://127.0.0.1:%d/ok" % self.server.server_port
            return 302, [("Location", loc)], "body", b"redirect"
        if head == "trickle":
            n = num(1)
            if n < 0:
                raise BadRequest("negative")
            return 200, [], "trickle", n
        if head == "big":
            n = num(1)
            if n < 0:
                raise BadRequest("negative")
            return 200, [], "big", n
        if head == "stall":
            return 200, [], "sleep", (num(1, float), b"ok")
        if head == "bigheaders":
            kib = num(1)
            if kib < 0:
                raise BadRequest("negative")
            filler = "x" * 1000
            return 200, [("X-Filler-%d" % i, filler) for i in range(kib)], "body", b"ok"
        return ok

    def handle_request(self):
        """Read, log, then answer one request."""
        self.n_on_conn += 1
        try:
            body = self.read_body()
        except BadRequest as e:
            self.close_connection = True
            self.answer(400, [("Connection", "close")], b"bad request: %s" % str(e).encode())
            return
        t = time.time()
        headers = self.header_dict()

        path = urllib.parse.urlsplit(self.path).path
        segs = [urllib.parse.unquote(s) for s in path.split("/")[1:]]
        try:
            status, hdrs, action, arg = self.route(segs)
        except BadRequest as e:
            status, hdrs, action, arg = 400, [], "body", b"bad request: %s" % str(e).encode()

        sig_ok, per_secret = verify(self.server.secrets(), headers, body)
        ts = headers.get("webhook-timestamp")
        ts_ok = None
        if ts is not None:
            ts_ok = bool(re.fullmatch(r"[0-9]+", ts)) and abs(int(ts) - t) <= TOLERANCE_S

        self.server.write_log({
            "t": t,
            "method": self.command,
            "path": self.path,
            "headers": headers,
            "body": body.decode("utf-8", "replace"),
            "body_b64": base64.b64encode(body).decode("ascii"),
            "body_len": len(body),
            "sig_ok": sig_ok,
            "sig_ok_by_secret": per_secret,
            "ts_ok": ts_ok,
            "status": status,
            "conn": self.conn_id,
            "n_on_conn": self.n_on_conn,
        })

        if action == "body":
            self.answer(status, hdrs, arg)
        elif action == "sleep":
            secs, payload = arg
            if secs > 0:
                time.sleep(secs)
            self.answer(status, hdrs, payload)
        elif action == "trickle":
            self.start_answer(status, hdrs, arg)
            for _ in range(arg):
                time.sleep(1)
                if self.command != "HEAD":
                    self.wfile.write(b".")
        elif action == "big":
            self.start_answer(status, hdrs, arg)
            if self.command != "HEAD":
                block = b"x" * CHUNK
                left = arg
                while left > 0:
                    n = min(left, CHUNK)
                    self.wfile.write(block if n == CHUNK else block[:n])
                    left -= n

    def start_answer(self, status, hdrs, length):
        """Send the status line and headers of an answer."""
        self.send_response(status)
        for k, v in hdrs:
            self.send_header(k, v)
        if status not in (204, 304):
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(length))
        self.end_headers()

    def answer(self, status, hdrs, payload):
        """Send a whole answer."""
        if status in (204, 304):
            payload = b""
        self.start_answer(status, hdrs, len(payload))
        if payload and self.command != "HEAD":
            self.wfile.write(payload)


def main():
    """Parse the command line, listen, write the port file, serve until SIGTERM."""
    ap = arg_parser("HTTPS webhook receiver for tests")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--secret", action="append", help="whsec_... (repeatable)")
    ap.add_argument("--secret-file", help="file with one secret per line, re-read per request")
    ap.add_argument("--exit-with-parent", action="store_true",
                    help="exit when the parent process goes away")
    ap.add_argument("--verbose", action="store_true")
    opts = ap.parse_args()

    for s in opts.secret or []:
        if decode_secret(s) is None:
            ap.error("--secret is not base64: %r" % s)

    ctx = tls_context(opts.cert, opts.key, ["http/1.1"])

    def stop(signum, frame):
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    if opts.exit_with_parent:
        exit_with_parent()

    server = Receiver((opts.host, opts.port), ctx, opts)
    try:
        write_port_file(opts.port_file, server.server_port)
        if opts.verbose:
            print("listening on %s:%d" % (opts.host, server.server_port), file=sys.stderr, flush=True)
        server.serve_forever()
    finally:
        server.server_close()
        server.log.close()


if __name__ == "__main__":
    main()
