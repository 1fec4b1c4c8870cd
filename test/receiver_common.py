"""What the HTTPS receivers of the tests have in common (Python 3 standard
library only): test/receiver.py and test/h2receiver.py (the TAP tests'),
test/bench/lat_sink.py (the benchmark's latency sink).

Each takes --cert, --key, --port-file and --log, serves TLS with that
certificate, writes the port it is bound to into --port-file once it
listens, and appends one JSON line per request to --log.
"""

import argparse
import json
import os
import ssl
import threading
import time


def arg_parser(description=None):
    """The command line every receiver takes: --cert, --key, --port-file, --log."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--cert", required=True, help="server certificate (PEM)")
    ap.add_argument("--key", required=True, help="its private key (PEM)")
    ap.add_argument("--port-file", required=True, help="where to write the port, once listening")
    ap.add_argument("--log", required=True, help="request log, one JSON line per request (appended)")
    return ap


def tls_context(cert, key, alpn):
    """A server TLS context with this certificate, offering the ALPN protocols alpn."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    ctx.set_alpn_protocols(alpn)
    return ctx


def write_port_file(path, port):
    """Write port to path, atomically (a temporary file, then a rename): a reader never sees half of it."""
    tmp = "%s.tmp.%d" % (path, os.getpid())
    with open(tmp, "w") as f:
        f.write("%d\n" % port)
    os.replace(tmp, path)


class JsonLog:
    """A log file of one JSON object per line, each written whole and flushed at once, from any thread."""

    def __init__(self, path, compact=True):
        self.file = open(path, "a", encoding="utf-8")
        self.lock = threading.Lock()
        # compact: {"a":1}; otherwise json's default separators: {"a": 1}
        self.separators = (",", ":") if compact else None

    def write(self, record):
        """Append record as one line."""
        line = json.dumps(record, separators=self.separators) + "\n"
        with self.lock:
            self.file.write(line)
            self.file.flush()

    def close(self):
        """Close the file (after the last write)."""
        with self.lock:
            self.file.close()


def exit_with_parent():
    """Exit (status 0) once the parent process has gone: a daemon thread polls getppid() twice a second."""
    parent = os.getppid()

    def watch():
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(0)

    threading.Thread(target=watch, daemon=True).start()


def parse_head(head):
    """(the words of the request line, {lower-cased header name: value}) of an HTTP/1.1 request head in bytes."""
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if colon:
            headers[name.strip().lower()] = value.strip()
    return lines[0].split(" "), headers
