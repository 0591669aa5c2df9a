// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * vhost-user-net-sink: a minimal vhost-user network backend whose state
 * migrates.  It takes every frame the guest transmits and counts it (frames
 * and bytes, the virtio-net header excluded); it never receives.  QEMU
 * (10.0 and later) runs it with
 *
 *   -chardev socket,id=c0,path=SOCKET -netdev vhost-user,id=n0,chardev=c0
 *   -device virtio-net-pci,netdev=n0
 *
 * and, because this libvhost-user offers VHOST_USER_PROTOCOL_F_DEVICE_STATE
 * once device state handlers are registered, migrates the counters with the
 * VM: the source saves them (SET_DEVICE_STATE_FD, direction save), the
 * destination's fresh process loads them and goes on counting, so its final
 * count is the guest's whole transmit count.  Built against a libvhost-user
 * without device state handlers it still serves, and the counters start
 * from zero after a migration.
 *
 * Options:
 *   -s PATH   listen on PATH, serve one frontend, exit when it disconnects
 *
 * stderr: "state saved: tx F frames B bytes", "state loaded: ...", and at
 * exit (libvhost-user calls exit(0) when the frontend closes the connection)
 * "tx F frames B bytes; loaded F0 frames; migrations M".
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "libvhost-user.h"

/* virtio-net: queue 2n receives, 2n+1 transmits; one pair here. */
#define RX_QUEUE 0
#define TX_QUEUE 1
/* The header before each frame with VIRTIO_F_VERSION_1 (virtio 1.x §5.1.6). */
#define VNET_HDR_LEN 12
#define MAX_WATCHES 16

struct watch {
    int fd;
    int condition;
    vu_watch_cb cb;
    void *data;
};

/* What migrates: the counters, tagged so that a foreign stream is refused. */
#define STATE_MAGIC 0x6e657473u /* "stne" */
#define STATE_VERSION 1u
struct net_state {
    uint32_t magic;
    uint32_t version;
    uint64_t tx_frames;
    uint64_t tx_bytes;
    uint64_t migrations;
};

static VuDev dev;
static struct watch watches[MAX_WATCHES];
static int nwatches;
static uint64_t tx_frames, tx_bytes, migrations, loaded_frames;

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    fputs("vhost-user-net-sink: ", stderr);
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
    for (i = 0; i < nwatches && watches[i].fd != fd; i++) {
    }
    if (i == nwatches) {
        if (nwatches == MAX_WATCHES) {
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

/* Transmit queue: every frame is taken, counted and given back empty. */
static void tx_handler(VuDev *d, int qidx)
{
    VuVirtq *vq = vu_get_queue(d, qidx);
    VuVirtqElement *e;
    bool any = false;

    while ((e = vu_queue_pop(d, vq, sizeof(*e)))) {
        size_t len = 0;
        unsigned i;

        for (i = 0; i < e->out_num; i++) {
            len += e->out_sg[i].iov_len;
        }
        if (len > VNET_HDR_LEN) {
            tx_frames++;
            tx_bytes += len - VNET_HDR_LEN;
        }
        vu_queue_push(d, vq, e, 0);
        free(e);
        any = true;
    }
    if (any) {
        vu_queue_notify(d, vq);
    }
}

static void queue_set_started(VuDev *d, int qidx, bool started)
{
    /* The receive queue's buffers stay with us unused: nothing is ever received. */
    if (qidx == TX_QUEUE) {
        vu_set_queue_handler(d, vu_get_queue(d, qidx), started ? tx_handler : NULL);
    }
}

static uint64_t get_features(VuDev *d)
{
    (void)d;
    return 0; /* the library adds VERSION_1 and what it implements */
}

static int process_msg(VuDev *d, VhostUserMsg *m, int *do_reply)
{
    (void)d;
    (void)m;
    (void)do_reply;
    return 0;
}

static bool save_state(VuDev *d, void *opaque, uint8_t **data, size_t *size)
{
    struct net_state *st = malloc(sizeof(*st));

    (void)d;
    (void)opaque;
    if (!st) {
        return false;
    }
    *st = (struct net_state){ STATE_MAGIC, STATE_VERSION, tx_frames, tx_bytes, migrations };
    *data = (uint8_t *)st;
    *size = sizeof(*st);
    say("state saved: tx %" PRIu64 " frames %" PRIu64 " bytes\n", tx_frames, tx_bytes);
    return true;
}

static bool load_state(VuDev *d, void *opaque, const uint8_t *data, size_t size)
{
    struct net_state st;

    (void)d;
    (void)opaque;
    if (size != sizeof(st)) {
        say("state of %zu bytes refused\n", size);
        return false;
    }
    memcpy(&st, data, sizeof(st));
    if (st.magic != STATE_MAGIC || st.version != STATE_VERSION) {
        say("state with magic %08x version %u refused\n", st.magic, st.version);
        return false;
    }
    /* Frames counted here before the load (none: the device was stopped) stay counted. */
    tx_frames += st.tx_frames;
    tx_bytes += st.tx_bytes;
    loaded_frames = st.tx_frames;
    migrations = st.migrations + 1;
    say("state loaded: tx %" PRIu64 " frames %" PRIu64 " bytes\n", st.tx_frames, st.tx_bytes);
    return true;
}

/* At exit: libvhost-user ends the process itself when the frontend closes the connection. */
static void print_summary(void)
{
    say("tx %" PRIu64 " frames %" PRIu64 " bytes; loaded %" PRIu64 " frames; migrations %" PRIu64 "\n",
        tx_frames, tx_bytes, loaded_frames, migrations);
}

static const VuDevIface iface = {
    .get_features = get_features,
    .process_msg = process_msg,
    .queue_set_started = queue_set_started,
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
        close(l);
        return -1;
    }
    c = accept4(l, NULL, NULL, SOCK_CLOEXEC);
    close(l);
    return c;
}

int main(int argc, char **argv)
{
    const char *sock_path = NULL;
    int opt, conn, i;

    while ((opt = getopt(argc, argv, "s:")) != -1) {
        switch (opt) {
        case 's': sock_path = optarg; break;
        default:
            fprintf(stderr, "usage: %s -s SOCKET\n", argv[0]);
            return 2;
        }
    }
    if (!sock_path) {
        fprintf(stderr, "usage: %s -s SOCKET\n", argv[0]);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    atexit(print_summary);
    conn = listen_accept(sock_path);
    if (conn < 0) {
        perror("accept");
        return 1;
    }
    if (!vu_init(&dev, 2, conn, on_panic, NULL, set_watch, remove_watch, &iface)) {
        say("vu_init failed\n");
        return 1;
    }
#ifdef LIBVHOST_USER_HAS_DEVICE_STATE
    if (!vu_set_device_state_handlers(&dev, save_state, load_state, sizeof(struct net_state),
                                      NULL)) {
        say("vu_set_device_state_handlers failed\n");
        return 1;
    }
#else
    (void)save_state;
    (void)load_state;
#endif
    say("serving %s\n", sock_path);
    for (;;) {
        struct pollfd pfds[MAX_WATCHES + 1];
        int n = nwatches + 1, r;

        pfds[0] = (struct pollfd){ .fd = conn, .events = POLLIN };
        for (i = 0; i < nwatches; i++) {
            pfds[i + 1] = (struct pollfd){ .fd = watches[i].fd, .events = (short)watches[i].condition };
        }
        r = poll(pfds, n, -1);
        if (r < 0) {
            if (errno == EINTR) {
                continue;
            }
            perror("poll");
            break;
        }
        if (pfds[0].revents) {
            /* false: the frontend has gone (or broke the protocol) */
            if (!vu_dispatch(&dev) || dev.broken) {
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
    vu_deinit(&dev);
    return 0;
}
