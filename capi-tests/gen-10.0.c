/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * A backend written against QEMU 10.0's header: BACKEND/FRONTEND names, backend_fd,
 * shared objects (get_shared_object, vu_add/rm/lookup_shared_object), vu_config_change_msg,
 * VhostUserBackendRequest, payload.object.
 */
#include <poll.h>
#include "libvhost-user.h"
#include "peer.h"

static unsigned char asked_uuid[UUID_LEN];
static int object_fd = -1;

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

static uint64_t get_protocol_features(VuDev *dev)
{
    (void)dev;
    return 1ULL << VHOST_USER_PROTOCOL_F_SHARED_OBJECT;
}

static int get_shared_object(VuDev *dev, const unsigned char *uuid)
{
    (void)dev;
    memcpy(asked_uuid, uuid, UUID_LEN);
    return object_fd;
}

static const VuDevIface iface = {
    .get_protocol_features = get_protocol_features,
    .get_shared_object = get_shared_object,
};

int main(void)
{
    VuDev dev;
    int sv[2], chan[2], obj[2];
    VhostUserMsg msg, reply;
    VhostUserBackendRequest breq = VHOST_USER_BACKEND_SHARED_OBJECT_ADD;
    unsigned char uuid[UUID_LEN];
    uint64_t features;
    unsigned int i;

    for (i = 0; i < UUID_LEN; i++) {
        uuid[i] = (unsigned char)(0xa0 + i);
    }
    peer_socketpair(sv);
    peer_socketpair(chan);
    peer_socketpair(obj);
    object_fd = obj[0];

    CHECK(vu_init(&dev, 1, sv[0], panic_cb, NULL, set_watch, remove_watch, &iface));
    CHECK(dev.backend_fd == -1);

    /* Not negotiated yet: no shared objects. */
    CHECK(!vu_add_shared_object(&dev, uuid));

    features = peer_get_u64(&dev, sv[1], VHOST_USER_GET_PROTOCOL_FEATURES);
    CHECK(features & (1ULL << VHOST_USER_PROTOCOL_F_SHARED_OBJECT));
    CHECK(features & (1ULL << VHOST_USER_PROTOCOL_F_BACKEND_REQ));
    features = 1ULL << VHOST_USER_PROTOCOL_F_SHARED_OBJECT |
               1ULL << VHOST_USER_PROTOCOL_F_BACKEND_REQ;
    peer_set_u64(&dev, sv[1], VHOST_USER_SET_PROTOCOL_FEATURES, features);
    CHECK(dev.protocol_features == features);

    peer_send(sv[1], VHOST_USER_SET_BACKEND_REQ_FD, 0, NULL, 0, &chan[1], 1);
    CHECK(vu_dispatch(&dev));
    CHECK(dev.backend_fd >= 0);

    /* The backend channel: shared-object messages and config change notifications. */
    CHECK(vu_add_shared_object(&dev, uuid));
    peer_recv(chan[0], &reply);
    CHECK(reply.request == (int)breq);
    CHECK(reply.size == sizeof(reply.payload.object));
    CHECK(memcmp(reply.payload.object.uuid, uuid, UUID_LEN) == 0);

    CHECK(vu_rm_shared_object(&dev, uuid));
    peer_recv(chan[0], &reply);
    CHECK(reply.request == VHOST_USER_BACKEND_SHARED_OBJECT_REMOVE);
    CHECK(memcmp(reply.payload.object.uuid, uuid, UUID_LEN) == 0);

    vu_config_change_msg(&dev);
    peer_recv(chan[0], &reply);
    CHECK(reply.request == VHOST_USER_BACKEND_CONFIG_CHANGE_MSG);

    /* GET_SHARED_OBJECT asks the device; the fd comes back with the reply. */
    memset(&msg, 0, sizeof(msg));
    memcpy(msg.payload.object.uuid, uuid, UUID_LEN);
    peer_send(sv[1], VHOST_USER_GET_SHARED_OBJECT, 0, &msg.payload, sizeof(msg.payload.object),
              NULL, 0);
    CHECK(vu_dispatch(&dev));
    peer_recv(sv[1], &reply);
    CHECK(reply.request == VHOST_USER_GET_SHARED_OBJECT);
    CHECK(reply.flags & VHOST_USER_REPLY_MASK);
    CHECK(reply.fd_num == 1);
    CHECK(memcmp(asked_uuid, uuid, UUID_LEN) == 0);

    CHECK(strcmp(vu_request_to_string(VHOST_USER_GET_SHARED_OBJECT),
                 "VHOST_USER_GET_SHARED_OBJECT") == 0);
    CHECK(strcmp(vu_request_to_string(VHOST_USER_SET_BACKEND_REQ_FD),
                 "VHOST_USER_SET_BACKEND_REQ_FD") == 0);
    CHECK(VHOST_SET_CONFIG_TYPE_FRONTEND == 0 && VHOST_USER_BACKEND_MAX == 9);

    VuVirtq *q0 = &dev.vq[0];
    vu_deinit(&dev);
    CHECK(dev.backend_fd == -1);
    close(sv[1]);

    /* A device vu_deinit took down, and one vu_init never set up: queue calls are refused
     * (NULL, nothing done), whatever queue pointer they get. */
    VuVirtq stray;
    VuDev never;
    memset(&stray, 0, sizeof(stray));
    memset(&never, 0, sizeof(never));
    VuVirtq *queues[] = { q0, &stray, NULL };
    VuDev *devs[] = { &dev, &never };
    for (size_t d = 0; d < 2; d++) {
        for (size_t q = 0; q < 3; q++) {
            CHECK(vu_queue_pop(devs[d], queues[q], sizeof(VuVirtqElement)) == NULL);
            vu_queue_push(devs[d], queues[q], NULL, 0);
            vu_queue_notify(devs[d], queues[q]);
            CHECK(vu_queue_empty(devs[d], queues[q]));
        }
    }
    return peer_result("gen-10.0");
}
