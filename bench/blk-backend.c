/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The benchmark's backend: examples-c/vhost-user-blk.c, included unchanged,
 * with one addition: it also offers VHOST_USER_PROTOCOL_F_INFLIGHT_SHMFD, so
 * that a frontend can turn inflight tracking on (the example does not offer
 * it).  Nothing else differs; frontends that do not ack the bit see the
 * example's exact behaviour.
 */
#define _GNU_SOURCE
#include "libvhost-user.h"

static const VuDevIface *bench_orig_iface;
static VuDevIface bench_iface;

static uint64_t bench_protocol_features(VuDev *dev)
{
    uint64_t f = bench_orig_iface->get_protocol_features ?
                 bench_orig_iface->get_protocol_features(dev) : 0;
    return f | (1ull << 12); /* VHOST_USER_PROTOCOL_F_INFLIGHT_SHMFD */
}

static bool bench_vu_init(VuDev *dev, uint16_t max_queues, int socket,
                          vu_panic_cb panic, vu_read_msg_cb read_msg,
                          vu_set_watch_cb set_watch,
                          vu_remove_watch_cb remove_watch,
                          const VuDevIface *iface)
{
    bench_orig_iface = iface;
    bench_iface = *iface;
    bench_iface.get_protocol_features = bench_protocol_features;
    return vu_init(dev, max_queues, socket, panic, read_msg, set_watch,
                   remove_watch, &bench_iface);
}

#undef vu_init /* this library's header may define it as a macro */
#define vu_init bench_vu_init
#include "vhost-user-blk.c"
