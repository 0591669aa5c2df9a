/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * In-process microbenchmark of one virtqueue's data path:
 * vu_queue_pop -> vu_queue_push -> vu_queue_notify.
 *
 * Written against the public libvhost-user API only, so that the same source
 * links against the C original and against this crate's library.  The
 * device is set up in-process: this program plays the vhost-user frontend
 * over a socketpair (raw messages) and calls vu_dispatch() itself.  Guest
 * memory is one or more memfd regions (1..8 with SET_MEM_TABLE, more with
 * ADD_MEM_REG); buffers are spread over all regions.
 *
 * Modes:
 *   thread  (default)  a frontend thread keeps DEPTH requests in flight and
 *                      busy-polls the used ring; the backend thread loops
 *                      pop -> push -> notify.  Prints requests/s and backend
 *                      thread CPU ns per request.
 *   --inline           single thread, deterministic: publish DEPTH requests,
 *                      call bench_backend_drain() (pop/push/notify until the
 *                      ring is empty), reap, repeat.  For callgrind with
 *                      --toggle-collect=bench_backend_drain.
 *
 * Usage: micro [--inline] -n REQUESTS -d DEPTH -s SHAPE -r REGIONS
 *              [-e] (EVENT_IDX) [-i] (inflight tracking) [-p] (packed ring)
 *   -p negotiates VIRTIO_F_RING_PACKED (bit 34); a library that does not offer it
 *   makes the program exit with status 3 ("packed rings not offered").
 *   SHAPE: chain3 | indirect16 | seg64
 * Output: one line "requests=N seconds=S cpu_ns=C" (thread mode) or
 *         "requests=N" (inline mode).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "libvhost-user.h"

#define BENCH_PROG "micro"
#include "inproc-frontend.h"

#define QSIZE 1024
#define REGION_SIZE (4ull << 20)
#define MAX_REGIONS 256

/* Message numbers and feature bits (numeric: 7.2 and 10.0 headers name
 * some of them differently). */
enum {
    M_GET_FEATURES = 1, M_SET_FEATURES = 2, M_SET_OWNER = 3, M_SET_MEM_TABLE = 5,
    M_SET_VRING_NUM = 8, M_SET_VRING_ADDR = 9, M_SET_VRING_BASE = 10,
    M_SET_VRING_KICK = 12, M_SET_VRING_CALL = 13, M_GET_PROTOCOL_FEATURES = 15,
    M_SET_PROTOCOL_FEATURES = 16, M_SET_VRING_ENABLE = 18,
    M_GET_INFLIGHT_FD = 31, M_SET_INFLIGHT_FD = 32, M_ADD_MEM_REG = 37,
};
#define F_INDIRECT (1ull << 28)
#define F_EVENT_IDX (1ull << 29)
#define F_PROTOCOL (1ull << 30)
#define F_PACKED (1ull << 34)
#define PF_INFLIGHT (1ull << 12)
#define PF_MEM_SLOTS (1ull << 15)

#define D_NEXT 1
#define D_WRITE 2
#define D_INDIRECT 4

struct desc { uint64_t addr; uint32_t len; uint16_t flags, next; };

struct region { uint64_t gpa; uint8_t *host; int fd; uint64_t next; };

static struct region regions[MAX_REGIONS];
static int nregions = 1;
static bool event_idx, inflight, inline_mode, packed;
static int depth = 16;
static uint64_t total = 100000;
static int shape_n;          /* descriptors per request */
static bool shape_indirect;

/* driver-side ring */
static struct desc *dtab;
static volatile uint16_t *avail; /* flags, idx, ring[QSIZE], used_event */
static volatile uint8_t *used;   /* flags, idx, ring[QSIZE]{id,len}, avail_event */
static uint16_t heads[QSIZE];
static uint16_t next_avail, last_used;

/* driver-side packed ring: positions are slot | wrap << 15 */
#define P_AVAIL (1u << 7)
#define P_USED (1u << 15)
#define P_WRAP 0x8000u
struct pdesc { uint64_t addr; uint32_t len; uint16_t id, flags; };
static struct pdesc *pring;
static volatile uint16_t *drv_event; /* off_wrap, flags */
static struct desc chains[QSIZE][64]; /* request i: its descriptors (or its indirect one) */
static int chain_len[QSIZE];
static uint16_t p_avail = P_WRAP, p_used = P_WRAP;

static uint16_t p_advance(uint16_t pos, int n)
{
    unsigned slot = (pos & 0x7fff) + n;
    if (slot >= QSIZE) {
        return (uint16_t)(((pos & P_WRAP) ^ P_WRAP) | (slot - QSIZE));
    }
    return (uint16_t)((pos & P_WRAP) | slot);
}
static int kick_fd, call_fd;

static uint64_t bench_protocol_features(VuDev *d) { (void)d; return PF_INFLIGHT; }

/* Read a reply; returns its payload size, stores a passed fd in *fd. */
static uint32_t recv_reply(void *payload, uint32_t max, int *fd)
{
    struct hdr h;
    char cbuf[CMSG_SPACE(sizeof(int))];
    struct iovec iov = { &h, sizeof(h) };
    struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1,
                        .msg_control = cbuf, .msg_controllen = sizeof(cbuf) };
    struct cmsghdr *c;
    if (recvmsg(sock_fe, &m, 0) != sizeof(h)) {
        die("recvmsg header");
    }
    for (c = CMSG_FIRSTHDR(&m); c; c = CMSG_NXTHDR(&m, c)) {
        if (c->cmsg_type == SCM_RIGHTS && fd) {
            memcpy(fd, CMSG_DATA(c), sizeof(int));
        }
    }
    if (h.size > max || read(sock_fe, payload, h.size) != (ssize_t)h.size) {
        die("reply payload");
    }
    return h.size;
}

static uint64_t alloc_gpa(int r, uint64_t size, uint64_t align)
{
    struct region *g = &regions[r];
    uint64_t a = (g->next + align - 1) / align * align;
    if (a + size > g->gpa + REGION_SIZE) {
        fprintf(stderr, "micro: region %d full\n", r);
        exit(1);
    }
    g->next = a + size;
    return a;
}

static void *host_of(uint64_t gpa)
{
    int r = (int)(gpa / REGION_SIZE);
    return regions[r].host + (gpa - regions[r].gpa);
}

static uint64_t qva_of(uint64_t gpa) { return (uint64_t)(uintptr_t)host_of(gpa); }

static void setup_memory(void)
{
    int i;
    for (i = 0; i < nregions; i++) {
        int fd = memfd_create("guest", MFD_CLOEXEC);
        if (fd < 0 || ftruncate(fd, REGION_SIZE) < 0) {
            die("memfd");
        }
        regions[i].host = mmap(NULL, REGION_SIZE, PROT_READ | PROT_WRITE,
                               MAP_SHARED, fd, 0);
        if (regions[i].host == MAP_FAILED) {
            die("mmap");
        }
        regions[i].fd = fd;
        regions[i].gpa = (uint64_t)i * REGION_SIZE;
        regions[i].next = regions[i].gpa;
    }
    if (nregions <= 8) {
        struct {
            uint32_t n, pad;
            struct { uint64_t gpa, size, uaddr, off; } r[8];
        } mt;
        int fds[8];
        memset(&mt, 0, sizeof(mt));
        mt.n = nregions;
        for (i = 0; i < nregions; i++) {
            mt.r[i].gpa = regions[i].gpa;
            mt.r[i].size = REGION_SIZE;
            mt.r[i].uaddr = (uint64_t)(uintptr_t)regions[i].host;
            fds[i] = regions[i].fd;
        }
        send_msg(M_SET_MEM_TABLE, &mt, 8 + 32 * nregions, fds, nregions);
    } else {
        for (i = 0; i < nregions; i++) {
            struct { uint64_t pad, gpa, size, uaddr, off; } ar = {
                0, regions[i].gpa, REGION_SIZE,
                (uint64_t)(uintptr_t)regions[i].host, 0 };
            send_msg(M_ADD_MEM_REG, &ar, sizeof(ar), &regions[i].fd, 1);
        }
    }
}

static void setup(void)
{
    int sv[2];
    uint64_t f, pf = 0;
    struct { uint32_t index, num; } st;
    struct { uint32_t index, flags; uint64_t desc, used, avail, log; } va;
    uint64_t desc_gpa, avail_gpa, used_gpa, u;
    int i, d = 0;

    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
        die("socketpair");
    }
    sock_fe = sv[0];
    if (!vu_init(&dev, 1, sv[1], on_panic, NULL, on_set_watch,
                 on_remove_watch, &iface)) {
        fprintf(stderr, "micro: vu_init failed\n");
        exit(1);
    }
    send_msg(M_SET_OWNER, NULL, 0, NULL, 0);
    send_msg(M_GET_FEATURES, NULL, 0, NULL, 0);
    recv_reply(&f, sizeof(f), NULL);
    if (packed && !(f & F_PACKED)) {
        fprintf(stderr, "micro: packed rings not offered\n");
        exit(3);
    }
    f &= F_VERSION_1 | F_PROTOCOL | F_INDIRECT | (event_idx ? F_EVENT_IDX : 0) |
         (packed ? F_PACKED : 0);
    send_msg(M_SET_FEATURES, &f, 8, NULL, 0);
    send_msg(M_GET_PROTOCOL_FEATURES, NULL, 0, NULL, 0);
    recv_reply(&u, sizeof(u), NULL);
    if (nregions > 8) {
        pf |= PF_MEM_SLOTS;
    }
    if (inflight) {
        pf |= PF_INFLIGHT;
    }
    if ((u & pf) != pf) {
        fprintf(stderr, "micro: protocol features %#" PRIx64 " lack %#" PRIx64 "\n", u, pf);
        exit(1);
    }
    send_msg(M_SET_PROTOCOL_FEATURES, &pf, 8, NULL, 0);
    setup_memory();

    if (inflight) {
        struct { uint64_t size, off; uint16_t nq, qs; } inf = { 0, 0, 1, QSIZE };
        int ifd = -1;
        send_msg(M_GET_INFLIGHT_FD, &inf, sizeof(inf), NULL, 0);
        recv_reply(&inf, sizeof(inf), &ifd);
        if (ifd < 0) {
            fprintf(stderr, "micro: GET_INFLIGHT_FD returned no fd\n");
            exit(1);
        }
        send_msg(M_SET_INFLIGHT_FD, &inf, sizeof(inf), &ifd, 1);
        close(ifd);
    }

    desc_gpa = alloc_gpa(0, 16 * QSIZE, 4096);
    avail_gpa = alloc_gpa(0, 6 + 2 * QSIZE, 4096);
    used_gpa = alloc_gpa(0, 6 + 8 * QSIZE, 4096);
    dtab = host_of(desc_gpa);
    avail = host_of(avail_gpa);
    used = host_of(used_gpa);

    /* Requests: slot s -> head heads[s]; buffers round-robin over regions. */
    for (i = 0; i < depth; i++) {
        struct desc *t = dtab;
        int base = 0, k;
        if (shape_indirect) {
            uint64_t tg = alloc_gpa(d++ % nregions, 16 * shape_n, 16);
            t = host_of(tg);
            dtab[i].addr = tg;
            dtab[i].len = 16 * shape_n;
            dtab[i].flags = D_INDIRECT;
            dtab[i].next = 0;
            heads[i] = i;
        } else {
            base = i * shape_n;
            heads[i] = base;
        }
        for (k = 0; k < shape_n; k++) {
            uint32_t len = k == 0 ? 16 : k == shape_n - 1 ? 1
                           : shape_n == 3 ? 4096 : 512;
            uint64_t g = alloc_gpa(d++ % nregions, len, 16);
            t[base + k].addr = g;
            t[base + k].len = len;
            t[base + k].flags = (k ? D_WRITE : 0) | (k < shape_n - 1 ? D_NEXT : 0);
            t[base + k].next = k < shape_n - 1 ? base + k + 1 : 0;
        }
        if (shape_indirect) {
            chains[i][0] = dtab[i];
            chain_len[i] = 1;
            if (packed) {
                /* packed indirect tables hold packed descriptors: id, then flags */
                for (k = 0; k < shape_n; k++) {
                    struct pdesc pd = { t[k].addr, t[k].len, 0, (uint16_t)(t[k].flags & D_WRITE) };
                    memcpy(&t[k], &pd, sizeof(pd));
                }
            }
        } else {
            memcpy(chains[i], &dtab[base], shape_n * sizeof(struct desc));
            chain_len[i] = shape_n;
        }
    }
    if (packed) {
        /* the packed ring lives where the split descriptor table was */
        pring = (struct pdesc *)dtab;
        memset(pring, 0, 16 * QSIZE);
        drv_event = avail;
        memset((void *)avail, 0, 4);
        memset((void *)used, 0, 4);
    }

    st.index = 0; st.num = QSIZE;
    send_msg(M_SET_VRING_NUM, &st, 8, NULL, 0);
    st.num = packed ? 0x80008000u : 0;
    send_msg(M_SET_VRING_BASE, &st, 8, NULL, 0);
    va.index = 0; va.flags = 0;
    va.desc = qva_of(desc_gpa); va.used = qva_of(used_gpa);
    va.avail = qva_of(avail_gpa); va.log = 0;
    send_msg(M_SET_VRING_ADDR, &va, sizeof(va), NULL, 0);
    call_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    kick_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    u = 0;
    send_msg(M_SET_VRING_CALL, &u, 8, &call_fd, 1);
    send_msg(M_SET_VRING_KICK, &u, 8, &kick_fd, 1);
    st.num = 1;
    send_msg(M_SET_VRING_ENABLE, &st, 8, NULL, 0);

    /* The driver polls: ask for no interrupts. */
    if (packed) {
        drv_event[0] = (uint16_t)(P_WRAP | (QSIZE / 2)); /* far away */
        drv_event[1] = event_idx ? 2 : 1;                /* DESC : DISABLE */
    } else if (event_idx) {
        avail[2 + QSIZE] = 0x8000; /* used_event far away */
    } else {
        avail[0] = 1; /* VRING_AVAIL_F_NO_INTERRUPT */
    }
}

/* ---- driver data path ---- */
/* Packed: request `id` (0..depth-1) is written into the ring at the avail position. */
static void publish_packed(uint16_t id)
{
    uint16_t pos = p_avail, head_flags = 0;
    int k, n = chain_len[id];
    for (k = 0; k < n; k++) {
        struct pdesc *d = &pring[pos & 0x7fff];
        uint16_t f = (uint16_t)((chains[id][k].flags & (D_WRITE | D_INDIRECT)) |
                                (k < n - 1 ? D_NEXT : 0) |
                                ((pos & P_WRAP) ? P_AVAIL : P_USED));
        d->addr = chains[id][k].addr;
        d->len = chains[id][k].len;
        d->id = id;
        if (k == 0) {
            head_flags = f;
        } else {
            ((volatile struct pdesc *)d)->flags = f;
        }
        pos = p_advance(pos, 1);
    }
    atomic_thread_fence(memory_order_release);
    ((volatile struct pdesc *)&pring[p_avail & 0x7fff])->flags = head_flags;
    p_avail = pos;
}

static void publish(uint16_t head)
{
    if (packed) {
        /* heads[] index == request number for the packed ring */
        publish_packed((uint16_t)(shape_indirect ? head : head / shape_n));
        return;
    }
    avail[2 + (next_avail % QSIZE)] = head;
    next_avail++;
}

static void publish_commit(void)
{
    if (packed) {
        return; /* each chain is published by its head's flags */
    }
    atomic_thread_fence(memory_order_release);
    avail[1] = next_avail;
}

/* Whether the device has completed something we have not taken. */
static bool used_pending(void)
{
    if (packed) {
        uint16_t f = ((volatile struct pdesc *)&pring[p_used & 0x7fff])->flags;
        bool w = p_used & P_WRAP;
        atomic_thread_fence(memory_order_acquire);
        return (f & (P_AVAIL | P_USED)) == (w ? (P_AVAIL | P_USED) : 0);
    }
    uint16_t v = *(volatile uint16_t *)(used + 2);
    atomic_thread_fence(memory_order_acquire);
    return v != last_used;
}

static uint16_t take_used(void)
{
    if (packed) {
        uint16_t id = ((volatile struct pdesc *)&pring[p_used & 0x7fff])->id;
        p_used = p_advance(p_used, chain_len[id]);
        return heads[id];
    }
    uint32_t id = *(volatile uint32_t *)(used + 4 + 8 * (last_used % QSIZE));
    last_used++;
    return (uint16_t)id;
}

static void keep_used_event_away(void)
{
    if (packed) {
        if (event_idx) {
            drv_event[0] = p_advance(p_used, QSIZE / 2);
        }
        return;
    }
    if (event_idx) {
        avail[2 + QSIZE] = (uint16_t)(last_used + 0x8000);
    }
}

static _Atomic bool stop;
static _Atomic uint64_t completed;

static void *frontend_main(void *p)
{
    int i;
    uint64_t n = 0;
    (void)p;
    for (i = 0; i < depth; i++) {
        publish(heads[i]);
    }
    publish_commit();
    while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
        if (!used_pending()) {
            __builtin_ia32_pause();
            continue;
        }
        while (used_pending()) {
            publish(take_used());
            n++;
        }
        keep_used_event_away();
        publish_commit();
        atomic_store_explicit(&completed, n, memory_order_relaxed);
    }
    return NULL;
}

/* The measured backend work: pop -> push -> notify until the ring is empty.
 * Returns the number of requests handled. */
__attribute__((noinline)) uint64_t bench_backend_drain(VuVirtq *vq)
{
    uint64_t n = 0;
    VuVirtqElement *e;
    while ((e = vu_queue_pop(&dev, vq, sizeof(VuVirtqElement)))) {
        vu_queue_push(&dev, vq, e, 1);
        vu_queue_notify(&dev, vq);
        free(e);
        n++;
    }
    return n;
}

static double now(clockid_t c)
{
    struct timespec t;
    clock_gettime(c, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

int main(int argc, char **argv)
{
    const char *shape = "chain3";
    VuVirtq *vq;
    int i;

    for (i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--inline")) {
            inline_mode = true;
        } else if (!strcmp(argv[i], "-e")) {
            event_idx = true;
        } else if (!strcmp(argv[i], "-i")) {
            inflight = true;
        } else if (!strcmp(argv[i], "-p")) {
            packed = true;
        } else if (i + 1 < argc && !strcmp(argv[i], "-n")) {
            total = strtoull(argv[++i], NULL, 0);
        } else if (i + 1 < argc && !strcmp(argv[i], "-d")) {
            depth = atoi(argv[++i]);
        } else if (i + 1 < argc && !strcmp(argv[i], "-s")) {
            shape = argv[++i];
        } else if (i + 1 < argc && !strcmp(argv[i], "-r")) {
            nregions = atoi(argv[++i]);
        } else {
            fprintf(stderr, "micro: bad argument %s\n", argv[i]);
            return 2;
        }
    }
    if (!strcmp(shape, "chain3")) {
        shape_n = 3;
    } else if (!strcmp(shape, "indirect16")) {
        shape_n = 16; shape_indirect = true;
    } else if (!strcmp(shape, "seg64")) {
        shape_n = 64;
    } else {
        fprintf(stderr, "micro: unknown shape %s\n", shape);
        return 2;
    }
    if (nregions < 1 || nregions > MAX_REGIONS || depth < 1 ||
        depth * (shape_indirect ? 1 : shape_n) > QSIZE) {
        fprintf(stderr, "micro: bad regions/depth\n");
        return 2;
    }
    setup();
    vq = vu_get_queue(&dev, 0);

    if (inline_mode) {
        uint64_t done = 0;
        while (done < total) {
            int k, m = depth;
            if ((uint64_t)m > total - done) {
                m = (int)(total - done);
            }
            for (k = 0; k < m; k++) {
                publish(heads[k]);
            }
            publish_commit();
            done += bench_backend_drain(vq);
            while (used_pending()) {
                take_used();
            }
            keep_used_event_away();
        }
        printf("requests=%" PRIu64 "\n", done);
    } else {
        pthread_t fe;
        uint64_t done = 0;
        double t0, c0, t1, c1;
        if (pthread_create(&fe, NULL, frontend_main, NULL)) {
            die("pthread_create");
        }
        t0 = now(CLOCK_MONOTONIC);
        c0 = now(CLOCK_THREAD_CPUTIME_ID);
        while (done < total) {
            uint64_t n = bench_backend_drain(vq);
            if (!n) {
                __builtin_ia32_pause();
            }
            done += n;
        }
        t1 = now(CLOCK_MONOTONIC);
        c1 = now(CLOCK_THREAD_CPUTIME_ID);
        atomic_store(&stop, true);
        pthread_join(fe, NULL);
        printf("requests=%" PRIu64 " seconds=%.6f cpu_ns=%.1f\n", done,
               t1 - t0, (c1 - c0) * 1e9 / done);
    }
    vu_deinit(&dev);
    return 0;
}
