"""A raw HTTP/2 client for hostile-peer tests: builds frames by hand (hyperframe, hpack), so that it can send
sequences a well-behaved client library refuses to produce, in one write when the test needs it."""

import socket
import struct
import time

from hpack import Decoder, Encoder
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    Frame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    RstStreamFrame,
    SettingsFrame,
    WindowUpdateFrame,
)

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
FRAME_HEADER = 9


def grpc_headers(path="/KafkaAmbassador/Produce", content_type="application/grpc", method="POST", extra=()):
    """Request headers of a gRPC call; content_type None leaves the header out."""
    headers = [(":method", method), (":scheme", "http"), (":path", path), (":authority", "localhost")]
    if content_type is not None:
        headers.append(("content-type", content_type))
    headers.append(("te", "trailers"))
    headers.extend(extra)
    return headers


def grpc_message(payload, compressed=False, length=None):
    """A length-prefixed gRPC message; `length` overrides the declared length (to lie about it)."""
    declared = len(payload) if length is None else length
    return struct.pack(">BI", 1 if compressed else 0, declared) + payload


def varint(n):
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def prod_rq(topic, value, stream_offset):
    """A ProdRq with topic, message and streamOffset (fields 1, 2, 3)."""
    t = topic.encode()
    return (b"\x0a" + varint(len(t)) + t + b"\x12" + varint(len(value)) + value + b"\x18" + varint(stream_offset))


class Conn:
    """One cleartext HTTP/2 connection (prior knowledge) and the frames received on it."""

    def __init__(self, port, timeout=5.0):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.encoder = Encoder()
        self.decoder = Decoder()
        self.buf = b""
        self.closed = False
        self.frames = []

    def preface(self, settings=None):
        """The client preface and SETTINGS, as bytes (not sent)."""
        f = SettingsFrame(0)
        for k, v in (settings or {}).items():
            f.settings[k] = v
        return PREFACE + f.serialize()

    def headers(self, stream_id, headers, end_stream=False, end_headers=True):
        f = HeadersFrame(stream_id)
        f.data = self.encoder.encode(headers)
        if end_headers:
            f.flags.add("END_HEADERS")
        if end_stream:
            f.flags.add("END_STREAM")
        return f.serialize()

    def data(self, stream_id, payload, end_stream=False):
        f = DataFrame(stream_id)
        f.data = payload
        if end_stream:
            f.flags.add("END_STREAM")
        return f.serialize()

    def rst(self, stream_id, code=8):
        f = RstStreamFrame(stream_id)
        f.error_code = code
        return f.serialize()

    def goaway(self, last_stream_id=0, code=0):
        f = GoAwayFrame(0)
        f.last_stream_id = last_stream_id
        f.error_code = code
        return f.serialize()

    def window_update(self, stream_id, increment):
        f = WindowUpdateFrame(stream_id)
        f.window_increment = increment
        # hyperframe refuses an increment of 0 in serialize(); write it by hand.
        body = struct.pack(">I", increment & 0x7FFFFFFF)
        return struct.pack(">I", len(body))[1:] + bytes([0x08, 0]) + struct.pack(">I", stream_id) + body

    def settings_ack(self):
        f = SettingsFrame(0)
        f.flags.add("ACK")
        return f.serialize()

    def ping(self, payload=b"\x00" * 8):
        f = PingFrame(0)
        f.opaque_data = payload
        return f.serialize()

    def continuation(self, stream_id, headers, end_headers=True):
        f = ContinuationFrame(stream_id)
        f.data = self.encoder.encode(headers)
        if end_headers:
            f.flags.add("END_HEADERS")
        return f.serialize()

    def send(self, data):
        try:
            self.sock.sendall(data)
            return True
        except OSError:
            self.closed = True
            return False

    def read_frames(self, seconds, until=None, ack_settings=True):
        """Reads frames for up to `seconds`, or until `until(frame)` is true, or the peer closes."""
        deadline = time.time() + seconds
        while not self.closed and time.time() < deadline:
            self.sock.settimeout(max(0.01, deadline - time.time()))
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                break
            except OSError:
                self.closed = True
                break
            if not chunk:
                self.closed = True
                break
            self.buf += chunk
            while len(self.buf) >= FRAME_HEADER:
                frame, length = Frame.parse_frame_header(memoryview(self.buf[:FRAME_HEADER]))
                if len(self.buf) < FRAME_HEADER + length:
                    break
                frame.parse_body(memoryview(self.buf[FRAME_HEADER:FRAME_HEADER + length]))
                self.buf = self.buf[FRAME_HEADER + length:]
                if isinstance(frame, HeadersFrame):
                    frame.decoded = dict((k.decode() if isinstance(k, bytes) else k,
                                          v.decode() if isinstance(v, bytes) else v)
                                         for k, v in self.decoder.decode(frame.data))
                if isinstance(frame, SettingsFrame) and "ACK" not in frame.flags and ack_settings:
                    self.send(self.settings_ack())
                self.frames.append(frame)
                if until is not None and until(frame):
                    return frame
        return None

    def stream_result(self, stream_id):
        """What came back on one stream: response headers, trailers, DATA bytes, reset code."""
        result = {"status": None, "grpc_status": None, "grpc_message": None, "data_bytes": 0, "rst": None,
                  "ended": False}
        for f in self.frames:
            if f.stream_id != stream_id:
                continue
            if isinstance(f, HeadersFrame):
                h = f.decoded
                if ":status" in h:
                    result["status"] = int(h[":status"])
                if "grpc-status" in h:
                    result["grpc_status"] = int(h["grpc-status"])
                    result["grpc_message"] = h.get("grpc-message")
                if "grpc-accept-encoding" in h:
                    result["grpc_accept_encoding"] = h["grpc-accept-encoding"]
                if "END_STREAM" in f.flags:
                    result["ended"] = True
            elif isinstance(f, DataFrame):
                result["data_bytes"] += len(f.data)
                if "END_STREAM" in f.flags:
                    result["ended"] = True
            elif isinstance(f, RstStreamFrame):
                result["rst"] = f.error_code
        result["goaway"] = [f.error_code for f in self.frames if isinstance(f, GoAwayFrame)]
        result["connection_closed"] = self.closed
        return result

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def stream_done(stream_id):
    """A read_frames predicate: the stream ended (END_STREAM or RST_STREAM) or the connection went away."""
    def done(f):
        if isinstance(f, GoAwayFrame):
            return True
        if f.stream_id != stream_id:
            return False
        return isinstance(f, RstStreamFrame) or "END_STREAM" in f.flags
    return done
