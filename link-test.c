/*
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * link-test: proves that a C program links libvhost-user alone (no glib) and that every
 * function of the API resolves. Running it initialises a device on one end of a socketpair
 * and tears it down again; it exits 0 on success.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "libvhost-user.h"

static void lt_panic(VuDev *dev, const char *err)
{
    (void)dev;
    fprintf(stderr, "link-test: unexpected panic: %s\n", err);
    abort();
}

static void lt_set_watch(VuDev *dev, int fd, int condition, vu_watch_cb cb, void *data)
{
    (void)dev; (void)fd; (void)condition; (void)cb; (void)data;
}

static void lt_remove_watch(VuDev *dev, int fd)
{
    (void)dev; (void)fd;
}

static const VuDevIface lt_iface;

/* Taking every function's address makes the link fail if any symbol is missing. */
static void (*const lt_api[])(void) = {
    (void (*)(void))&vu_init,
    (void (*)(void))&vu_deinit,
    (void (*)(void))&vu_request_to_string,
    (void (*)(void))&vu_dispatch,
    (void (*)(void))&vu_gpa_to_va,
    (void (*)(void))&vu_get_queue,
    (void (*)(void))&vu_set_queue_handler,
    (void (*)(void))&vu_set_queue_host_notifier,
    (void (*)(void))&vu_queue_set_notification,
    (void (*)(void))&vu_queue_enabled,
    (void (*)(void))&vu_queue_started,
    (void (*)(void))&vu_queue_empty,
    (void (*)(void))&vu_queue_notify,
    (void (*)(void))&vu_config_change_msg,
    (void (*)(void))&vu_queue_notify_sync,
    (void (*)(void))&vu_queue_pop,
    (void (*)(void))&vu_queue_unpop,
    (void (*)(void))&vu_queue_rewind,
    (void (*)(void))&vu_queue_fill,
    (void (*)(void))&vu_queue_flush,
    (void (*)(void))&vu_queue_push,
    (void (*)(void))&vu_queue_get_avail_bytes,
    (void (*)(void))&vu_queue_avail_bytes,
    (void (*)(void))&vu_lookup_shared_object,
    (void (*)(void))&vu_add_shared_object,
    (void (*)(void))&vu_rm_shared_object,
};

int main(void)
{
    VuDev dev;
    int sv[2];
    size_t i;

    for (i = 0; i < sizeof(lt_api) / sizeof(lt_api[0]); i++) {
        if (!lt_api[i]) {
            fprintf(stderr, "link-test: function %zu unresolved\n", i);
            return 1;
        }
    }
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) < 0) {
        perror("link-test: socketpair");
        return 1;
    }
    memset(&dev, 0, sizeof(dev));
    if (!vu_init(&dev, 2, sv[0], lt_panic, NULL, lt_set_watch, lt_remove_watch, &lt_iface)) {
        fprintf(stderr, "link-test: vu_init failed\n");
        return 1;
    }
    if (dev.sock != sv[0] || dev.max_queues != 2) {
        fprintf(stderr, "link-test: vu_init left sock=%d max_queues=%u\n", dev.sock,
                (unsigned)dev.max_queues);
        return 1;
    }
    vu_deinit(&dev);
    close(sv[1]);
    printf("link-test: ok\n");
    return 0;
}
