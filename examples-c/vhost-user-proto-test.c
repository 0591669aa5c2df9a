// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * vhost-user-proto-test: a small virtio-blk-like backend for protocol tests
 * (tests/proto_*.rs), written against the public libvhost-user API only.
 *
 * Beyond plain block I/O (IN, OUT, FLUSH on an image file) it offers the
 * protocol features the plain example does not (INFLIGHT_SHMFD,
 * INBAND_NOTIFICATIONS, SHARED_OBJECT), and lets the test trigger the
 * backend-channel calls through special request types in the virtio-blk
 * header (see CMD_* below).  Every libvhost-user panic is reported on
 * stderr as "PANIC: <message>"; the process keeps serving so that a test can
 * check it is still alive.
 *
 * Options:
 *   -s PATH   listen on PATH, serve one frontend, exit when it disconnects
 *   -b FILE   image file
 *   -q N      number of queues (default 1)
 *   -d MS     delayed completion: pop eagerly, complete in FIFO order, one
 *             request every MS milliseconds
 *   -N        notify with vu_queue_notify_sync instead of vu_queue_notify
 *   -o        queue_is_processed_in_order returns true
 *   -g        handle VHOST_USER_GPU_SET_SOCKET in process_msg
 *   -P HEX    protocol features the device adds (default: inflight,
 *             in-band notifications, shared objects, config, mq)
 *   -I        intercept IOTLB_MSG, RESET_DEVICE, SET/GET_STATUS,
 *             SET_DEVICE_STATE_FD and CHECK_DEVICE_STATE in process_msg (as a
 *             10.0-era device would): IOTLB_MSG acks 0, GET_STATUS answers 0x77,
 *             SET_DEVICE_STATE_FD 0x101, CHECK 7
 *   -M BYTES  register device state handlers: save produces BYTES bytes of a
 *             fixed pattern (state_byte() below), load reports the size and
 *             FNV-1a hash of what it got on stderr and refuses a state that
 *             starts with 0xEE
 *   -X BYTES  the largest state a load accepts (default: the library's)
 *   -U        turn VIRTIO_F_IOMMU_PLATFORM off (vu_set_iommu_platform_enabled)
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdarg.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "libvhost-user.h"

#define SECTOR 512
#define MAX_QUEUES 8
#define CONFIG_LEN 64

/* Request types beyond virtio-blk's, handled by the device itself. */
#define T_IN 0
#define T_OUT 1
#define T_FLUSH 4
#define CMD_CONFIG_CHANGE 0x1000   /* vu_config_change_msg */
#define CMD_HOST_NOTIFIER 0x1001   /* data: u32 qidx, u32 remove */
#define CMD_SHOBJ_ADD 0x1002       /* data: 16-byte uuid */
#define CMD_SHOBJ_RM 0x1003        /* data: 16-byte uuid */
#define CMD_SHOBJ_LOOKUP 0x1004    /* data out: uuid; data in: 16 bytes read from the fd */
#define CMD_QUEUE_ENABLED 0x1005   /* status: 0 if vu_queue_enabled(), else 1 */
#define CMD_GET_STATUS 0x1006      /* data in: 1 byte, vu_get_status() */

struct pending {
    VuVirtqElement *elem;
    struct pending *next;
};

struct watch {
    int fd;
    int condition;
    vu_watch_cb cb;
    void *data;
};

static VuDev dev;
static int image_fd = -1;
static int num_queues = 1;
static long delay_ms;
static bool notify_sync;
static bool in_order;
static bool handle_gpu;
static bool intercept_new;
static bool no_iommu;
static long state_size = -1;
static size_t state_max;
static uint64_t extra_protocol =
    1ull << VHOST_USER_PROTOCOL_F_INFLIGHT_SHMFD |
    1ull << VHOST_USER_PROTOCOL_F_INBAND_NOTIFICATIONS |
    1ull << VHOST_USER_PROTOCOL_F_SHARED_OBJECT |
    1ull << VHOST_USER_PROTOCOL_F_CONFIG |
    1ull << VHOST_USER_PROTOCOL_F_MQ;
static uint8_t config[CONFIG_LEN];
static struct watch watches[64];
static int nwatches;
static struct pending *fifo_head[MAX_QUEUES], *fifo_tail[MAX_QUEUES];
static bool peer_gone;
static int64_t next_due_ms;
static int host_notifier_fd = -1;

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fflush(stderr);
}

static void on_panic(VuDev *d, const char *err)
{
    (void)d;
    say("PANIC: %s\n", err);
}

static void set_watch(VuDev *d, int fd, int condition, vu_watch_cb cb, void *data)
{
    int i;

    (void)d;
    for (i = 0; i < nwatches; i++) {
        if (watches[i].fd == fd) {
            break;
        }
    }
    if (i == nwatches) {
        if (nwatches == (int)(sizeof(watches) / sizeof(watches[0]))) {
            say("too many watches\n");
            return;
        }
        nwatches++;
    }
    watches[i] = (struct watch){ fd, condition, cb, data };
}

static void remove_watch(VuDev *d, int fd)
{
    int i;

    (void)d;
    for (i = 0; i < nwatches; i++) {
        if (watches[i].fd == fd) {
            watches[i] = watches[--nwatches];
            return;
        }
    }
}

static size_t iov_total(const struct iovec *iov, unsigned n)
{
    size_t t = 0;
    unsigned i;

    for (i = 0; i < n; i++) {
        t += iov[i].iov_len;
    }
    return t;
}

/* Copy up to len bytes out of an iovec array starting at byte off. */
static size_t iov_to_buf(const struct iovec *iov, unsigned n, size_t off, void *buf, size_t len)
{
    size_t done = 0;
    unsigned i;

    for (i = 0; i < n && done < len; i++) {
        size_t l = iov[i].iov_len;
        if (off >= l) {
            off -= l;
            continue;
        }
        l -= off;
        if (l > len - done) {
            l = len - done;
        }
        memcpy((char *)buf + done, (char *)iov[i].iov_base + off, l);
        done += l;
        off = 0;
    }
    return done;
}

static size_t iov_from_buf(const struct iovec *iov, unsigned n, size_t off, const void *buf, size_t len)
{
    size_t done = 0;
    unsigned i;

    for (i = 0; i < n && done < len; i++) {
        size_t l = iov[i].iov_len;
        if (off >= l) {
            off -= l;
            continue;
        }
        l -= off;
        if (l > len - done) {
            l = len - done;
        }
        memcpy((char *)iov[i].iov_base + off, (const char *)buf + done, l);
        done += l;
        off = 0;
    }
    return done;
}

struct blk_hdr {
    uint32_t type;
    uint32_t ioprio;
    uint64_t sector;
};

/* Execute one request; returns the used length. */
static unsigned execute(int qidx, VuVirtqElement *e)
{
    struct blk_hdr h;
    size_t in_total = iov_total(e->in_sg, e->in_num);
    size_t out_total = iov_total(e->out_sg, e->out_num);
    uint8_t status = 0;
    size_t data_in = 0;           /* device-writable bytes before the status */
    size_t data_out;
    uint8_t *buf = NULL;
    unsigned char uuid[16];

    if (in_total < 1 || iov_to_buf(e->out_sg, e->out_num, 0, &h, sizeof(h)) != sizeof(h)) {
        say("bad request layout (out %zu in %zu)\n", out_total, in_total);
        return 0;
    }
    data_out = out_total - sizeof(h);
    data_in = in_total - 1;
    switch (h.type) {
    case T_IN:
        buf = malloc(data_in ? data_in : 1);
        if (pread(image_fd, buf, data_in, (off_t)(h.sector * SECTOR)) != (ssize_t)data_in) {
            status = 1;
            data_in = 0;
        } else {
            iov_from_buf(e->in_sg, e->in_num, 0, buf, data_in);
        }
        break;
    case T_OUT:
        buf = malloc(data_out ? data_out : 1);
        iov_to_buf(e->out_sg, e->out_num, sizeof(h), buf, data_out);
        if (pwrite(image_fd, buf, data_out, (off_t)(h.sector * SECTOR)) != (ssize_t)data_out) {
            status = 1;
        }
        data_in = 0;
        break;
    case T_FLUSH:
        status = fdatasync(image_fd) ? 1 : 0;
        data_in = 0;
        break;
    case CMD_CONFIG_CHANGE:
        vu_config_change_msg(&dev);
        data_in = 0;
        break;
    case CMD_HOST_NOTIFIER: {
        uint32_t a[2] = { 0, 0 };
        bool ok;

        iov_to_buf(e->out_sg, e->out_num, sizeof(h), a, sizeof(a));
        if (a[1]) {
            ok = vu_set_queue_host_notifier(&dev, vu_get_queue(&dev, (int)a[0]), -1, 0, 0);
        } else {
            if (host_notifier_fd < 0) {
                host_notifier_fd = memfd_create("host-notifier", MFD_CLOEXEC);
                if (host_notifier_fd < 0 || ftruncate(host_notifier_fd, 4096) < 0) {
                    say("memfd: %s\n", strerror(errno));
                }
                if (pwrite(host_notifier_fd, "notifier", 8, 0) != 8) {
                    say("memfd write: %s\n", strerror(errno));
                }
            }
            ok = vu_set_queue_host_notifier(&dev, vu_get_queue(&dev, (int)a[0]),
                                            host_notifier_fd, 4096, 0);
        }
        status = ok ? 0 : 1;
        data_in = 0;
        break;
    }
    case CMD_QUEUE_ENABLED:
        status = vu_queue_enabled(&dev, vu_get_queue(&dev, qidx)) ? 0 : 1;
        data_in = 0;
        break;
    case CMD_GET_STATUS: {
#ifdef LIBVHOST_USER_HAS_GET_STATUS
        uint8_t st = vu_get_status(&dev);
#else
        uint8_t st = 0xff; /* the C original has no status */
#endif

        if (data_in > 1) {
            data_in = 1;
        }
        iov_from_buf(e->in_sg, e->in_num, 0, &st, data_in);
        break;
    }
    case CMD_SHOBJ_ADD:
    case CMD_SHOBJ_RM:
        iov_to_buf(e->out_sg, e->out_num, sizeof(h), uuid, sizeof(uuid));
        status = (h.type == CMD_SHOBJ_ADD ? vu_add_shared_object(&dev, uuid)
                                          : vu_rm_shared_object(&dev, uuid)) ? 0 : 1;
        data_in = 0;
        break;
    case CMD_SHOBJ_LOOKUP: {
        int fd = -1;
        unsigned char content[16];

        iov_to_buf(e->out_sg, e->out_num, sizeof(h), uuid, sizeof(uuid));
        memset(content, 0, sizeof(content));
        if (vu_lookup_shared_object(&dev, uuid, &fd)) {
            if (pread(fd, content, sizeof(content), 0) < 0) {
                say("pread shared object fd: %s\n", strerror(errno));
            }
            close(fd);
            status = 0;
        } else {
            status = 1;
        }
        if (data_in > sizeof(content)) {
            data_in = sizeof(content);
        }
        iov_from_buf(e->in_sg, e->in_num, 0, content, data_in);
        break;
    }
    default:
        status = 2;
        data_in = 0;
        break;
    }
    free(buf);
    iov_from_buf(e->in_sg, e->in_num, in_total - 1, &status, 1);
    return (unsigned)(data_in + 1);
}

static void complete(int qidx, VuVirtqElement *e)
{
    VuVirtq *vq = vu_get_queue(&dev, qidx);
    unsigned len = execute(qidx, e);

    vu_queue_push(&dev, vq, e, len);
    if (notify_sync) {
        vu_queue_notify_sync(&dev, vq);
    } else {
        vu_queue_notify(&dev, vq);
    }
    free(e);
}

static bool any_pending(void);
static int64_t now_ms(void);

static void queue_handler(VuDev *d, int qidx)
{
    VuVirtq *vq = vu_get_queue(d, qidx);
    VuVirtqElement *e;

    while ((e = vu_queue_pop(d, vq, sizeof(VuVirtqElement)))) {
        if (delay_ms > 0) {
            struct pending *p = calloc(1, sizeof(*p));
            p->elem = e;
            if (!any_pending()) {
                next_due_ms = now_ms() + delay_ms;
            }
            if (fifo_tail[qidx]) {
                fifo_tail[qidx]->next = p;
            } else {
                fifo_head[qidx] = p;
            }
            fifo_tail[qidx] = p;
            say("popped q%d head %u\n", qidx, e->index);
        } else {
            complete(qidx, e);
        }
    }
}

static bool complete_one_delayed(void)
{
    int q;

    for (q = 0; q < num_queues; q++) {
        struct pending *p = fifo_head[q];
        if (p) {
            fifo_head[q] = p->next;
            if (!fifo_head[q]) {
                fifo_tail[q] = NULL;
            }
            complete(q, p->elem);
            free(p);
            return true;
        }
    }
    return false;
}

static int64_t now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static bool any_pending(void)
{
    int q;

    for (q = 0; q < num_queues; q++) {
        if (fifo_head[q]) {
            return true;
        }
    }
    return false;
}

static uint64_t get_features(VuDev *d)
{
    (void)d;
    return 1ull << 9 /* VIRTIO_BLK_F_FLUSH */ | 1ull << 12 /* VIRTIO_BLK_F_MQ */;
}

static uint64_t get_protocol_features(VuDev *d)
{
    (void)d;
    return extra_protocol;
}

static void queue_set_started(VuDev *d, int qidx, bool started)
{
    say("queue %d %s\n", qidx, started ? "started" : "stopped");
    vu_set_queue_handler(d, vu_get_queue(d, qidx), started ? queue_handler : NULL);
}

static bool queue_is_processed_in_order(VuDev *d, int qidx)
{
    (void)d;
    (void)qidx;
    return in_order;
}

static int get_config(VuDev *d, uint8_t *buf, uint32_t len)
{
    (void)d;
    if (len > CONFIG_LEN) {
        return -1;
    }
    memcpy(buf, config, len);
    return 0;
}

static int set_config(VuDev *d, const uint8_t *data, uint32_t offset, uint32_t size, uint32_t flags)
{
    (void)d;
    (void)flags;
    if (offset > CONFIG_LEN || size > CONFIG_LEN - offset) {
        return -1;
    }
    memcpy(config + offset, data, size);
    return 0;
}

/* The object behind a shared-object uuid: a memfd holding the uuid itself;
 * none for uuids starting with 0xff. */
static int get_shared_object(VuDev *d, const unsigned char *uuid)
{
    static int last = -1;
    int fd;

    (void)d;
    say("get_shared_object %02x%02x\n", uuid[0], uuid[1]);
    if (uuid[0] == 0xff) {
        return -1;
    }
    fd = memfd_create("shared-object", MFD_CLOEXEC);
    if (fd < 0 || pwrite(fd, uuid, 16, 0) != 16) {
        say("shared object memfd: %s\n", strerror(errno));
        return -1;
    }
    /* The library sends the fd and leaves it to us: keep one open at a time. */
    if (last >= 0) {
        close(last);
    }
    last = fd;
    return fd;
}

/* Device state: state_size bytes of this pattern. */
static uint8_t state_byte(size_t i)
{
    return (uint8_t)(i * 31 + (i >> 9) + 7);
}

static bool save_state(VuDev *d, void *opaque, uint8_t **data, size_t *size)
{
    uint8_t *buf = malloc(state_size ? (size_t)state_size : 1);
    size_t i;

    (void)d;
    (void)opaque;
    if (!buf) {
        return false;
    }
    for (i = 0; i < (size_t)state_size; i++) {
        buf[i] = state_byte(i);
    }
    *data = buf;
    *size = (size_t)state_size;
    say("state saved: %zu bytes\n", *size);
    return true;
}

static bool load_state(VuDev *d, void *opaque, const uint8_t *data, size_t size)
{
    uint64_t h = 0xcbf29ce484222325ull;
    size_t i;

    (void)d;
    (void)opaque;
    for (i = 0; i < size; i++) {
        h = (h ^ data[i]) * 0x100000001b3ull;
    }
    say("state loaded: %zu bytes fnv %016" PRIx64 "\n", size, h);
    return !(size > 0 && data[0] == 0xee);
}

static void reply_u64(VhostUserMsg *m, uint64_t v, int *do_reply)
{
    m->size = sizeof(m->payload.u64);
    m->payload.u64 = v;
    *do_reply = 1;
}

static int process_msg(VuDev *d, VhostUserMsg *m, int *do_reply)
{
    (void)d;
    say("msg %d size %u fds %d\n", m->request, m->size, m->fd_num);
    if (intercept_new) {
        int i;

        switch ((int)m->request) {
        case 22: /* IOTLB_MSG: acked without looking, as a device keeping its own IOTLB */
            say("intercepted %d\n", m->request);
            reply_u64(m, 0, do_reply);
            return 1;
        case 34: /* RESET_DEVICE */
        case 39: /* SET_STATUS */
            say("intercepted %d\n", m->request);
            *do_reply = 0;
            return 1;
        case 40: /* GET_STATUS */
            reply_u64(m, 0x77, do_reply);
            return 1;
        case 42: /* SET_DEVICE_STATE_FD */
            for (i = 0; i < m->fd_num; i++) {
                close(m->fds[i]);
            }
            m->fd_num = 0;
            reply_u64(m, 0x101, do_reply);
            return 1;
        case 43: /* CHECK_DEVICE_STATE */
            reply_u64(m, 7, do_reply);
            return 1;
        }
    }
    if (m->request == VHOST_USER_NONE) {
        peer_gone = true;
        *do_reply = 0;
        return 1;
    }
    if (handle_gpu && m->request == VHOST_USER_GPU_SET_SOCKET) {
        int i;

        say("gpu socket: %d fd(s)\n", m->fd_num);
        for (i = 0; i < m->fd_num; i++) {
            if (write(m->fds[i], "gpu!", 4) != 4) {
                say("gpu socket write: %s\n", strerror(errno));
            }
            close(m->fds[i]);
        }
        m->fd_num = 0;
        *do_reply = 0;
        return 1;
    }
    return 0;
}

static const VuDevIface iface = {
    .get_features = get_features,
    .get_protocol_features = get_protocol_features,
    .process_msg = process_msg,
    .queue_set_started = queue_set_started,
    .queue_is_processed_in_order = queue_is_processed_in_order,
    .get_config = get_config,
    .set_config = set_config,
    .get_shared_object = get_shared_object,
};

static int listen_accept(const char *path)
{
    struct sockaddr_un sa;
    int l, c;

    l = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (l < 0 || strlen(path) >= sizeof(sa.sun_path)) {
        return -1;
    }
    memset(&sa, 0, sizeof(sa));
    sa.sun_family = AF_UNIX;
    strcpy(sa.sun_path, path);
    unlink(path);
    if (bind(l, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(l, 1) < 0) {
        perror("bind/listen");
        return -1;
    }
    c = accept4(l, NULL, NULL, SOCK_CLOEXEC);
    close(l);
    return c;
}

int main(int argc, char **argv)
{
    const char *sock_path = NULL, *image = NULL;
    int opt, conn, i;

    while ((opt = getopt(argc, argv, "s:b:q:d:NogP:IM:X:U")) != -1) {
        switch (opt) {
        case 's': sock_path = optarg; break;
        case 'b': image = optarg; break;
        case 'q': num_queues = atoi(optarg); break;
        case 'd': delay_ms = atol(optarg); break;
        case 'N': notify_sync = true; break;
        case 'o': in_order = true; break;
        case 'g': handle_gpu = true; break;
        case 'P': extra_protocol = strtoull(optarg, NULL, 16); break;
        case 'I': intercept_new = true; break;
        case 'U': no_iommu = true; break;
        case 'M': state_size = atol(optarg); break;
        case 'X': state_max = (size_t)atol(optarg); break;
        default:
            fprintf(stderr, "usage: %s -s SOCKET -b IMAGE [-q N] [-d MS] [-N] [-o] [-g] [-P HEX] [-I] [-M BYTES] [-X BYTES] [-U]\n", argv[0]);
            return 2;
        }
    }
    if (!sock_path || !image || num_queues < 1 || num_queues > MAX_QUEUES) {
        fprintf(stderr, "missing or bad options\n");
        return 2;
    }
    /* A test backend never outlives its test by much. */
    alarm(300);
    signal(SIGPIPE, SIG_IGN);
    image_fd = open(image, O_RDWR | O_CLOEXEC);
    if (image_fd < 0) {
        perror(image);
        return 1;
    }
    for (i = 0; i < CONFIG_LEN; i++) {
        config[i] = (uint8_t)(i * 3 + 1);
    }
    conn = listen_accept(sock_path);
    if (conn < 0) {
        perror("accept");
        return 1;
    }
    if (!vu_init(&dev, (uint16_t)num_queues, conn, on_panic, NULL, set_watch, remove_watch, &iface)) {
        say("vu_init failed\n");
        return 1;
    }
#ifdef LIBVHOST_USER_HAS_IOMMU_PLATFORM
    if (no_iommu && !vu_set_iommu_platform_enabled(&dev, false)) {
        say("vu_set_iommu_platform_enabled failed\n");
        return 1;
    }
#endif
#ifdef LIBVHOST_USER_HAS_DEVICE_STATE
    if (state_size >= 0 &&
        !vu_set_device_state_handlers(&dev, save_state, load_state, state_max, NULL)) {
        say("vu_set_device_state_handlers failed\n");
        return 1;
    }
#else
    (void)save_state;
    (void)load_state;
    if (state_size >= 0) {
        say("this libvhost-user has no device state handlers\n");
        return 1;
    }
#endif
    say("serving\n");
    while (!peer_gone) {
        struct pollfd pfds[65];
        int n = nwatches + 1, r, timeout = -1;

        pfds[0] = (struct pollfd){ .fd = dev.sock, .events = POLLIN };
        for (i = 0; i < nwatches; i++) {
            pfds[i + 1] = (struct pollfd){ .fd = watches[i].fd, .events = (short)watches[i].condition };
        }
        if (any_pending()) {
            int64_t now = now_ms();
            if (now >= next_due_ms) {
                complete_one_delayed();
                next_due_ms = now + delay_ms;
                continue;
            }
            timeout = (int)(next_due_ms - now);
        }
        r = poll(pfds, n, timeout);
        if (r < 0) {
            if (errno == EINTR) {
                continue;
            }
            perror("poll");
            break;
        }
        if (r == 0) {
            continue;
        }
        if (pfds[0].revents) {
            if (!vu_dispatch(&dev)) {
                say("vu_dispatch failed\n");
                break;
            }
            continue;
        }
        for (i = 1; i < n; i++) {
            int j;

            if (!pfds[i].revents) {
                continue;
            }
            for (j = 0; j < nwatches; j++) {
                if (watches[j].fd == pfds[i].fd) {
                    watches[j].cb(&dev, pfds[i].revents, watches[j].data);
                    break;
                }
            }
        }
    }
    say("exiting\n");
    vu_deinit(&dev);
    return 0;
}
