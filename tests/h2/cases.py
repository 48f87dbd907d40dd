"""Hostile HTTP/2 sequences against the gRPC port, one per case; each prints one JSON line with what came back.

usage: cases.py CASE PORT [SECONDS [METHOD]]
"""

import gzip
import json
import sys
import time

from hyperframe.frame import DataFrame, SettingsFrame, WindowUpdateFrame

from rawh2 import Conn, grpc_headers, grpc_message, prod_rq, stream_done

SETTINGS_INITIAL_WINDOW_SIZE = 0x4

# The headers h2spec sends: a plain GET, nothing gRPC about it.
H2SPEC_HEADERS = [(":method", "GET"), (":scheme", "http"), (":path", "/"), (":authority", "localhost")]


def goaway_no_content_type(conn):
    """
    Preface, HEADERS for Produce without content-type and with END_STREAM, then GOAWAY (last stream 1): all in
    one write. The stream is torn down before the server's handler answers it.
    """
    headers = conn.headers(1, grpc_headers(content_type=None), end_stream=True)
    conn.send(conn.preface() + headers + conn.goaway(last_stream_id=1))
    conn.read_frames(2)
    return conn.stream_result(1)


def headers_then_rst(conn):
    """A Produce call opened and reset at once, in one write."""
    conn.send(conn.preface() + conn.headers(1, grpc_headers()) + conn.rst(1))
    conn.read_frames(1)
    return conn.stream_result(1)


def h2spec_5_1_6(conn):
    """h2spec http2/5.1/6: HEADERS with END_STREAM, then HEADERS again on the half-closed (remote) stream."""
    conn.send(conn.preface() + conn.headers(1, H2SPEC_HEADERS, end_stream=True)
              + conn.headers(1, H2SPEC_HEADERS, end_stream=True))
    conn.read_frames(2)
    return conn.stream_result(1)


def h2spec_6_9_2(conn):
    """h2spec http2/6.9/2: WINDOW_UPDATE with an increment of 0 on an open stream."""
    conn.send(conn.preface() + conn.headers(1, H2SPEC_HEADERS) + conn.window_update(1, 0))
    conn.read_frames(2, until=stream_done(1))
    return conn.stream_result(1)


def h2spec_6_9_1_3(conn):
    """h2spec http2/6.9.1/3: initial window size 1, then a request; the server may send 1 byte of DATA."""
    conn.send(conn.preface({SETTINGS_INITIAL_WINDOW_SIZE: 1}) + conn.headers(1, H2SPEC_HEADERS, end_stream=True))
    conn.read_frames(2, until=stream_done(1))
    return conn.stream_result(1)


def wrong_content_type(conn):
    """A Produce call with content-type text/plain: HTTP 415, not a 200 that a plain client takes for success."""
    headers = grpc_headers(content_type="text/plain")
    conn.send(conn.preface() + conn.headers(1, headers, end_stream=True))
    conn.read_frames(3, until=stream_done(1))
    return conn.stream_result(1)


def compressed_no_encoding(conn):
    """A message with the compressed flag set, but no grpc-encoding: INTERNAL."""
    body = grpc_message(prod_rq("h2-compressed", b"x", 1), compressed=True)
    conn.send(conn.preface() + conn.headers(1, grpc_headers()) + conn.data(1, body, end_stream=True))
    conn.read_frames(3, until=stream_done(1))
    return conn.stream_result(1)


def compressed_gzip(conn):
    """A call in grpc-encoding gzip: one record compressed, one not (the flag is per message). Both answered."""
    body = grpc_message(gzip.compress(prod_rq("h2-gzip", b"zipped", 1)), compressed=True)
    body += grpc_message(prod_rq("h2-gzip", b"plain", 2))
    headers = grpc_headers(extra=[("grpc-encoding", "gzip")])
    conn.send(conn.preface() + conn.headers(1, headers) + conn.data(1, body, end_stream=True))
    conn.read_frames(3, until=stream_done(1))
    return conn.stream_result(1)


def unknown_encoding(conn):
    """A call in an encoding the server lacks: UNIMPLEMENTED, with the encodings it accepts."""
    headers = grpc_headers(extra=[("grpc-encoding", "snappy")])
    body = grpc_message(prod_rq("h2-snappy", b"x", 1), compressed=True)
    conn.send(conn.preface() + conn.headers(1, headers) + conn.data(1, body, end_stream=True))
    conn.read_frames(3, until=stream_done(1))
    return conn.stream_result(1)


def malformed_timeout(conn):
    """A call whose grpc-timeout is not 1 to 8 digits and a unit: INTERNAL, as grpc-go answers it."""
    headers = grpc_headers(extra=[("grpc-timeout", "99999999999H")])
    body = grpc_message(prod_rq("h2-timeout", b"x", 1))
    conn.send(conn.preface() + conn.headers(1, headers) + conn.data(1, body, end_stream=True))
    conn.read_frames(3, until=stream_done(1))
    return conn.stream_result(1)


def truncated_prefix(conn):
    """One good record, then one whose length prefix says more than the stream holds, then END_STREAM."""
    good = grpc_message(prod_rq("h2-truncated", b"good", 1))
    cut = grpc_message(prod_rq("h2-truncated", b"cut", 2), length=100)
    conn.send(conn.preface() + conn.headers(1, grpc_headers()) + conn.data(1, good + cut, end_stream=True))
    conn.read_frames(3, until=stream_done(1))
    return conn.stream_result(1)


# A ServerReflectionRequest asking for the list of services (field 7, list_services).
LIST_SERVICES = b"\x3a\x01*"
REFLECTION_PATH = "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"


def window_zero(conn, seconds, method="produce"):
    """
    A client whose receive window is 0 (it never takes a reply) sends requests as fast as the server's flow
    control lets it, for `seconds`: Produce records, or reflection's list_services (whose answer is much larger
    than the request). Prints the result, then holds the connection open until stdin closes, so that the caller
    can measure the server while the attack is on.
    """
    path = REFLECTION_PATH if method == "reflection" else "/KafkaAmbassador/Produce"
    conn.send(conn.preface({SETTINGS_INITIAL_WINDOW_SIZE: 0}) + conn.headers(1, grpc_headers(path)))
    conn_window, stream_window, initial = 65535, 65535, 65535
    sent_records = sent_bytes = 0
    if method == "reflection":
        batch = grpc_message(LIST_SERVICES) * 1000
    else:
        batch = b"".join(grpc_message(prod_rq("h2-window-zero", b"", i)) for i in range(1, 1001))
    pos = 0
    deadline = time.time() + seconds
    while time.time() < deadline and not conn.closed:
        n_before = len(conn.frames)
        conn.read_frames(0.01)
        for f in conn.frames[n_before:]:
            if isinstance(f, WindowUpdateFrame):
                if f.stream_id == 0:
                    conn_window += f.window_increment
                elif f.stream_id == 1:
                    stream_window += f.window_increment
            elif isinstance(f, SettingsFrame) and "ACK" not in f.flags:
                new = f.settings.get(SETTINGS_INITIAL_WINDOW_SIZE)
                if new is not None:
                    stream_window += new - initial
                    initial = new
        while conn_window > 0 and stream_window > 0 and not conn.closed:
            n = min(conn_window, stream_window, 16384)
            chunk = (batch[pos:] + batch)[:n]
            pos = (pos + n) % len(batch)
            if not conn.send(conn.data(1, chunk)):
                break
            conn_window -= n
            stream_window -= n
            sent_bytes += n
    sent_records = sent_bytes // (len(batch) // 1000)
    print(json.dumps({"bytes_sent": sent_bytes, "records_sent_approx": sent_records,
                      "connection_closed": conn.closed}), flush=True)
    sys.stdin.read()
    return None


def produce_ok(conn):
    """A normal Produce call with one record: one reply, then grpc-status 0."""
    body = grpc_message(prod_rq("h2-ok", b"fine", 7))
    conn.send(conn.preface() + conn.headers(1, grpc_headers()) + conn.data(1, body, end_stream=True))
    conn.read_frames(5, until=stream_done(1))
    return conn.stream_result(1)


CASES = {f.__name__: f for f in [goaway_no_content_type, headers_then_rst, h2spec_5_1_6, h2spec_6_9_2,
                                  h2spec_6_9_1_3, wrong_content_type, compressed_no_encoding, compressed_gzip,
                                  unknown_encoding, malformed_timeout, truncated_prefix, produce_ok]}


def main():
    name, port = sys.argv[1], int(sys.argv[2])
    conn = Conn(port)
    try:
        if name == "window_zero":
            window_zero(conn, float(sys.argv[3]) if len(sys.argv) > 3 else 3.0, *sys.argv[4:5])
            return
        result = CASES[name](conn)
        result["case"] = name
        print(json.dumps(result), flush=True)
    finally:
        conn.close()


if __name__ == "__main__":
    main()
