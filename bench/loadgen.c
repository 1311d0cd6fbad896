/*
 * pointsub load generator for bench/workers.ts (issue 16): a wrk-style client
 * that costs a small fraction of the server's CPU per request, so that a
 * 2-core machine can measure what a second server process adds.
 *
 *   cc -O2 -march=native -o loadgen bench/loadgen.c
 *   loadgen PORT CONNS DEPTH WARMUP_S SECONDS ROUTE SIZE
 *
 * One thread, one epoll set, CONNS nonblocking TCP connections to
 * 127.0.0.1:PORT. Per connection: the real handshake (preface, HELLO with
 * CRC32C; waits for the server's preface and HELLO and takes its
 * connectionWindow), then DEPTH requests kept in flight: REQ frames with
 * increasing odd ids to ROUTE carrying SIZE bytes (a fixed pattern), packed
 * into one BATCH frame (one CRC32C) per refill, written with one write().
 * Reads take up to 256 KiB per read(). Every frame received is checked as
 * the server checks them: the CRC32C trailer of every top-level frame
 * (hardware CRC32C), the frame layout, and every RES must be START|END,
 * status OK and carry exactly the SIZE bytes sent (memcmp): a wrong answer
 * exits with status 2. Connection credit is returned every 1 MiB; PINGs are
 * answered; GOAWAY exits with status 3.
 *
 * LOADGEN_IO=uring drives the same connections through io_uring instead
 * of epoll (LOADGEN_MIN=n: wait for n completions per io_uring_enter, at
 * most LOADGEN_WAIT_US µs).
 *
 * Prints JSON lines on stdout: {"t":"start"} after WARMUP_S s,
 * {"t":"end"} after SECONDS more, then
 * {"t":"result","rate":…,"secs":…,"clientCpu":…,"reads":…,"writes":…}
 * (requests answered per second in the window, and this process's CPU in
 * cores over it, from getrusage).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/io_uring.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>

#if defined(__SSE4_2__)
#include <nmmintrin.h>
#endif

static uint32_t crc_table[256];

static void crc_init(void) {
  for (uint32_t i = 0; i < 256; i++) {
    uint32_t c = i;
    for (int k = 0; k < 8; k++) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
    crc_table[i] = c;
  }
}

static uint32_t crc32c(const uint8_t *p, size_t n) {
  uint32_t c = 0xFFFFFFFFu;
#if defined(__SSE4_2__) && defined(__x86_64__)
  uint64_t c64 = c;
  while (n >= 8) {
    uint64_t v;
    memcpy(&v, p, 8);
    c64 = _mm_crc32_u64(c64, v);
    p += 8;
    n -= 8;
  }
  c = (uint32_t)c64;
  while (n--) c = _mm_crc32_u8(c, *p++);
#else
  while (n--) c = crc_table[(c ^ *p++) & 0xFF] ^ (c >> 8);
#endif
  return c ^ 0xFFFFFFFFu;
}

static void put_be32(uint8_t *p, uint32_t v) {
  p[0] = v >> 24;
  p[1] = v >> 16;
  p[2] = v >> 8;
  p[3] = v;
}

static uint32_t get_be32(const uint8_t *p) {
  return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

static size_t put_varint(uint8_t *p, uint64_t v) {
  size_t n = 0;
  while (v >= 0x80) {
    p[n++] = (uint8_t)(v | 0x80);
    v >>= 7;
  }
  p[n++] = (uint8_t)v;
  return n;
}

/* A varint at *pos (< end); returns -1 when cut or longer than 5 bytes. */
static int64_t get_varint(const uint8_t *b, size_t *pos, size_t end) {
  uint64_t v = 0;
  for (int shift = 0; shift < 35 && *pos < end; shift += 7) {
    uint8_t x = b[(*pos)++];
    v |= (uint64_t)(x & 0x7F) << shift;
    if (x < 0x80) return (int64_t)v;
  }
  return -1;
}

#define RBUF (256 * 1024)
#define WBUF (1024 * 1024)

struct conn {
  int fd;
  uint8_t *rbuf;
  size_t rlen;
  uint8_t *wbuf;
  size_t wlen;
  int prefaceLeft;
  int started;
  int64_t credit;   /* what the server still lets us send (REQ payload bytes) */
  uint64_t consumed; /* RES payload bytes not yet returned as CREDIT */
  uint32_t nextId;
  int outstanding;
  int wantOut;
};

static int ep;
static int depth;
static size_t size;
static const char *route;
static size_t routeLen;
static uint8_t *reqPayload; /* route length, route, data */
static size_t reqPayloadLen;
static uint64_t answered;
static uint64_t nReads, nWrites, nWaits;

static void die(int code, const char *msg) {
  fprintf(stderr, "loadgen: %s\n", msg);
  exit(code);
}

static void frame(struct conn *c, uint8_t type_flags, uint32_t id, const uint8_t *payload, size_t len) {
  if (c->wlen + len + 20 > WBUF) die(1, "write buffer full");
  uint8_t *p = c->wbuf + c->wlen;
  size_t n = 0;
  p[n++] = type_flags;
  n += put_varint(p + n, id);
  n += put_varint(p + n, len);
  memcpy(p + n, payload, len);
  n += len;
  put_be32(p + n, crc32c(p, n));
  c->wlen += n + 4;
}

static void refill(struct conn *c) {
  if (!c->started) return;
  int want = depth - c->outstanding;
  if (want <= 0) return;
  /* BATCH header (up to 1 + 1 + 5 bytes) is written after the inner frames are known. */
  size_t room = 8;
  if (c->wlen + room + (size_t)want * (reqPayloadLen + 8) + 4 > WBUF) return;
  uint8_t *base = c->wbuf + c->wlen;
  size_t p = room;
  int n = 0;
  while (n < want && c->credit >= (int64_t)reqPayloadLen) {
    base[p++] = 0x23; /* REQ, START|END */
    p += put_varint(base + p, c->nextId);
    c->nextId += 2;
    if (c->nextId > 0xFFFFFF00u) c->nextId = 1;
    p += put_varint(base + p, reqPayloadLen);
    memcpy(base + p, reqPayload, reqPayloadLen);
    p += reqPayloadLen;
    c->credit -= (int64_t)reqPayloadLen;
    n++;
  }
  if (n == 0) return;
  uint8_t h[8];
  size_t hn = 0;
  h[hn++] = 0x80; /* BATCH */
  h[hn++] = 0;
  hn += put_varint(h + hn, p - room);
  size_t start = room - hn;
  memcpy(base + start, h, hn);
  size_t flen = p - start;
  memmove(base, base + start, flen);
  put_be32(base + flen, crc32c(base, flen));
  c->wlen += flen + 4;
  c->outstanding += n;
}

static void flush_out(struct conn *c) {
  while (c->wlen > 0) {
    ssize_t w = write(c->fd, c->wbuf, c->wlen);
    nWrites++;
    if (w < 0) {
      if (errno == EAGAIN) break;
      die(1, "write failed");
    }
    if ((size_t)w < c->wlen) memmove(c->wbuf, c->wbuf + w, c->wlen - (size_t)w);
    c->wlen -= (size_t)w;
  }
  int want = c->wlen > 0;
  if (want != c->wantOut) {
    struct epoll_event ev = {.events = EPOLLIN | (want ? EPOLLOUT : 0), .data.ptr = c};
    epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
    c->wantOut = want;
  }
}

/* The frames in b[pos, end); with_crc: top level (each has a trailer). Returns the bytes used. */
static size_t frames(struct conn *c, const uint8_t *b, size_t pos, size_t end, int with_crc) {
  while (pos < end) {
    size_t at = pos;
    uint8_t tf = b[pos++];
    int64_t id = get_varint(b, &pos, end);
    int64_t len = id < 0 ? -1 : get_varint(b, &pos, end);
    if (len < 0 || pos + (size_t)len + (with_crc ? 4 : 0) > end) {
      if (!with_crc) die(2, "inner frame runs past its BATCH");
      return at;
    }
    size_t ps = pos, pe = pos + (size_t)len;
    if (with_crc && crc32c(b + at, pe - at) != get_be32(b + pe)) die(2, "bad CRC32C from the server");
    int type = tf >> 4;
    if (type == 3) {
      if (tf != 0x33 || (size_t)len != 1 + size || b[ps] != 0 || memcmp(b + ps + 1, reqPayload + 1 + routeLen, size) != 0)
        die(2, "wrong response");
      c->consumed += (uint64_t)len;
      c->outstanding--;
      answered++;
    } else if (type == 8) {
      if (!with_crc) die(2, "BATCH inside BATCH");
      frames(c, b, ps, pe, 0);
    } else if (type == 0) {
      c->credit = 16777216;
      size_t s = ps;
      while (s < pe) {
        int64_t k = get_varint(b, &s, pe);
        int64_t v = get_varint(b, &s, pe);
        if (k < 0 || v < 0) die(2, "bad HELLO");
        if (k == 6) c->credit = v;
        if (k == 3 && v == 0) die(2, "server turned checksums off: not measured here");
      }
      c->started = 1;
    } else if (type == 5) {
      size_t s = ps;
      int64_t v = get_varint(b, &s, pe);
      if (v < 0) die(2, "bad CREDIT");
      if (id == 0) c->credit += v;
    } else if (type == 6) {
      if ((tf & 1) == 0) frame(c, 0x61, 0, b + ps, (size_t)len);
    } else if (type == 7) {
      fprintf(stderr, "loadgen: GOAWAY: %.*s\n", (int)(len > 2 ? len - 2 : 0), (const char *)b + ps + 2);
      exit(3);
    } else if (type == 1 || type == 2) {
      c->consumed += (uint64_t)len;
    } else {
      die(2, "unexpected frame type");
    }
    pos = pe + (with_crc ? 4 : 0);
  }
  return pos;
}

/* r bytes were read into c->rbuf + c->rlen: handles the whole frames among them. */
static void received(struct conn *c, size_t r) {
  size_t have = c->rlen + r;
  size_t pos = 0;
  if (c->prefaceLeft > 0) {
    size_t skip = have < (size_t)c->prefaceLeft ? have : (size_t)c->prefaceLeft;
    if (memcmp(c->rbuf, "PSUB", skip < 4 ? skip : 4) != 0) die(2, "bad preface");
    c->prefaceLeft -= (int)skip;
    pos = skip;
  }
  size_t used = frames(c, c->rbuf, pos, have, 1);
  if (used < have) memmove(c->rbuf, c->rbuf + used, have - used);
  c->rlen = have - used;
  if (c->rlen == RBUF) die(2, "frame larger than the read buffer");
}

/* After input: connection credit returned every MiB, then the next requests. */
static void answer(struct conn *c) {
  if (c->consumed >= (1u << 20)) {
    uint8_t p[8];
    size_t n = put_varint(p, c->consumed);
    frame(c, 0x50, 0, p, n);
    c->consumed = 0;
  }
  refill(c);
}

static void on_readable(struct conn *c) {
  for (;;) {
    ssize_t r = read(c->fd, c->rbuf + c->rlen, RBUF - c->rlen);
    nReads++;
    if (r < 0) {
      if (errno == EAGAIN) break;
      die(1, "read failed");
    }
    if (r == 0) die(1, "server closed a connection");
    received(c, (size_t)r);
    if ((size_t)r < RBUF / 2) break; /* drained: skip the read that would say EAGAIN */
  }
  answer(c);
  flush_out(c);
}

/* ------------------------------------------------------------ io_uring */
/*
 * The same connections through io_uring (LOADGEN_IO=uring; measured no
 * cheaper than epoll per request on this machine: the TCP work of each
 * send and receive dominates, not the syscalls): one RECV always armed per
 * connection, one SEND at a time per connection (what is produced while it
 * is in flight goes out after it), and one io_uring_enter per round for
 * every submission and completion: no read/write/epoll_wait per
 * connection. DEFER_TASKRUN: the kernel completes the round's work inside
 * that one call.
 */
static int ringFd = -1;
static unsigned *sqHead, *sqTail, *sqMask, *sqArray, *cqHead, *cqTail, *cqMask;
static unsigned sqLocalTail, toSubmit, sqEntries;
static struct io_uring_sqe *sqes;
static struct io_uring_cqe *cqes;

static int uring_setup(unsigned entries) {
  struct io_uring_params p;
  memset(&p, 0, sizeof p);
  p.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_CQSIZE;
  p.cq_entries = entries * 2;
  int fd = (int)syscall(__NR_io_uring_setup, entries, &p);
  if (fd < 0) return -1;
  if (!(p.features & IORING_FEAT_SINGLE_MMAP) || !(p.features & IORING_FEAT_EXT_ARG)) {
    close(fd);
    return -1;
  }
  size_t sqSize = p.sq_off.array + p.sq_entries * sizeof(unsigned);
  size_t cqSize = p.cq_off.cqes + p.cq_entries * sizeof(struct io_uring_cqe);
  size_t size = sqSize > cqSize ? sqSize : cqSize;
  uint8_t *ring = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, IORING_OFF_SQ_RING);
  sqes = mmap(NULL, p.sq_entries * sizeof(struct io_uring_sqe), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd,
              IORING_OFF_SQES);
  if (ring == MAP_FAILED || sqes == MAP_FAILED) die(1, "io_uring mmap failed");
  sqHead = (unsigned *)(ring + p.sq_off.head);
  sqTail = (unsigned *)(ring + p.sq_off.tail);
  sqMask = (unsigned *)(ring + p.sq_off.ring_mask);
  sqArray = (unsigned *)(ring + p.sq_off.array);
  cqHead = (unsigned *)(ring + p.cq_off.head);
  cqTail = (unsigned *)(ring + p.cq_off.tail);
  cqMask = (unsigned *)(ring + p.cq_off.ring_mask);
  cqes = (struct io_uring_cqe *)(ring + p.cq_off.cqes);
  sqEntries = p.sq_entries;
  sqLocalTail = *sqTail;
  ringFd = fd;
  return 0;
}

static long waitNs = 50 * 1000 * 1000;

static int uring_enter(unsigned minComplete) {
  __atomic_store_n(sqTail, sqLocalTail, __ATOMIC_RELEASE);
  struct __kernel_timespec ts = {.tv_sec = 0, .tv_nsec = minComplete > 1 ? waitNs : 50 * 1000 * 1000};
  struct io_uring_getevents_arg arg;
  memset(&arg, 0, sizeof arg);
  arg.ts = (uint64_t)(uintptr_t)&ts;
  int r = (int)syscall(__NR_io_uring_enter, ringFd, toSubmit, minComplete,
                       IORING_ENTER_GETEVENTS | IORING_ENTER_EXT_ARG, &arg, sizeof arg);
  nWaits++;
  if (r < 0 && errno != ETIME && errno != EINTR && errno != EBUSY) die(1, "io_uring_enter failed");
  if (r >= 0) toSubmit -= (unsigned)r > toSubmit ? toSubmit : (unsigned)r;
  return r;
}

static struct io_uring_sqe *sqe_get(void) {
  if (sqLocalTail - __atomic_load_n(sqHead, __ATOMIC_ACQUIRE) >= sqEntries) uring_enter(0);
  unsigned idx = sqLocalTail & *sqMask;
  struct io_uring_sqe *e = &sqes[idx];
  memset(e, 0, sizeof *e);
  sqArray[idx] = idx;
  sqLocalTail++;
  toSubmit++;
  return e;
}

static struct conn *conns0;

static void arm_recv(struct conn *c) {
  struct io_uring_sqe *e = sqe_get();
  e->opcode = IORING_OP_RECV;
  e->fd = c->fd;
  e->addr = (uint64_t)(uintptr_t)(c->rbuf + c->rlen);
  e->len = (unsigned)(RBUF - c->rlen);
  e->user_data = ((uint64_t)(c - conns0) << 1);
  nReads++;
}

static void send_next(struct conn *c) {
  if (c->wantOut || c->wlen == 0) return; /* wantOut: a SEND in flight (its length in sending) */
  struct io_uring_sqe *e = sqe_get();
  e->opcode = IORING_OP_SEND;
  e->fd = c->fd;
  e->addr = (uint64_t)(uintptr_t)c->wbuf;
  e->len = (unsigned)c->wlen;
  e->user_data = ((uint64_t)(c - conns0) << 1) | 1;
  c->wantOut = 1;
  nWrites++;
}

static void uring_complete(struct io_uring_cqe *e) {
  struct conn *c = &conns0[e->user_data >> 1];
  if (e->user_data & 1) {
    c->wantOut = 0;
    if (e->res < 0) die(1, "send failed");
    size_t w = (size_t)e->res;
    if (w < c->wlen) memmove(c->wbuf, c->wbuf + w, c->wlen - w);
    c->wlen -= w;
    send_next(c);
    return;
  }
  if (e->res == -EAGAIN || e->res == -EINTR) {
    arm_recv(c);
    return;
  }
  if (e->res < 0) die(1, "recv failed");
  if (e->res == 0) die(1, "server closed a connection");
  received(c, (size_t)e->res);
  answer(c);
  send_next(c);
  arm_recv(c);
}

/* Handles every completion posted; returns how many. */
static unsigned uring_reap(void) {
  unsigned head = *cqHead, n = 0;
  unsigned tail = __atomic_load_n(cqTail, __ATOMIC_ACQUIRE);
  while (head != tail) {
    uring_complete(&cqes[head & *cqMask]);
    head++;
    n++;
    if (head == tail) tail = __atomic_load_n(cqTail, __ATOMIC_ACQUIRE);
  }
  __atomic_store_n(cqHead, head, __ATOMIC_RELEASE);
  return n;
}

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

/* CPU seconds this process used so far; *user gets the user-mode part. */
static double cpu_seconds(double *user) {
  struct rusage u;
  getrusage(RUSAGE_SELF, &u);
  *user = (double)u.ru_utime.tv_sec + (double)u.ru_utime.tv_usec / 1e6;
  return *user + (double)u.ru_stime.tv_sec + (double)u.ru_stime.tv_usec / 1e6;
}

int main(int argc, char **argv) {
  if (argc != 8 && argc != 9) die(1, "usage: loadgen PORT CONNS DEPTH WARMUP_S SECONDS ROUTE SIZE [PAUSE_US]");
  long pauseUs = argc == 9 ? atol(argv[8]) : 0;
  int port = atoi(argv[1]);
  int conns = atoi(argv[2]);
  depth = atoi(argv[3]);
  double warmup = atof(argv[4]);
  double seconds = atof(argv[5]);
  route = argv[6];
  routeLen = strlen(route);
  size = (size_t)atol(argv[7]);
  if (routeLen > 127 || conns < 1 || depth < 1 || size > 100000) die(1, "bad arguments");
  crc_init();
  setvbuf(stdout, NULL, _IONBF, 0);
  reqPayloadLen = 1 + routeLen + size;
  reqPayload = malloc(reqPayloadLen);
  reqPayload[0] = (uint8_t)routeLen;
  memcpy(reqPayload + 1, route, routeLen);
  for (size_t i = 0; i < size; i++) reqPayload[1 + routeLen + i] = (uint8_t)(i * 7 + 1);
  if (reqPayloadLen >= 128) die(1, "route + size must fit a one-byte length");

  const char *io = getenv("LOADGEN_IO");
  unsigned minBatch = getenv("LOADGEN_MIN") != NULL ? (unsigned)atoi(getenv("LOADGEN_MIN")) : 1;
  if (getenv("LOADGEN_WAIT_US") != NULL) waitNs = atol(getenv("LOADGEN_WAIT_US")) * 1000;
  int uring = io != NULL && strcmp(io, "uring") == 0;
  if (uring && uring_setup(512) != 0) die(1, "LOADGEN_IO=uring: io_uring not available");
  if (uring && conns > 200) die(1, "io_uring mode: at most 200 connections");
  ep = epoll_create1(0);
  struct conn *cs = calloc((size_t)conns, sizeof *cs);
  conns0 = cs;
  struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
  for (int i = 0; i < conns; i++) {
    struct conn *c = &cs[i];
    c->fd = socket(AF_INET, SOCK_STREAM, 0);
    if (c->fd < 0 || connect(c->fd, (struct sockaddr *)&addr, sizeof addr) != 0) die(1, "connect failed");
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (fcntl(c->fd, F_SETFL, fcntl(c->fd, F_GETFL) | O_NONBLOCK) != 0) die(1, "fcntl failed");
    c->rbuf = malloc(RBUF);
    c->wbuf = malloc(WBUF);
    c->prefaceLeft = 6;
    c->nextId = 1;
    memcpy(c->wbuf, "PSUB\x01\x01", 6);
    c->wlen = 6;
    uint8_t hello[16];
    size_t hn = 0;
    hn += put_varint(hello + hn, 6);
    hn += put_varint(hello + hn, 2147483647); /* connectionWindow: credit is returned every MiB anyway */
    hn += put_varint(hello + hn, 4);
    hn += put_varint(hello + hn, 0);
    frame(c, 0x00, 0, hello, hn);
    if (uring) {
      send_next(c);
      arm_recv(c);
      continue;
    }
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
    epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev);
    flush_out(c);
  }

  struct epoll_event evs[256];
  double t0 = now();
  double tStart = t0 + warmup, tEnd = tStart + seconds;
  int phase = 0;
  uint64_t n0 = 0, r0 = 0, w0 = 0, e0 = 0;
  double cpu0 = 0, user0 = 0, tReal0 = 0;
  for (;;) {
    int n = 0;
    if (uring) {
      uring_enter(minBatch);
      n = (int)uring_reap();
    } else {
      n = epoll_wait(ep, evs, 256, 50);
      nWaits++;
    }
    for (int i = 0; i < n && !uring; i++) {
      struct conn *c = evs[i].data.ptr;
      if (evs[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP)) on_readable(c);
      else if (evs[i].events & EPOLLOUT) flush_out(c);
    }
    if (pauseUs > 0 && n < 256) {
      /* Let answers gather on many connections, then take them in one wake-up. */
      struct timespec ts = {.tv_sec = 0, .tv_nsec = pauseUs * 1000};
      nanosleep(&ts, NULL);
    }
    double t = now();
    if (phase == 0 && t >= tStart) {
      printf("{\"t\":\"start\"}\n");
      n0 = answered;
      r0 = nReads;
      w0 = nWrites;
      e0 = nWaits;
      cpu0 = cpu_seconds(&user0);
      tReal0 = now();
      phase = 1;
    } else if (phase == 1 && t >= tEnd) {
      uint64_t n1 = answered;
      double user1;
      double cpu = cpu_seconds(&user1) - cpu0;
      double secs = now() - tReal0;
      int started = 0;
      for (int i = 0; i < conns; i++) started += cs[i].started;
      printf("{\"t\":\"end\"}\n");
      printf("{\"t\":\"result\",\"rate\":%.1f,\"secs\":%.4f,\"clientCpu\":%.4f,\"clientUser\":%.4f,\"reads\":%llu,\"writes\":%llu,\"waits\":%llu,\"started\":%d}\n",
             (double)(n1 - n0) / secs, secs, cpu / secs, (user1 - user0) / secs, (unsigned long long)(nReads - r0),
             (unsigned long long)(nWrites - w0), (unsigned long long)(nWaits - e0), started);
      return 0;
    }
  }
}
