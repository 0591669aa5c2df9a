/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * A backend written against the oldest libvhost-user header (QEMU ~5.1): 7-argument vu_init,
 * SLAVE/MASTER names, VuDev.slave_fd/slave_mutex, VhostUserSlaveRequest, no VHOST_USER_HDR_SIZE.
 * It must compile unchanged against our header and behave as the original library did.
 */
#include <sys/poll.h>
#include "libvhost-user.h"
#include "peer.h"

typedef struct SeedDev {
    VuDev parent; /* embedded by value, as the contrib backends do */
    uint8_t config[8];
    uint32_t set_config_flags;
    uint64_t protocol_features;
} SeedDev;

static void seed_panic(VuDev *dev, const char *err)
{
    (void)dev;
    fprintf(stderr, "panic: %s\n", err);
    exit(3);
}

static void seed_set_watch(VuDev *dev, int fd, int condition, vu_watch_cb cb, void *data)
{
    (void)dev; (void)fd; (void)condition; (void)cb; (void)data;
}

static void seed_remove_watch(VuDev *dev, int fd)
{
    (void)dev; (void)fd;
}

static uint64_t seed_get_features(VuDev *dev)
{
    (void)dev;
    return 1ULL << 1;
}

static uint64_t seed_get_protocol_features(VuDev *dev)
{
    (void)dev;
    return 1ULL << VHOST_USER_PROTOCOL_F_SLAVE_REQ | 1ULL << VHOST_USER_PROTOCOL_F_SLAVE_SEND_FD;
}

static void seed_set_protocol_features(VuDev *dev, uint64_t features)
{
    ((SeedDev *)dev)->protocol_features = features;
}

static int seed_get_config(VuDev *dev, uint8_t *config, uint32_t len)
{
    SeedDev *s = (SeedDev *)dev;
    memcpy(config, s->config, len < sizeof(s->config) ? len : sizeof(s->config));
    return 0;
}

static int seed_set_config(VuDev *dev, const uint8_t *data, uint32_t offset, uint32_t size,
                           uint32_t flags)
{
    SeedDev *s = (SeedDev *)dev;
    if (flags != VHOST_SET_CONFIG_TYPE_MASTER || offset + size > sizeof(s->config)) {
        return -1;
    }
    memcpy(s->config + offset, data, size);
    s->set_config_flags = flags;
    return 0;
}

static const VuDevIface seed_iface = {
    .get_features = seed_get_features,
    .get_protocol_features = seed_get_protocol_features,
    .set_protocol_features = seed_set_protocol_features,
    .get_config = seed_get_config,
    .set_config = seed_set_config,
};

int main(void)
{
    SeedDev s;
    VuDev *dev = &s.parent;
    int sv[2], chan[2];
    uint64_t features;
    unsigned int i;
    VhostUserSlaveRequest req = VHOST_USER_SLAVE_CONFIG_CHANGE_MSG;
    VhostUserMsg msg, reply;
    const uint8_t cfg[4] = { 0xde, 0xad, 0xbe, 0xef };

    memset(&s, 0, sizeof(s));
    peer_socketpair(sv);
    peer_socketpair(chan);

    CHECK(vu_init(dev, 2, sv[0], seed_panic, seed_set_watch, seed_remove_watch, &seed_iface));
    CHECK(dev->sock == sv[0]);
    CHECK(dev->max_queues == 2);
    CHECK(dev->slave_fd == -1);
    CHECK(!dev->broken);
    CHECK(dev->vq != NULL && dev->vq[1].kick_fd == -1 && dev->vq[1].call_fd == -1);
    CHECK(vu_get_queue(dev, 1) == &dev->vq[1]);
    CHECK(!vu_queue_enabled(dev, vu_get_queue(dev, 0)));
    CHECK(!vu_queue_started(dev, vu_get_queue(dev, 0)));
    CHECK(pthread_mutex_lock(&dev->slave_mutex) == 0);
    CHECK(pthread_mutex_unlock(&dev->slave_mutex) == 0);

    features = peer_get_u64(dev, sv[1], VHOST_USER_GET_FEATURES);
    CHECK(features & (1ULL << 1));
    CHECK(features & (1ULL << VHOST_USER_F_PROTOCOL_FEATURES));

    features = peer_get_u64(dev, sv[1], VHOST_USER_GET_PROTOCOL_FEATURES);
    CHECK(features & (1ULL << VHOST_USER_PROTOCOL_F_SLAVE_REQ));
    CHECK(features & (1ULL << VHOST_USER_PROTOCOL_F_SLAVE_SEND_FD));
    CHECK(features & (1ULL << VHOST_USER_PROTOCOL_F_CONFIG)); /* get_config + set_config */
    CHECK((features & ~(uint64_t)VHOST_USER_PROTOCOL_FEATURE_MASK) == 0);

    features = 1ULL << VHOST_USER_PROTOCOL_F_SLAVE_REQ | 1ULL << VHOST_USER_PROTOCOL_F_CONFIG;
    peer_set_u64(dev, sv[1], VHOST_USER_SET_PROTOCOL_FEATURES, features);
    CHECK(dev->protocol_features == features);
    CHECK(s.protocol_features == features);

    CHECK(peer_get_u64(dev, sv[1], VHOST_USER_GET_QUEUE_NUM) == 2);

    /* The backend channel, under its old name. */
    peer_send(sv[1], VHOST_USER_SET_SLAVE_REQ_FD, 0, NULL, 0, &chan[1], 1);
    CHECK(vu_dispatch(dev));
    CHECK(dev->slave_fd >= 0);
    CHECK(dev->slave_fd == dev->backend_fd);

    /* SET_CONFIG from the "master". */
    memset(&msg, 0, sizeof(msg));
    msg.payload.config.offset = 2;
    msg.payload.config.size = sizeof(cfg);
    msg.payload.config.flags = VHOST_SET_CONFIG_TYPE_MASTER;
    memcpy(msg.payload.config.region, cfg, sizeof(cfg));
    peer_send(sv[1], VHOST_USER_SET_CONFIG, 0, &msg.payload, sizeof(msg.payload.config), NULL, 0);
    CHECK(vu_dispatch(dev));
    CHECK(memcmp(s.config + 2, cfg, sizeof(cfg)) == 0);
    CHECK(s.set_config_flags == VHOST_SET_CONFIG_TYPE_MASTER);

    memset(&msg, 0, sizeof(msg));
    msg.payload.config.size = sizeof(s.config);
    peer_send(sv[1], VHOST_USER_GET_CONFIG, 0, &msg.payload, sizeof(msg.payload.config), NULL, 0);
    CHECK(vu_dispatch(dev));
    peer_recv(sv[1], &reply);
    CHECK(reply.request == VHOST_USER_GET_CONFIG);
    CHECK(reply.flags & VHOST_USER_REPLY_MASK);
    CHECK(memcmp(reply.payload.config.region, s.config, sizeof(s.config)) == 0);

    for (i = 0; i < dev->nregions; i++) {
        CHECK(dev->regions[i].size != 0);
    }
    CHECK(dev->nregions <= VHOST_USER_MAX_RAM_SLOTS);
    CHECK(req == 2 && VHOST_USER_SLAVE_VRING_ERR == 5 && VHOST_USER_SLAVE_MAX == 6);
    CHECK(VHOST_USER_SET_SLAVE_REQ_FD == 21);

    vu_deinit(dev);
    CHECK(dev->slave_fd == -1);
    close(sv[1]);
    close(chan[0]);
    return peer_result("gen-seed");
}
