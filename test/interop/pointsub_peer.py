#!/usr/bin/env python3
"""A clean-room pointsub wire-protocol (version 1) peer, written from docs/PROTOCOL.md only.

Python 3.11 standard library only. It is a third party's implementation of the
spec: it never looked at pointsub's sources, so where it disagrees with the
Node implementation, either the spec or one of the two is wrong.

What it speaks (section numbers of docs/PROTOCOL.md):
  * preface and HELLO (1.1, 4), settings with defaults and ranges, AUTH as a
    client (4.1); a GOAWAY in place of HELLO (1.1);
  * frames with CRC32C trailers (2), validated as 2.1 says; BATCH (3.9);
  * MSG / REQ / RES messages, single-frame and chunked (3.1, 3.2), KEYED
    requests (3.4.1), error responses (3.5), CANCEL (3.4);
  * flow control both ways: connection and per-message credit (3.6), assembly
    budget, maxConcurrentRequests;
  * PING / PING|ACK (3.7), GOAWAY graceful close and fatal errors (3.8);
  * STREAM uploads (3.10): START with total/offset/route/codec/meta, data, END with
    length and CRC32C of the content; early answers and CANCEL as 3.10 says;
  * a server side (accepts a pointsub client and serves routes): its own requests,
    streams and BATCHes to the client, early stream answers, and optionally stream
    credit held back (3.6) so that a sender counting less than the receiver overruns.
It announces features 0: it sends STREAM frames and keyed requests to a peer that
takes them, but receives neither (nor resume queries, nor compressed frames).

Driven by the interop test (test/interop/python.test.ts) through JSON lines on
stdin/stdout: `python3 pointsub_peer.py driver`; `python3 pointsub_peer.py
selftest` checks the codec against the worked examples of section 5.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import struct
import sys
import time
import traceback
import zlib

# ---------------------------------------------------------------- CRC32C (2)

_POLY = 0x82F63B78


def _byte_tables() -> list[list[int]]:
    t0 = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ (_POLY if c & 1 else 0)
        t0.append(c)
    tables = [t0]
    for _ in range(7):
        prev = tables[-1]
        tables.append([(v >> 8) ^ t0[v & 0xFF] for v in prev])
    return tables


_T = _byte_tables()
_T0 = _T[0]


def _pair(lo_t: list[int], hi_t: list[int]) -> list[int]:
    """Table over 16 bits: lo byte through lo_t, hi byte through hi_t."""
    return [h ^ l for h in hi_t for l in lo_t]


_LITTLE = sys.byteorder == "little"


# Lane-parallel CRC for large buffers: the buffer's first K*LANE bytes are cut into K lanes of
# LANE bytes, whose registers advance together one byte per step with bytes.translate (C speed);
# then the lanes are folded in order (register after lane k, shifted over LANE zero bytes, XOR lane k+1).
LANE = 256
_TB = [bytes((v >> (8 * j)) & 0xFF for v in _T0) for j in range(4)]  # byte j of the one-byte table


def _advance_zeros(c: int, n: int) -> int:
    for _ in range(n):
        c = (c >> 8) ^ _T0[c & 0xFF]
    return c


_BASIS = [_advance_zeros(1 << i, LANE) for i in range(32)]


def _shift_table(byte: int) -> list[int]:
    out = []
    for v in range(256):
        acc = 0
        for i in range(8):
            if v >> i & 1:
                acc ^= _BASIS[8 * byte + i]
        out.append(acc)
    return out


_S16 = [_pair(_shift_table(0), _shift_table(1)), _pair(_shift_table(2), _shift_table(3))]


def _xor(a: bytes, b: bytes, n: int) -> bytes:
    return (int.from_bytes(a, "little") ^ int.from_bytes(b, "little")).to_bytes(n, "little")


def _crc_lanes(c: int, mv: memoryview, k: int) -> int:
    """Register after the first k*LANE bytes of mv, starting from register c."""
    raw = bytes(mv[: k * LANE])
    zero = bytes(k)
    b0, b1, b2, b3 = (bytearray(zero) for _ in range(4))
    b0[0], b1[0], b2[0], b3[0] = c & 0xFF, (c >> 8) & 0xFF, (c >> 16) & 0xFF, c >> 24
    r0, r1, r2, r3 = bytes(b0), bytes(b1), bytes(b2), bytes(b3)
    t0, t1, t2, t3 = _TB
    end = k * LANE
    for t in range(LANE):
        idx = _xor(r0, raw[t:end:LANE], k)
        r0, r1, r2, r3 = _xor(r1, idx.translate(t0), k), _xor(r2, idx.translate(t1), k), _xor(r3, idx.translate(t2), k), idx.translate(t3)
    lanes = bytearray(4 * k)
    lanes[0::4], lanes[1::4], lanes[2::4], lanes[3::4] = r0, r1, r2, r3
    lo, hi = _S16
    st = 0
    for v in memoryview(lanes).cast("I"):
        st = lo[st & 0xFFFF] ^ hi[st >> 16] ^ v
    return st


def crc32c(data: bytes | bytearray | memoryview, crc: int = 0) -> int:
    """CRC32C (Castagnoli, reflected, init and final XOR 0xFFFFFFFF), chainable."""
    c = crc ^ 0xFFFFFFFF
    mv = memoryview(data).cast("B")
    if len(mv) >= 16 * LANE and _LITTLE:
        k = len(mv) // LANE
        c = _crc_lanes(c, mv, k)
        mv = mv[k * LANE:]
    t0 = _T0
    for b in mv:
        c = (c >> 8) ^ t0[(c ^ b) & 0xFF]
    return c ^ 0xFFFFFFFF


# ---------------------------------------------------------------- constants

MAGIC = b"PSUB"
HELLO, MSG, REQ, RES, CANCEL, CREDIT, PING, GOAWAY, BATCH, STREAM, AUTH = range(11)
TYPE_NAMES = ["HELLO", "MSG", "REQ", "RES", "CANCEL", "CREDIT", "PING", "GOAWAY", "BATCH", "STREAM", "AUTH"]
START, END, KEYED, ACK = 1, 2, 4, 1
ALLOWED_FLAGS = {HELLO: 0, MSG: 3, REQ: 7, RES: 3, CANCEL: 0, CREDIT: 0, PING: 1, GOAWAY: 0, BATCH: 0, STREAM: 7, AUTH: 1}
ZERO_ID = {HELLO, PING, GOAWAY, BATCH, AUTH}
NONZERO_ID = {MSG, REQ, RES, CANCEL, STREAM}
DATA_TYPES = {MSG, REQ, RES}

ERRNO = {
    1001: "ERR_TIMEOUT", 1002: "ERR_CONNECTION_CLOSED", 1003: "ERR_CONNECT", 1004: "ERR_KEEPALIVE",
    1005: "ERR_OFFLINE", 2001: "ERR_FLOW_CONTROL", 2002: "ERR_TOO_MANY_REQUESTS", 2003: "ERR_OVERLOADED",
    2004: "ERR_SLOW_PEER", 2005: "ERR_QUOTA", 2006: "ERR_POOL_EXHAUSTED", 2007: "ERR_RATE_LIMITED",
    3001: "ERR_PROTOCOL", 3002: "ERR_CHECKSUM", 3003: "ERR_VERSION", 3004: "ERR_FRAME_TOO_LARGE",
    4001: "ERR_MESSAGE_TOO_LARGE", 4002: "ERR_NO_ROUTE", 4003: "ERR_HANDLER", 4004: "ERR_CANCELLED",
    4005: "ERR_INVALID_ARGUMENT", 4006: "ERR_UNSUPPORTED_URL", 4007: "ERR_GOING_AWAY", 4008: "ERR_SOURCE",
    4009: "ERR_COMPRESSION", 4010: "ERR_RESUME", 4011: "ERR_UNAUTHORIZED", 4012: "ERR_EXISTS",
    4013: "ERR_NOT_FOUND",
}
E_PROTOCOL, E_CHECKSUM, E_VERSION, E_FRAME = 3001, 3002, 3003, 3004
E_FLOW, E_TOO_MANY, E_TOO_LARGE, E_CANCELLED, E_GOING_AWAY, E_CLOSED = 2001, 2002, 4001, 4004, 4007, 1002

# Section 4: key -> (name, default, min, max). Default of 9 depends on 2.
SETTINGS = {
    1: ("maxFrameSize", 1048576, 16384, 16777215),
    2: ("maxMessageSize", 268435456, 0, 2**53 - 1),
    3: ("checksum", 1, 0, 1),
    4: ("features", 0, 0, None),
    5: ("compression", 0, 0, None),
    6: ("connectionWindow", 16777216, 16384, 2**31 - 1),
    7: ("streamWindow", 4194304, 16384, 2**31 - 1),
    8: ("maxConcurrentRequests", 1024, 1, None),
    9: ("maxAssemblyBytes", None, 0, None),
    10: ("maxConcurrentStreams", 64, 0, None),
    11: ("maxCompressionRatio", 1024, 1, None),
}
NAME_TO_KEY = {v[0]: k for k, v in SETTINGS.items()}
MAX_CHUNKED_OPEN = 256  # 3.4: a sender keeps at most 256 chunked messages started
SINGLE_FRAME_CAP = 64 * 1024  # 3.2


class PointsubError(Exception):
    """An error with a wire errno (section 7)."""

    def __init__(self, errno: int, message: str = "", code: str | None = None, retry_after: int | None = None):
        self.errno = errno
        self.code = code or ERRNO.get(errno, "ERR_HANDLER")
        self.message = message
        self.retry_after = retry_after
        super().__init__(f"{self.code} ({errno}): {message}")

    def as_dict(self) -> dict:
        d = {"errno": self.errno, "code": self.code, "message": self.message}
        if self.retry_after is not None:
            d["retryAfterMs"] = self.retry_after
        if getattr(self, "cancel_errno", None) is not None:
            d["cancelErrno"] = self.cancel_errno
        return d


# ---------------------------------------------------------------- varints

def varint(n: int) -> bytes:
    if n < 0:
        raise ValueError("negative varint")
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def read_varint(buf: bytes, pos: int, max_bytes: int = 8, max_value: int | None = 2**53 - 1, what: str = "varint") -> tuple[int, int]:
    """Decodes a minimal unsigned LEB128 at buf[pos:]; ERR_PROTOCOL if truncated, over-long, non-minimal or too large.

    Section 2: every varint is at most 8 bytes and 2^53 - 1 unless its field says less.
    """
    value = 0
    shift = 0
    for i in range(max_bytes):
        if pos + i >= len(buf):
            raise PointsubError(E_PROTOCOL, f"truncated {what}")
        b = buf[pos + i]
        value |= (b & 0x7F) << shift
        shift += 7
        if b < 0x80:
            if b == 0 and i > 0:
                raise PointsubError(E_PROTOCOL, f"non-minimal {what}")
            if max_value is not None and value > max_value:
                raise PointsubError(E_PROTOCOL, f"{what} {value} too large")
            return value, pos + i + 1
    raise PointsubError(E_PROTOCOL, f"{what} longer than {max_bytes} bytes")


# ---------------------------------------------------------------- frames

def encode_frame(ftype: int, flags: int, sid: int, payload: bytes = b"", checksum: bool = True, corrupt_crc: bool = False) -> bytes:
    head = bytes([(ftype << 4) | flags]) + varint(sid) + varint(len(payload))
    body = head + payload
    if not checksum:
        return body
    c = crc32c(payload, crc32c(head))
    if corrupt_crc:
        c ^= 1
    return body + struct.pack(">I", c)


def encode_settings(settings: dict[int, int]) -> bytes:
    return b"".join(varint(k) + varint(v) for k, v in settings.items())


def decode_settings(payload: bytes) -> dict[int, int]:
    """Section 4: pairs, each key once, unknown keys ignored, values in range; ERR_PROTOCOL otherwise."""
    if len(payload) > 4096:
        raise PointsubError(E_PROTOCOL, "HELLO payload over 4096 bytes")
    seen: dict[int, int] = {}
    pos = 0
    while pos < len(payload):
        k, pos = read_varint(payload, pos, what="setting key")
        v, pos = read_varint(payload, pos, what="setting value")
        if k in seen:
            raise PointsubError(E_PROTOCOL, f"setting {k} twice")
        seen[k] = v
    out = {}
    for k, (name, default, lo, hi) in SETTINGS.items():
        if k in seen:
            v = seen[k]
            if v < lo or (hi is not None and v > hi):
                raise PointsubError(E_PROTOCOL, f"{name} = {v} out of range")
            out[k] = v
        else:
            out[k] = default
    if out[9] is None:
        out[9] = min(out[2] + 64 * 1024 * 1024, 2**53 - 1)
    return out


def full_settings(overrides: dict[int, int] | None) -> dict[int, int]:
    """Our settings with defaults filled (what the peer assumes for keys we leave out)."""
    return decode_settings(encode_settings(overrides or {}))


def goaway_payload(errno: int, reason: str) -> bytes:
    return struct.pack(">H", errno) + reason.encode()


def error_payload(err: PointsubError) -> bytes:
    """Section 3.5: status 1, errno, code, message (at most 1024 bytes), optional retryAfterMs."""
    code = err.code.encode()
    msg = err.message.encode()[:1024].decode("utf-8", "ignore").encode()  # cut on a character boundary
    out = b"\x01" + struct.pack(">H", err.errno) + varint(len(code)) + code + varint(len(msg)) + msg
    if err.retry_after is not None:
        out += varint(err.retry_after)
    return out


def decode_error(body: bytes) -> PointsubError:
    """Section 3.5 after the status byte."""
    if len(body) < 2:
        raise PointsubError(E_PROTOCOL, "error response without errno")
    errno = struct.unpack(">H", body[:2])[0]
    n, pos = read_varint(body, 2, 2, what="code length")  # section 2: at most 2 bytes (16383)
    if pos + n > len(body):
        raise PointsubError(E_PROTOCOL, "error code runs past the frame")
    code = body[pos:pos + n].decode("utf-8", "replace")
    pos += n
    n, pos = read_varint(body, pos, 2, what="message length")
    if pos + n > len(body):
        raise PointsubError(E_PROTOCOL, "error message runs past the frame")
    raw_message = body[pos:pos + n]
    message = raw_message.decode("utf-8", "replace")
    pos += n
    retry = None
    if pos < len(body):
        retry, pos = read_varint(body, pos, max_bytes=5, max_value=2**32 - 1, what="retryAfterMs")
    err = PointsubError(errno, message, code=code if errno not in ERRNO else ERRNO[errno], retry_after=retry)
    err.wire_message = raw_message
    return err


def validate_frame(ftype: int, flags: int, sid: int) -> None:
    """Section 2.1's table: type, flags, stream-id column."""
    if ftype > 10:
        raise PointsubError(E_PROTOCOL, f"unknown frame type {ftype}")
    if flags & ~ALLOWED_FLAGS[ftype]:
        raise PointsubError(E_PROTOCOL, f"flags {flags} not allowed on {TYPE_NAMES[ftype]}")
    if ftype == REQ and flags & KEYED and not flags & START:
        raise PointsubError(E_PROTOCOL, "KEYED without START")
    if ftype in ZERO_ID and sid != 0:
        raise PointsubError(E_PROTOCOL, f"{TYPE_NAMES[ftype]} on stream {sid}")
    if ftype in NONZERO_ID and sid == 0:
        raise PointsubError(E_PROTOCOL, f"{TYPE_NAMES[ftype]} on stream 0")


def parse_frames(buf: bytes, checksum: bool = True) -> tuple[list[tuple[int, int, int, bytes]], int]:
    """Best-effort parse of whole frames in buf (for raw tests). Returns (frames, bytes consumed)."""
    frames = []
    pos = 0
    while pos < len(buf):
        try:
            sid, p = read_varint(buf, pos + 1, 5)
            ln, p = read_varint(buf, p, 4)
        except PointsubError:
            break
        end = p + ln + (4 if checksum else 0)
        if end > len(buf):
            break
        frames.append((buf[pos] >> 4, buf[pos] & 15, sid, bytes(buf[p:p + ln])))
        pos = end
    return frames, pos


# ---------------------------------------------------------------- the peer

class Assembly:
    __slots__ = ("ftype", "total", "parts", "got", "route", "key", "status", "window_left", "unreturned")

    def __init__(self, ftype: int, total: int, window: int):
        self.ftype = ftype
        self.total = total
        self.parts: list[bytes] = []
        self.got = 0
        self.route = ""
        self.key: bytes | None = None
        self.status = 0
        self.window_left = window
        self.unreturned = 0


class Peer:
    """One pointsub connection (client or server side) over asyncio streams."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, is_client: bool,
                 settings: dict[int, int] | None = None, handlers: dict | None = None,
                 token: bytes | None = None, chunk_size: int = 256 * 1024, log=None):
        self.r = reader
        self.w = writer
        self.is_client = is_client
        self.announce = dict(settings or {})
        self.local = full_settings(self.announce)
        self.peer: dict[int, int] = {}
        self.handlers = handlers if handlers is not None else {}
        self.token = token
        self.chunk_size = chunk_size
        self.log = log or (lambda *a: None)
        self.checksum = True
        self.next_id = 1 if is_client else 2
        self.in_use: set[int] = set()
        # send side
        self.cond = asyncio.Condition()
        self.send_conn = 0
        self.send_stream: dict[int, int] = {}
        self.send_open_total = 0
        self.send_chunked_open = 0
        self.stopped: set[int] = set()  # ids whose sending the peer cancelled
        self.senders: set[int] = set()  # ids with a message of ours still being sent
        self.pending: dict[int, asyncio.Future] = {}
        self.cancelled_by_us: set[int] = set()
        self.requests_open = 0
        # receive side
        self.recv_conn_left = self.local[6]
        self.recv_conn_unreturned = 0
        self.asm: dict[int, Assembly] = {}
        self.asm_total = 0
        self.discarding: set[int] = set()
        self.serving: dict[int, asyncio.Task] = {}
        self.incoming_open = 0
        self.messages: asyncio.Queue = asyncio.Queue()
        self.message_log: list[bytes] = []
        self.pings: dict[bytes, asyncio.Future] = {}
        # close state
        self.goaway_sent = False
        self.peer_goaway: tuple[int, str] | None = None
        self.goaways_in: list[int] = []
        self.ended_ours = False
        self.error: PointsubError | None = None
        self.local_error: PointsubError | None = None
        self.eof = False
        self.closed = asyncio.get_running_loop().create_future()
        self.reader_task: asyncio.Task | None = None
        self.frames_in: list[tuple[int, int, int, int]] = []  # (type, flags, id, length), for reports
        self.credits_in: list[tuple[int, int]] = []
        self.max_frame_in = 0
        self.answered_at: dict[int, float] = {}
        self.cancels_in: list[tuple[int, int]] = []
        self.auto_goaway_reply = True
        self.last_request_id = 0
        self.streams_open = 0
        self.upload_ids: set[int] = set()
        self.streams_in: dict[int, dict] = {}
        self.stream_handlers: dict = {}
        self.handlers_once: dict = {}
        self.stream_cancels: list[tuple[int, int]] = []
        # Section 3.4: routes answered on a chunked REQ's START, before its body ended (RES payload by route),
        # and how each such request's body then ended on the wire: None (not yet), "END" or "CANCEL <errno>".
        self.early_routes: dict[str, bytes] = {}
        self.early_answered: dict[int, str | None] = {}
        # Routes answered with these raw RES frames (flags, payload): malformed answers on purpose; or by a
        # function (peer, id) returning the bytes to write in place of the answer (e.g. a BATCH holding it).
        self.raw_routes: dict = {}
        # Section 3.6 as a slow reader: a stream's credit is returned this many seconds after it fell due
        # (0: at once), so a sender that counts less than the receiver does overruns the stream window.
        self.hold_stream_credit = 0.0

    # ------------------------------------------------------------ basics

    def write(self, data: bytes) -> None:
        if not self.w.is_closing() and not self.ended_ours:
            self.w.write(data)

    def frame(self, ftype: int, flags: int, sid: int, payload: bytes = b"") -> bytes:
        return encode_frame(ftype, flags, sid, payload, self.checksum)

    def send_frame(self, ftype: int, flags: int, sid: int, payload: bytes = b"") -> None:
        self.write(self.frame(ftype, flags, sid, payload))

    async def drain(self) -> None:
        try:
            await self.w.drain()
        except (ConnectionError, RuntimeError):
            pass

    def alloc_id(self) -> int:
        while self.next_id in self.in_use:
            self.next_id += 2
        sid = self.next_id
        self.next_id += 2
        if self.next_id > 2**32 - 1:
            self.next_id = 1 if self.is_client else 2
        self.in_use.add(sid)
        return sid

    def mine(self, sid: int) -> bool:
        return (sid % 2 == 1) == self.is_client

    # ------------------------------------------------------------ handshake (1, 4, 4.1)

    async def handshake(self, preface: bytes | None = None, hello: bytes | None = None) -> None:
        self.write(preface if preface is not None else MAGIC + bytes([1, 1]))
        self.write(hello if hello is not None else encode_frame(HELLO, 0, 0, encode_settings(self.announce)))
        await self.drain()
        pre = await self.r.readexactly(6)
        if pre[:4] != MAGIC:
            raise await self.fail_local(PointsubError(E_PROTOCOL, "bad magic"))
        lo, hi = pre[4], pre[5]
        if lo > hi or not lo <= 1 <= hi:
            raise await self.fail_local(PointsubError(E_VERSION, f"peer speaks {lo}..{hi}"))
        ftype, flags, sid, payload = await self.read_frame()
        if ftype == GOAWAY:
            errno, reason = self.parse_goaway(payload)
            self.peer_goaway = (errno, reason)
            raise PointsubError(errno or E_GOING_AWAY, reason)
        if ftype != HELLO:
            raise await self.fail_local(PointsubError(E_PROTOCOL, f"{TYPE_NAMES[ftype]} before HELLO"))
        try:
            self.peer = decode_settings(payload)
        except PointsubError as e:
            raise await self.fail_local(e)
        self.checksum = not (self.local[3] == 0 and self.peer[3] == 0)
        self.send_conn = self.peer[6]
        if self.is_client and self.peer[4] & 4:
            self.send_frame(AUTH, 0, 0, self.token or b"")
            await self.drain()
            while True:
                ftype, flags, sid, payload = await self.read_frame()
                if ftype == AUTH and flags & ACK:
                    if payload:
                        raise await self.fail_local(PointsubError(E_PROTOCOL, "AUTH|ACK with a payload"))
                    break
                if ftype == GOAWAY:
                    errno, reason = self.parse_goaway(payload)
                    self.peer_goaway = (errno, reason)
                    raise PointsubError(errno, reason)
                if ftype == PING and not flags & ACK:
                    self.send_frame(PING, ACK, 0, payload)
                    continue
                raise await self.fail_local(PointsubError(E_PROTOCOL, f"{TYPE_NAMES[ftype]} before AUTH|ACK"))
        self.reader_task = asyncio.create_task(self.read_loop())

    # ------------------------------------------------------------ reading

    async def read_varint_stream(self, head: bytearray, max_bytes: int, max_value: int | None, what: str) -> int:
        start = len(head)
        for _ in range(max_bytes):
            b = (await self.r.readexactly(1))[0]
            head.append(b)
            if b < 0x80:
                break
        v, _ = read_varint(bytes(head), start, max_bytes, max_value, what)
        return v

    async def read_frame(self) -> tuple[int, int, int, bytes]:
        head = bytearray(await self.r.readexactly(1))
        ftype, flags = head[0] >> 4, head[0] & 15
        sid = await self.read_varint_stream(head, 5, 2**32 - 1, "stream id")
        length = await self.read_varint_stream(head, 4, None, "payload length")
        if length > self.local[1]:
            raise PointsubError(E_FRAME, f"frame of {length} bytes over maxFrameSize {self.local[1]}")
        validate_frame(ftype, flags, sid)
        payload = await self.r.readexactly(length) if length else b""
        if self.checksum or ftype == HELLO:
            got = struct.unpack(">I", await self.r.readexactly(4))[0]
            if crc32c(payload, crc32c(head)) != got:
                raise PointsubError(E_CHECKSUM, f"CRC32C mismatch on {TYPE_NAMES[ftype]} {sid}")
        self.frames_in.append((ftype, flags, sid, length))
        if ftype in DATA_TYPES:
            self.max_frame_in = max(self.max_frame_in, length)
        return ftype, flags, sid, payload

    async def read_loop(self) -> None:
        try:
            while True:
                try:
                    ftype, flags, sid, payload = await self.read_frame()
                except asyncio.IncompleteReadError as e:
                    self.eof = True
                    if e.partial:
                        self.finish(PointsubError(E_CLOSED, "byte stream ended inside a frame"))
                    elif self.peer_goaway is not None and self.peer_goaway[0] != 0:
                        self.finish(PointsubError(self.peer_goaway[0], self.peer_goaway[1]))
                    elif self.peer_goaway is None or self.in_flight():
                        self.finish(PointsubError(E_CLOSED, "byte stream ended" + (
                            f" with work in flight {self.flight_summary()}" if self.peer_goaway else " without GOAWAY")))
                    else:
                        self.finish(None)
                    return
                self.process(ftype, flags, sid, payload)
                self.maybe_end()
        except PointsubError as e:
            await self.fail_local(e)
        except (ConnectionError, OSError) as e:
            self.eof = True
            self.finish(PointsubError(E_CLOSED, str(e)))

    def parse_goaway(self, payload: bytes) -> tuple[int, str]:
        if len(payload) < 2:
            raise PointsubError(E_PROTOCOL, "GOAWAY shorter than 2 bytes")
        return struct.unpack(">H", payload[:2])[0], payload[2:].decode("utf-8", "replace")

    def process(self, ftype: int, flags: int, sid: int, payload: bytes) -> None:
        if ftype in DATA_TYPES:
            self.on_data(ftype, flags, sid, payload)
        elif ftype == CANCEL:
            if len(payload) != 2:
                raise PointsubError(E_PROTOCOL, "CANCEL payload is not 2 bytes")
            self.on_cancel(sid, struct.unpack(">H", payload)[0])
        elif ftype == CREDIT:
            n, pos = read_varint(payload, 0, 5, what="credit")
            if pos != len(payload) or not 1 <= n <= 2**31 - 1:
                raise PointsubError(E_PROTOCOL, "bad CREDIT payload")
            self.on_credit(sid, n)
        elif ftype == PING:
            if len(payload) != 8:
                raise PointsubError(E_PROTOCOL, "PING payload is not 8 bytes")
            if flags & ACK:
                fut = self.pings.pop(payload, None)
                if fut and not fut.done():
                    fut.set_result(time.monotonic())
            else:
                self.send_frame(PING, ACK, 0, payload)
        elif ftype == GOAWAY:
            errno, reason = self.parse_goaway(payload)
            self.log("GOAWAY in", errno, reason)
            self.goaways_in.append(errno)
            if self.peer_goaway is not None and errno == 0:
                return  # section 3.8: a repeated GOAWAY(0) is ignored; a non-zero one is fatal at any time
            self.peer_goaway = (errno, reason)
            if errno != 0:
                self.finish(PointsubError(errno, f"peer: {reason}"))
                self.close_transport()
                return
            if not self.goaway_sent and self.auto_goaway_reply:
                self.goaway_sent = True
                self.send_frame(GOAWAY, 0, 0, goaway_payload(0, ""))
        elif ftype == BATCH:
            self.on_batch(payload)
        elif ftype == HELLO:
            raise PointsubError(E_PROTOCOL, "second HELLO")
        elif ftype == STREAM:
            if self.mine(sid):
                raise PointsubError(E_PROTOCOL, f"STREAM on id {sid} of our parity")
            if not self.local[4] & 1:
                raise PointsubError(E_PROTOCOL, "STREAM frame, but features bit 1 was not announced")
            self.on_stream(flags, sid, payload)
        elif ftype == AUTH:
            raise PointsubError(E_PROTOCOL, "AUTH after the handshake")

    def on_batch(self, payload: bytes) -> None:
        if not payload:
            raise PointsubError(E_PROTOCOL, "empty BATCH")
        pos = 0
        while pos < len(payload):
            b = payload[pos]
            ftype, flags = b >> 4, b & 15
            # Section 3.9's order: type, flags and id, then the length against maxFrameSize, then the end.
            if ftype in (HELLO, BATCH):
                raise PointsubError(E_PROTOCOL, f"{TYPE_NAMES[ftype]} inside BATCH")
            sid, p = read_varint(payload, pos + 1, 5, 2**32 - 1, "stream id")
            validate_frame(ftype, flags, sid)
            ln, p = read_varint(payload, p, 4, what="payload length")
            if ln > self.local[1]:
                raise PointsubError(E_FRAME, "inner frame over maxFrameSize")
            if p + ln > len(payload):
                raise PointsubError(E_PROTOCOL, "inner frame runs past the BATCH")
            self.frames_in.append((ftype, flags, sid, ln))
            self.process(ftype, flags, sid, payload[p:p + ln])
            pos = p + ln

    # ------------------------------------------------------------ data frames (3.1, 3.6)

    def account_connection(self, length: int) -> None:
        if length > self.recv_conn_left:
            raise PointsubError(E_FLOW, f"{length} bytes beyond the {self.recv_conn_left} granted")
        self.recv_conn_left -= length
        # We consume (copy) every frame at once, so return credit in steps of a quarter window.
        self.recv_conn_unreturned += length
        if self.recv_conn_unreturned >= self.local[6] // 4:
            self.send_frame(CREDIT, 0, 0, varint(self.recv_conn_unreturned))
            self.recv_conn_left += self.recv_conn_unreturned
            self.recv_conn_unreturned = 0

    def on_data(self, ftype: int, flags: int, sid: int, payload: bytes) -> None:
        if ftype in (MSG, REQ) and self.mine(sid):
            raise PointsubError(E_PROTOCOL, f"{TYPE_NAMES[ftype]} on id {sid} of our parity")
        if ftype == RES and not self.mine(sid):
            raise PointsubError(E_PROTOCOL, f"RES on id {sid} of the peer's parity")
        self.account_connection(len(payload))
        a = self.asm.get(sid)
        if a is not None and a.ftype != ftype:
            raise PointsubError(E_PROTOCOL, f"{TYPE_NAMES[ftype]} on id {sid} open for {TYPE_NAMES[a.ftype]}")
        if flags & START:
            if a is not None:
                raise PointsubError(E_PROTOCOL, f"START on open id {sid}")
            if ftype == REQ and (sid in self.serving):
                raise PointsubError(E_PROTOCOL, f"REQ START on id {sid} still being answered")
            self.discarding.discard(sid)
            pos = 0
            chunked = not flags & END
            total = -1
            if chunked:
                total, pos = read_varint(payload, 0, 8, 2**53 - 1, "total")
                if total > self.local[2]:
                    raise PointsubError(E_TOO_LARGE, f"declared {total} over maxMessageSize {self.local[2]}")
                if self.asm_total + total > self.local[9]:
                    raise PointsubError(E_FLOW, "assembly budget exceeded")
            a = Assembly(ftype, total, self.local[7])
            if ftype == REQ:
                n, pos = read_varint(payload, pos, what="route length")
                if not 1 <= n <= 1024 or pos + n > len(payload):
                    raise PointsubError(E_PROTOCOL, "bad route length")
                try:
                    a.route = payload[pos:pos + n].decode("utf-8")
                except UnicodeDecodeError:
                    raise PointsubError(E_PROTOCOL, "route is not UTF-8") from None
                pos += n
                if flags & KEYED:
                    if not self.local[4] & 8:
                        raise PointsubError(E_PROTOCOL, "KEYED request, but features bit 8 was not announced")
                    n, pos = read_varint(payload, pos, 1, what="key length")
                    if not 1 <= n <= 64 or pos + n > len(payload):
                        raise PointsubError(E_PROTOCOL, "bad key length")
                    a.key = payload[pos:pos + n]
                    pos += n
                self.incoming_open += 1
                if self.incoming_open > self.local[8]:
                    raise PointsubError(E_TOO_MANY, "maxConcurrentRequests exceeded")
                early = self.early_routes.get(a.route) if chunked else None
                if early is not None:
                    # Answer at once (section 3.4 allows it); the rest of the body is counted and dropped
                    # until the requester ends its direction (it must stop: CANCEL(id, 4004)).
                    self.incoming_open -= 1
                    self.discarding.add(sid)
                    self.early_answered[sid] = None
                    self.send_frame(RES, START | END, sid, early)
                    return
            elif ftype == RES:
                if pos >= len(payload):
                    raise PointsubError(E_PROTOCOL, "RES without status")
                a.status = payload[pos]
                pos += 1
                if a.status > 1:
                    raise PointsubError(E_PROTOCOL, f"RES status {a.status}")
                if a.status == 1 and chunked:
                    raise PointsubError(E_PROTOCOL, "chunked error response")
            data = payload[pos:]
            if not chunked:
                if len(data) > self.local[2]:
                    raise PointsubError(E_TOO_LARGE, "single frame over maxMessageSize")
                a.parts.append(data)
                a.got = len(data)
                self.complete(sid, a)
                return
            if len(data) > total:
                raise PointsubError(E_PROTOCOL, "data runs past total")
            self.asm[sid] = a
            self.asm_total += total
            self.account_stream(sid, a, len(payload))
            a.parts.append(data)
            a.got = len(data)
            return
        if a is None:
            if sid in self.discarding:
                if flags & END and sid in self.early_answered:
                    self.early_answered[sid] = "END"
                    self.discarding.discard(sid)
                return  # frames of a message we refused or that was cancelled: counted, dropped
            if ftype == RES and sid in self.cancelled_by_us:
                return
            raise PointsubError(E_PROTOCOL, f"{TYPE_NAMES[ftype]} without START on id {sid} that is not open")
        self.account_stream(sid, a, len(payload))
        a.parts.append(payload)
        a.got += len(payload)
        if a.got > a.total:
            raise PointsubError(E_PROTOCOL, "data runs past total")
        if flags & END:
            if a.got != a.total:
                raise PointsubError(E_PROTOCOL, f"END after {a.got} of {a.total} bytes")
            del self.asm[sid]
            self.asm_total -= a.total
            self.complete(sid, a)

    def account_stream(self, sid: int, a: Assembly, length: int) -> None:
        if length > a.window_left:
            raise PointsubError(E_FLOW, f"{length} bytes beyond the message window on id {sid}")
        a.window_left -= length
        a.unreturned += length
        if a.unreturned >= self.local[7] // 4:
            self.send_frame(CREDIT, 0, sid, varint(a.unreturned))
            a.window_left += a.unreturned
            a.unreturned = 0

    def complete(self, sid: int, a: Assembly) -> None:
        data = b"".join(a.parts)
        if a.ftype == MSG:
            self.message_log.append(data)
            self.messages.put_nowait(data)
        elif a.ftype == REQ:
            self.serving[sid] = asyncio.create_task(self.serve(sid, a.route, data, a.key))
        else:
            self.answered_at[sid] = time.monotonic()
            if sid in self.senders and sid not in self.stopped:
                # Answered while our side is still sending: stop, and end our direction with CANCEL(id, 4004)
                # (sections 3.4 and 3.10: the same rule for request bodies and streams).
                self.stopped.add(sid)
                self.send_frame(CANCEL, 0, sid, struct.pack(">H", E_CANCELLED))
            fut = self.pending.pop(sid, None)
            self.free_id_if_done(sid)
            if sid in self.cancelled_by_us:
                self.cancelled_by_us.discard(sid)
                return
            self.wake()
            if fut is None:
                raise PointsubError(E_PROTOCOL, f"RES for id {sid} that awaits no answer")
            if not fut.done():
                if a.status == 0:
                    fut.set_result(data)
                else:
                    fut.set_exception(decode_error(data))

    def on_stream(self, flags: int, sid: int, payload: bytes) -> None:
        """Section 3.10 as a receiver: START, data (COMPRESSED or not), END; the content is read at once."""
        self.account_connection(len(payload))
        st = self.streams_in.get(sid)
        if flags & START:
            if st is not None or sid in self.serving or sid in self.asm:
                raise PointsubError(E_PROTOCOL, f"STREAM START on open id {sid}")
            self.discarding.discard(sid)
            total, pos = read_varint(payload, 0, 8, what="stream total")
            offset, pos = read_varint(payload, pos, 8, what="stream offset")
            if offset > 0:
                pos += 4  # prefixCrc: this receiver stores nothing, so it never resumes (offset must be 0 here)
                raise PointsubError(E_PROTOCOL, "resumed stream to a receiver that announced no resume")
            n, pos = read_varint(payload, pos, what="route length")
            if not 1 <= n <= 1024 or pos + n > len(payload):
                raise PointsubError(E_PROTOCOL, "bad stream route length")
            try:
                route = payload[pos:pos + n].decode("utf-8")
            except UnicodeDecodeError:
                raise PointsubError(E_PROTOCOL, "stream route is not UTF-8") from None
            pos += n
            if pos >= len(payload):
                raise PointsubError(E_PROTOCOL, "STREAM START without codec")
            codec = payload[pos]
            pos += 1
            if codec and not (codec <= 4 and self.local[5] & (1 << (codec - 1))):
                raise PointsubError(4009, f"codec {codec} not offered")
            n, pos = read_varint(payload, pos, what="meta length")
            if n > 4096 or pos + n > len(payload):
                raise PointsubError(E_PROTOCOL, "bad meta length")
            try:
                meta = json.loads(payload[pos:pos + n].decode("utf-8") or "{}")
            except (UnicodeDecodeError, ValueError):
                raise PointsubError(E_PROTOCOL, "stream metadata is not UTF-8 JSON") from None
            if not isinstance(meta, dict):
                raise PointsubError(E_PROTOCOL, "stream metadata is not a JSON object")
            pos += n
            self.incoming_open += 1
            if self.incoming_open > self.local[8] or len(self.streams_in) + 1 > self.local[10]:
                raise PointsubError(E_TOO_MANY, "too many requests or streams")
            st = {"total": total, "codec": codec, "route": route, "meta": meta, "parts": [payload[pos:]],
                  "got": len(payload) - pos, "window": self.local[7] - len(payload), "unreturned": len(payload),
                  "compressed": 0, "declaredOver": 0, "held": False}
            self.streams_in[sid] = st
            early = self.early_routes.get(route)
            if early is not None:
                # Answered at START (section 3.10); the rest is counted and dropped until the sender's END or CANCEL.
                del self.streams_in[sid]
                self.incoming_open -= 1
                self.discarding.add(sid)
                self.early_answered[sid] = None
                self.send_frame(RES, START | END, sid, early)
                return
            if route not in self.stream_handlers:
                # Early answer (section 3.10): the rest of this stream is counted and dropped.
                del self.streams_in[sid]
                self.incoming_open -= 1
                self.discarding.add(sid)
                self.send_frame(RES, START | END, sid, error_payload(PointsubError(4002, f"no stream handler for {route}")))
            return
        if st is None:
            if sid in self.discarding:
                if flags & END and self.early_answered.get(sid, "") is None:
                    self.early_answered[sid] = "END"
                    self.discarding.discard(sid)
                return
            raise PointsubError(E_PROTOCOL, f"STREAM frame on id {sid} that is not open")
        counted = len(payload)
        if flags & KEYED:  # COMPRESSED
            length, pos = read_varint(payload, 0, 4, what="COMPRESSED length")
            if not 1 <= length <= self.local[1]:
                raise PointsubError(E_PROTOCOL, f"COMPRESSED length {length} out of range")
            block = payload[pos:]
            if length > self.local[11] * len(block):
                raise PointsubError(4009, "COMPRESSED frame over maxCompressionRatio")
            counted = max(len(payload), length)
            if length > len(payload):
                st["declaredOver"] += 1
        if counted > st["window"]:
            raise PointsubError(E_FLOW, f"STREAM {sid}: {counted} bytes beyond the stream window")
        st["window"] -= counted
        st["unreturned"] += counted
        if flags & KEYED:
            wbits = {1: -15, 2: 31}.get(st["codec"])
            d = zlib.decompressobj(wbits) if wbits else None
            data = d.decompress(block, length + 1) if d else b""
            if d is None or len(data) != length or not d.eof:
                # The stream fails with ERR_PROTOCOL, the connection stays (section 3.10).
                del self.streams_in[sid]
                self.incoming_open -= 1
                self.discarding.add(sid)
                self.send_frame(CANCEL, 0, sid, struct.pack(">H", E_PROTOCOL))
                return
            st["compressed"] += 1
        elif flags & END:
            data = b""
        else:
            data = payload
        if data:
            st["parts"].append(data)
            st["got"] += len(data)
        if st["unreturned"] >= self.local[7] // 4 and not flags & END:
            if not self.hold_stream_credit:
                self.return_stream_credit(sid, st)
            elif not st["held"]:
                st["held"] = True
                asyncio.get_running_loop().call_later(self.hold_stream_credit, self.return_stream_credit, sid, st)
        if flags & END:
            del self.streams_in[sid]
            length, pos = read_varint(payload, 0, 8, what="END length")
            if pos + 4 != len(payload):
                raise PointsubError(E_PROTOCOL, "bad STREAM END payload")
            crc = struct.unpack(">I", payload[pos:])[0]
            content = b"".join(st["parts"])
            if length != len(content) or (st["total"] and st["total"] - 1 != length):
                err = PointsubError(E_PROTOCOL, f"stream of {len(content)} bytes, END says {length}")
            elif crc32c(content) != crc:
                err = PointsubError(E_CHECKSUM, "stream content CRC32C mismatch")
            else:
                err = None
            meta = dict(st["meta"], compressedFrames=st["compressed"], declaredOverPayload=st["declaredOver"])
            handler = self.stream_handlers[st["route"]]

            async def answer(content=content, meta=meta):
                if err is not None:
                    raise err
                return await handler(self, content, meta)
            self.handlers_once[sid] = answer
            self.serving[sid] = asyncio.create_task(self.serve(sid, "", content, None))

    def return_stream_credit(self, sid: int, st: dict) -> None:
        st["held"] = False
        if self.streams_in.get(sid) is st and st["unreturned"] and not self.closed.done():
            self.send_frame(CREDIT, 0, sid, varint(st["unreturned"]))
            st["window"] += st["unreturned"]
            st["unreturned"] = 0

    def free_id_if_done(self, sid: int) -> None:
        if sid not in self.pending and sid not in self.senders:
            self.in_use.discard(sid)

    def on_cancel(self, sid: int, errno: int) -> None:
        self.log("CANCEL in", sid, errno)
        self.cancels_in.append((sid, errno))
        if self.mine(sid):
            # Our request (final frame), or the receiver refusing our chunked MSG/REQ or our stream.
            if sid in self.upload_ids and sid in self.senders and sid not in self.stopped:
                # Section 3.10: our direction of a stream is still open: close it with CANCEL too.
                self.send_frame(CANCEL, 0, sid, struct.pack(">H", E_CANCELLED))
            self.stopped.add(sid)
            fut = self.pending.pop(sid, None)
            if sid in self.cancelled_by_us:
                self.cancelled_by_us.discard(sid)
            elif fut is not None and not fut.done():
                # Section 3.4: ERR_OVERLOADED, ERR_TIMEOUT and ERR_GOING_AWAY keep their code, others become ERR_CANCELLED.
                err = PointsubError(errno if errno in (2003, 1001, 4007) else E_CANCELLED, f"peer cancelled (errno {errno})")
                err.cancel_errno = errno
                fut.set_exception(err)
            if sid in self.asm:
                a = self.asm.pop(sid)
                self.asm_total -= a.total
            self.free_id_if_done(sid)
            self.wake()
            return
        # The peer's message, request or stream.
        if self.early_answered.get(sid, "") is None:
            self.early_answered[sid] = f"CANCEL {errno}"
            self.discarding.discard(sid)
            return
        if sid in self.streams_in:
            del self.streams_in[sid]
            self.incoming_open -= 1
            self.discarding.add(sid)
            self.stream_cancels.append((sid, errno))
            self.send_frame(CANCEL, 0, sid, struct.pack(">H", E_CANCELLED))  # our direction ends too (3.10)
            return
        a = self.asm.pop(sid, None)
        if a is not None:
            self.asm_total -= a.total
            self.discarding.add(sid)
            if a.ftype == REQ:
                self.incoming_open -= 1
                self.send_frame(CANCEL, 0, sid, struct.pack(">H", E_CANCELLED))
            return
        task = self.serving.pop(sid, None)
        if task is not None:
            task.cancel()
            self.incoming_open -= 1
            self.stopped.add(sid)
            self.send_frame(CANCEL, 0, sid, struct.pack(">H", E_CANCELLED))
            self.wake()

    def on_credit(self, sid: int, n: int) -> None:
        self.credits_in.append((sid, n))
        if sid == 0:
            self.send_conn += n
            if self.send_conn > 2**31 - 1:
                raise PointsubError(E_FLOW, "connection credit over 2^31 - 1")
        elif sid in self.send_stream:
            self.send_stream[sid] += n
            if self.send_stream[sid] > 2**31 - 1:
                raise PointsubError(E_FLOW, "message credit over 2^31 - 1")
        # else: an id that is no longer sending: ignored (3.6)
        self.wake()

    def wake(self) -> None:
        async def notify():
            async with self.cond:
                self.cond.notify_all()
        asyncio.ensure_future(notify())

    # ------------------------------------------------------------ serving requests

    async def serve(self, sid: int, route: str, data: bytes, key: bytes | None) -> None:
        try:
            raw = self.raw_routes.get(route)
            if callable(raw):
                self.write(raw(self, sid))
                return
            if raw is not None:
                for flags, payload in raw:
                    self.send_frame(RES, flags, sid, payload)
                return
            once = self.handlers_once.pop(sid, None)
            if once is not None:
                result = await once()
                await self.send_message(RES, sid, b"\x00", result if result is not None else b"")
                return
            handler = self.handlers.get(route)
            if handler is None:
                raise PointsubError(4002, f"no handler for route {route}")
            result = await handler(self, data, key)
            await self.send_message(RES, sid, b"\x00", result if result is not None else b"")
        except asyncio.CancelledError:
            return
        except PointsubError as e:
            if sid not in self.stopped:
                self.send_frame(RES, START | END, sid, error_payload(e))
        except Exception as e:  # a failing handler: ERR_HANDLER
            if sid not in self.stopped:
                self.send_frame(RES, START | END, sid, error_payload(PointsubError(4003, str(e))))
        finally:
            if self.serving.pop(sid, None) is not None:
                self.incoming_open -= 1
            self.stopped.discard(sid)
            self.maybe_end()

    # ------------------------------------------------------------ sending (3.1, 3.2, 3.6)

    def frame_limit(self) -> int:
        p = self.peer
        return min(p[1], p[7] // 2, p[6] // 2)

    async def wait_for(self, pred) -> None:
        async with self.cond:
            await self.cond.wait_for(lambda: self.error is not None or pred())
        if self.error is not None:
            raise self.error

    async def send_message(self, ftype: int, sid: int, prefix: bytes, data: bytes, on_frame=None, pace: float = 0.0) -> None:
        """Sends one MSG/REQ/RES message with `prefix` (route / status) on `sid`, honouring credit."""
        if len(data) > self.peer[2]:
            raise PointsubError(E_TOO_LARGE, f"{len(data)} bytes over the peer's maxMessageSize {self.peer[2]}")
        limit = self.frame_limit()
        self.senders.add(sid)
        try:
            if len(prefix) + len(data) <= min(SINGLE_FRAME_CAP, limit):
                payload = prefix + data
                await self.take_credit(sid, len(payload), False)
                self.send_frame(ftype, START | END, sid, payload)
                self.senders.discard(sid)  # the whole message is written: no longer in flight on our side
                if on_frame:
                    on_frame(0)
                await self.drain()
                return
            total = len(data)
            chunk = min(self.chunk_size if total > 1024 * 1024 else 64 * 1024, limit)
            await self.wait_for(lambda: self.send_chunked_open < MAX_CHUNKED_OPEN
                                and self.send_open_total + total <= self.peer[9])
            self.send_chunked_open += 1
            self.send_open_total += total
            self.send_stream[sid] = self.peer[7]
            try:
                head = varint(total) + prefix
                first = max(1, min(total - 1, chunk - len(head)))
                pos = 0
                index = 0
                while pos < total or index == 0:
                    if sid in self.stopped:
                        return
                    if index == 0:
                        payload = head + data[:first]
                        flags = START
                        pos = first
                    else:
                        n = min(chunk, total - pos)
                        payload = data[pos:pos + n]
                        pos += n
                        flags = END if pos >= total else 0
                    await self.take_credit(sid, len(payload), True)
                    if sid in self.stopped:
                        return
                    self.send_frame(ftype, flags, sid, payload)
                    if flags & END:
                        self.senders.discard(sid)
                    if on_frame:
                        on_frame(index)
                    index += 1
                    await self.drain()
                    if pace:
                        await asyncio.sleep(pace)
            finally:
                self.send_chunked_open -= 1
                self.send_open_total -= total
                self.send_stream.pop(sid, None)
                self.wake()
        finally:
            self.senders.discard(sid)
            if ftype == MSG:
                self.in_use.discard(sid)
            elif ftype == REQ:
                self.free_id_if_done(sid)
            self.maybe_end()

    async def take_credit(self, sid: int, length: int, chunked: bool, stream_length: int | None = None) -> None:
        sl = length if stream_length is None else stream_length

        def fits() -> bool:
            if sid in self.stopped:
                return True
            return self.send_conn >= length and (not chunked or self.send_stream.get(sid, 0) >= sl)
        await self.wait_for(fits)
        if sid in self.stopped:
            return
        self.send_conn -= length
        if chunked:
            self.send_stream[sid] -= sl

    def check_new_work(self) -> None:
        if self.error is not None:
            raise self.error
        if self.goaway_sent or self.peer_goaway is not None:
            raise PointsubError(E_GOING_AWAY, "the connection is closing")

    async def send(self, data: bytes, **kw) -> None:
        """A one-way message (MSG)."""
        self.check_new_work()
        sid = self.alloc_id()
        await self.send_message(MSG, sid, b"", data, **kw)

    async def request(self, route: str, data: bytes = b"", key: bytes | None = None, timeout: float = 10.0,
                      check: bool = True, **kw) -> bytes:
        """A request (REQ) and its answer; raises PointsubError for an error response or CANCEL."""
        if check:
            self.check_new_work()
        await self.wait_for(lambda: len(self.pending) < self.peer[8])
        sid = self.alloc_id()
        self.last_request_id = sid
        fut = asyncio.get_running_loop().create_future()
        self.pending[sid] = fut
        r = route.encode()
        prefix = varint(len(r)) + r
        ftype_flags_keyed = key is not None and self.peer[4] & 8
        if ftype_flags_keyed:
            prefix += varint(len(key)) + key
        sender = asyncio.create_task(self.send_keyed(sid, prefix, data, bool(ftype_flags_keyed), **kw))
        try:
            return await asyncio.wait_for(asyncio.shield(fut), timeout)
        except asyncio.TimeoutError:
            self.cancelled_by_us.add(sid)
            self.send_frame(CANCEL, 0, sid, struct.pack(">H", 1001))
            raise PointsubError(1001, "request timed out") from None
        finally:
            if not sender.done():
                try:
                    await asyncio.wait_for(sender, 5)
                except Exception:
                    pass
            elif sender.exception() and not fut.done():
                raise sender.exception()

    async def send_keyed(self, sid: int, prefix: bytes, data: bytes, keyed: bool, **kw) -> None:
        try:
            if not keyed:
                await self.send_message(REQ, sid, prefix, data, **kw)
                return
            # KEYED only on the START frame: send through send_message, then patch the flag byte.
            orig = self.send_frame

            def patched(ftype, flags, s, payload=b""):
                if ftype == REQ and s == sid and flags & START:
                    flags |= KEYED
                orig(ftype, flags, s, payload)
            self.send_frame = patched  # type: ignore[method-assign]
            try:
                await self.send_message(REQ, sid, prefix, data, **kw)
            finally:
                self.send_frame = orig  # type: ignore[method-assign]
        except PointsubError as e:
            fut = self.pending.pop(sid, None)
            self.free_id_if_done(sid)
            if fut and not fut.done():
                fut.set_exception(e)

    async def upload(self, route: str, content: bytes, meta: dict | None = None, known_total: bool = True,
                     end_crc: int | None = None, end_length: int | None = None, timeout: float = 15.0,
                     codec: int = 0, lie_length: int = 0, cancel_after: int | None = None, pace: float = 0.0,
                     on_frame=None) -> bytes:
        """Section 3.10: a STREAM (START, data, END with length and CRC32C of the content) and its RES.

        end_crc / end_length replace END's fields (to send a wrong one on purpose); codec 1 (deflate-raw)
        or 2 (gzip) sends COMPRESSED frames, whose declared length is off by lie_length; cancel_after
        sends CANCEL(id, 4008 ERR_SOURCE) after that many data frames instead of the rest.
        """
        self.check_new_work()
        if not self.peer[4] & 1:
            raise PointsubError(4005, "the peer does not take STREAM frames (features bit 1)")
        await self.wait_for(lambda: len(self.pending) < self.peer[8] and self.streams_open < self.peer[10])
        sid = self.alloc_id()
        self.last_request_id = sid
        fut = asyncio.get_running_loop().create_future()
        self.pending[sid] = fut
        self.streams_open += 1
        r = route.encode()
        m = json.dumps(meta).encode() if meta else b""
        start = (varint(len(content) + 1 if known_total else 0) + varint(0) + varint(len(r)) + r + bytes([codec])
                 + varint(len(m)) + m)
        end = varint(len(content) if end_length is None else end_length) + struct.pack(
            ">I", crc32c(content) if end_crc is None else end_crc)
        limit = self.frame_limit()
        chunk = min(self.chunk_size, limit)
        self.senders.add(sid)
        self.upload_ids.add(sid)
        self.send_stream[sid] = self.peer[7]
        try:
            frames = [(START, start, 0)]
            for i in range(0, len(content), chunk):
                piece = content[i:i + chunk]
                if codec:
                    wbits = -15 if codec == 1 else 31
                    z = zlib.compressobj(1, zlib.DEFLATED, wbits)
                    block = z.compress(piece) + z.flush()
                    if len(piece) + lie_length <= self.peer[11] * len(block):
                        frames.append((KEYED, varint(len(piece) + lie_length) + block, len(piece) + lie_length))
                        continue
                frames.append((0, piece, 0))
            frames.append((END, end, 0))
            self.last_upload_frames = [0, len(frames)]  # frames sent, frames planned
            for n, (flags, payload, inflated) in enumerate(frames):
                if cancel_after is not None and n == cancel_after + 1:
                    self.stopped.add(sid)
                    self.send_frame(CANCEL, 0, sid, struct.pack(">H", 4008))
                    break
                # A COMPRESSED frame counts against the stream window as max(payload, declared length).
                await self.take_credit(sid, len(payload), True, stream_length=max(len(payload), inflated))
                if sid in self.stopped:
                    break  # answered early or cancelled: CANCEL already sent
                self.send_frame(STREAM, flags, sid, payload)
                self.last_upload_frames[0] += 1
                await self.drain()
                if on_frame is not None:
                    on_frame(n)
                if pace:
                    await asyncio.sleep(pace)
        finally:
            self.senders.discard(sid)
            self.upload_ids.discard(sid)
            self.send_stream.pop(sid, None)
            self.streams_open -= 1
            self.wake()
        try:
            return await asyncio.wait_for(asyncio.shield(fut), timeout)
        finally:
            self.free_id_if_done(sid)

    async def ping(self, timeout: float = 5.0) -> float:
        payload = struct.pack(">Q", int(time.monotonic_ns()) & (2**64 - 1))
        fut = asyncio.get_running_loop().create_future()
        self.pings[payload] = fut
        t0 = time.monotonic()
        self.send_frame(PING, 0, 0, payload)
        await self.drain()
        t1 = await asyncio.wait_for(fut, timeout)
        return (t1 - t0) * 1000

    # ------------------------------------------------------------ closing (3.8)

    def flight_summary(self) -> str:
        return (f"(pending {sorted(self.pending)}, sending {sorted(self.senders)}, "
                f"receiving {sorted(self.asm)}, serving {sorted(self.serving)})")

    def in_flight(self) -> bool:
        sending = any(sid not in self.stopped for sid in self.senders)
        return bool(self.pending or sending or self.asm or self.serving or self.streams_in)

    def maybe_end(self) -> None:
        if self.goaway_sent and self.peer_goaway is not None and self.peer_goaway[0] == 0 \
                and not self.in_flight() and not self.ended_ours:
            self.ended_ours = True
            self.log("ending our byte stream")
            try:
                self.w.write_eof()
            except (OSError, RuntimeError):
                pass

    async def goaway(self, reason: str = "") -> None:
        if not self.goaway_sent:
            self.goaway_sent = True
            self.send_frame(GOAWAY, 0, 0, goaway_payload(0, reason))
            await self.drain()
        self.maybe_end()

    async def close(self, timeout: float = 5.0) -> PointsubError | None:
        await self.goaway("bye")
        return await self.wait_closed(timeout)

    async def wait_closed(self, timeout: float = 5.0) -> PointsubError | None:
        try:
            return await asyncio.wait_for(asyncio.shield(self.closed), timeout)
        except asyncio.TimeoutError:
            self.close_transport()
            return PointsubError(1001, "connection did not close in time")

    async def fail_local(self, err: PointsubError) -> PointsubError:
        """We found a fatal error: GOAWAY(errno) then close (section 6)."""
        self.log("fatal", err)
        self.local_error = err
        if not self.ended_ours:
            self.goaway_sent = True
            self.send_frame(GOAWAY, 0, 0, goaway_payload(err.errno, err.message[:200]))
            await self.drain()
        self.finish(err)
        self.close_transport()
        return err

    def close_transport(self) -> None:
        try:
            self.w.close()
        except Exception:
            pass

    def finish(self, err: PointsubError | None) -> None:
        if self.closed.done():
            return
        self.error = err or PointsubError(E_CLOSED, "closed")
        for fut in list(self.pending.values()):
            if not fut.done():
                fut.set_exception(self.error)
        self.pending.clear()
        for task in list(self.serving.values()):
            task.cancel()
        self.closed.set_result(err)
        self.wake()
        self.close_transport()


# ---------------------------------------------------------------- connecting / serving

async def connect(host: str, port: int, settings: dict | None = None, **kw) -> Peer:
    reader, writer = await asyncio.open_connection(host, port, limit=1 << 20)
    peer = Peer(reader, writer, True, settings, **kw)
    try:
        await asyncio.wait_for(peer.handshake(), 5)
    except BaseException:
        writer.close()
        raise
    return peer


def settings_from_names(d: dict | None) -> dict[int, int]:
    return {NAME_TO_KEY[k]: int(v) for k, v in (d or {}).items()}


def pattern(n: int, seed: int = 0) -> bytes:
    """Deterministic pseudo-random test content."""
    return random.Random(seed).randbytes(n)


def sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def flat_frames(buf: bytes) -> list[tuple[int, int, int, bytes]]:
    """The whole frames in buf (after the preface), BATCHes opened."""
    flat = []
    for t, f, s, p in parse_frames(buf)[0]:
        flat += parse_frames(p, checksum=False)[0] if t == BATCH else [(t, f, s, p)]
    return flat


def answered_last_ping(flat: list[tuple[int, int, int, bytes]]) -> bool:
    """PING|ACK "12345678" arrived and no GOAWAY (after a GOAWAY the caller reads on to the end of the stream)."""
    acked = any(i[0] == PING and i[1] & ACK and i[3] == b"12345678" for i in flat)
    return acked and not any(i[0] == GOAWAY for i in flat)


def answered_last_ping_and_auth(flat: list[tuple[int, int, int, bytes]]) -> bool:
    return answered_last_ping(flat) and any(i[0] == AUTH and i[1] & ACK for i in flat)


def name_with_inner(t: int, p: bytes) -> str:
    if t == BATCH:
        inner, _ = parse_frames(p, checksum=False)
        return "BATCH[" + ",".join(TYPE_NAMES[i[0]] if i[0] < 11 else str(i[0]) for i in inner) + "]"
    return TYPE_NAMES[t] if t < 11 else str(t)


async def raw_session(host: str, port: int, send: bytes, after_hello: bool = True, read_timeout: float = 3.0,
                      hello_settings: dict[int, int] | None = None, stop=answered_last_ping) -> dict:
    """Opens a connection, optionally completes a correct handshake, writes `send`, and reads until EOF.

    Returns the frames the server sent (after its preface), any GOAWAY errno, and whether it closed.
    """
    reader, writer = await asyncio.open_connection(host, port)
    out: dict = {"goaway": None, "closed": False, "frames": []}
    try:
        if after_hello:
            writer.write(MAGIC + b"\x01\x01" + encode_frame(HELLO, 0, 0, encode_settings(hello_settings or {})))
        writer.write(send)
        await writer.drain()
        buf = bytearray()
        deadline = time.monotonic() + read_timeout
        while time.monotonic() < deadline:
            try:
                chunk = await asyncio.wait_for(reader.read(65536), max(0.01, deadline - time.monotonic()))
            except asyncio.TimeoutError:
                break
            except (ConnectionError, OSError):
                out["closed"] = True
                out["reset"] = True
                break
            if not chunk:
                out["closed"] = True
                break
            buf += chunk
            if stop(flat_frames(bytes(buf[6:]))):
                break  # our last PING was answered: the connection is open and served everything before it
        out["preface"] = buf[:6].hex()
        frames, _ = parse_frames(bytes(buf[6:]))
        out["frames"] = [[name_with_inner(t, p), f, s, len(p)] for t, f, s, p in frames]
        for t, f, s, p in frames:
            if t == BATCH:
                inner, _ = parse_frames(p, checksum=False)
                frames += inner
            if t == GOAWAY and len(p) >= 2:
                out["goaway"] = struct.unpack(">H", p[:2])[0]
                out["reason"] = p[2:].decode("utf-8", "replace")
    finally:
        writer.close()
    return out


# ---------------------------------------------------------------- scenarios (driven by the test)

async def sc_echo(a: dict) -> dict:
    p = await connect(a["host"], a["port"], settings_from_names(a.get("settings")))
    sizes = a["sizes"]
    results = []
    for i, n in enumerate(sizes):
        data = pattern(n, i)
        t0 = time.monotonic()
        got = await p.request(a.get("route", "/echo"), data, timeout=20)
        results.append({"size": n, "ok": got == data, "ms": round((time.monotonic() - t0) * 1000)})
    err = await p.close()
    return {"results": results, "maxFrameIn": p.max_frame_in, "closeError": err.as_dict() if err else None,
            "creditsIn": len(p.credits_in), "checksum": p.checksum,
            "peerSettings": {SETTINGS[k][0]: v for k, v in p.peer.items()}}


async def sc_messages(a: dict) -> dict:
    p = await connect(a["host"], a["port"], settings_from_names(a.get("settings")))
    sent = []
    for i, n in enumerate(a["sizes"]):
        data = pattern(n, 100 + i)
        await p.send(data)
        sent.append({"size": n, "sha": sha(data)})
    # One BATCH of two tiny messages, as section 3.9 allows.
    ids = [p.alloc_id(), p.alloc_id()]
    inner = b"".join(encode_frame(MSG, START | END, s, d, checksum=False) for s, d in zip(ids, [b"a", b"b"]))
    await p.take_credit(0, 2, False)
    p.send_frame(BATCH, 0, 0, inner)
    p.in_use.difference_update(ids)
    sent += [{"size": 1, "sha": sha(b"a")}, {"size": 1, "sha": sha(b"b")}]
    count = json.loads(await p.request("/count", b""))
    err = await p.close()
    return {"sent": sent, "countSeenBeforeRequest": count, "closeError": err.as_dict() if err else None,
            "checksum": p.checksum}


async def sc_push(a: dict) -> dict:
    """The server pushes one-way messages to us (chunked, flow-controlled by our small windows)."""
    p = await connect(a["host"], a["port"], settings_from_names(a.get("settings")))
    answer = json.loads(await p.request("/push", json.dumps(a["sizes"]).encode(), timeout=20))
    got = []
    for _ in a["sizes"]:
        m = await asyncio.wait_for(p.messages.get(), 20)
        got.append({"size": len(m), "sha": sha(m)})
    err = await p.close()
    return {"answer": answer, "got": got, "maxFrameIn": p.max_frame_in, "closeError": err.as_dict() if err else None}


async def sc_no_route(a: dict) -> dict:
    p = await connect(a["host"], a["port"])
    out = {}
    for label, n in (("single", 5), ("chunked", 200_000)):
        frames: list[int] = []
        answered_after: list[int] = []
        try:
            await p.request("/no/such/route", pattern(n), timeout=10, on_frame=frames.append)
            out[label] = {"error": None}
        except PointsubError as e:
            out[label] = {"error": e.as_dict()}
        out[label]["framesSent"] = len(frames)
    # Which of our body frames had been sent when the error response arrived (section 3.4: pointsub answers after END).
    t_frames: list[float] = []
    sid = p.next_id
    try:
        await p.request("/no/such/route", pattern(300_000), timeout=10, pace=0.03,
                        on_frame=lambda i: t_frames.append(time.monotonic()))
    except PointsubError:
        pass
    t_answer = p.answered_at.get(sid, 0.0)
    out["earlyAnswer"] = {"bodyFrames": len(t_frames), "sentBeforeAnswer": sum(1 for t in t_frames if t < t_answer)}
    try:
        out["pingAfter"] = (await p.ping()) >= 0
    except Exception as e:  # noqa: BLE001
        out["pingAfter"] = repr(e)
    out["handler"] = None
    try:
        await p.request("/fail", b"x")
    except PointsubError as e:
        out["handler"] = e.as_dict()
    try:
        await p.request("/fail-long", b"x")
    except PointsubError as e:
        raw = getattr(e, "wire_message", b"")
        try:
            raw.decode("utf-8")
            valid = True
        except UnicodeDecodeError:
            valid = False
        out["longError"] = {"errno": e.errno, "bytes": len(raw), "validUtf8": valid}
    err = await p.close()
    out["closeError"] = err.as_dict() if err else None
    return out


async def sc_ping(a: dict) -> dict:
    p = await connect(a["host"], a["port"])
    rtts = [await p.ping() for _ in range(3)]
    err = await p.close()
    return {"rtts": len(rtts), "allPositive": all(r >= 0 for r in rtts), "closeError": err.as_dict() if err else None}


async def sc_size_boundary(a: dict) -> dict:
    """Section 3.2: how the server frames answers around 64 KiB: [flags, payload length] of each RES frame."""
    p = await connect(a["host"], a["port"])
    out = {}
    for n in a["sizes"]:
        got = await p.request("/echo", pattern(n, n))
        sid = p.last_request_id
        out[str(n)] = {"ok": len(got) == n, "frames": [[f, ln] for t, f, s, ln in p.frames_in if t == RES and s == sid]}
    err = await p.close()
    out["closeError"] = err.as_dict() if err else None
    return out


async def sc_goaway(a: dict) -> dict:
    """GOAWAY while our chunked request body is still being sent; the request must finish.

    who = "server": a request to /close-me makes the server close the session gracefully.
    who = "client": we send GOAWAY(0) ourselves after the body's first frames.
    """
    # Streams in 64 KiB frames, as many as a chunked request's: the body takes a while to send.
    p = await connect(a["host"], a["port"], settings_from_names(a.get("settings")), chunk_size=64 * 1024)
    data = pattern(a["size"], 7)
    first_frames = asyncio.Event()

    def on_frame(i):
        if i == 1:
            first_frames.set()

    if a.get("kind") == "stream":
        # Section 3.8: a stream is in flight from its START; it finishes after GOAWAY like a request.
        big = asyncio.create_task(p.upload("/upload", data, timeout=20, on_frame=on_frame, pace=a.get("pace", 0.02)))
    else:
        big = asyncio.create_task(p.request("/echo", data, timeout=20, on_frame=on_frame, pace=a.get("pace", 0.02)))
    await asyncio.wait_for(first_frames.wait(), 10)
    out: dict = {}
    if a["who"] == "server":
        out["closeMe"] = (await p.request("/close-me", b"")).decode()
    else:
        await p.goaway("client leaving")
    for _ in range(500):
        if p.peer_goaway is not None:
            break
        await asyncio.sleep(0.01)
    out["peerGoawayBeforeBodyEnd"] = p.peer_goaway is not None and not big.done()
    out["peerGoaway"] = list(p.peer_goaway) if p.peer_goaway else None
    try:
        p.check_new_work()
        out["newWorkRefused"] = False
    except PointsubError as e:
        out["newWorkRefused"] = e.code
    try:
        got = await big
        out["echoOk"] = got == data if a.get("kind") != "stream" else json.loads(got)["sha"] == sha(data)
    except PointsubError as e:
        out["echoOk"] = False
        out["echoError"] = e.as_dict()
    if a["who"] == "server":
        await p.goaway()
    err = await p.wait_closed(10)
    out["closeError"] = err.as_dict() if err else None
    out["eof"] = p.eof
    return out


async def sc_keyed(a: dict) -> dict:
    p = await connect(a["host"], a["port"])
    out = {"peerFeatures": p.peer[4]}
    out["answer"] = (await p.request("/key", b"data", key=b"order-42")).decode()
    err = await p.close()
    out["closeError"] = err.as_dict() if err else None
    return out


async def sc_malformed(a: dict) -> dict:
    """Each case on its own connection; reports the server's GOAWAY errno and whether it closed."""
    host, port = a["host"], a["port"]
    good_hello = encode_frame(HELLO, 0, 0, b"")
    cases: dict[str, tuple[bytes, bool, dict | None]] = {
        "bad_magic": (b"XSUB\x01\x01" + good_hello, False, None),
        "version_2_only": (MAGIC + b"\x02\x02" + good_hello, False, None),
        "inverted_range": (MAGIC + b"\x02\x01" + good_hello, False, None),
        "hello_bad_crc": (MAGIC + b"\x01\x01" + encode_frame(HELLO, 0, 0, b"", corrupt_crc=True), False, None),
        "hello_out_of_range": (MAGIC + b"\x01\x01" + encode_frame(HELLO, 0, 0, encode_settings({1: 100})), False, None),
        "hello_duplicate_key": (MAGIC + b"\x01\x01" + encode_frame(HELLO, 0, 0, b"\x03\x01\x03\x01"), False, None),
        "hello_unknown_key_ok": (MAGIC + b"\x01\x01" + encode_frame(HELLO, 0, 0, encode_settings({99: 5}))
                                 + encode_frame(PING, 0, 0, b"12345678"), False, None),
        # Section 2, varint bounds: every varint is minimal, at most 8 bytes and 2^53 - 1, unknown HELLO keys too.
        "hello_unknown_value_2_53": (MAGIC + b"\x01\x01" + encode_frame(HELLO, 0, 0, varint(99) + varint(2**53)), False, None),
        "hello_unknown_value_9_bytes": (MAGIC + b"\x01\x01" + encode_frame(HELLO, 0, 0, varint(99) + b"\x80" * 8 + b"\x01"), False, None),
        "hello_unknown_value_max_ok": (MAGIC + b"\x01\x01" + encode_frame(HELLO, 0, 0, varint(2**53 - 1) + varint(2**53 - 1))
                                       + encode_frame(PING, 0, 0, b"12345678"), False, None),
        "hello_nonminimal_value": (MAGIC + b"\x01\x01" + encode_frame(HELLO, 0, 0, b"\x03\x81\x00"), False, None),
        "hello_nonminimal_key": (MAGIC + b"\x01\x01" + encode_frame(HELLO, 0, 0, b"\x83\x00\x01"), False, None),
        "msg_before_hello": (MAGIC + b"\x01\x01" + encode_frame(MSG, 3, 1, b"hi") + good_hello, False, None),
        "bad_crc": (encode_frame(MSG, 3, 1, b"hi", corrupt_crc=True), True, None),
        "zero_crc_checked": (encode_frame(MSG, 3, 1, b"hi")[:-4] + b"\x00\x00\x00\x00", True, None),
        "type_11": (encode_frame(11, 0, 0, b""), True, None),
        "msg_flag_4": (encode_frame(MSG, 7, 1, b"hi"), True, None),
        "keyed_without_start": (encode_frame(REQ, 4, 1, b"hi"), True, None),
        "msg_even_id": (encode_frame(MSG, 3, 2, b"hi"), True, None),
        # Section 2.2: REQ and STREAM starts carry the sender's parity too.
        "req_even_id": (encode_frame(REQ, 3, 4, b"\x05/echohi"), True, None),
        "stream_even_id": (encode_frame(STREAM, START, 2, b"\x00\x00\x07/upload\x00\x00"), True, None),
        "msg_id_0": (encode_frame(MSG, 3, 0, b"hi"), True, None),
        "ping_id_1": (encode_frame(PING, 0, 1, b"12345678"), True, None),
        "nonminimal_id": (bytes([0x13, 0x81, 0x00, 0x02]) + b"hi", True, None),
        "frame_too_large": (bytes([0x13, 0x01]) + varint(2 * 1024 * 1024 + 1), True, None),
        "credit_zero": (encode_frame(CREDIT, 0, 0, b"\x00"), True, None),
        "credit_trailing": (encode_frame(CREDIT, 0, 0, b"\x01\x00"), True, None),
        "ping_7_bytes": (encode_frame(PING, 0, 0, b"1234567"), True, None),
        "cancel_3_bytes": (encode_frame(CANCEL, 0, 1, b"\x0f\xa4\x00"), True, None),
        "goaway_1_byte": (encode_frame(GOAWAY, 0, 0, b"\x00"), True, None),
        "second_hello": (good_hello, True, None),
        "empty_batch": (encode_frame(BATCH, 0, 0, b""), True, None),
        "hello_in_batch": (encode_frame(BATCH, 0, 0, encode_frame(HELLO, 0, 0, b"", checksum=False)), True, None),
        "batch_inner_overrun": (encode_frame(BATCH, 0, 0, bytes([0x13, 0x01, 0x05]) + b"hi"), True, None),
        "not_open_id": (encode_frame(MSG, 2, 1, b"hi"), True, None),
        "end_before_total": (encode_frame(MSG, 1, 1, varint(10) + b"abc") + encode_frame(MSG, 2, 1, b"de"), True, None),
        "data_past_total": (encode_frame(MSG, 1, 1, varint(3) + b"ab") + encode_frame(MSG, 2, 1, b"cdef"), True, None),
        "start_on_open_id": (encode_frame(MSG, 1, 1, varint(10) + b"ab") + encode_frame(MSG, 1, 1, varint(10) + b"ab"), True, None),
        "total_over_max_message": (encode_frame(MSG, 1, 1, varint(300 * 1024 * 1024) + b"ab"), True, None),
        "req_route_len_0": (encode_frame(REQ, 3, 1, b"\x00hi"), True, None),
        "res_unknown_id": (encode_frame(RES, 3, 2, b"\x00hi"), True, None),
        "cancel_unknown_id_ok": (encode_frame(CANCEL, 0, 1, b"\x0f\xa4") + encode_frame(PING, 0, 0, b"12345678"), True, None),
        "credit_unknown_id_ok": (encode_frame(CREDIT, 0, 9, b"\x10") + encode_frame(PING, 0, 0, b"12345678"), True, None),
        "batch_inner_over_max_frame": (encode_frame(BATCH, 0, 0, bytes([0x13, 0x01]) + varint(2 * 1024 * 1024) + b"hi"), True, None),
        "batch_inner_truncated_header": (encode_frame(BATCH, 0, 0, bytes([0x13, 0x81])), True, None),
        "compressed_on_codec_0": (encode_frame(STREAM, START, 1, b"\x00\x00\x07/upload\x00\x00")
                                  + encode_frame(STREAM, 4, 1, varint(10) + bytes(10)), True, None),
        # Section 3.1: one message per direction on an id at a time, whatever its type.
        "start_other_type_on_open_id": (encode_frame(MSG, 1, 1, varint(10) + b"ab") + encode_frame(REQ, 3, 1, b"\x05/echo"), True, None),
        "stream_start_on_open_msg_id": (encode_frame(MSG, 1, 1, varint(10) + b"ab")
                                        + encode_frame(STREAM, START, 1, b"\x00\x00\x07/upload\x00\x00"), True, None),
        "continuation_of_other_type": (encode_frame(MSG, 1, 1, varint(4) + b"ab") + encode_frame(REQ, 2, 1, b"cd"), True, None),
        "stream_data_after_end": (encode_frame(STREAM, START, 1, b"\x00\x00\x07/upload\x00\x00")
                                  + encode_frame(STREAM, END, 1, b"\x00" + bytes(4)) + encode_frame(STREAM, 0, 1, b"late"), True, None),
        # Section 3.1: a route is UTF-8; bytes that are not are ERR_PROTOCOL (never a lenient decoding).
        "req_route_not_utf8": (encode_frame(REQ, 3, 1, b"\x03/\xff\xfe"), True, None),
        "stream_route_not_utf8": (encode_frame(STREAM, START, 1, b"\x00\x00\x03/\xff\xfe\x00\x00"), True, None),
        "stream_meta_not_json_object": (encode_frame(STREAM, START, 1, b"\x00\x00\x07/upload\x00\x02[]"), True, None),
        "stream_offset_past_total": (encode_frame(STREAM, START, 1, b"\x05\x09" + bytes(4) + b"\x07/upload\x00\x00"), True, None),
        # Section 4.1, roles swapped: a client that sets features bit 4 is authenticated to by the server (our ACK
        # is written at once; the server reads it after our HELLO, i.e. after it sent its AUTH).
        "client_requires_auth": (encode_frame(AUTH, ACK, 0, b"") + encode_frame(PING, 0, 0, b"12345678"), True, {4: 4}),
        "total_nonminimal": (encode_frame(MSG, 1, 1, b"\x83\x00" + b"abc"), True, None),
        "total_2_53": (encode_frame(MSG, 1, 1, varint(2**53) + b"abc"), True, None),
        "route_len_nonminimal": (encode_frame(REQ, 3, 1, b"\x85\x00/echo"), True, None),
        "credit_nonminimal": (encode_frame(CREDIT, 0, 0, b"\x81\x00"), True, None),
        "credit_2_31": (encode_frame(CREDIT, 0, 0, varint(2**31)), True, None),
        "length_nonminimal": (bytes([0x13, 0x01, 0x82, 0x00]) + b"hi", True, None),
        "stream_total_9_bytes": (encode_frame(STREAM, START, 1, b"\x80" * 8 + b"\x01" + b"\x00\x07/upload\x00\x00"), True, None),
        "stream_end_nonminimal": (encode_frame(STREAM, START, 1, b"\x00\x00\x07/upload\x00\x00")
                                  + encode_frame(STREAM, END, 1, b"\x80\x00" + bytes(4)), True, None),
        "auth_after_handshake": (encode_frame(AUTH, 0, 0, b"tok"), True, None),
        # Section 3.10 / 6: a codec the receiver did not offer; COMPRESSED length checks before inflating.
        "stream_unknown_codec": (encode_frame(STREAM, START, 1, b"\x00\x00\x07/upload\x10\x00"), True, None),
        "compressed_over_ratio": (encode_frame(STREAM, START, 1, b"\x00\x00\x07/upload\x01\x00")
                                  + encode_frame(STREAM, 4, 1, varint(1_000_000) + bytes(10)), True, None),
        "compressed_over_max_frame": (encode_frame(STREAM, START, 1, b"\x00\x00\x07/upload\x01\x00")
                                      + encode_frame(STREAM, 4, 1, varint(2_000_000) + bytes(4000)), True, None),
    }
    only = a.get("only")
    out = {}
    results = await asyncio.gather(*[
        raw_session(host, port, data, after, a.get("timeout", 2.0), hello)
        for name, (data, after, hello) in cases.items() if not only or name in only
    ])
    for name, r in zip([n for n in cases if not only or n in only], results):
        out[name] = {"goaway": r["goaway"], "closed": r["closed"], "reason": r.get("reason"),
                     "types": [f[0] for f in r["frames"]], "preface": r.get("preface")}
    return out


async def sc_probes(a: dict) -> dict:
    """Inputs the spec leaves open or that a lenient receiver must accept; each followed by a PING."""
    ping = encode_frame(PING, 0, 0, b"12345678")
    hello = encode_frame(HELLO, 0, 0, b"")
    cases: dict[str, tuple[int, bytes, bool]] = {
        "chunked_small_total": (a["port"], encode_frame(MSG, 1, 1, varint(5) + b"ab") + encode_frame(MSG, 2, 1, b"cde"), True),
        "empty_end_frame": (a["port"], encode_frame(MSG, 1, 1, varint(3) + b"abc") + encode_frame(MSG, 2, 1, b""), True),
        "chunked_total_0": (a["port"], encode_frame(MSG, 1, 1, varint(0)) + encode_frame(MSG, 2, 1, b""), True),
        "middle_empty_frame": (a["port"], encode_frame(MSG, 1, 1, varint(3) + b"a") + encode_frame(MSG, 0, 1, b"")
                               + encode_frame(MSG, 2, 1, b"bc"), True),
        "credit_overflow": (a["port"], encode_frame(CREDIT, 0, 0, varint(2**31 - 1)) * 2, True),
        "second_goaway": (a["port"], encode_frame(GOAWAY, 0, 0, b"\x00\x00") * 2, True),
        "goaway_bad_utf8": (a["port"], encode_frame(GOAWAY, 0, 0, b"\x00\x00\xff\xfe"), True),
        "msg_after_own_goaway": (a["port"], encode_frame(GOAWAY, 0, 0, b"\x00\x00") + encode_frame(MSG, 3, 1, b"late"), True),
        "goaway_nonzero": (a["port"], encode_frame(GOAWAY, 0, 0, b"\x07\xd3busy"), True),
        "goaway_unknown_errno": (a["port"], encode_frame(GOAWAY, 0, 0, struct.pack(">H", 9999) + b"x"), True),
        "version_1_to_3": (a["port"], MAGIC + b"\x01\x03" + hello, False),
        "unknown_feature_bits": (a["port"], MAGIC + b"\x01\x01" + encode_frame(HELLO, 0, 0, encode_settings({4: 0xFFF0})), False),
        "key_len_65": (a["port"], encode_frame(REQ, 7, 1, b"\x05/echo" + varint(65) + bytes(65)), True),
        "route_1025": (a["port"], encode_frame(REQ, 3, 1, varint(1025) + b"/" * 1025), True),
        "length_5_bytes": (a["port"], bytes([0x13, 0x01, 0x82, 0x80, 0x80, 0x80, 0x00]), True),
        "id_2_32": (a["port"], bytes([0x13, 0x80, 0x80, 0x80, 0x80, 0x10, 0x00]), True),
        "cancel_our_parity_unused": (a["port"], encode_frame(CANCEL, 0, 2, b"\x0f\xa4"), True),
        # Section 3.6: a CREDIT(id) for an id this side is not sending on is ignored, whatever its parity
        # (here the receiver's own, with as much credit as may ever be granted).
        "credit_our_parity_unused": (a["port"], encode_frame(CREDIT, 0, 2, varint(2**31 - 1)), True),
        # Section 3.6: a COMPRESSED STREAM frame consumes max(payload, declared length) of the stream window:
        # three small frames declaring 6000 bytes each overrun 16 KiB (/hold reads nothing, so none comes back).
        "compressed_declared_over_window": (a["small_port"], encode_frame(STREAM, START, 1, b"\x00\x00\x05/hold\x01\x00")
                                            + encode_frame(STREAM, 4, 1, varint(6000) + deflate_raw(bytes(6000))) * 3, True),
        # Ids: a finished id may be used again, and ids need not increase (section 2.2 binds senders only).
        "id_reused_after_end": (a["port"], encode_frame(MSG, 3, 1, b"a") + encode_frame(MSG, 3, 1, b"b")
                                + encode_frame(MSG, 1, 1, varint(2) + b"c") + encode_frame(MSG, 2, 1, b"d")
                                + encode_frame(MSG, 1, 1, varint(0)) + encode_frame(MSG, 2, 1, b""), True),
        "ids_decreasing": (a["port"], encode_frame(MSG, 3, 9, b"e") + encode_frame(MSG, 3, 3, b"f"), True),
        # Section 3.7: a PING|ACK that answers no PING of ours is ignored.
        "unsolicited_ping_ack": (a["port"], encode_frame(PING, ACK, 0, b"ABCDEFGH"), True),
        # Section 3.4: a CANCEL errno outside section 7 (here for an open chunked message) is accepted.
        "cancel_unknown_errno": (a["port"], encode_frame(MSG, 1, 5, varint(10) + b"abc")
                                 + encode_frame(CANCEL, 0, 5, struct.pack(">H", 9999)), True),
        "single_12k_small_windows": (a["small_port"], encode_frame(MSG, 3, 1, bytes(12000)), True),
        "chunked_frame_12k_small_windows": (a["small_port"], encode_frame(MSG, 1, 1, varint(20000) + bytes(12000))
                                            + encode_frame(MSG, 2, 1, bytes(8000 - 0)), True),
    }
    names = list(cases)
    results = await asyncio.gather(*[raw_session(a["host"], port, data + (ping if after else ping), after, a.get("timeout", 1.5))
                                     for port, data, after in cases.values()])
    return {n: {"goaway": r["goaway"], "closed": r["closed"], "reason": r.get("reason"),
                "types": [f[0] for f in r["frames"]]} for n, r in zip(names, results)}


async def sc_auth(a: dict) -> dict:
    """Section 4.1 against a server that requires a token."""
    host, port = a["host"], a["port"]
    out: dict = {}
    p = await connect(host, port, token=a["token"].encode())
    out["requiresAuth"] = bool(p.peer[4] & 4)
    # Section 4.1's example: what we sent (token "s3cret") and the ACK the server's CRC-checked empty AUTH|ACK equals.
    out["docBytes"] = [encode_frame(AUTH, 0, 0, a["token"].encode()).hex(), encode_frame(AUTH, ACK, 0, b"").hex()]
    out["whoami"] = (await p.request("/whoami")).decode()
    err = await p.close()
    out["closeError"] = err.as_dict() if err else None
    try:
        q = await connect(host, port, token=b"wrong")
        out["badToken"] = {"connected": True}
        await q.close()
    except PointsubError as e:
        out["badToken"] = e.as_dict()
    raw = {
        "msg_before_auth": encode_frame(MSG, 3, 1, b"hi"),
        "msg_right_behind_auth": encode_frame(AUTH, 0, 0, a["token"].encode()) + encode_frame(MSG, 3, 1, b"hi"),
        "auth_with_ack": encode_frame(AUTH, 1, 0, b""),
        "second_auth": encode_frame(AUTH, 0, 0, a["token"].encode()) + encode_frame(AUTH, 0, 0, a["token"].encode()),
        "ping_before_auth": encode_frame(PING, 0, 0, b"abcdefgh") + encode_frame(AUTH, 0, 0, a["token"].encode())
        + encode_frame(PING, 0, 0, b"12345678"),
    }
    results = await asyncio.gather(*[
        raw_session(host, port, d, True, 1.5, stop=answered_last_ping_and_auth if n == "ping_before_auth" else answered_last_ping)
        for n, d in raw.items()])
    for name, r in zip(raw, results):
        out[name] = {"goaway": r["goaway"], "closed": r["closed"], "types": [f[0] for f in r["frames"]]}
    return out


async def sc_overload(a: dict) -> dict:
    """Section 1.1: a server at its connection limit sends GOAWAY(2003) in place of HELLO."""
    first = await connect(a["host"], a["port"])
    out: dict = {}
    try:
        second = await connect(a["host"], a["port"])
        out["second"] = {"connected": True}
        await second.close()
    except PointsubError as e:
        out["second"] = e.as_dict()
    err = await first.close()
    out["closeError"] = err.as_dict() if err else None
    return out


async def sc_concurrency(a: dict) -> dict:
    """Section 3.4: the requester keeps at most the responder's maxConcurrentRequests open; more closes."""
    p = await connect(a["host"], a["port"])
    out: dict = {"peerMax": p.peer[8]}
    answers = await asyncio.gather(*[p.request("/slow", str(i).encode()) for i in range(5)])
    out["answers"] = [x.decode() for x in answers]
    err = await p.close()
    out["closeError"] = err.as_dict() if err else None
    over = b"".join(encode_frame(REQ, 3, 2 * i + 1, b"\x05/slow") for i in range(p.peer[8] + 1))
    r = await raw_session(a["host"], a["port"], over, True, 2.0)
    out["over"] = {"goaway": r["goaway"], "closed": r["closed"]}
    return out


async def sc_cancel(a: dict) -> dict:
    """Section 3.4: a requester's CANCEL; the responder answers CANCEL(id, 4004)."""
    p = await connect(a["host"], a["port"])
    out: dict = {}
    # 1. While the handler runs.
    task = asyncio.create_task(p.request("/slow-abortable", b"x", timeout=10))
    await asyncio.sleep(0.2)
    sid = p.last_request_id
    p.cancelled_by_us.add(sid)
    p.send_frame(CANCEL, 0, sid, struct.pack(">H", E_CANCELLED))
    for _ in range(300):
        if any(c[0] == sid for c in p.cancels_in):
            break
        await asyncio.sleep(0.01)
    out["handlerRunning"] = [c[1] for c in p.cancels_in if c[0] == sid]
    task.cancel()
    # 2. While the body is still arriving (chunked, paced): we stop sending it after our CANCEL.
    started = asyncio.Event()
    task2 = asyncio.create_task(p.request("/echo", pattern(600_000), timeout=10, pace=0.05,
                                          on_frame=lambda i: started.set()))
    await started.wait()
    sid2 = p.last_request_id
    p.cancelled_by_us.add(sid2)
    p.stopped.add(sid2)
    p.send_frame(CANCEL, 0, sid2, struct.pack(">H", E_CANCELLED))
    p.wake()
    for _ in range(300):
        if any(c[0] == sid2 for c in p.cancels_in):
            break
        await asyncio.sleep(0.01)
    out["bodyArriving"] = [c[1] for c in p.cancels_in if c[0] == sid2]
    task2.cancel()
    await asyncio.sleep(0)
    p.pending.pop(sid, None)
    p.pending.pop(sid2, None)
    out["pingAfter"] = (await p.ping()) >= 0
    err = await p.close()
    out["closeError"] = err.as_dict() if err else None
    return out


async def sc_goaway_late_start(a: dict) -> dict:
    """Section 3.8: a START that arrives after the server sent GOAWAY (we had not seen it yet) is processed normally."""
    p = await connect(a["host"], a["port"])
    p.auto_goaway_reply = False
    out: dict = {"closeMe": (await p.request("/close-me", b"")).decode()}
    for _ in range(300):
        if p.peer_goaway is not None:
            break
        await asyncio.sleep(0.01)
    out["peerGoaway"] = list(p.peer_goaway) if p.peer_goaway else None
    try:
        out["late"] = (await p.request("/echo", b"late", check=False, timeout=5)).decode()
    except PointsubError as e:
        out["late"] = e.as_dict()
    await p.goaway()
    err = await p.wait_closed(5)
    out["closeError"] = err.as_dict() if err else None
    return out


async def sc_goaway_then_fatal(a: dict) -> dict:
    """Section 3.8: after its GOAWAY(0) a side may still send one GOAWAY with an errno (a fatal error ends the close).

    Needs /slow-abortable (in flight during the close) and /close-me; we break the protocol while it drains.
    """
    p = await connect(a["host"], a["port"])
    slow = asyncio.create_task(p.request("/slow-abortable", b"x", timeout=10))
    await p.request("/close-me", b"")
    for _ in range(300):
        if p.peer_goaway is not None:
            break
        await asyncio.sleep(0.01)
    p.write(encode_frame(11, 0, 0, b"", p.checksum))  # a type above 10: ERR_PROTOCOL
    err = await p.wait_closed(5)
    try:
        await slow
        slow_result = "answered"
    except PointsubError as e:
        slow_result = e.errno
    return {"goaways": p.goaways_in, "closeError": err.as_dict() if err else None, "slow": slow_result}


async def sc_limits(a: dict) -> dict:
    """Our own HELLO limits, honoured by the server as a sender (sections 3.2, 3.4)."""
    host, port = a["host"], a["port"]
    out: dict = {}
    p = await connect(host, port, {1: 16384})
    out["frameEcho"] = [await p.request("/echo", pattern(n, n)) == pattern(n, n) for n in (60_000, 300_000)]
    out["maxFrameIn"] = p.max_frame_in
    await p.close()
    p = await connect(host, port, {2: 1000})
    try:
        await p.request("/echo", pattern(5000))
        out["bigAnswer"] = None
    except PointsubError as e:
        out["bigAnswer"] = e.as_dict()
    out["smallAfter"] = (await p.request("/echo", b"ok")).decode()
    err = await p.close()
    out["closeError"] = err.as_dict() if err else None
    # Before our HELLO the server sends its preface and HELLO only (section 1).
    r = await raw_session(host, port, MAGIC + b"\x01\x01", after_hello=False, read_timeout=0.3)
    out["beforeOurHello"] = {"types": [f[0] for f in r["frames"]], "closed": r["closed"]}
    big = encode_settings({100 + i: 1 for i in range(1500)})
    r = await raw_session(host, port, MAGIC + b"\x01\x01" + encode_frame(HELLO, 0, 0, big), False, 1.5)
    out["helloOver4096"] = {"goaway": r["goaway"], "closed": r["closed"]}
    return out


def deflate_raw(data: bytes) -> bytes:
    z = zlib.compressobj(6, zlib.DEFLATED, -15)
    return z.compress(data) + z.flush()


async def sc_dedup(a: dict) -> dict:
    """Section 3.4.1: a server that deduplicates (features bit 16) runs a key's handler once, across connections."""
    key = b"key-%d" % time.monotonic_ns()
    p = await connect(a["host"], a["port"])
    q = await connect(a["host"], a["port"])
    answers = [await p.request("/calls", key=key), await p.request("/calls", key=key), await p.request("/calls"),
               await q.request("/calls", key=key)]
    errs = [await p.close(), await q.close()]
    return {"features": p.peer[4], "answers": [x.decode() for x in answers],
            "closeErrors": [e.as_dict() if e else None for e in errs]}


async def sc_stream_rules(a: dict) -> dict:
    """Sections 3.6 and 3.10 as a stream sender, against a pointsub server with /upload (port: default
    windows; small_port: 16 KiB windows). Frames are written by hand where the rule is about their order."""
    host = a["host"]
    loop = asyncio.get_running_loop()
    out: dict = {}

    # 1. Section 3.6: we count each COMPRESSED frame as max(payload, declared length) of the 16 KiB stream
    #    window and wait for CREDIT(id); the stream finishes only if pointsub credits back that much.
    p = await connect(host, a["small_port"])
    text = (b"pointsub interop, compressible text. " * 3000)[:100_000]
    piece = text[:min(p.chunk_size, p.frame_limit())]
    z = zlib.compressobj(1, zlib.DEFLATED, -15)
    r: dict = {"declared": len(piece), "payload": len(varint(len(piece)) + z.compress(piece) + z.flush())}
    try:
        answer = json.loads(await asyncio.wait_for(p.upload("/upload", text, codec=1), 5))
        r["ok"] = answer["size"] == len(text) and answer["sha"] == sha(text)
    except (asyncio.TimeoutError, PointsubError) as e:
        r["error"] = repr(e)
        r["framesSent"], r["framesPlanned"] = p.last_upload_frames
    out["compressedCredit"] = r
    p.close_transport()

    def start(route: str, total: int) -> bytes:
        b = route.encode()
        return varint(total) + varint(0) + varint(len(b)) + b + b"\x00" + varint(0)

    def end(content: bytes) -> bytes:
        return varint(len(content)) + struct.pack(">I", crc32c(content))

    def call(peer: Peer, sid: int) -> asyncio.Future:
        fut = loop.create_future()
        peer.pending[sid] = fut
        peer.in_use.add(sid)
        return fut

    async def outcome(fut: asyncio.Future) -> list:
        try:
            return ["ok", json.loads(await asyncio.wait_for(fut, 3))["size"]]
        except asyncio.TimeoutError:
            return ["no answer within 3 s"]
        except PointsubError as e:
            c = getattr(e, "cancel_errno", None)
            return ["cancel", c] if c is not None else ["error", e.errno]

    async def new_stream(peer: Peer, sid: int) -> list:
        fut = call(peer, sid)
        peer.send_frame(STREAM, START, sid, start("/upload", 4))
        peer.send_frame(STREAM, 0, sid, b"abc")
        peer.send_frame(STREAM, END, sid, end(b"abc"))
        return await outcome(fut)

    async def refused(peer: Peer, sid: int) -> list:
        """START declaring 3 bytes, then 5: the receiver fails the stream with CANCEL(id, 3001) (section 3.10)."""
        fut = call(peer, sid)
        peer.send_frame(STREAM, START, sid, start("/upload", 4))
        peer.send_frame(STREAM, 0, sid, b"hello")
        return await outcome(fut)

    # 2. Section 3.10: an END crossing the receiver's CANCEL still ends our direction: a new START on the id is served.
    p = await connect(host, a["port"])
    r = {"refused": await refused(p, 1)}
    p.send_frame(STREAM, END, 1, end(b"hello"))  # written as if before the CANCEL arrived
    r["next"] = await new_stream(p, 1)
    # The same after an early answer (a route with no stream handler): our data and END are dropped, END ends it.
    fut = call(p, 3)
    p.send_frame(STREAM, START, 3, start("/no/such/stream", 0))
    r["earlyAnswer"] = await outcome(fut)
    p.send_frame(STREAM, 0, 3, b"in flight")
    p.send_frame(STREAM, END, 3, end(b"in flight"))
    r["afterEarlyAnswer"] = await new_stream(p, 3)
    err = await p.close(3)
    r["closeError"] = err.as_dict() if err else None
    out["endCrossesCancel"] = r

    # 3. Without END or CANCEL our direction is still open: a new START on the id is ERR_PROTOCOL.
    p = await connect(host, a["port"])
    r = {"refused": await refused(p, 1)}
    p.send_frame(STREAM, START, 1, start("/upload", 4))
    err = await p.wait_closed(3)
    r["closeError"] = err.as_dict() if err else None
    out["startWithoutEnd"] = r
    return out


async def sc_streams(a: dict) -> dict:
    """Section 3.10: streams to a pointsub stream route, good and broken."""
    p = await connect(a["host"], a["port"], settings_from_names(a.get("settings")))
    out: dict = {"peerFeatures": p.peer[4]}

    async def attempt(label, *args, **kw):
        try:
            out[label] = {"answer": json.loads(await p.upload(*args, **kw))}
        except PointsubError as e:
            out[label] = {"error": e.as_dict()}

    for label, n in (("empty", 0), ("small", 1000), ("large", a.get("size", 3_000_000))):
        data = pattern(n, 300 + n)
        await attempt(label, "/upload", data, {"name": label})
        out[label]["sent"] = {"size": n, "sha": sha(data)}
    data = pattern(100_000, 9)
    await attempt("unknownTotal", "/upload", data, None, known_total=False)
    out["unknownTotal"]["sent"] = {"size": len(data), "sha": sha(data)}
    await attempt("badCrc", "/upload", data, end_crc=crc32c(data) ^ 1)
    await attempt("badLength", "/upload", data, end_length=len(data) - 1)
    await attempt("noRoute", "/no/such/stream", data)
    # Section 3.10: an END that does not match is never answered OK, even by a handler that swallows the error.
    await attempt("badCrcSwallowed", "/upload-swallow", data, end_crc=crc32c(data) ^ 1)
    await attempt("badLengthSwallowed", "/upload-swallow", data, end_length=len(data) + 1)
    # A handler that fails on the first chunk answers early; two stream windows of content cannot all be
    # sent before that answer (the receiver returns no stream credit after answering). END is never sent.
    await attempt("failFast", "/upload-fail-fast", bytes(max(1 << 20, 2 * p.peer[7])), end_crc=0)
    sent, planned = p.last_upload_frames
    out["failFast"]["stoppedEarly"] = sent < planned
    text = (b"pointsub interop, compressible text. " * 40000)[: a.get("size", 3_000_000)]
    for label, codec in (("deflateRaw", 1), ("gzip", 2)):
        if p.peer[5] & codec:
            await attempt(label, "/upload", text, codec=codec)
            out[label]["sent"] = {"size": len(text), "sha": sha(text)}
    await attempt("inflatesShort", "/upload", text[:200_000], codec=1, lie_length=1)
    await attempt("sourceFailed", "/upload", data, cancel_after=1)
    out["pingAfter"] = (await p.ping()) >= 0
    err = await p.close()
    out["closeError"] = err.as_dict() if err else None
    return out


async def sc_known_failures(a: dict) -> dict:
    """Where the server disagreed with the spec (fixed; test/interop/python.test.ts checks each).

    Needs a pointsub server with /echo (returns the request) and /slow-abortable (waits for its signal).
    Each entry holds "ok": whether the server did what the spec says.
    """
    host, port = a["host"], a["port"]
    out: dict = {}
    # 1. Section 3.4: every REQ gets exactly one final frame; a response the requester cannot assemble
    #    (over its maxAssemblyBytes, within its maxMessageSize) should be an error response, not silence.
    p = await connect(host, port, {9: 50_000})
    try:
        await p.request("/echo", pattern(100_000), timeout=3)
        out["responseOverMaxAssemblyBytes"] = {"ok": False, "got": "an answer the requester cannot assemble"}
    except PointsubError as e:
        out["responseOverMaxAssemblyBytes"] = {"ok": e.errno == E_TOO_LARGE, "got": e.as_dict()}
    await p.close()
    # 2. Section 3.5: an error message is at most 1024 bytes sent.
    p = await connect(host, port)
    try:
        await p.request(a.get("longErrorRoute", "/fail-long"))
    except PointsubError as e:
        n = len(getattr(e, "wire_message", b""))
        out["errorMessageBytes"] = {"ok": n <= 1024, "got": n}
    # 3. Section 3.4: the responder answers a requester's CANCEL with CANCEL(id, 4004 ERR_CANCELLED).
    task = asyncio.create_task(p.request("/slow-abortable", b"x", timeout=10))
    await asyncio.sleep(0.2)
    sid = p.last_request_id
    p.cancelled_by_us.add(sid)
    p.send_frame(CANCEL, 0, sid, struct.pack(">H", 1001))
    for _ in range(300):
        if any(c[0] == sid for c in p.cancels_in):
            break
        await asyncio.sleep(0.01)
    got = [c[1] for c in p.cancels_in if c[0] == sid]
    out["cancelAnswerErrno"] = {"ok": got == [E_CANCELLED], "got": got}
    task.cancel()
    p.pending.clear()
    await p.close()
    return out


async def sc_flow_violation(a: dict) -> dict:
    """Against a server with connectionWindow 16 KiB and maxFrameSize >= 20 KiB: one 20,000-byte frame."""
    frame = encode_frame(MSG, 3, 1, pattern(20000))
    r = await raw_session(a["host"], a["port"], frame, True, 2.0)
    return {"goaway": r["goaway"], "closed": r["closed"], "reason": r.get("reason")}


async def sc_server(a: dict, state: dict) -> dict:
    """Starts a Python pointsub server on a free loopback port (for a Node client)."""
    server_state = {"messages": [], "sessions": 0, "closed": [], "peers": []}

    async def echo(peer, data, key):
        return data

    async def count(peer, data, key):
        return json.dumps([{"size": len(m), "sha": sha(m)} for m in peer.message_log]).encode()

    async def push(peer, data, key):
        sizes = json.loads(data)
        for i, n in enumerate(sizes):
            asyncio.ensure_future(peer.send(pattern(n, 200 + i)))
        return json.dumps([{"size": n, "sha": sha(pattern(n, 200 + i))} for i, n in enumerate(sizes)]).encode()

    async def fail(peer, data, key):
        raise PointsubError(4003, "handler failed on purpose")

    async def key(peer, data, k):
        return b"none" if k is None else k

    async def rate(peer, data, k):
        raise PointsubError(2007, "slow down", retry_after=250)

    async def weird(peer, data, k):
        raise PointsubError(4999, "an errno this side made up", code="ERR_WEIRD")

    async def long_error(peer, data, k):
        raise PointsubError(4003, "\u20ac" * 2000)

    async def call_me(peer, data, k):
        # Section 2.2: a request of the server's own, on an even id, answered by the client.
        return b"client answered: " + await peer.request("/client-echo", b"from python", timeout=5)

    async def stream_to_client(peer, data, k):
        # Section 3.10: a stream on an even id, answered with RES; "bad crc" sends a wrong END CRC32C.
        content = b"streamed by python"
        try:
            return b"answer: " + await peer.upload("/client-stream", content, timeout=5,
                                                  end_crc=crc32c(content) ^ (1 if data == b"bad crc" else 0))
        except PointsubError as e:
            return b"error %d" % e.errno

    async def odd_msg(peer, data, k):
        # Section 2.2: a MSG on an id of the client's parity.
        peer.send_frame(MSG, START | END, 1001, b"wrong parity")
        return b"x"

    async def credit_overflow(peer, data, k):
        # Section 3.6: connection credit raised over 2^31 - 1.
        peer.send_frame(CREDIT, 0, 0, varint(2**31 - 1))
        return b"x"

    async def early_report(peer, data, k):
        # How each early-answered request body or stream of this connection ended: null (not yet), END or CANCEL.
        return json.dumps(list(peer.early_answered.values())).encode()

    def batch(peer, sid):
        # Section 3.9: the answer, a one-way message and a PING in one BATCH.
        mid = peer.alloc_id()
        peer.in_use.discard(mid)
        peer.send_conn -= len(b"\x00batched") + len(b"batched msg")
        inner = (encode_frame(RES, START | END, sid, b"\x00batched", checksum=False)
                 + encode_frame(MSG, START | END, mid, b"batched msg", checksum=False)
                 + encode_frame(PING, 0, 0, b"pyping!!", checksum=False))
        return peer.frame(BATCH, 0, 0, inner)

    handlers = {"/echo": echo, "/count": count, "/push": push, "/fail": fail, "/key": key, "/rate": rate,
                "/weird": weird, "/fail-long": long_error, "/call-me": call_me, "/stream-to-client": stream_to_client,
                "/odd-msg": odd_msg, "/credit-overflow": credit_overflow, "/early-report": early_report}
    settings = settings_from_names(a.get("settings"))

    async def upload(peer, content, meta):
        return json.dumps({"size": len(content), "sha": sha(content), "meta": meta}).encode()

    async def on_client(reader, writer):
        peer = Peer(reader, writer, False, settings, handlers)
        peer.stream_handlers["/upload"] = upload
        ok = error_payload(PointsubError(4003, "x"))
        peer.raw_routes = {
            # Section 3.5: an error response is one frame; a chunked one is ERR_PROTOCOL.
            "/raw/chunked-error": [(START, varint(len(ok)) + ok[:3]), (END, ok[3:])],
            "/raw/status-2": [(START | END, b"\x02hi")],
            "/raw/no-status": [(START | END, b"")],
            "/raw/code-length-3-bytes": [(START | END, b"\x01\x0f\xa3" + b"\x80\x80\x01" + b"E" * 16384 + b"\x00")],
            "/raw/retry-6-bytes": [(START | END, ok + b"\x80\x80\x80\x80\x80\x01")],
            "/raw/error-truncated": [(START | END, ok[:-1])],
            # Tolerated: bytes after the fields a decoder knows (later versions may append fields).
            "/raw/error-extra-fields": [(START | END, ok + varint(250) + b"later")],
            "/batch": batch,
        }
        peer.early_routes = {"/early": b"\x00early", "/early-error": error_payload(PointsubError(2005, "over quota"))}
        peer.hold_stream_credit = a.get("holdStreamCredit", 0.0)
        server_state["peers"].append(peer)
        try:
            await asyncio.wait_for(peer.handshake(), 5)
        except Exception as e:  # noqa: BLE001
            server_state["closed"].append({"handshakeError": repr(e)})
            writer.close()
            return
        server_state["sessions"] += 1
        err = await peer.closed
        server_state["closed"].append({"error": err.as_dict() if err else None, "peerGoaway": peer.peer_goaway,
                                       "messages": len(peer.message_log)})

    srv = await asyncio.start_server(on_client, "127.0.0.1", 0, limit=1 << 20)
    name = a.get("name", "")
    state["server" + name] = srv
    state["server_state" + name] = server_state
    return {"port": srv.sockets[0].getsockname()[1]}


async def sc_auth_server_raw(a: dict, state: dict) -> dict:
    """A raw server requiring authentication (features bit 4) that answers AUTH with a[ "ack" ] (hex) as its
    AUTH|ACK payload, then a PING; records what the client sent. Returns the port; the report is in state."""
    report: dict = {"auth": None, "goaway": None, "pingAck": False, "closed": False}

    async def on_client(reader, writer):
        writer.write(MAGIC + b"\x01\x01" + encode_frame(HELLO, 0, 0, encode_settings({4: 4})))
        await writer.drain()
        buf = bytearray()
        acked = False
        try:
            while True:
                chunk = await asyncio.wait_for(reader.read(65536), 5)
                if not chunk:
                    report["closed"] = True
                    break
                buf += chunk
                for t, f, s, p in flat_frames(bytes(buf[6:])):
                    if t == AUTH and not acked:
                        acked = True
                        report["auth"] = p.decode("utf-8", "replace")
                        if a.get("refuse"):
                            # Section 4.1 step 2: refused credentials get GOAWAY(4011) and the close.
                            writer.write(encode_frame(GOAWAY, 0, 0, goaway_payload(4011, "invalid token")))
                            writer.write_eof()
                            continue
                        writer.write(encode_frame(AUTH, ACK, 0, bytes.fromhex(a.get("ack", "")))
                                     + encode_frame(PING, 0, 0, b"12345678"))
                    if t == PING and f & ACK:
                        report["pingAck"] = True
                    if t == GOAWAY:
                        report["goaway"] = struct.unpack(">H", p[:2])[0]
                await writer.drain()
        except (asyncio.TimeoutError, ConnectionError, OSError):
            report["closed"] = True
        finally:
            writer.close()

    srv = await asyncio.start_server(on_client, "127.0.0.1", 0)
    state["raw_auth_server" + a.get("name", "")] = (srv, report)
    return {"port": srv.sockets[0].getsockname()[1]}


async def sc_auth_server_report(a: dict, state: dict) -> dict:
    srv, report = state["raw_auth_server" + a.get("name", "")]
    for _ in range(300):
        if report["closed"] or report["pingAck"]:
            break
        await asyncio.sleep(0.01)
    srv.close()
    return report


async def sc_server_report(a: dict, state: dict) -> dict:
    st = state["server_state" + a.get("name", "")]
    for _ in range(200):  # the client's close may be reported before our side read the end of the stream
        if len(st["closed"]) >= len(st["peers"]):
            break
        await asyncio.sleep(0.01)
    return {"sessions": st["sessions"], "closed": st["closed"],
            "earlyAnswered": [v for p in st["peers"] for v in p.early_answered.values()],
            "reqStarts": [[f, ln] for p in st["peers"] for t, f, s, ln in p.frames_in if t == REQ and f & START],
            "creditIds": sorted({"odd" if s % 2 else "even" for p in st["peers"] for s, _ in p.credits_in if s})}


SCENARIOS = {
    "echo": sc_echo, "messages": sc_messages, "push": sc_push, "no_route": sc_no_route, "ping": sc_ping,
    "goaway": sc_goaway, "size_boundary": sc_size_boundary, "goaway_then_fatal": sc_goaway_then_fatal, "probes": sc_probes, "auth": sc_auth, "overload": sc_overload,
    "concurrency": sc_concurrency, "limits": sc_limits, "streams": sc_streams,
    "known_failures": sc_known_failures, "cancel": sc_cancel, "goaway_late_start": sc_goaway_late_start, "keyed": sc_keyed, "dedup": sc_dedup, "stream_rules": sc_stream_rules, "malformed": sc_malformed, "flow_violation": sc_flow_violation,
}


async def driver() -> None:
    """Reads {"id", "scenario", "args"} JSON lines on stdin, answers {"id", "ok", "result"|"error"} lines."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    state: dict = {}
    tasks = set()

    async def run(cmd: dict) -> None:
        name = cmd["scenario"]
        t0 = time.monotonic()
        try:
            if name == "server":
                result = await sc_server(cmd.get("args", {}), state)
            elif name == "server_report":
                result = await sc_server_report(cmd.get("args", {}), state)
            elif name == "auth_server_raw":
                result = await sc_auth_server_raw(cmd.get("args", {}), state)
            elif name == "auth_server_report":
                result = await sc_auth_server_report(cmd.get("args", {}), state)
            else:
                result = await asyncio.wait_for(SCENARIOS[name](cmd.get("args", {})), cmd.get("timeout", 30))
            line = {"id": cmd["id"], "ok": True, "result": result}
        except BaseException as e:  # noqa: BLE001
            line = {"id": cmd["id"], "ok": False, "error": repr(e), "trace": traceback.format_exc()[-2000:]}
        line["ms"] = round((time.monotonic() - t0) * 1000)
        sys.stdout.write(json.dumps(line) + "\n")
        sys.stdout.flush()

    while True:
        raw = await reader.readline()
        if not raw:
            break
        cmd = json.loads(raw)
        t = asyncio.create_task(run(cmd))
        tasks.add(t)
        t.add_done_callback(tasks.discard)
    if tasks:
        await asyncio.wait(tasks, timeout=5)


def selftest() -> None:
    """The codec against section 2's CRC check value and section 5's worked examples."""
    assert crc32c(b"123456789") == 0xE3069283
    big = bytes(range(256)) * 1000 + b"xyz"
    slow = 0xFFFFFFFF
    for b in big:
        slow = (slow >> 8) ^ _T0[(slow ^ b) & 0xFF]
    assert crc32c(big) == slow ^ 0xFFFFFFFF
    assert crc32c(big[1000:], crc32c(big[:1000])) == crc32c(big)
    rnd = random.Random(1)
    for n in (4095, 4096, 4097, 65536 + 13, 300_001):
        buf = rnd.randbytes(n)
        ref = 0xFFFFFFFF
        for b in buf:
            ref = (ref >> 8) ^ _T0[(ref ^ b) & 0xFF]
        assert crc32c(buf) == ref ^ 0xFFFFFFFF, n
        assert crc32c(buf[7:], crc32c(buf[:7])) == ref ^ 0xFFFFFFFF, n
    assert encode_frame(MSG, 3, 1, b"hi").hex() == "1301026869" + "14b5f1b7"
    assert encode_frame(CREDIT, 0, 0, varint(4194304)).hex() == "500004808080027ee81d73"
    assert encode_frame(CANCEL, 0, 3, struct.pack(">H", 1001)).hex() == "40030203e9f00b1ce0"
    assert encode_frame(PING, 0, 0, bytes(range(1, 9))).hex() == "6000080102030405060708108c10e3"
    assert encode_frame(PING, 1, 0, bytes(range(1, 9))).hex() == "610008010203040506070887fde722"
    assert encode_frame(GOAWAY, 0, 0, goaway_payload(0, "closing")).hex() == "7000090000636c6f73696e67838c8029"
    inner = encode_frame(MSG, 3, 9, b"a", checksum=False) + encode_frame(MSG, 3, 11, b"b", checksum=False)
    assert encode_frame(BATCH, 0, 0, inner).hex() == "80000813090161130b0162bd5d7b9f"
    r = b"/echo/1.0.0"
    assert encode_frame(REQ, 3, 3, varint(len(r)) + r + b"ping").hex().endswith("b3c92f42")
    assert encode_frame(RES, 3, 3, b"\x00ping").hex() == "330305" + "0070696e67" + "d4471dda"
    keyed = encode_frame(REQ, 7, 5, varint(len(r)) + r + varint(8) + b"order-42" + b"ping")
    assert keyed.hex().endswith("71a0df1e")
    hello = encode_settings({1: 1048576, 2: 268435456, 3: 1, 4: 0, 5: 0, 6: 16777216, 7: 4194304, 8: 1024,
                             9: 335544320, 10: 64, 11: 1024})
    assert encode_frame(HELLO, 0, 0, hello).hex().endswith("a793b9f0")
    err = PointsubError(2007, "rate limited", retry_after=250)
    assert encode_frame(RES, 3, 5, error_payload(err)).hex().endswith("02e9627f")
    e = decode_error(error_payload(err)[1:])
    assert (e.errno, e.code, e.message, e.retry_after) == (2007, "ERR_RATE_LIMITED", "rate limited", 250)
    for bad_v in (b"\x80\x00", b"\x80", b"\x81\x00"):
        try:
            read_varint(bad_v, 0)
            raise AssertionError(bad_v)
        except PointsubError:
            pass
    t0 = time.process_time()
    crc32c(bytes(4 * 1024 * 1024))
    print(f"selftest ok; crc32c {4 / max(1e-9, time.process_time() - t0):.1f} MiB/s CPU")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "selftest":
        selftest()
    elif len(sys.argv) > 1 and sys.argv[1] == "driver":
        asyncio.run(driver())
    else:
        print(__doc__)
        sys.exit(2)
