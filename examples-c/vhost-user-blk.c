/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * vhost-user-blk: an example vhost-user block device backend.
 *
 * Written only against the public libvhost-user API (libvhost-user.h).
 * It serves a raw image file (or, with --null, a device of a given size
 * whose requests complete without any I/O) over a listening unix socket,
 * one frontend at a time, and runs its own poll() main loop (no glib).
 *
 * Usage: vhost-user-blk -s SOCKET (-b IMAGE | --null [-S BYTES])
 *                       [-q NUM_QUEUES] [-1] [-T] [-i SERIAL] [-w]
 *
 *   -s SOCKET   unix socket path to listen on (replaced if it exists)
 *   -b IMAGE    raw image file to serve
 *   --null      complete every request without I/O (for benchmarks)
 *   -S BYTES    device size in --null mode (default 1 GiB)
 *   -q N        number of virtqueues (default 1, at most 64)
 *   -1          serve a single frontend connection, then exit
 *   -T          process each virtqueue in its own worker thread
 *   -i SERIAL   device serial returned by VIRTIO_BLK_T_GET_ID
 *   -w          start in writethrough mode (config wce = 0)
 *
 * On exit (SIGTERM/SIGINT, or after the connection with -1) it prints
 * one summary line on stdout.
 *
 * With a libvhost-user that has device state handlers (this repository's),
 * the device migrates its state through VHOST_USER_SET_DEVICE_STATE_FD: the
 * request counters and the write-cache mode (see blk_save_state()).  When the library reports a fatal error
 * through the panic callback, the message is printed on stderr as
 * "vhost-user panic: <msg>" and that connection is dropped; the backend
 * then waits for the next frontend.
 */

#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <endian.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <unistd.h>

#include "libvhost-user.h"
#include <linux/virtio_blk.h>

#define SECTOR_SHIFT 9
#define SECTOR_SIZE (1u << SECTOR_SHIFT)
#define MAX_QUEUES 64
#define SEG_MAX (128 - 2)

#ifndef IOV_MAX
#define IOV_MAX 1024
#endif


struct watch {
    int fd;
    int condition;
    vu_watch_cb cb;
    void *data;
};

struct worker {
    pthread_t tid;
    bool running;
    int stop_fd;   /* eventfd: tells the thread to exit */
    int kick_fd;   /* our own dup of the queue's kick fd, or -1 */
    int qidx;
    struct blk *blk;
};

struct blk {
    VuDev dev;               /* must stay first: callbacks get &dev */
    int img_fd;
    bool null_mode;
    bool use_threads;
    uint64_t size;           /* bytes */
    uint64_t capacity;       /* sectors */
    int num_queues;
    int wce;                 /* writeback cache enabled (config byte) */
    char serial[VIRTIO_BLK_ID_BYTES];
    bool conn_broken;        /* set from the panic callback */
    bool peer_gone;          /* frontend closed the connection */

    struct watch *watches;
    size_t nwatches, capwatches;

    struct worker workers[MAX_QUEUES];
};

static uint64_t stat_requests, stat_bytes_read, stat_bytes_written, stat_errors;
static int wake_pipe[2] = { -1, -1 };
static volatile sig_atomic_t terminate;

static void stat_add(uint64_t *ctr, uint64_t v)
{
    __atomic_fetch_add(ctr, v, __ATOMIC_RELAXED);
}

static void wake_main(void)
{
    char c = 1;
    ssize_t r;

    do {
        r = write(wake_pipe[1], &c, 1);
    } while (r < 0 && errno == EINTR);
}

static void on_signal(int sig)
{
    int saved = errno;

    (void)sig;
    terminate = 1;
    wake_main();
    errno = saved;
}

static struct blk *blk_of(VuDev *dev)
{
    return (struct blk *)((char *)dev - offsetof(struct blk, dev));
}

static bool conn_broken(struct blk *b)
{
    return __atomic_load_n(&b->conn_broken, __ATOMIC_SEQ_CST);
}

/* ---- iovec helpers --------------------------------------------------- */

static size_t iov_total(const struct iovec *iov, unsigned int n)
{
    size_t t = 0;
    unsigned int i;

    for (i = 0; i < n; i++) {
        t += iov[i].iov_len;
    }
    return t;
}

/* Copy between a buffer and the bytes [off, off + len) of an iovec array. */
static size_t iov_copy(const struct iovec *iov, unsigned int n, size_t off,
                       void *buf, size_t len, bool to_iov)
{
    size_t done = 0;
    unsigned int i;

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
        if (to_iov) {
            memcpy((char *)iov[i].iov_base + off, (char *)buf + done, l);
        } else {
            memcpy((char *)buf + done, (char *)iov[i].iov_base + off, l);
        }
        done += l;
        off = 0;
    }
    return done;
}

/* Describe bytes [off, off + len) of src in dst (room for n entries). */
static unsigned int iov_slice(const struct iovec *src, unsigned int n,
                              size_t off, size_t len, struct iovec *dst)
{
    unsigned int i, cnt = 0;

    for (i = 0; i < n && len > 0; i++) {
        size_t l = src[i].iov_len;

        if (off >= l) {
            off -= l;
            continue;
        }
        l -= off;
        if (l > len) {
            l = len;
        }
        dst[cnt].iov_base = (char *)src[i].iov_base + off;
        dst[cnt].iov_len = l;
        cnt++;
        len -= l;
        off = 0;
    }
    return cnt;
}

/* preadv/pwritev the whole iovec array at off; consumes iov. */
static int rw_full(int fd, struct iovec *iov, unsigned int cnt, off_t off,
                   bool write_op)
{
    while (cnt > 0) {
        int n = cnt > IOV_MAX ? IOV_MAX : (int)cnt;
        ssize_t r;

        if (iov->iov_len == 0) {
            iov++;
            cnt--;
            continue;
        }
        r = write_op ? pwritev(fd, iov, n, off) : preadv(fd, iov, n, off);
        if (r < 0) {
            if (errno == EINTR) {
                continue;
            }
            return -errno;
        }
        if (r == 0) {
            return -EIO;
        }
        off += r;
        while (r > 0) {
            if ((size_t)r >= iov->iov_len) {
                r -= iov->iov_len;
                iov++;
                cnt--;
            } else {
                iov->iov_base = (char *)iov->iov_base + r;
                iov->iov_len -= r;
                r = 0;
            }
        }
    }
    return 0;
}

static int sync_image(struct blk *b)
{
    if (b->null_mode) {
        return 0;
    }
    while (fdatasync(b->img_fd) < 0) {
        if (errno != EINTR) {
            return -errno;
        }
    }
    return 0;
}

/* Is [sector, sector + len bytes) inside the device? */
static bool in_bounds(struct blk *b, uint64_t sector, size_t len)
{
    uint64_t nsect;

    if (len % SECTOR_SIZE) {
        return false;
    }
    nsect = len >> SECTOR_SHIFT;
    return sector <= b->capacity && nsect <= b->capacity - sector;
}

/* ---- request processing ---------------------------------------------- */

/* Handle one request; returns the number of bytes written to in buffers. */
static unsigned int handle_request(struct blk *b, VuVirtqElement *elem)
{
    struct virtio_blk_outhdr hdr;
    size_t out_len = iov_total(elem->out_sg, elem->out_num);
    size_t in_len = iov_total(elem->in_sg, elem->in_num);
    unsigned int nmax = elem->out_num > elem->in_num ? elem->out_num
                                                      : elem->in_num;
    struct iovec *tmp;
    unsigned int cnt, used = 1;
    uint8_t status = VIRTIO_BLK_S_OK;
    uint64_t sector;
    size_t data_len;
    uint32_t type;
    int r;

    stat_add(&stat_requests, 1);
    if (out_len < sizeof(hdr) || in_len < 1) {
        fprintf(stderr, "vhost-user-blk: malformed request (out %zu, in %zu)\n",
                out_len, in_len);
        stat_add(&stat_errors, 1);
        return 0;
    }
    iov_copy(elem->out_sg, elem->out_num, 0, &hdr, sizeof(hdr), false);
    type = le32toh(hdr.type);
    sector = le64toh(hdr.sector);
    tmp = calloc(nmax ? nmax : 1, sizeof(*tmp));
    if (!tmp) {
        stat_add(&stat_errors, 1);
        status = VIRTIO_BLK_S_IOERR;
        goto done;
    }

    switch (type) {
    case VIRTIO_BLK_T_IN:
        data_len = in_len - 1;
        if (!in_bounds(b, sector, data_len)) {
            status = VIRTIO_BLK_S_IOERR;
            break;
        }
        if (!b->null_mode) {
            cnt = iov_slice(elem->in_sg, elem->in_num, 0, data_len, tmp);
            r = rw_full(b->img_fd, tmp, cnt, (off_t)(sector << SECTOR_SHIFT),
                        false);
            if (r < 0) {
                fprintf(stderr, "vhost-user-blk: read error: %s\n",
                        strerror(-r));
                status = VIRTIO_BLK_S_IOERR;
                break;
            }
        }
        stat_add(&stat_bytes_read, data_len);
        used = data_len + 1;
        break;
    case VIRTIO_BLK_T_OUT:
        data_len = out_len - sizeof(hdr);
        if (!in_bounds(b, sector, data_len)) {
            status = VIRTIO_BLK_S_IOERR;
            break;
        }
        if (!b->null_mode) {
            cnt = iov_slice(elem->out_sg, elem->out_num, sizeof(hdr),
                            data_len, tmp);
            r = rw_full(b->img_fd, tmp, cnt, (off_t)(sector << SECTOR_SHIFT),
                        true);
            if (r == 0 && !__atomic_load_n(&b->wce, __ATOMIC_RELAXED)) {
                r = sync_image(b);
            }
            if (r < 0) {
                fprintf(stderr, "vhost-user-blk: write error: %s\n",
                        strerror(-r));
                status = VIRTIO_BLK_S_IOERR;
                break;
            }
        }
        stat_add(&stat_bytes_written, data_len);
        break;
    case VIRTIO_BLK_T_FLUSH:
        if (sync_image(b) < 0) {
            status = VIRTIO_BLK_S_IOERR;
        }
        break;
    case VIRTIO_BLK_T_GET_ID: {
        size_t n = in_len - 1;
        char id[VIRTIO_BLK_ID_BYTES];

        if (n > VIRTIO_BLK_ID_BYTES) {
            n = VIRTIO_BLK_ID_BYTES;
        }
        memset(id, 0, sizeof(id));
        memcpy(id, b->serial, sizeof(id));
        iov_copy(elem->in_sg, elem->in_num, 0, id, n, true);
        used = n + 1;
        break;
    }
    default:
        status = VIRTIO_BLK_S_UNSUPP;
        break;
    }

done:
    free(tmp);
    if (status != VIRTIO_BLK_S_OK) {
        stat_add(&stat_errors, 1);
        used = 1;
    }
    iov_copy(elem->in_sg, elem->in_num, in_len - 1, &status, 1, true);
    return used;
}

static void process_queue(struct blk *b, int qidx)
{
    VuDev *dev = &b->dev;
    VuVirtq *vq = vu_get_queue(dev, qidx);
    unsigned int pushed = 0;

    for (;;) {
        VuVirtqElement *elem;
        unsigned int len;

        if (b->dev.broken) {
            break;
        }
        elem = vu_queue_pop(dev, vq, sizeof(VuVirtqElement));
        if (!elem) {
            break;
        }
        len = handle_request(b, elem);
        vu_queue_push(dev, vq, elem, len);
        free(elem);
        pushed++;
    }
    if (pushed && !b->dev.broken) {
        vu_queue_notify(dev, vq);
    }
}

static void queue_handler(VuDev *dev, int qidx)
{
    process_queue(blk_of(dev), qidx);
}

/* ---- worker threads (-T) --------------------------------------------- */

static void *worker_main(void *opaque)
{
    struct worker *w = opaque;
    struct blk *b = w->blk;

    process_queue(b, w->qidx);
    for (;;) {
        struct pollfd pfd[2] = {
            { .fd = w->stop_fd, .events = POLLIN },
            { .fd = w->kick_fd, .events = POLLIN },
        };
        int n = w->kick_fd >= 0 ? 2 : 1;
        /* Without a kick fd the frontend expects the ring to be polled. */
        int r = poll(pfd, n, w->kick_fd >= 0 ? -1 : 10);

        if (r < 0) {
            if (errno == EINTR) {
                continue;
            }
            break;
        }
        if (pfd[0].revents) {
            break;
        }
        if (n == 2 && pfd[1].revents & POLLIN) {
            eventfd_t v;

            if (eventfd_read(w->kick_fd, &v) < 0 && errno != EAGAIN) {
                break;
            }
        }
        process_queue(b, w->qidx);
    }
    return NULL;
}

static void worker_stop(struct blk *b, int qidx)
{
    struct worker *w = &b->workers[qidx];

    if (!w->running) {
        return;
    }
    eventfd_write(w->stop_fd, 1);
    pthread_join(w->tid, NULL);
    close(w->stop_fd);
    if (w->kick_fd >= 0) {
        close(w->kick_fd);
    }
    w->running = false;
}

static void worker_start(struct blk *b, int qidx)
{
    struct worker *w = &b->workers[qidx];
    VuVirtq *vq = vu_get_queue(&b->dev, qidx);

    worker_stop(b, qidx);
    w->blk = b;
    w->qidx = qidx;
    w->stop_fd = eventfd(0, EFD_CLOEXEC);
    w->kick_fd = vq->kick_fd >= 0 ? fcntl(vq->kick_fd, F_DUPFD_CLOEXEC, 0) : -1;
    if (w->stop_fd < 0 || pthread_create(&w->tid, NULL, worker_main, w)) {
        fprintf(stderr, "vhost-user-blk: cannot start worker for queue %d\n",
                qidx);
        if (w->stop_fd >= 0) {
            close(w->stop_fd);
        }
        if (w->kick_fd >= 0) {
            close(w->kick_fd);
        }
        return;
    }
    w->running = true;
}

static void workers_stop_all(struct blk *b)
{
    int i;

    for (i = 0; i < MAX_QUEUES; i++) {
        worker_stop(b, i);
    }
}

/* ---- libvhost-user callbacks ------------------------------------------ */

static void blk_panic(VuDev *dev, const char *err)
{
    struct blk *b = blk_of(dev);

    fprintf(stderr, "vhost-user panic: %s\n", err);
    fflush(stderr);
    __atomic_store_n(&b->conn_broken, true, __ATOMIC_SEQ_CST);
    wake_main();
}

static void blk_set_watch(VuDev *dev, int fd, int condition, vu_watch_cb cb,
                          void *data)
{
    struct blk *b = blk_of(dev);
    size_t i;

    for (i = 0; i < b->nwatches; i++) {
        if (b->watches[i].fd == fd) {
            break;
        }
    }
    if (i == b->nwatches) {
        if (b->nwatches == b->capwatches) {
            size_t cap = b->capwatches ? b->capwatches * 2 : 8;
            struct watch *nw = realloc(b->watches, cap * sizeof(*nw));

            if (!nw) {
                fprintf(stderr, "vhost-user-blk: out of memory\n");
                return;
            }
            b->watches = nw;
            b->capwatches = cap;
        }
        b->nwatches++;
    }
    b->watches[i].fd = fd;
    b->watches[i].condition = condition;
    b->watches[i].cb = cb;
    b->watches[i].data = data;
}

static void blk_remove_watch(VuDev *dev, int fd)
{
    struct blk *b = blk_of(dev);
    size_t i;

    for (i = 0; i < b->nwatches; i++) {
        if (b->watches[i].fd == fd) {
            b->watches[i] = b->watches[b->nwatches - 1];
            b->nwatches--;
            return;
        }
    }
}

static uint64_t blk_get_features(VuDev *dev)
{
    (void)dev;
    return 1ull << VIRTIO_BLK_F_SEG_MAX |
           1ull << VIRTIO_BLK_F_BLK_SIZE |
           1ull << VIRTIO_BLK_F_FLUSH |
           1ull << VIRTIO_BLK_F_CONFIG_WCE |
           1ull << VIRTIO_BLK_F_MQ |
           1ull << VIRTIO_F_VERSION_1;
}

static uint64_t blk_get_protocol_features(VuDev *dev)
{
    (void)dev;
    return 1ull << VHOST_USER_PROTOCOL_F_CONFIG |
           1ull << VHOST_USER_PROTOCOL_F_MQ;
}

static void blk_queue_set_started(VuDev *dev, int qidx, bool started)
{
    struct blk *b = blk_of(dev);

    if (qidx < 0 || qidx >= b->num_queues) {
        return;
    }
    if (b->use_threads) {
        if (started) {
            worker_start(b, qidx);
        } else {
            worker_stop(b, qidx);
        }
    } else {
        vu_set_queue_handler(dev, vu_get_queue(dev, qidx),
                             started ? queue_handler : NULL);
    }
}

static int blk_get_config(VuDev *dev, uint8_t *config, uint32_t len)
{
    struct blk *b = blk_of(dev);
    struct virtio_blk_config cfg;

    if (len > VHOST_USER_MAX_CONFIG_SIZE) {
        return -1;
    }
    memset(&cfg, 0, sizeof(cfg));
    cfg.capacity = htole64(b->capacity);
    cfg.seg_max = htole32(SEG_MAX);
    cfg.blk_size = htole32(SECTOR_SIZE);
    cfg.wce = (uint8_t)__atomic_load_n(&b->wce, __ATOMIC_RELAXED);
    cfg.num_queues = htole16((uint16_t)b->num_queues);

    memset(config, 0, len);
    memcpy(config, &cfg, len < sizeof(cfg) ? len : sizeof(cfg));
    return 0;
}

static int blk_set_config(VuDev *dev, const uint8_t *data, uint32_t offset,
                          uint32_t size, uint32_t flags)
{
    struct blk *b = blk_of(dev);

    (void)flags;
    /* Only the writeback cache byte is writable. */
    if (offset != offsetof(struct virtio_blk_config, wce) || size != 1 || data[0] > 1) {
        return -1;
    }
    if (data[0] == 0) {
        sync_image(b);
    }
    __atomic_store_n(&b->wce, data[0], __ATOMIC_RELAXED);
    return 0;
}

/*
 * The default message reader turns end-of-file on the socket into a
 * VHOST_USER_NONE message, whose default handling exits the process.  We
 * want to serve the next frontend instead, so take it as "disconnected".
 */
static int blk_process_msg(VuDev *dev, VhostUserMsg *vmsg, int *do_reply)
{
    struct blk *b = blk_of(dev);

    if (vmsg->request == VHOST_USER_NONE) {
        /* A claimed message's fds are ours to close. */
        for (int i = 0; i < vmsg->fd_num; i++) {
            close(vmsg->fds[i]);
        }
        vmsg->fd_num = 0;
        b->peer_gone = true;
        *do_reply = 0;
        return 1;
    }
    return 0;
}

#ifdef LIBVHOST_USER_HAS_DEVICE_STATE
/*
 * The device state that migrates: the counters of the summary line and the
 * write-cache mode.  Little-endian, versioned by its magic.
 */
#define BLK_STATE_MAGIC "VUBLKST1"

struct blk_state {
    char magic[8];
    uint32_t wce;
    uint32_t reserved;
    uint64_t requests, bytes_read, bytes_written, errors;
};

static bool blk_save_state(VuDev *dev, void *opaque, uint8_t **data, size_t *size)
{
    struct blk *b = blk_of(dev);
    struct blk_state *st = calloc(1, sizeof(*st));

    (void)opaque;
    if (!st) {
        return false;
    }
    memcpy(st->magic, BLK_STATE_MAGIC, sizeof(st->magic));
    st->wce = htole32((uint32_t)__atomic_load_n(&b->wce, __ATOMIC_RELAXED));
    st->requests = htole64(__atomic_load_n(&stat_requests, __ATOMIC_RELAXED));
    st->bytes_read = htole64(__atomic_load_n(&stat_bytes_read, __ATOMIC_RELAXED));
    st->bytes_written = htole64(__atomic_load_n(&stat_bytes_written, __ATOMIC_RELAXED));
    st->errors = htole64(__atomic_load_n(&stat_errors, __ATOMIC_RELAXED));
    *data = (uint8_t *)st;
    *size = sizeof(*st);
    fprintf(stderr, "vhost-user-blk: state saved\n");
    return true;
}

static bool blk_load_state(VuDev *dev, void *opaque, const uint8_t *data, size_t size)
{
    struct blk *b = blk_of(dev);
    struct blk_state st;

    (void)opaque;
    if (size != sizeof(st)) {
        fprintf(stderr, "vhost-user-blk: state of %zu bytes refused\n", size);
        return false;
    }
    memcpy(&st, data, sizeof(st));
    if (memcmp(st.magic, BLK_STATE_MAGIC, sizeof(st.magic)) || le32toh(st.wce) > 1) {
        fprintf(stderr, "vhost-user-blk: invalid state refused\n");
        return false;
    }
    if (!le32toh(st.wce)) {
        sync_image(b);
    }
    __atomic_store_n(&b->wce, (int)le32toh(st.wce), __ATOMIC_RELAXED);
    __atomic_store_n(&stat_requests, le64toh(st.requests), __ATOMIC_RELAXED);
    __atomic_store_n(&stat_bytes_read, le64toh(st.bytes_read), __ATOMIC_RELAXED);
    __atomic_store_n(&stat_bytes_written, le64toh(st.bytes_written), __ATOMIC_RELAXED);
    __atomic_store_n(&stat_errors, le64toh(st.errors), __ATOMIC_RELAXED);
    fprintf(stderr, "vhost-user-blk: state loaded\n");
    return true;
}
#endif

static const VuDevIface blk_iface = {
    .process_msg = blk_process_msg,
    .get_features = blk_get_features,
    .get_protocol_features = blk_get_protocol_features,
    .queue_set_started = blk_queue_set_started,
    .get_config = blk_get_config,
    .set_config = blk_set_config,
};

/* ---- main loop -------------------------------------------------------- */

static void drain_wake_pipe(void)
{
    char buf[64];

    while (read(wake_pipe[0], buf, sizeof(buf)) > 0) {
    }
}

static void serve_connection(struct blk *b, int conn)
{
    struct pollfd *pfds = NULL;
    size_t cap = 0;

    __atomic_store_n(&b->conn_broken, false, __ATOMIC_SEQ_CST);
    b->peer_gone = false;
    b->nwatches = 0;
    if (!vu_init(&b->dev, (uint16_t)b->num_queues, conn, blk_panic, NULL,
                 blk_set_watch, blk_remove_watch, &blk_iface)) {
        fprintf(stderr, "vhost-user-blk: vu_init failed\n");
        close(conn);
        return;
    }
#ifdef LIBVHOST_USER_HAS_DEVICE_STATE
    vu_set_device_state_handlers(&b->dev, blk_save_state, blk_load_state,
                                 sizeof(struct blk_state), NULL);
#endif

    while (!terminate && !conn_broken(b)) {
        size_t n = b->nwatches + 2, i;
        int r;

        if (n > cap) {
            struct pollfd *np = realloc(pfds, n * sizeof(*np));

            if (!np) {
                fprintf(stderr, "vhost-user-blk: out of memory\n");
                break;
            }
            pfds = np;
            cap = n;
        }
        pfds[0].fd = b->dev.sock;
        pfds[0].events = POLLIN;
        pfds[1].fd = wake_pipe[0];
        pfds[1].events = POLLIN;
        for (i = 0; i < b->nwatches; i++) {
            pfds[i + 2].fd = b->watches[i].fd;
            pfds[i + 2].events = (short)b->watches[i].condition;
        }
        for (i = 0; i < n; i++) {
            pfds[i].revents = 0;
        }

        r = poll(pfds, n, -1);
        if (r < 0) {
            if (errno == EINTR) {
                continue;
            }
            perror("vhost-user-blk: poll");
            break;
        }
        if (pfds[1].revents) {
            drain_wake_pipe();
        }
        if (terminate || conn_broken(b)) {
            break;
        }
        if (pfds[0].revents) {
            if (!vu_dispatch(&b->dev) || b->peer_gone) {
                break;
            }
            if (conn_broken(b)) {
                break;
            }
            /* The watch list may have changed: poll again. */
            continue;
        }
        for (i = 2; i < n && !conn_broken(b); i++) {
            size_t j;

            if (!pfds[i].revents) {
                continue;
            }
            /* Callbacks may add or remove watches: look the fd up again. */
            for (j = 0; j < b->nwatches; j++) {
                if (b->watches[j].fd == pfds[i].fd) {
                    b->watches[j].cb(&b->dev, pfds[i].revents,
                                     b->watches[j].data);
                    break;
                }
            }
        }
    }

    free(pfds);
    workers_stop_all(b);
    vu_deinit(&b->dev);   /* closes the connection socket */
    b->nwatches = 0;
}

static int listen_on(const char *path)
{
    struct sockaddr_un sa;
    int fd;

    if (strlen(path) >= sizeof(sa.sun_path)) {
        fprintf(stderr, "vhost-user-blk: socket path too long\n");
        return -1;
    }
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        perror("vhost-user-blk: socket");
        return -1;
    }
    memset(&sa, 0, sizeof(sa));
    sa.sun_family = AF_UNIX;
    strcpy(sa.sun_path, path);
    unlink(path);
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, 1) < 0) {
        perror("vhost-user-blk: bind/listen");
        close(fd);
        return -1;
    }
    return fd;
}

/* Wait for and accept the next frontend; -1 on termination or error. */
static int accept_next(int lfd)
{
    for (;;) {
        struct pollfd pfd[2] = {
            { .fd = lfd, .events = POLLIN },
            { .fd = wake_pipe[0], .events = POLLIN },
        };
        int r;

        if (terminate) {
            return -1;
        }
        r = poll(pfd, 2, -1);
        if (r < 0) {
            if (errno == EINTR) {
                continue;
            }
            perror("vhost-user-blk: poll");
            return -1;
        }
        if (pfd[1].revents) {
            drain_wake_pipe();
            continue;
        }
        if (pfd[0].revents) {
            int c = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);

            if (c >= 0) {
                return c;
            }
            if (errno != EINTR && errno != ECONNABORTED && errno != EAGAIN) {
                perror("vhost-user-blk: accept");
                return -1;
            }
        }
    }
}

static void usage(const char *prog)
{
    fprintf(stderr,
            "Usage: %s -s SOCKET (-b IMAGE | --null [-S BYTES]) [-q NUM_QUEUES]\n"
            "          [-1] [-T] [-i SERIAL] [-w]\n", prog);
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        { "socket-path", required_argument, NULL, 's' },
        { "blk-file", required_argument, NULL, 'b' },
        { "queues", required_argument, NULL, 'q' },
        { "null", no_argument, NULL, 'N' },
        { "size", required_argument, NULL, 'S' },
        { "one-shot", no_argument, NULL, '1' },
        { "threads", no_argument, NULL, 'T' },
        { "serial", required_argument, NULL, 'i' },
        { "writethrough", no_argument, NULL, 'w' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    const char *sock_path = NULL, *img_path = NULL, *serial = "vhost-user-blk";
    struct sigaction sa;
    struct blk *b;
    bool one_shot = false;
    int opt, lfd;

    b = calloc(1, sizeof(*b));
    if (!b) {
        return 1;
    }
    b->img_fd = -1;
    b->num_queues = 1;
    b->size = 1ull << 30;
    b->wce = 1;

    while ((opt = getopt_long(argc, argv, "s:b:q:S:1Ti:wh", longopts,
                              NULL)) != -1) {
        char *end;

        switch (opt) {
        case 's':
            sock_path = optarg;
            break;
        case 'b':
            img_path = optarg;
            break;
        case 'q':
            b->num_queues = (int)strtol(optarg, &end, 10);
            if (*end || b->num_queues < 1 || b->num_queues > MAX_QUEUES) {
                fprintf(stderr, "vhost-user-blk: bad queue count %s\n", optarg);
                return 1;
            }
            break;
        case 'N':
            b->null_mode = true;
            break;
        case 'S':
            b->size = strtoull(optarg, &end, 0);
            if (*end) {
                fprintf(stderr, "vhost-user-blk: bad size %s\n", optarg);
                return 1;
            }
            break;
        case '1':
            one_shot = true;
            break;
        case 'T':
            b->use_threads = true;
            break;
        case 'i':
            serial = optarg;
            break;
        case 'w':
            b->wce = 0;
            break;
        default:
            usage(argv[0]);
            return opt == 'h' ? 0 : 1;
        }
    }
    if (!sock_path || (!img_path && !b->null_mode) ||
        (img_path && b->null_mode)) {
        usage(argv[0]);
        return 1;
    }
    strncpy(b->serial, serial, sizeof(b->serial));

    if (!b->null_mode) {
        struct stat st;

        b->img_fd = open(img_path, O_RDWR | O_CLOEXEC);
        if (b->img_fd < 0 || fstat(b->img_fd, &st) < 0) {
            fprintf(stderr, "vhost-user-blk: cannot open %s: %s\n", img_path,
                    strerror(errno));
            return 1;
        }
        b->size = (uint64_t)st.st_size;
    }
    b->capacity = b->size >> SECTOR_SHIFT;

    if (pipe2(wake_pipe, O_CLOEXEC | O_NONBLOCK) < 0) {
        perror("vhost-user-blk: pipe");
        return 1;
    }
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    lfd = listen_on(sock_path);
    if (lfd < 0) {
        return 1;
    }
    fprintf(stderr, "vhost-user-blk: listening on %s (%" PRIu64 " sectors, "
            "%d queue%s%s%s)\n", sock_path, b->capacity, b->num_queues,
            b->num_queues > 1 ? "s" : "", b->null_mode ? ", null" : "",
            b->use_threads ? ", threads" : "");

    while (!terminate) {
        int conn = accept_next(lfd);

        if (conn < 0) {
            break;
        }
        serve_connection(b, conn);
        if (one_shot) {
            break;
        }
    }

    close(lfd);
    unlink(sock_path);
    if (b->img_fd >= 0) {
        close(b->img_fd);
    }
    printf("vhost-user-blk: served %" PRIu64 " requests, %" PRIu64
           " bytes read, %" PRIu64 " bytes written, %" PRIu64 " errors\n",
           stat_requests, stat_bytes_read, stat_bytes_written, stat_errors);
    fflush(stdout);
    free(b->watches);
    free(b);
    return 0;
}
