/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The frontend half of an in-process benchmark: a VuDev on one end of a socketpair, this
 * program on the other, sending control messages and dispatching each one at once.
 * The including file defines BENCH_PROG (its name, for messages) and
 * bench_protocol_features(), then includes this after libvhost-user.h.
 */
#ifndef BENCH_INPROC_FRONTEND_H
#define BENCH_INPROC_FRONTEND_H

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>

#define F_VERSION_1 (1ull << 32)

static VuDev dev;
static int sock_fe;

static uint64_t bench_protocol_features(VuDev *d);

static void die(const char *m)
{
    fprintf(stderr, BENCH_PROG ": %s (%s)\n", m, strerror(errno));
    exit(1);
}

static void on_panic(VuDev *d, const char *err)
{
    (void)d;
    fprintf(stderr, BENCH_PROG ": library panic: %s\n", err);
    exit(1);
}
static void on_set_watch(VuDev *d, int fd, int c, vu_watch_cb cb, void *p)
{
    (void)d; (void)fd; (void)c; (void)cb; (void)p;
}
static void on_remove_watch(VuDev *d, int fd) { (void)d; (void)fd; }
static uint64_t on_features(VuDev *d) { (void)d; return F_VERSION_1; }
static const VuDevIface iface = {
    .get_features = on_features,
    .get_protocol_features = bench_protocol_features,
};

struct hdr { uint32_t request, flags, size; } __attribute__((packed));

/* Sends one message (with fds) and lets the library dispatch it. */
static void send_msg(uint32_t req, const void *payload, uint32_t size,
                     const int *fds, int nfds)
{
    struct hdr h = { req, 1, size };
    struct iovec iov[2] = { { &h, sizeof(h) }, { (void *)payload, size } };
    char cbuf[CMSG_SPACE(8 * sizeof(int))];
    struct msghdr m = { .msg_iov = iov, .msg_iovlen = size ? 2 : 1 };
    if (nfds) {
        struct cmsghdr *c;
        memset(cbuf, 0, sizeof(cbuf));
        m.msg_control = cbuf;
        m.msg_controllen = CMSG_SPACE(nfds * sizeof(int));
        c = CMSG_FIRSTHDR(&m);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(nfds * sizeof(int));
        memcpy(CMSG_DATA(c), fds, nfds * sizeof(int));
    }
    if (sendmsg(sock_fe, &m, 0) != (ssize_t)(sizeof(h) + size)) {
        die("sendmsg");
    }
    if (!vu_dispatch(&dev)) {
        fprintf(stderr, BENCH_PROG ": vu_dispatch failed for request %u\n", req);
        exit(1);
    }
}

#endif
