#!/usr/bin/env python3
"""The current ClickHouse engine (chDB, ClickHouse 26.x in-process) behind the
subset of ClickHouse's HTTP interface that this project's client speaks, on
127.0.0.1 only. For the tests: they run the same SQL and client code against
it as against ClickHouse 18.16 and the cluster. Not a server for real use.

    python3 scripts/chdb_server.py PORT DATA_DIR

Needs the `chdb` and `lz4` packages (scripts/install-deps.sh installs them).
Ready when `GET /ping` answers `Ok.`. What it understands:

- the statement in the `query` URL parameter, in the body, or both (the body
  is then appended, as ClickHouse does; for `INSERT ... FORMAT F` the body is
  the data, which chDB reads from a temporary file);
- `database` (or the `X-ClickHouse-Database` header), `default_format`;
- a body in ClickHouse's compressed block format with `decompress=1` (LZ4 or
  uncompressed blocks; answers are never compressed);
- every other URL parameter as a setting, applied with SET before the
  statement (they persist for later statements, as in a session);
- errors as HTTP 500 with the server's text and its code in the
  `X-ClickHouse-Exception-Code` header (clients match on the code).

Statements run one at a time: chDB's session is not safe to share between
threads.
"""
import os
import re
import struct
import sys
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlparse

import lz4.block
from chdb import session as chdb_session

# URL parameters that are part of the protocol, not settings.
PROTOCOL_PARAMETERS = {"query", "database", "default_format", "decompress", "compress"}
# A compressed block: 16 bytes of checksum, then method (1 byte), the block's
# size with this 9-byte header (4), the data's size once decompressed (4).
BLOCK_CHECKSUM = 16
BLOCK_HEADER = 9
METHOD_LZ4 = 0x82
METHOD_NONE = 0x02
# `INSERT ... FORMAT F`: the statement before FORMAT, and F.
INSERT_WITH_FORMAT = re.compile(r"^(\s*INSERT\b.*?)\s*\bFORMAT\s+(\w+)\s*$", re.I | re.S)
NUMBER = re.compile(r"-?\d+(\.\d+)?")
IDENTIFIER = re.compile(r"\w+")


def decompress_blocks(data: bytes) -> bytes:
    """The concatenated contents of ClickHouse compressed blocks (checksums are
    not verified: loopback only)."""
    out = bytearray()
    position = 0
    while position < len(data):
        header = position + BLOCK_CHECKSUM
        method = data[header]
        size, plain_size = struct.unpack_from("<II", data, header + 1)
        payload = data[header + BLOCK_HEADER : header + size]
        if method == METHOD_LZ4:
            out += lz4.block.decompress(payload, uncompressed_size=plain_size)
        elif method == METHOD_NONE:
            out += payload
        else:
            raise ValueError(f"compression method 0x{method:02x} is not supported")
        position = header + size
    return bytes(out)


def setting_literal(value: str) -> str:
    if NUMBER.fullmatch(value):
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


class Engine:
    """One chDB session, used by one statement at a time."""

    def __init__(self, data_dir: str):
        self.session = chdb_session.Session(data_dir)
        self.lock = threading.Lock()

    def run(self, sql: str, output_format: str, database: str, settings: dict) -> bytes:
        with self.lock:
            if IDENTIFIER.fullmatch(database):
                self.session.query(f"USE {database}")
            for name, value in settings.items():
                if IDENTIFIER.fullmatch(name):
                    self.session.query(f"SET {name} = {setting_literal(value)}")
            result = self.session.query(sql, output_format)
            return result.bytes() if result is not None else b""


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    engine: Engine = None  # set in main

    def log_message(self, fmt, *args):
        if os.environ.get("CHDB_SERVER_LOG"):
            sys.stderr.write("chdb_server: " + fmt % args + "\n")

    def do_GET(self):
        if urlparse(self.path).path == "/ping":
            self.answer(200, b"Ok.\n", "text/plain; charset=UTF-8")
        else:
            self.execute(b"")

    def do_POST(self):
        self.execute(self.read_body())

    def read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            body = bytearray()
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return bytes(body)
                body += self.rfile.read(size)
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def execute(self, body: bytes):
        parameters = dict(parse_qsl(urlparse(self.path).query, keep_blank_values=True))
        data_file = None
        try:
            if parameters.get("decompress") == "1" and body:
                body = decompress_blocks(body)
            sql = parameters.get("query", "")
            insert = INSERT_WITH_FORMAT.match(sql) if sql else None
            if insert and body:
                with tempfile.NamedTemporaryFile(delete=False, suffix=".data") as data:
                    data.write(body)
                    data_file = data.name
                statement, data_format = insert.groups()
                sql = f"{statement} FROM INFILE '{data_file}' FORMAT {data_format}"
            elif body:
                sql = f"{sql} {body.decode()}" if sql else body.decode()
            database = (
                parameters.get("database")
                or self.headers.get("X-ClickHouse-Database")
                or "default"
            )
            settings = {
                name: value
                for name, value in parameters.items()
                if name not in PROTOCOL_PARAMETERS and not name.startswith("param_")
            }
            output_format = parameters.get("default_format", "TabSeparated")
            answer = self.engine.run(sql, output_format, database, settings)
            self.answer(200, answer, "application/octet-stream")
        except Exception as error:  # chDB raises with "Code: N. DB::Exception: ..."
            text = str(error)
            code = re.match(r"Code: (\d+)", text)
            self.answer(
                500,
                text.encode(),
                "text/plain; charset=UTF-8",
                {"X-ClickHouse-Exception-Code": code.group(1) if code else "1000"},
            )
        finally:
            if data_file:
                os.unlink(data_file)

    def answer(self, status: int, body: bytes, content_type: str, headers=None):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)


def main() -> None:
    if len(sys.argv) != 3:
        sys.exit("usage: chdb_server.py PORT DATA_DIR")
    port, data_dir = int(sys.argv[1]), sys.argv[2]
    os.makedirs(data_dir, exist_ok=True)
    Handler.engine = Engine(data_dir)
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    print(f"chdb_server: 127.0.0.1:{port}, data in {data_dir}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
