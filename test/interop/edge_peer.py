#!/usr/bin/env python3
"""A second, minimal pointsub peer written from docs/PROTOCOL.md alone
(Python standard library only, CRC32C by hand), for the less-walked corners
of the spec: the worked hex examples byte for byte, chunked messages
interleaved with small ones, credit as section 3.6 grants it, STREAM frames
and their failures, BATCH with checksums off, and varints, ids and frame
sizes at their edges.

Usage: edge_peer.py SCENARIO PORT [ARGS]   (pointsub is the server at PORT)
       edge_peer.py SCENARIO listen [ARGS] (we are the server; prints {"port": n}
                                            first, then serves one client, or one
                                            after another: ARGS {"each": [args, …]})
Prints one JSON line with the scenario's observations; exits 0 unless the
peer itself failed (a traceback on stderr).
"""
import json
import socket
import struct
import sys
import time

# --- section 2: CRC32C (Castagnoli, reflected 0x82F63B78), LEB128, frames ---

_T = []
for _i in range(256):
    _c = _i
    for _ in range(8):
        _c = (_c >> 1) ^ 0x82F63B78 if _c & 1 else _c >> 1
    _T.append(_c)


def crc32c(data, crc=0):
    c = crc ^ 0xFFFFFFFF
    for b in data:
        c = _T[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


assert crc32c(b"123456789") == 0xE3069283


def v(n, width=0):
    """LEB128 of n; with width > its minimal length, padded (non-minimal) to width bytes."""
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b)
        if n == 0:
            break
    while len(out) < width:
        out[-1] |= 0x80
        out.append(0)
    for i in range(len(out) - 1):
        out[i] |= 0x80
    return bytes(out)


def rv(buf, o):
    x = 0
    shift = 0
    while True:
        b = buf[o]
        o += 1
        x |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return x, o


HELLO, MSG, REQ, RES, CANCEL, CREDIT, PING, GOAWAY, BATCH, STREAM, AUTH = range(11)
PREFACE = b"PSUB\x01\x01"


def raw(first, id_bytes, len_bytes, payload, crc=True):
    b = bytes([first]) + id_bytes + len_bytes + bytes(payload)
    return b + struct.pack(">I", crc32c(b)) if crc else b


def frame(t, flags, sid, payload=b"", crc=True):
    payload = bytes(payload)
    return raw((t << 4) | flags, v(sid), v(len(payload)), payload, crc)


def text(s):
    b = s.encode() if isinstance(s, str) else bytes(s)
    return v(len(b)) + b


def hello_payload(pairs):
    return b"".join(v(k) + v(x) for k, x in pairs)


def u16(n):
    return struct.pack(">H", n)


class Frame:
    def __init__(self, t, flags, sid, payload, wire, batched):
        self.t, self.flags, self.id, self.payload, self.wire, self.batched = t, flags, sid, payload, wire, batched

    def errno(self):
        return struct.unpack(">H", self.payload[:2])[0]


class Peer:
    """One connection: our preface and HELLO go out at once (section 1)."""

    def __init__(self, sock, settings=((4, 0x0B),), hello=None):
        self.s = sock
        self.s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # small CREDIT frames go at once
        self.s.settimeout(0.2)
        self.buf = bytearray()
        self.frames = []  # every frame received after the peer's HELLO, BATCHes unpacked
        self.wire = []  # every top-level frame's bytes, as received
        self.closed = False
        self.my_crc = dict(settings).get(3, 1) == 1
        self.crc = True  # until both HELLOs said otherwise
        self.settings = {}
        self.peer_hello = None
        self.send(PREFACE + frame(HELLO, 0, 0, hello_payload(settings) if hello is None else hello))
        self._handshake()

    def send(self, b):
        try:
            self.s.sendall(b)
        except OSError:
            self.closed = True

    def _fill(self, deadline):
        while time.time() < deadline and not self.closed:
            try:
                d = self.s.recv(1 << 20)
            except socket.timeout:
                return False
            except OSError:
                self.closed = True
                return False
            if not d:
                self.closed = True
                return False
            self.buf += d
            return True
        return False

    def _handshake(self, timeout=10):
        deadline = time.time() + timeout
        while len(self.buf) < 6 and self._fill(deadline):
            pass
        assert self.buf[:4] == b"PSUB", bytes(self.buf[:6])
        del self.buf[:6]
        f = None
        while f is None and time.time() < deadline:
            f = self._take(True)
            if f is None and not self._fill(deadline) and self.closed:
                break
        assert f is not None, "no HELLO"
        self.peer_hello = f
        if f.t == HELLO:
            p, o = f.payload, 0
            while o < len(p):
                k, o = rv(p, o)
                x, o = rv(p, o)
                self.settings[k] = x
            self.crc = self.my_crc or self.settings.get(3, 1) == 1
        else:
            self.frames.append(f)

    def _take(self, crc):
        """One whole top-level frame from the buffer, or None."""
        b = self.buf
        if not b:
            return None
        try:
            sid, o = rv(b, 1)
            ln, o = rv(b, o)
        except IndexError:
            return None
        end = o + ln + (4 if crc else 0)
        if len(b) < end:
            return None
        wire = bytes(b[:end])
        if crc:
            assert struct.unpack(">I", wire[-4:])[0] == crc32c(wire[:-4]), "bad CRC from pointsub"
        payload = wire[o : o + ln]
        del b[:end]
        return Frame(wire[0] >> 4, wire[0] & 15, sid, payload, wire, False)

    def poll(self, deadline):
        """Reads what has arrived (waiting until `deadline` for a first byte); returns the new frames, BATCHes unpacked."""
        got = []
        while True:
            f = self._take(self.crc)
            if f is None:
                if got or not self._fill(deadline):
                    return got
                continue
            self.wire.append(f.wire)
            new = [f]
            if f.t == BATCH:
                new, p, o = [], f.payload, 0
                while o < len(p):
                    sid, o2 = rv(p, o + 1)
                    ln, o2 = rv(p, o2)
                    new.append(Frame(p[o] >> 4, p[o] & 15, sid, p[o2 : o2 + ln], p[o : o2 + ln], True))
                    o = o2 + ln
            got += new
            self.frames += new

    def until(self, pred, timeout=10, since=0):
        """Reads until pred(frame) matches a frame received (from index `since`; returns it) or the peer closed / timeout (None)."""
        deadline = time.time() + timeout
        seen = since
        while True:
            for f in self.frames[seen:]:
                if pred(f):
                    return f
            seen = len(self.frames)
            if self.closed or time.time() >= deadline:
                return None
            self.poll(min(deadline, time.time() + 0.2))

    def ping(self, tag=b"probe!!!", timeout=10):
        """True once our PING came back: the peer read everything before it and lives."""
        since = len(self.frames)
        self.send(frame(PING, 0, 0, tag, self.crc))
        return self.until(lambda f: f.t == PING and f.flags == 1 and f.payload == tag, timeout, since) is not None

    def fr(self, t, flags, sid, payload=b""):
        return frame(t, flags, sid, payload, self.crc)

    def close(self):
        try:
            self.s.close()
        except OSError:
            pass


def dial(port, **kw):
    return Peer(socket.create_connection(("127.0.0.1", port), timeout=10), **kw)


def outcome(p, timeout=10):
    """'answered' when a PING after everything sent came back, else 'goaway <errno>' / 'closed'."""
    if p.ping(timeout=timeout):
        return "answered"
    g = [f.errno() for f in p.frames if f.t == GOAWAY and len(f.payload) >= 2 and f.errno() != 0]
    return f"goaway {g[0]}" if g else "closed" if p.closed else "neither"


def fresh(port, frames_fn, settings=((4, 0x0B),), timeout=10):
    p = dial(port, settings=settings)
    try:
        p.send(b"".join(frames_fn(p)))
        return outcome(p, timeout)
    finally:
        p.close()


SCENARIOS = {}


def scenario(fn):
    SCENARIOS[fn.__name__] = fn
    return fn


def main():
    name, where = sys.argv[1], sys.argv[2]
    args = json.loads(sys.argv[3]) if len(sys.argv) > 3 else {}
    if where == "listen":
        ls = socket.socket()
        ls.bind(("127.0.0.1", 0))
        ls.listen(4)
        print(json.dumps({"port": ls.getsockname()[1]}), flush=True)
        ls.settimeout(30)
        # {"each": [args, …]}: one client after another, each served with its args
        result = [SCENARIOS[name](ls, **a) for a in args["each"]] if "each" in args else SCENARIOS[name](ls, **args)
        ls.close()
    else:
        result = SCENARIOS[name](int(where), **args)
    print(json.dumps(result), flush=True)



@scenario
def examples_server(ls, settings=((4, 0x0B),), push=None, ping=None, auth=None):
    """Accepts one client and plays a plain server from the spec: AUTH checked against
    `auth` when given (features bit 4 in `settings`), then each REQ answered with RES echoing its data (route "/never": no answer), each
    STREAM with its content length after END, CANCEL with CANCEL(id, 4004), GOAWAY(0)
    with GOAWAY(0), until the client closes; a REQ to "/push" is answered after the
    frames of `push` and a PING of `ping`. Returns every frame the client sent: as it
    came (`wire`) and as it would be alone, a BATCH's inner frames with their CRC32C (`alone`)."""
    conn, _ = ls.accept()
    p = Peer(conn, settings=settings)
    out = {"hello": p.peer_hello.wire.hex(), "wire": [], "alone": []}
    if auth is not None:
        a = p.until(lambda f: f.t == AUTH, 10)
        out["auth"] = a.payload.decode() if a else None
        if a is None or a.payload.decode() != auth:
            p.send(frame(GOAWAY, 0, 0, u16(4011) + b"invalid token"))
            p.close()
            out["wire"] = [w.hex() for w in p.wire]
            return out
        p.send(p.fr(AUTH, 1, 0))
    reqs = {}
    done = set()
    deadline = time.time() + 30
    seen = 0
    while time.time() < deadline and not p.closed:
        p.poll(time.time() + 0.2)
        new = p.frames[seen:]
        seen = len(p.frames)
        for f in new:
            if f.t == REQ:
                if f.flags & 1:
                    pl, o = f.payload, 0
                    if not f.flags & 2:
                        _, o = rv(pl, o)
                    rl, o = rv(pl, o)
                    route = pl[o : o + rl].decode()
                    o += rl
                    if f.flags & 4:
                        kl, o = rv(pl, o)
                        o += kl
                    reqs[f.id] = [route, bytearray(pl[o:])]
                else:
                    reqs[f.id][1] += f.payload
                if f.flags & 2 and reqs[f.id][0] == "/push":
                    # the client is listening now: the push, the PING, then the answer
                    p.send(b"".join(push_frames(push, p.crc)))
                    if ping is not None:
                        p.send(p.fr(PING, 0, 0, bytes.fromhex(ping)))
                    p.send(p.fr(RES, 3, f.id, b"\x00"))
                elif f.flags & 2 and reqs[f.id][0] != "/never":
                    data = bytes(reqs[f.id][1])
                    p.send(p.fr(RES, 3, f.id, b"\x00" + data))
            elif f.t == STREAM and f.flags & 2:
                n, _ = rv(f.payload, 0)
                p.send(p.fr(RES, 3, f.id, b"\x00" + str(n).encode()))
            elif f.t == CANCEL and f.id not in done:
                done.add(f.id)
                p.send(p.fr(CANCEL, 0, f.id, u16(4004)))
            elif f.t == GOAWAY:
                if f.errno() == 0:
                    p.send(p.fr(GOAWAY, 0, 0, u16(0)))
            elif f.t == PING and f.flags == 0:
                p.send(p.fr(PING, 1, 0, f.payload))
    out["wire"] = [w.hex() for w in p.wire]
    out["alone"] = [as_alone(f) for f in p.frames]
    p.close()
    return out


def push_frames(kind, crc):
    if kind == "4MiB":
        # One chunked MSG of exactly 4 MiB of frame payload (a whole streamWindow and a
        # quarter of the default connectionWindow): 64 frames of 65,536 bytes.
        total = 4 * 1024 * 1024 - 4
        frames = [frame(MSG, 1, 2, v(total) + b"\xab" * (65536 - 4), crc)]
        frames += [frame(MSG, 0, 2, b"\xab" * 65536, crc) for _ in range(62)]
        frames.append(frame(MSG, 2, 2, b"\xab" * 65536, crc))
        return frames
    raise ValueError(kind)




@scenario
def strict_server(ls, settings, idle=30.0, answer_delay=0.0, early=False, hold_until_ping0=False):
    """A receiver that checks, frame by frame, every rule section 3 puts on a sender
    against the settings of its own HELLO: frame sizes (maxFrameSize and the sizing rule
    of section 3.2: at most half of each window), connection and message credit (3.6,
    a COMPRESSED frame counting the larger of its payload and its `length`),
    maxAssemblyBytes, maxMessageSize, maxConcurrentRequests and maxConcurrentStreams
    (3.4, 3.10), at most 256 chunked messages open (3.4), COMPRESSED `length` within
    maxFrameSize and maxCompressionRatio (3.10). It returns credit as late as 3.6
    allows (once a quarter of a window is unreturned; with `hold_until_ping0`, no
    connection credit before the first PING of 8 zero bytes) and answers each REQ and STREAM
    at its END (REQ: its data length and CRC32C; STREAM: its content length and
    CRC32C), after `answer_delay` seconds; with `early`, each STREAM at its START (an
    early answer, 3.10: the stream then stays open until the sender's END or CANCEL).
    Returns what it saw and every violation."""
    settings = [tuple(x) for x in settings]
    conn, _ = ls.accept()
    p = Peer(conn, settings=settings)
    mine = dict(settings)
    max_frame = mine.get(1, 1 << 20)
    max_msg = mine.get(2, 1 << 28)
    cwin = mine.get(6, 1 << 24)
    swin = mine.get(7, 1 << 22)
    max_req = mine.get(8, 1024)
    max_asm = mine.get(9, max_msg + (64 << 20))
    max_streams = mine.get(10, 64)
    ratio = mine.get(11, 1024)
    codecs = mine.get(5, 0)
    bad = []
    conn_unreturned = 0
    opened = {}  # id -> {"kind", "total", "got", "unreturned", "route", "crc", "content"}
    open_reqs = set()
    open_streams = set()
    stats = {"maxOpenChunked": 0, "maxOpenRequests": 0, "maxOpenStreams": 0, "maxAssembly": 0,
             "compressed": 0, "plainStreamData": 0, "maxFrame": 0, "dataFrames": 0, "order": []}
    pending = []  # (due, bytes)
    deadline = time.time() + 60
    seen = 0
    quiet = time.time()
    import zlib

    def credit_msg(sid, n):
        m = opened.get(sid)
        if m is None:
            return
        m["unreturned"] += n
        if m["unreturned"] * 4 >= swin:
            p.send(p.fr(CREDIT, 0, sid, v(m["unreturned"])))
            m["unreturned"] = 0

    while time.time() < deadline and not p.closed:
        now = time.time()
        for item in [x for x in pending if x[0] <= now]:
            pending.remove(item)
            p.send(item[1])
            open_reqs.discard(item[2])
            open_streams.discard(item[2])
        p.poll(now + 0.05)
        new = p.frames[seen:]
        seen = len(p.frames)
        if new:
            quiet = time.time()
        elif time.time() - quiet > idle and not pending:
            break
        for f in new:
            if f.t in (MSG, REQ, STREAM):
                n = len(f.payload)
                stats["dataFrames"] += 1
                stats["maxFrame"] = max(stats["maxFrame"], n)
                if n > max_frame:
                    bad.append(f"frame of {n} bytes over maxFrameSize {max_frame}")
                conn_unreturned += n
                if conn_unreturned > cwin:
                    bad.append(f"connection credit exceeded: {conn_unreturned} > {cwin}")
                if conn_unreturned * 4 >= cwin and not hold_until_ping0:
                    p.send(p.fr(CREDIT, 0, 0, v(conn_unreturned)))
                    conn_unreturned = 0
                single = f.flags & 3 == 3 and f.t != STREAM
                weight = n
                if f.t == STREAM and f.flags & 4:
                    ln, o = rv(f.payload, 0)
                    stats["compressed"] += 1
                    if ln > max_frame:
                        bad.append(f"COMPRESSED length {ln} over maxFrameSize")
                    if ln > ratio * (n - o):
                        bad.append(f"COMPRESSED length {ln} over ratio {ratio} x {n - o}")
                    weight = max(n, ln)
                if not single and weight * 2 > min(swin, cwin):
                    bad.append(f"{f.t}/{f.flags} frame of {weight} over half a window")
                if single and n * 2 > min(swin, cwin) and n > 0:
                    bad.append(f"single frame of {n} over half a window")
                if f.flags & 1:
                    if f.id in opened:
                        bad.append(f"START on open id {f.id}")
                    pl, o = f.payload, 0
                    total = None
                    if f.t == STREAM:
                        t1, o = rv(pl, o)
                        off, o = rv(pl, o)
                        pcrc = 0
                        if off:
                            pcrc = struct.unpack(">I", pl[o : o + 4])[0]
                            o += 4
                        rl, o = rv(pl, o)
                        route = pl[o : o + rl].decode()
                        o += rl
                        codec = pl[o]
                        o += 1
                        ml, o = rv(pl, o)
                        o += ml
                        if codec and not (codecs >> (codec - 1)) & 1:
                            bad.append(f"codec {codec} not offered")
                        opened[f.id] = {"kind": STREAM, "total": t1, "got": off, "unreturned": 0, "route": route,
                                        "crc": pcrc, "content": 0, "codec": codec}
                        open_streams.add(f.id)
                        open_reqs.add(f.id)
                        stats["order"].append(f"S{f.id}")
                    else:
                        if not f.flags & 2:
                            total, o = rv(pl, o)
                            if total > max_msg:
                                bad.append(f"total {total} over maxMessageSize")
                        route = None
                        if f.t == REQ:
                            rl, o = rv(pl, o)
                            route = pl[o : o + rl].decode()
                            o += rl
                            if f.flags & 4:
                                kl, o = rv(pl, o)
                                o += kl
                            open_reqs.add(f.id)
                        data = pl[o:]
                        if f.flags & 2:
                            if len(data) > max_msg:
                                bad.append(f"single message of {len(data)} over maxMessageSize")
                            stats["order"].append(f"{'M' if f.t == MSG else 'R'}{f.id}")
                            if f.t == REQ:
                                ans = p.fr(RES, 3, f.id, b"\x00" + f"{len(data)} {crc32c(data):08x}".encode())
                                pending.append((time.time() + answer_delay, ans, f.id))
                            continue
                        opened[f.id] = {"kind": f.t, "total": total, "got": len(data), "unreturned": 0,
                                        "route": route, "crc": crc32c(data), "content": 0}
                        stats["order"].append(f"{'M' if f.t == MSG else 'R'}{f.id}+")
                    if len([m for m in opened.values() if m["kind"] != STREAM]) > 256:
                        bad.append("more than 256 chunked messages open")
                    asm = sum(m["total"] for m in opened.values() if m["kind"] != STREAM)
                    stats["maxAssembly"] = max(stats["maxAssembly"], asm)
                    if asm > max_asm:
                        bad.append(f"open totals {asm} over maxAssemblyBytes {max_asm}")
                    if len(open_reqs) > max_req:
                        bad.append(f"{len(open_reqs)} requests open over {max_req}")
                    if len(open_streams) > max_streams:
                        bad.append(f"{len(open_streams)} streams open over {max_streams}")
                    stats["maxOpenChunked"] = max(stats["maxOpenChunked"],
                                                  len([m for m in opened.values() if m["kind"] != STREAM]))
                    stats["maxOpenRequests"] = max(stats["maxOpenRequests"], len(open_reqs))
                    stats["maxOpenStreams"] = max(stats["maxOpenStreams"], len(open_streams))
                    if weight > swin:
                        bad.append(f"START of {weight} over streamWindow")
                    credit_msg(f.id, weight)
                    if early and f.t == STREAM:
                        # an early answer (3.10): the stream stays open here until the sender's END or CANCEL
                        p.send(p.fr(RES, 3, f.id, b"\x00early"))
                        opened[f.id]["answered"] = True
                    continue
                m = opened.get(f.id)
                if m is None:
                    bad.append(f"frame without START on id {f.id}")
                    continue
                if m.get("answered"):
                    if f.flags & 2:
                        del opened[f.id]
                        open_reqs.discard(f.id)
                        open_streams.discard(f.id)
                        stats["order"].append(f"E{f.id}")
                    continue
                if m["unreturned"] + weight > swin:
                    bad.append(f"message credit exceeded on {f.id}: {m['unreturned'] + weight} > {swin}")
                if f.t == STREAM and f.flags & 2:
                    ln, o = rv(f.payload, 0)
                    crc = struct.unpack(">I", f.payload[o : o + 4])[0]
                    ok = ln == m["got"] and crc == m["crc"] and (m["total"] == 0 or m["total"] == ln + 1)
                    if not ok:
                        bad.append(f"stream {f.id} END {ln}/{crc:08x} but read {m['got']}/{m['crc']:08x} total {m['total']}")
                    ans = p.fr(RES, 3, f.id, b"\x00" + f"{m['got']} {m['crc']:08x}".encode())
                    del opened[f.id]
                    pending.append((time.time() + answer_delay, ans, f.id))
                    continue
                if f.t == STREAM:
                    if f.flags & 4:
                        ln, o = rv(f.payload, 0)
                        wbits = {1: -15, 2: 31}.get(m["codec"], None)
                        content = zlib.decompress(bytes(f.payload[o:]), wbits) if wbits else b"\0" * ln
                        if len(content) != ln:
                            bad.append(f"COMPRESSED block inflates to {len(content)} not {ln}")
                    else:
                        content = bytes(f.payload)
                        stats["plainStreamData"] += 1
                    m["got"] += len(content)
                    m["crc"] = crc32c(content, m["crc"])
                else:
                    m["got"] += len(f.payload)
                    m["crc"] = crc32c(f.payload, m["crc"])
                    if m["got"] > m["total"]:
                        bad.append(f"data past total on {f.id}")
                if f.t != STREAM and f.flags & 2:
                    if m["got"] != m["total"]:
                        bad.append(f"END at {m['got']} of {m['total']} on {f.id}")
                    stats["order"].append(f"{'M' if f.t == MSG else 'R'}{f.id}")
                    del opened[f.id]
                    if f.t == REQ:
                        ans = p.fr(RES, 3, f.id, b"\x00" + f"{m['got']} {m['crc']:08x}".encode())
                        pending.append((time.time() + answer_delay, ans, f.id))
                    continue
                credit_msg(f.id, weight)
            elif f.t == GOAWAY:
                stats["order"].append(f"G{f.errno()}")
                if f.errno() == 0:
                    p.send(p.fr(GOAWAY, 0, 0, u16(0)))
                else:
                    bad.append(f"GOAWAY {f.errno()}")
            elif f.t == PING and f.flags == 0:
                p.send(p.fr(PING, 1, 0, f.payload))
                if f.payload == bytes(8) and hold_until_ping0:
                    # the sender holds its GOAWAY(0) behind STARTs waiting for credit, and says so (3.8)
                    stats["order"].append("P0")
                    hold_until_ping0 = False
                    if conn_unreturned:
                        p.send(p.fr(CREDIT, 0, 0, v(conn_unreturned)))
                        conn_unreturned = 0
            elif f.t == CANCEL:
                if f.id in opened and opened[f.id].get("answered") and f.errno() == 4004:
                    del opened[f.id]
                    open_reqs.discard(f.id)
                    open_streams.discard(f.id)
                    stats["order"].append(f"C{f.id}")
                else:
                    bad.append(f"CANCEL {f.id} {f.errno()}")
    p.close()
    stats["violations"] = bad
    stats["closed"] = p.closed
    return stats


@scenario
def strict_download(port, path, file, offsets, settings):
    """strict_download_one for each offset in turn."""
    return [strict_download_one(port, path, file, o, settings) for o in offsets]


def strict_download_one(port, path, file, offset, settings):
    """Asks a pointsub file server for `path` (section 3.12.3) as a strict asker: answers
    the server's resume query with `offset` and the CRC32C of the file's first `offset`
    bytes (read from `file`), then receives the stream to its file store route and
    checks START (total, offset, prefixCrc, codec), credit and frame sizes against its
    own HELLO, every COMPRESSED block, END's length and CRC32C over the whole content;
    answers with the five-field receipt and returns the request's answer."""
    import zlib
    settings = [tuple(x) for x in settings]
    mine = dict(settings)
    max_frame, cwin, swin = mine.get(1, 1 << 20), mine.get(6, 1 << 24), mine.get(7, 1 << 22)
    ratio, codecs = mine.get(11, 1024), mine.get(5, 0)
    content = open(file, "rb").read()
    p = dial(port, settings=settings)
    bad = []
    out = {"violations": bad, "compressed": 0, "plain": 0, "maxWeight": 0, "credits": 0}
    p.send(p.fr(REQ, 3, 1, text("/pointsub/file/get/1") + json.dumps({"path": path, "to": "got.bin"}).encode()))
    conn_unret = 0
    st = None
    seen = 0
    deadline = time.time() + 30
    answer = None
    while time.time() < deadline and answer is None and not p.closed:
        p.poll(time.time() + 0.1)
        new = p.frames[seen:]
        seen = len(p.frames)
        for f in new:
            if f.t in (MSG, REQ, STREAM, RES):
                conn_unret += len(f.payload)
                if len(f.payload) > max_frame:
                    bad.append(f"frame of {len(f.payload)} over maxFrameSize")
                if conn_unret > cwin:
                    bad.append(f"connection credit exceeded {conn_unret}")
                if conn_unret * 4 >= cwin:
                    p.send(p.fr(CREDIT, 0, 0, v(conn_unret)))
                    out["credits"] += 1
                    conn_unret = 0
            if f.t == REQ:
                pl, o = f.payload, 0
                rl, o = rv(pl, o)
                route = pl[o : o + rl].decode()
                o += rl
                if f.id % 2 != 0:
                    bad.append(f"server request on odd id {f.id}")
                if route != "/pointsub/resume/1":
                    bad.append(f"unexpected request {route}")
                    continue
                rl2, o = rv(pl, o)
                out["resumeRoute"] = pl[o : o + rl2].decode()
                o += rl2
                il, o = rv(pl, o)
                out["transferId"] = pl[o : o + il].decode()
                if o + il != len(pl):
                    bad.append("resume query has trailing bytes")
                p.send(p.fr(RES, 3, f.id, b"\x00" + v(offset) + struct.pack(">I", crc32c(content[:offset]))))
            elif f.t == STREAM and f.flags & 1:
                pl, o = f.payload, 0
                total, o = rv(pl, o)
                off, o = rv(pl, o)
                pcrc = None
                if off:
                    pcrc = struct.unpack(">I", pl[o : o + 4])[0]
                    o += 4
                rl, o = rv(pl, o)
                route = pl[o : o + rl].decode()
                o += rl
                codec = pl[o]
                o += 1
                ml, o = rv(pl, o)
                meta = json.loads(pl[o : o + ml].decode())
                o += ml
                out["start"] = {"total": total, "offset": off, "prefixCrcOk": pcrc == (crc32c(content[:off]) if off else None),
                                "route": route, "codec": codec, "meta": meta, "dataInStart": len(pl) - o}
                if codec and not (codecs >> (codec - 1)) & 1:
                    bad.append(f"codec {codec} not offered")
                st = {"id": f.id, "got": bytearray(content[:off]), "unret": len(f.payload), "codec": codec, "off": off}
            elif f.t == STREAM and st is not None and f.id == st["id"]:
                weight = len(f.payload)
                if f.flags & 2:
                    ln, o = rv(f.payload, 0)
                    crc = struct.unpack(">I", f.payload[o : o + 4])[0]
                    out["end"] = {"length": ln, "crcOk": crc == crc32c(bytes(st["got"])), "lengthOk": ln == len(st["got"])}
                    got = bytes(st["got"])
                    out["contentOk"] = got == content
                    receipt = {"name": "got.bin", "path": "got.bin", "size": len(got), "crc32c": f"{crc32c(got):08x}",
                               "resumedFrom": st["off"]}
                    p.send(p.fr(RES, 3, f.id, b"\x00" + json.dumps(receipt).encode()))
                    continue
                if f.flags & 4:
                    ln, o = rv(f.payload, 0)
                    out["compressed"] += 1
                    if ln > max_frame or ln > ratio * (len(f.payload) - o):
                        bad.append(f"COMPRESSED length {ln} breaks maxFrameSize or ratio")
                    wbits = {1: -15, 2: 31}[st["codec"]]
                    block = zlib.decompress(bytes(f.payload[o:]), wbits)
                    if len(block) != ln:
                        bad.append("block does not inflate to length")
                    weight = max(weight, ln)
                    st["got"] += block
                else:
                    out["plain"] += 1
                    st["got"] += f.payload
                out["maxWeight"] = max(out["maxWeight"], weight)
                if weight * 2 > min(swin, cwin):
                    bad.append(f"stream frame of {weight} over half a window")
                st["unret"] += weight
                if st["unret"] > swin:
                    bad.append(f"stream credit exceeded {st['unret']}")
                if st["unret"] * 4 >= swin:
                    p.send(p.fr(CREDIT, 0, st["id"], v(st["unret"])))
                    out["credits"] += 1
                    st["unret"] = 0
            elif f.t == RES and f.id == 1:
                answer = f
            elif f.t == PING and f.flags == 0:
                p.send(p.fr(PING, 1, 0, f.payload))
            elif f.t == GOAWAY:
                bad.append(f"GOAWAY {f.errno()}")
    if answer is not None:
        out["answer"] = {"status": answer.payload[0], "body": answer.payload[1:].decode(errors="replace")}
    p.close()
    return out


@scenario
def scripted_server(ls, answers, settings=((4, 0x0B),), hello=None, on_cancel=(), reply_cancel=True, idle=30.0):
    """Accepts one client (our HELLO's payload `hello` in hex when given, else of
    `settings`); answers a REQ START to route R with the frames answers[R]: each
    [first byte, payload hex] on the request's id (checksums as negotiated), [first
    byte, payload hex, n] with n zero bytes after that payload, or ["raw", hex]
    written as is ({id} in it replaced by the id's varint hex). A CANCEL from the
    client is answered with the frames `on_cancel` ([first byte, payload hex] on its
    id), then CANCEL(id, 4004) unless `reply_cancel` is false. Reports the GOAWAY
    errnos and CANCEL errnos the client sent."""
    settings = [tuple(x) for x in settings]
    conn, _ = ls.accept()
    p = Peer(conn, settings=settings, hello=None if hello is None else bytes.fromhex(hello))
    seen = 0
    quiet = time.time()
    out = {"goaway": [], "cancel": [], "requests": 0}
    while not p.closed and time.time() - quiet < idle:
        p.poll(time.time() + 0.1)
        new = p.frames[seen:]
        seen = len(p.frames)
        if new:
            quiet = time.time()
        for f in new:
            if f.t == REQ and f.flags & 1:
                out["requests"] += 1
                pl, o = f.payload, 0
                if not f.flags & 2:
                    _, o = rv(pl, o)
                rl, o = rv(pl, o)
                route = pl[o : o + rl].decode()
                for first, hx, *fill in answers.get(route, []):
                    if first == "raw":
                        p.send(bytes.fromhex(hx.replace("{id}", v(f.id).hex())))
                    else:
                        payload = bytes.fromhex(hx) + b"\0" * (fill[0] if fill else 0)
                        p.send(p.fr(first >> 4, first & 15, f.id, payload))
            elif f.t == GOAWAY:
                out["goaway"].append(f.errno())
                if f.errno() == 0:
                    p.send(p.fr(GOAWAY, 0, 0, u16(0)))
            elif f.t == CANCEL:
                out["cancel"].append(f.errno())
                for first, hx in on_cancel:
                    p.send(p.fr(first >> 4, first & 15, f.id, bytes.fromhex(hx)))
                if reply_cancel:
                    p.send(p.fr(CANCEL, 0, f.id, u16(4004)))
            elif f.t == PING and f.flags == 0:
                p.send(p.fr(PING, 1, 0, f.payload))
    out["alive"] = not p.closed and p.ping(timeout=10)
    out["alone"] = [as_alone(f) for f in p.frames]
    p.close()
    return out


# --- pointsub as the server: the worked examples, byte for byte ---

HELLO_5_1 = bytes.fromhex(
    "505355420101" "000028" "01808040" "02808080800" "1" "0301" "0400" "0500" "0680808008" "0780808002"
    "088008" "09808080a001" "0a40" "0b8008" "a793b9f0"
)


class RawPeer(Peer):
    """A Peer whose opening bytes (preface and HELLO) are given as they are."""

    def __init__(self, sock, opening):
        self.s = sock
        self.s.settimeout(0.2)
        self.buf, self.frames, self.wire, self.closed, self.settings = bytearray(), [], [], False, {}
        self.my_crc = self.crc = True
        self.send(opening)
        self._handshake()


def as_alone(f):
    """The bytes a frame has when sent alone (a BATCH's inner frame gets its CRC32C)."""
    return frame(f.t, f.flags, f.id, f.payload).hex() if f.batched else f.wire.hex()


@scenario
def server_examples(port):
    """Opens with section 5.1's HELLO as printed and sends the frames of 5.3, 3.4.1 and
    5.5 as printed; returns the bytes of the frames that answer them."""
    out = {}
    p = RawPeer(socket.create_connection(("127.0.0.1", port), timeout=10), HELLO_5_1)
    p.send(bytes.fromhex("2303100b2f6563686f2f312e302e3070696e67b3c92f42"))  # 5.3: request 3
    p.send(frame(REQ, 3, 5, text("/x")))  # 5.3: request 5 to a route that does not exist
    p.send(bytes.fromhex("6000080102030405060708108c10e3"))  # 5.5: PING
    for sid in (3, 5):
        f = p.until(lambda f, sid=sid: f.t == RES and f.id == sid)
        out[f"res{sid}"] = f and as_alone(f)
    f = p.until(lambda f: f.t == PING and f.flags == 1)
    out["pong"] = f and as_alone(f)
    p.close()
    p = RawPeer(socket.create_connection(("127.0.0.1", port), timeout=10), HELLO_5_1)
    p.send(bytes.fromhex("2705190b2f6563686f2f312e302e30086f726465722d343270696e6771a0df1e"))  # 3.4.1
    f = p.until(lambda f: f.t == RES and f.id == 5)
    out["keyed"] = f and as_alone(f)
    p.send(bytes.fromhex("700009000063" "6c6f73696e67838c8029"))  # 5.5: GOAWAY(0, "closing")
    f = p.until(lambda f: f.t == GOAWAY)
    out["goawayReply"] = f and f.payload[:2].hex()
    out["closedAfter"] = p.until(lambda f: False, 15) is None and p.closed
    p.close()
    return out



def st_start(sid, route="/s", total=0, offset=0, pcrc=0, codec=0, meta=b"", data=b""):
    """STREAM START (section 3.10): total (content length + 1, 0 unknown), offset, prefixCrc, route, codec, meta."""
    pl = v(total) + v(offset) + (struct.pack(">I", pcrc) if offset else b"") + text(route) + bytes([codec]) + text(meta)
    return frame(STREAM, 1, sid, pl + data)


def st_end(sid, length, crc):
    return frame(STREAM, 2, sid, v(length) + struct.pack(">I", crc))


def deflate_raw(b):
    import zlib

    c = zlib.compressobj(1, zlib.DEFLATED, -15)
    return c.compress(b) + c.flush()


def hello_only(port, payload):
    """Preface and a HELLO of `payload`, then a PING: 'answered' or 'goaway <errno>'."""
    p = RawPeer.__new__(RawPeer)
    p.s = socket.create_connection(("127.0.0.1", port), timeout=10)
    p.s.settimeout(0.2)
    p.buf, p.frames, p.wire, p.closed, p.settings, p.my_crc, p.crc = bytearray(), [], [], False, {}, True, True
    p.send(PREFACE + frame(HELLO, 0, 0, payload))
    try:
        p._handshake(True)
        return outcome(p, 10)
    finally:
        p.close()


@scenario
def server_edges(port, small):
    """Varints at and past their bounds, non-minimal encodings, zero-length payloads, ids
    of the wrong parity, frames and BATCHes at and one over maxFrameSize (`small`
    announces 16384), BATCH holding every frame type it may (and those it may not)."""
    crc_abc = struct.pack(">I", crc32c(b"hey"))
    every = b"".join([
        frame(MSG, 3, 1, b"a", False),
        frame(REQ, 3, 3, text("/echo") + b"x", False),
        frame(CANCEL, 0, 99, u16(4004), False),
        frame(CREDIT, 0, 0, v(5), False),
        frame(PING, 0, 0, b"abcdefgh", False),
        frame(PING, 1, 0, b"zzzzzzzz", False),
        frame(STREAM, 1, 5, v(0) + v(0) + text("/s") + b"\x00\x00", False),
        frame(STREAM, 0, 5, b"hey", False),
        frame(STREAM, 2, 5, v(3) + crc_abc, False),
        frame(MSG, 1, 7, v(3) + b"ab", False),
        frame(MSG, 2, 7, b"c", False),
    ])

    def batch_of(total):
        """A BATCH whose payload is exactly `total` bytes: one MSG START|END inside."""
        for n in range(total, 0, -1):
            f = frame(MSG, 3, 1, b"\0" * n, False)
            if len(f) == total:
                return frame(BATCH, 0, 0, f)

    cases = {
        # section 2 / varint bounds
        "payload length non-minimal (81 00)": (port, [raw(0x13, v(1), b"\x81\x00", b"a")]),
        "payload length of 5 bytes": (port, [raw(0x13, v(1), b"\x81\x80\x80\x80\x00", b"a")]),
        "message total non-minimal": (port, [frame(MSG, 1, 1, b"\x85\x00abc")]),
        "message total 2^53 - 1 (8 bytes, over maxMessageSize)": (port, [frame(MSG, 1, 1, v(2**53 - 1) + b"a")]),
        "message total 2^53": (port, [frame(MSG, 1, 1, v(2**53) + b"a")]),
        "message total of 9 bytes": (port, [frame(MSG, 1, 1, v(5, 9) + b"a")]),
        "message total cut by the frame's end": (port, [frame(MSG, 1, 1, b"\x80")]),
        "routeLength non-minimal": (port, [frame(REQ, 3, 1, b"\x85\x00/echo")]),
        "routeLength 1025": (port, [frame(REQ, 3, 1, text("/" + "a" * 1024))]),
        "keyLength 64": (port, [frame(REQ, 7, 1, text("/echo") + text(b"k" * 64) + b"ab")]),
        "keyLength 65": (port, [frame(REQ, 7, 1, text("/echo") + text(b"k" * 65) + b"ab")]),
        "CREDIT increment non-minimal": (port, [frame(CREDIT, 0, 0, b"\x81\x00")]),
        "CREDIT increment 0": (port, [frame(CREDIT, 0, 0, b"\x00")]),
        "CREDIT(id) of 2^31": (port, [frame(CREDIT, 0, 7, v(2**31))]),
        "CREDIT(id) of 2^31 - 1 for an id not sending": (port, [frame(CREDIT, 0, 7, v(2**31 - 1))]),
        "CREDIT on an even id (the receiver's own parity)": (port, [frame(CREDIT, 0, 2, v(100))]),
        "STREAM total non-minimal": (port, [frame(STREAM, 1, 1, b"\x81\x00\x00" + text("/s") + b"\0\0")]),
        "STREAM offset non-minimal": (port, [frame(STREAM, 1, 1, b"\x00\x81\x00\0\0\0\0" + text("/s") + b"\0\0")]),
        "STREAM meta length non-minimal": (port, [frame(STREAM, 1, 1, b"\x00\x00" + text("/s") + b"\x00\x80\x00")]),
        "STREAM END length non-minimal": (port, [st_start(1), frame(STREAM, 2, 1, b"\x80\x00\0\0\0\0")]),
        "COMPRESSED length non-minimal": (port, [st_start(1, codec=1), frame(STREAM, 4, 1, b"\x81\x00\x03\x00")]),
        "STREAM codec 5": (port, [st_start(1, codec=5)]),
        # zero-length payloads
        "chunked MSG of total 0, empty END": (port, [frame(MSG, 1, 1, b"\x00"), frame(MSG, 2, 1, b"")]),
        "chunked MSG of total 0, empty middle frame": (port, [frame(MSG, 1, 1, b"\x00"), frame(MSG, 0, 1, b""), frame(MSG, 2, 1, b"")]),
        "chunked REQ of total 0": (port, [frame(REQ, 1, 1, v(0) + text("/echo")), frame(REQ, 2, 1, b"")]),
        "REQ with no data": (port, [frame(REQ, 3, 1, text("/echo"))]),
        "STREAM data frame of 0 bytes": (port, [st_start(1), frame(STREAM, 0, 1, b""), st_end(1, 0, 0)]),
        "STREAM START carrying data": (port, [st_start(1, total=4, data=b"abc"), st_end(1, 3, crc32c(b"abc"))]),
        # ids and states
        "MSG on an even id": (port, [frame(MSG, 3, 2, b"a")]),
        "STREAM START on an even id": (port, [st_start(2)]),
        "RES on an even id (no request of ours)": (port, [frame(RES, 3, 2, b"\x00")]),
        "CANCEL on an even id not in use": (port, [frame(CANCEL, 0, 2, u16(1))]),
        "STREAM data after its END": (port, [st_start(1), st_end(1, 0, 0), frame(STREAM, 0, 1, b"x")]),
        "REQ continuation of a chunked MSG": (port, [frame(MSG, 1, 1, v(4) + b"ab"), frame(REQ, 2, 1, b"cd")]),
        "keyed chunked REQ, total counting the key": (port, [frame(REQ, 5, 1, v(13) + text("/echo") + text(b"k" * 8) + b"ab"), frame(REQ, 2, 1, b"cd")]),
        "keyed chunked REQ, total of the data alone": (port, [frame(REQ, 5, 1, v(4) + text("/echo") + text(b"k" * 8) + b"ab"), frame(REQ, 2, 1, b"cd")]),
        # BATCH
        "BATCH of every frame type allowed in it": (port, [frame(BATCH, 0, 0, every)]),
        "empty BATCH": (port, [frame(BATCH, 0, 0, b"")]),
        "BATCH in a BATCH": (port, [frame(BATCH, 0, 0, frame(BATCH, 0, 0, frame(PING, 0, 0, b"12345678", False), False))]),
        "HELLO in a BATCH": (port, [frame(BATCH, 0, 0, frame(HELLO, 0, 0, b"", False))]),
        "RES in a BATCH for no request": (port, [frame(BATCH, 0, 0, frame(RES, 3, 1, b"\x00", False))]),
        # maxFrameSize 16384 exactly and one over
        "MSG of exactly maxFrameSize": (small, [frame(MSG, 3, 1, b"\0" * 16384)]),
        "MSG one over maxFrameSize": (small, [frame(MSG, 3, 1, b"\0" * 16385)]),
        "BATCH of exactly maxFrameSize": (small, [batch_of(16384)]),
        "BATCH one over maxFrameSize": (small, [batch_of(16385)]),
        "inner header one over maxFrameSize, cut": (small, [frame(BATCH, 0, 0, bytes([0x13, 1]) + v(16385) + b"abc")]),
    }
    out = {}
    for name, (where, frames) in cases.items():
        out[name] = fresh(where, lambda p, frames=frames: frames, timeout=10)
    hellos = {
        "HELLO value non-minimal": b"\x03\x81\x00",
        "HELLO key non-minimal": b"\x83\x00\x01",
        "HELLO unknown key 2^53 - 1 = 2^53 - 1": v(2**53 - 1) + v(2**53 - 1),
        "HELLO unknown key = 2^53": v(99) + v(2**53),
        "HELLO value of 9 bytes": v(99) + v(1, 9),
        "HELLO maxFrameSize 16384 in 4 bytes": b"\x01" + v(16384, 4),
    }
    for name, payload in hellos.items():
        out[name] = hello_only(port, payload)
    return out



@scenario
def server_batch(port, checksum=True):
    """One BATCH holding MSG, REQ, CANCEL, CREDIT, PING, PING|ACK, a whole STREAM, a
    chunked MSG and GOAWAY(0) (section 3.9; with `checksum` false both HELLOs turn
    checksums off: no CRC on the BATCH or anything else). Returns what came back."""
    settings = ((4, 0x0B),) if checksum else ((3, 0), (4, 0x0B))
    p = dial(port, settings=settings)
    inner = b"".join([
        frame(MSG, 3, 1, b"a", False),
        frame(REQ, 3, 3, text("/echo") + b"x", False),
        frame(CANCEL, 0, 99, u16(4004), False),
        frame(CREDIT, 0, 0, v(5), False),
        frame(PING, 0, 0, b"abcdefgh", False),
        frame(PING, 1, 0, b"zzzzzzzz", False),
        frame(STREAM, 1, 5, v(4) + v(0) + text("/s") + b"\x00\x00", False),
        frame(STREAM, 0, 5, b"hey", False),
        frame(STREAM, 2, 5, v(3) + struct.pack(">I", crc32c(b"hey")), False),
        frame(MSG, 1, 7, v(3) + b"ab", False),
        frame(MSG, 2, 7, b"c", False),
        frame(GOAWAY, 0, 0, u16(0) + b"bye", False),
    ])
    p.send(frame(BATCH, 0, 0, inner, p.crc))
    p.until(lambda f: False, 15)  # until the server closes
    out = {"crc": p.crc, "closed": p.closed}
    for f in p.frames:
        if f.t == RES:
            out[f"res{f.id}"] = f.payload.decode(errors="replace")
        elif f.t == PING:
            out["pong"] = f.payload.decode()
        elif f.t == GOAWAY:
            out["goaway"] = f.errno()
        elif f.t == CANCEL:
            out[f"cancel{f.id}"] = f.errno()
    # with checksums off nothing carries a CRC: every top-level frame is exactly header + payload
    out["batchedReplies"] = any(f.batched for f in p.frames)
    p.close()
    return out



def wait_credit(p, need_conn, need_msg, state, sid):
    """Reads CREDIT frames until `state` has the credit asked for (False after 5 s)."""
    deadline = time.time() + 10
    while (state["conn"] < need_conn or state["msg"] < need_msg) and time.time() < deadline:
        for f in p.poll(time.time() + 0.1):
            if f.t == CREDIT:
                inc, _ = rv(f.payload, 0)
                state["grants"].append([f.id, inc])
                if f.id == 0:
                    state["conn"] += inc
                elif f.id == sid:
                    state["msg"] += inc
                    state["maxMsgCredit"] = max(state["maxMsgCredit"], state["msg"])
    return state["conn"] >= need_conn and state["msg"] >= need_msg


@scenario
def server_credit(port, total=200000, chunk=8192):
    """A chunked MSG and a STREAM sent strictly within the credit section 3.6 describes
    (connection and message credit starting at the server's windows, every data frame
    consuming its payload; a COMPRESSED frame the larger of payload and `length`),
    waiting for CREDIT whenever the next frame does not fit. The server must grant
    in time for frames of half a window, in steps of at least a quarter of a window,
    never more than streamWindow outstanding on a message."""
    p = dial(port, settings=((4, 0x0B), (5, 1)))
    cw, sw = p.settings.get(6, 1 << 24), p.settings.get(7, 1 << 22)
    out = {"connectionWindow": cw, "streamWindow": sw}
    st = {"conn": cw, "msg": sw, "grants": [], "maxMsgCredit": sw}
    sent = 0
    first = True
    while sent < total:
        n = min(chunk - (4 if first else 0), total - sent)
        pl = (v(total) if first else b"") + b"\xab" * n
        flags = 1 if first else 2 if sent + n == total else 0
        if not wait_credit(p, len(pl), len(pl), st, 1):
            out["msgStalledAt"] = sent
            break
        p.send(frame(MSG, flags, 1, pl))
        st["conn"] -= len(pl)
        st["msg"] -= len(pl)
        sent += n
        first = False
    out["msgGrants"] = [g[1] for g in st["grants"] if g[0] == 1]
    out["maxMsgCredit"] = st["maxMsgCredit"]
    conn_grants = [g[1] for g in st["grants"] if g[0] == 0]
    # a compressed stream: 8000 zero bytes a frame, each a few dozen bytes on the wire
    block = b"\0" * 8000
    z = v(8000) + deflate_raw(block)
    start = st_start(3, codec=1)
    st.update({"msg": sw, "grants": [], "maxMsgCredit": sw})
    p.send(start)
    st["conn"] -= len(start) - 7
    st["msg"] -= len(start) - 7
    crc = 0
    content = 0
    for _ in range(30):
        if not wait_credit(p, len(z), max(len(z), 8000), st, 3):
            out["streamStalledAt"] = content
            break
        p.send(frame(STREAM, 4, 3, z))
        st["conn"] -= len(z)
        st["msg"] -= max(len(z), 8000)
        crc = crc32c(block, crc)
        content += 8000
    p.send(st_end(3, content, crc))
    r = p.until(lambda f: f.t == RES and f.id == 3)
    out["streamAnswer"] = r and r.payload.decode(errors="replace")
    out["streamGrants"] = [g[1] for g in st["grants"] if g[0] == 3]
    out["maxStreamCredit"] = st["maxMsgCredit"]
    out["connGrants"] = conn_grants + [g[1] for g in st["grants"] if g[0] == 0]
    out["alive"] = p.ping()
    p.close()
    return out



def answer_of(port, frames, timeout=10):
    """Sends `frames` on a fresh connection; returns the first RES or CANCEL that came
    back ("OK <data>", "ERR <errno>", "CANCEL <errno>", or "none") and the outcome."""
    p = dial(port, settings=((4, 0x0B), (5, 1)))
    try:
        p.send(b"".join(frames))
        r = p.until(lambda f: f.t in (RES, CANCEL), timeout)
        o = outcome(p, timeout)
        if r is None:
            return f"none, {o}"
        if r.t == CANCEL:
            return f"CANCEL {r.errno()}, {o}"
        if r.payload[0] == 1:
            return f"ERR {struct.unpack('>H', r.payload[1:3])[0]}, {o}"
        return f"OK {r.payload[1:].decode(errors='replace')}, {o}"
    finally:
        p.close()


@scenario
def server_streams(port):
    """STREAM START with offset and prefixCrc (a resumed stream: END's CRC32C covers the
    whole content, seeded by prefixCrc), END against total and the bytes read, data past
    a known total (by a COMPRESSED frame's declared length), an early answer followed
    by the sender's data and END, then the id reused; resume queries (section 3.11)."""
    abc, defg = b"abc", b"defg"
    z = v(10000) + deflate_raw(b"\0" * 10000)
    cases = {
        "resumed at 3 of 7, END CRC of all 7": [st_start(1, total=8, offset=3, pcrc=crc32c(abc)), frame(STREAM, 0, 1, defg), st_end(1, 7, crc32c(abc + defg))],
        "resumed, END CRC of another prefix": [st_start(1, total=8, offset=3, pcrc=crc32c(abc)), frame(STREAM, 0, 1, defg), st_end(1, 7, crc32c(b"abx" + defg))],
        "resumed, unknown total": [st_start(1, total=0, offset=3, pcrc=crc32c(abc)), frame(STREAM, 0, 1, defg), st_end(1, 7, crc32c(abc + defg))],
        "resumed, END length without the offset": [st_start(1, total=0, offset=3, pcrc=crc32c(abc)), frame(STREAM, 0, 1, defg), st_end(1, 4, crc32c(abc + defg))],
        "offset past the known content length": [st_start(1, total=3, offset=3, pcrc=crc32c(abc))],
        "END length short of total": [st_start(1, total=5), frame(STREAM, 0, 1, abc), st_end(1, 3, crc32c(abc))],
        "END length over the bytes read": [st_start(1), frame(STREAM, 0, 1, abc), st_end(1, 4, crc32c(abc))],
        "empty stream, known total": [st_start(1, total=1), st_end(1, 0, 0)],
        "empty stream, unknown total": [st_start(1), st_end(1, 0, 0)],
        "COMPRESSED frame past a known total": [st_start(1, total=5001, codec=1), frame(STREAM, 4, 1, z)],
        "missing route (early answer)": [st_start(1, route="/nope")],
        "resume query, route without resume": [frame(REQ, 3, 1, text("/pointsub/resume/1") + text("/s") + text("t" * 40))],
        "resume query, missing route": [frame(REQ, 3, 1, text("/pointsub/resume/1") + text("/nope") + text("t" * 40))],
    }
    out = {name: answer_of(port, fs) for name, fs in cases.items()}
    # An early answer, then the sender's data and END: its direction ended, the id is free again.
    p = dial(port)
    p.send(st_start(1, route="/nope") + frame(STREAM, 0, 1, abc) + st_end(1, 3, crc32c(abc)))
    first = p.until(lambda f: f.t in (RES, CANCEL))
    n = len(p.frames)
    p.send(st_start(1, total=3) + frame(STREAM, 0, 1, b"ab") + st_end(1, 2, crc32c(b"ab")))
    again = p.until(lambda f: f.t in (RES, CANCEL), 10, n)
    out["early answer, then data and END; id reused"] = [first and first.payload[:3].hex(), again and again.payload.decode(errors="replace"), outcome(p)]
    p.close()
    p = dial(port)
    p.send(st_start(1, route="/nope"))
    p.until(lambda f: f.t == RES)
    p.send(st_start(1, total=3))
    out["early answer, START again before END or CANCEL"] = outcome(p)
    p.close()
    return out


@scenario
def server_interleave(port, route="/order"):
    """Chunked REQ and MSG frames interleaved with single-frame MSGs on other ids
    (section 3.3: single-frame messages in order; chunked ones when complete)."""
    p = dial(port)
    p.send(b"".join([
        frame(REQ, 1, 1, v(3000) + text("/echo") + b"r" * 1000),
        frame(MSG, 3, 3, b"m1"),
        frame(MSG, 1, 5, v(3) + b"C"),
        frame(MSG, 3, 7, b"m2"),
        frame(REQ, 0, 1, b"r" * 1000),
        frame(MSG, 3, 9, b"m3"),
        frame(MSG, 2, 5, b"CC"),
        frame(REQ, 2, 1, b"r" * 1000),
        frame(MSG, 3, 11, b"m4"),
    ]))
    r = p.until(lambda f: f.t == RES and f.id == 1 and f.flags & 2)
    echoed = bytearray()
    for f in p.frames:
        if f.t == RES and f.id == 1:
            pl = f.payload
            o = 0
            if f.flags & 1 and not f.flags & 2:
                _, o = rv(pl, o)
            echoed += pl[o + 1 :] if f.flags & 1 else pl
    n = len(p.frames)
    p.send(frame(REQ, 3, 13, text(route)))
    r = p.until(lambda f: f.t == RES and f.id == 13, 10, n)
    out = {"echo": bytes(echoed).decode(errors="replace"), "order": r.payload[1:].decode(errors="replace") if r else None}
    p.close()
    return out


@scenario
def server_open_limit(port):
    """1025 chunked MSGs open at once: the 1025th is refused with CANCEL(id, 2003)
    (section 6) and the connection stays; one ended, a new START is taken; at 1024
    open a chunked REQ is refused the same way."""
    p = dial(port)
    cancels = lambda: [[f.id, f.errno()] for f in p.frames if f.t == CANCEL]
    p.send(b"".join(frame(MSG, 1, 2 * i + 1, v(2) + b"a") for i in range(1025)))
    out = {"after 1025": [p.ping(b"ping0001"), cancels()]}
    p.send(frame(MSG, 2, 1, b"b") + frame(MSG, 1, 3001, v(2) + b"a"))
    out["one ended, one more"] = [p.ping(b"ping0002"), cancels()]
    p.send(frame(REQ, 1, 3003, v(2) + text("/echo") + b"a"))
    out["a chunked REQ at 1024 open"] = [p.ping(b"ping0003"), cancels()]
    p.close()
    return out


if __name__ == "__main__":
    main()
