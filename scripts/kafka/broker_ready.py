#!/usr/bin/env python3
"""Is the Kafka broker at 127.0.0.1:PORT serving, with at least BROKERS brokers in
its cluster? Sends one Metadata request (v1, no topics) and reads the broker list
of the answer. Exit 0 if so; 1 otherwise (nothing listens, no answer within 2 s,
fewer brokers). Prints the broker count. A broker opens its client port only once
it has caught up with the cluster's metadata, so an answer means it serves.

Usage: broker_ready.py PORT [BROKERS]
"""
import socket
import struct
import sys


def metadata_brokers(port: int) -> int:
    client_id = b"services.sh"
    # Request header v1: api_key 3 (Metadata), api_version 1, correlation id, client id;
    # body: topics array of length 0 (v1: no topics, only brokers and controller).
    body = struct.pack(">hhih", 3, 1, 1, len(client_id)) + client_id + struct.pack(">i", 0)
    with socket.create_connection(("127.0.0.1", port), timeout=2) as connection:
        connection.sendall(struct.pack(">i", len(body)) + body)
        size = struct.unpack(">i", read_exactly(connection, 4))[0]
        answer = read_exactly(connection, size)
    # correlation id, then the brokers array: count, each (node_id, host, port, rack).
    correlation, count = struct.unpack_from(">ii", answer, 0)
    if correlation != 1 or count < 0:
        raise ValueError("unexpected metadata answer")
    return count


def read_exactly(connection: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = connection.recv(size - len(data))
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    return data


def main() -> int:
    port = int(sys.argv[1])
    wanted = int(sys.argv[2]) if len(sys.argv) > 2 else 1
    try:
        brokers = metadata_brokers(port)
    except (OSError, ValueError, struct.error):
        return 1
    print(brokers)
    return 0 if brokers >= wanted else 1


if __name__ == "__main__":
    sys.exit(main())
