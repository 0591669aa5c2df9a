// SPDX-License-Identifier: GPL-2.0-or-later
// The header from C++: it must compile (extern "C" linkage for the functions) and link.
#include "libvhost-user.h"

#include <cstdio>
#include <cstring>
#include <sys/socket.h>
#include <unistd.h>

static_assert(sizeof(VuDev) == 192, "VuDev");
static_assert(sizeof(VhostUserMsg) == 328, "VhostUserMsg");
static_assert(offsetof(VuDev, backend_fd) == 96, "backend_fd");
static_assert(VHOST_USER_MAX == 42, "VHOST_USER_MAX");
static_assert(VU_WATCH_IN == POLLIN, "VU_WATCH_IN");

namespace {

void panic_cb(VuDev *, const char *err) { std::fprintf(stderr, "panic: %s\n", err); }
void set_watch(VuDev *, int, int, vu_watch_cb, void *) {}
void remove_watch(VuDev *, int) {}
uint64_t get_features(VuDev *) { return 1ULL << 3; }

} // namespace

int main()
{
    VuDevIface iface;
    std::memset(&iface, 0, sizeof(iface));
    iface.get_features = get_features;

    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) < 0) {
        return 2;
    }
    VuDev dev;
    bool (*init)(VuDev *, uint16_t, int, vu_panic_cb, vu_read_msg_cb, vu_set_watch_cb,
                 vu_remove_watch_cb, const VuDevIface *) = &vu_init;
    int failures = 0;
    if (!init(&dev, 1, sv[0], panic_cb, nullptr, set_watch, remove_watch, &iface)) {
        failures++;
    }
    if (dev.sock != sv[0] || dev.slave_fd != -1 || dev.max_queues != 1) {
        failures++;
    }
    if (std::strcmp(vu_request_to_string(VHOST_USER_GET_FEATURES), "VHOST_USER_GET_FEATURES")) {
        failures++;
    }
    vu_deinit(&dev); // closes sv[0], as QEMU's does
    close(sv[1]);
    // The seed-style 7-argument form works in C++ too.
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) < 0) {
        return 2;
    }
    if (!vu_init(&dev, 1, sv[0], panic_cb, set_watch, remove_watch, &iface) || dev.sock != sv[0]) {
        failures++;
    }
    vu_deinit(&dev);
    close(sv[1]);
    if (failures) {
        std::fprintf(stderr, "cxx: %d check(s) failed\n", failures);
        return 1;
    }
    std::printf("cxx: ok\n");
    return 0;
}
