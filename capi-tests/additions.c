/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The C API this library adds to QEMU 10.0's (additive: LIBVHOST_USER_HAS_GET_STATUS,
 * LIBVHOST_USER_HAS_DEVICE_STATE): vu_get_status() and vu_set_device_state_handlers(),
 * driven in-process by a peer on a socketpair.
 */
#include "libvhost-user.h"
#include "peer.h"

#if !defined(LIBVHOST_USER_HAS_GET_STATUS) || !defined(LIBVHOST_USER_HAS_DEVICE_STATE)
#error "the additions' feature macros are missing"
#endif

static const char saved[] = "state of the device";
static char loaded[64];
static size_t loaded_len;
static int opaque_seen;

static void panic_cb(VuDev *dev, const char *err)
{
    (void)dev;
    fprintf(stderr, "panic: %s\n", err);
    exit(3);
}

static void set_watch(VuDev *dev, int fd, int condition, vu_watch_cb cb, void *data)
{
    (void)dev; (void)fd; (void)condition; (void)cb; (void)data;
}

static void remove_watch(VuDev *dev, int fd)
{
    (void)dev; (void)fd;
}

static bool save(VuDev *dev, void *opaque, uint8_t **data, size_t *size)
{
    (void)dev;
    opaque_seen += opaque == &opaque_seen;
    *data = (uint8_t *)malloc(sizeof(saved));
    if (!*data) {
        return false;
    }
    memcpy(*data, saved, sizeof(saved));
    *size = sizeof(saved);
    return true;
}

static bool load(VuDev *dev, void *opaque, const uint8_t *data, size_t size)
{
    (void)dev;
    opaque_seen += opaque == &opaque_seen;
    if (size > sizeof(loaded)) {
        return false;
    }
    memcpy(loaded, data, size);
    loaded_len = size;
    return true;
}

static const VuDevIface iface = { 0 };

/* SET_DEVICE_STATE_FD with one fd; returns the reply value. */
static uint64_t set_state_fd(VuDev *dev, int sock, uint32_t direction, int fd)
{
    uint32_t params[2] = { direction, 0 };
    VhostUserMsg reply;

    peer_send(sock, 42, 0, params, sizeof(params), &fd, 1);
    CHECK(vu_dispatch(dev));
    peer_recv(sock, &reply);
    CHECK(reply.request == 42 && reply.fd_num == 0);
    return reply.payload.u64;
}

int main(void)
{
    VuDev dev;
    int sv[2], p[2];
    uint64_t pf;
    char buf[128];
    ssize_t n;
    size_t got = 0;

    CHECK(vu_get_status(NULL) == 0);
    CHECK(!vu_set_device_state_handlers(NULL, save, load, 0, NULL));
    peer_socketpair(sv);
    CHECK(vu_init(&dev, 1, sv[0], panic_cb, NULL, set_watch, remove_watch, &iface));
    CHECK(vu_get_status(&dev) == 0);

    pf = peer_get_u64(&dev, sv[1], VHOST_USER_GET_PROTOCOL_FEATURES);
    CHECK(pf & (1ULL << 13));            /* RESET_DEVICE */
    CHECK(pf & (1ULL << 16));            /* STATUS */
    CHECK(!(pf & (1ULL << 19)));         /* DEVICE_STATE: no handlers yet */

    peer_set_u64(&dev, sv[1], VHOST_USER_SET_FEATURES,
                 1ULL << 32 | 1ULL << VHOST_USER_F_PROTOCOL_FEATURES);
    peer_set_u64(&dev, sv[1], 39, 0x0f); /* SET_STATUS */
    CHECK(vu_get_status(&dev) == 0x0f);
    CHECK(peer_get_u64(&dev, sv[1], 40) == 0x0f);
    peer_set_u64(&dev, sv[1], 39, 0);    /* a stop */
    CHECK(vu_get_status(&dev) == 0);

    CHECK(!vu_set_device_state_handlers(&dev, save, NULL, 0, NULL));
    CHECK(!vu_set_device_state_handlers(&dev, NULL, load, 0, NULL));
    CHECK(vu_set_device_state_handlers(&dev, save, load, 0, &opaque_seen));
    pf = peer_get_u64(&dev, sv[1], VHOST_USER_GET_PROTOCOL_FEATURES);
    CHECK(pf & (1ULL << 19));

    /* Save: the reply first, then the stream to EOF, then CHECK. */
    CHECK(pipe(p) == 0);
    CHECK(set_state_fd(&dev, sv[1], 0, p[1]) == 0x100);
    close(p[1]);
    while ((n = read(p[0], buf + got, sizeof(buf) - got)) > 0) {
        got += (size_t)n;
    }
    close(p[0]);
    CHECK(got == sizeof(saved) && memcmp(buf, saved, got) == 0);
    CHECK(peer_get_u64(&dev, sv[1], 43) == 0);

    /* Load: the stream, EOF, then CHECK hands it to the device. */
    CHECK(pipe(p) == 0);
    CHECK(set_state_fd(&dev, sv[1], 1, p[0]) == 0x100);
    close(p[0]);
    CHECK(write(p[1], "abc", 3) == 3);
    close(p[1]);
    CHECK(peer_get_u64(&dev, sv[1], 43) == 0);
    CHECK(loaded_len == 3 && memcmp(loaded, "abc", 3) == 0);
    CHECK(opaque_seen == 2);

    /* Unregistered: no longer offered, refused. */
    CHECK(vu_set_device_state_handlers(&dev, NULL, NULL, 0, NULL));
    pf = peer_get_u64(&dev, sv[1], VHOST_USER_GET_PROTOCOL_FEATURES);
    CHECK(!(pf & (1ULL << 19)));
    CHECK(pipe(p) == 0);
    CHECK(set_state_fd(&dev, sv[1], 0, p[1]) == 0x101);
    close(p[1]);
    CHECK(read(p[0], buf, sizeof(buf)) == 0);  /* the library closed its copy */
    close(p[0]);

    vu_deinit(&dev);
    close(sv[1]);
    return peer_result("additions");
}
