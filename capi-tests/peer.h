/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * A minimal vhost-user frontend for the C API tests: writes requests to the backend's socket
 * and reads replies, with fds passed as SCM_RIGHTS. Uses only what every header generation
 * declares (VhostUserMsg and its fields), so each gen-*.c test can include it.
 */
#ifndef CAPI_TESTS_PEER_H
#define CAPI_TESTS_PEER_H

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/time.h>

#define PEER_HDR_SIZE 12 /* request, flags, size */
#define PEER_VERSION 0x1

static int peer_failures;

#define CHECK(cond) \
    do { \
        if (!(cond)) { \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
            peer_failures++; \
        } \
    } while (0)

/* Sends a request with `size` payload bytes from `payload` and `nfds` fds. */
static inline void peer_send(int sock, int request, uint32_t flags, const void *payload, uint32_t size,
                      const int *fds, int nfds)
{
    unsigned char buf[PEER_HDR_SIZE + 512];
    uint32_t hdr[3];
    struct iovec iov;
    struct msghdr mh;
    char control[CMSG_SPACE(8 * sizeof(int))];
    ssize_t n;

    hdr[0] = (uint32_t)request;
    hdr[1] = flags | PEER_VERSION;
    hdr[2] = size;
    memcpy(buf, hdr, PEER_HDR_SIZE);
    if (size) {
        memcpy(buf + PEER_HDR_SIZE, payload, size);
    }
    iov.iov_base = buf;
    iov.iov_len = PEER_HDR_SIZE + size;
    memset(&mh, 0, sizeof(mh));
    mh.msg_iov = &iov;
    mh.msg_iovlen = 1;
    if (nfds > 0) {
        struct cmsghdr *cmsg;
        memset(control, 0, sizeof(control));
        mh.msg_control = control;
        mh.msg_controllen = CMSG_SPACE(nfds * sizeof(int));
        cmsg = CMSG_FIRSTHDR(&mh);
        cmsg->cmsg_level = SOL_SOCKET;
        cmsg->cmsg_type = SCM_RIGHTS;
        cmsg->cmsg_len = CMSG_LEN(nfds * sizeof(int));
        memcpy(CMSG_DATA(cmsg), fds, nfds * sizeof(int));
    }
    n = sendmsg(sock, &mh, 0);
    if (n != (ssize_t)iov.iov_len) {
        perror("peer_send");
        exit(2);
    }
}

/* Reads one message (header, then its payload) into *msg; fds received go to msg->fds. */
static inline void peer_recv(int sock, VhostUserMsg *msg)
{
    struct iovec iov;
    struct msghdr mh;
    char control[CMSG_SPACE(8 * sizeof(int))];
    struct cmsghdr *cmsg;
    ssize_t n;

    memset(msg, 0, sizeof(*msg));
    iov.iov_base = msg;
    iov.iov_len = PEER_HDR_SIZE;
    memset(&mh, 0, sizeof(mh));
    mh.msg_iov = &iov;
    mh.msg_iovlen = 1;
    mh.msg_control = control;
    mh.msg_controllen = sizeof(control);
    n = recvmsg(sock, &mh, MSG_WAITALL);
    if (n != PEER_HDR_SIZE) {
        fprintf(stderr, "peer_recv: header: got %zd bytes\n", n);
        exit(2);
    }
    for (cmsg = CMSG_FIRSTHDR(&mh); cmsg; cmsg = CMSG_NXTHDR(&mh, cmsg)) {
        if (cmsg->cmsg_level == SOL_SOCKET && cmsg->cmsg_type == SCM_RIGHTS) {
            int count = (int)((cmsg->cmsg_len - CMSG_LEN(0)) / sizeof(int));
            memcpy(msg->fds, CMSG_DATA(cmsg), count * sizeof(int));
            msg->fd_num = count;
        }
    }
    if (msg->size > sizeof(msg->payload)) {
        fprintf(stderr, "peer_recv: payload too big: %u\n", msg->size);
        exit(2);
    }
    if (msg->size) {
        n = recv(sock, &msg->payload, msg->size, MSG_WAITALL);
        if (n != (ssize_t)msg->size) {
            fprintf(stderr, "peer_recv: payload: got %zd of %u bytes\n", n, msg->size);
            exit(2);
        }
    }
}

/* Sends a request with a u64 payload (or none) that expects a u64 reply; returns the reply. */
static inline uint64_t peer_get_u64(VuDev *dev, int sock, int request)
{
    VhostUserMsg reply;

    peer_send(sock, request, 0, NULL, 0, NULL, 0);
    CHECK(vu_dispatch(dev));
    peer_recv(sock, &reply);
    CHECK(reply.request == request);
    CHECK(reply.flags & VHOST_USER_REPLY_MASK);
    CHECK(reply.size == sizeof(reply.payload.u64));
    return reply.payload.u64;
}

static inline void peer_set_u64(VuDev *dev, int sock, int request, uint64_t value)
{
    peer_send(sock, request, 0, &value, sizeof(value), NULL, 0);
    CHECK(vu_dispatch(dev));
}

static inline void peer_socketpair(int sv[2])
{
    /* Bounded reads: a missing reply fails the test instead of hanging it. */
    struct timeval tv = { .tv_sec = 5, .tv_usec = 0 };
    int i;

    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) < 0) {
        perror("socketpair");
        exit(2);
    }
    for (i = 0; i < 2; i++) {
        if (setsockopt(sv[i], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) < 0) {
            perror("setsockopt");
            exit(2);
        }
    }
}

static inline int peer_result(const char *name)
{
    if (peer_failures) {
        fprintf(stderr, "%s: %d check(s) failed\n", name, peer_failures);
        return 1;
    }
    printf("%s: ok\n", name);
    return 0;
}

#endif /* CAPI_TESTS_PEER_H */
