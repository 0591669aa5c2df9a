/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Memory footprint of a libvhost-user device: heap in use (glibc
 * mallinfo2().uordblks) after each step, written against the public API only
 * so that the same source links against the C original and this crate.
 *
 * Steps (one process per run, the program plays the frontend over a
 * socketpair and calls vu_dispatch() itself, no replies requested):
 *   init      vu_init(max_queues = Q)
 *   memtable  SET_OWNER, SET_FEATURES, SET_PROTOCOL_FEATURES(CONFIGURE_MEM_SLOTS),
 *             SET_MEM_TABLE with 8 regions
 *   addreg    ADD_MEM_REG one region at a time, up to N regions
 *
 * Usage: mem -q QUEUES [-m] [-a N] [-k]
 *   -m   send SET_MEM_TABLE (8 regions)     -a N  ADD_MEM_REG N regions
 *   -k   keep everything allocated at exit (for valgrind's leak report)
 * Output: "sizeof_vudev=B heap_base=B init=B memtable=B addreg=B" (deltas
 * of heap in use against the state before vu_init / before the step).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <malloc.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "libvhost-user.h"

#define BENCH_PROG "mem"
#include "inproc-frontend.h"

enum { M_SET_FEATURES = 2, M_SET_OWNER = 3, M_SET_MEM_TABLE = 5,
       M_SET_PROTOCOL_FEATURES = 16, M_ADD_MEM_REG = 37 };
#define F_PROTOCOL (1ull << 30)
#define PF_MEM_SLOTS (1ull << 15)
#define RSIZE (2ull << 20)


static uint64_t bench_protocol_features(VuDev *d) { (void)d; return PF_MEM_SLOTS; }

static long heap(void)
{
    struct mallinfo2 mi = mallinfo2();
    return (long)mi.uordblks;
}

static int region_fd(void)
{
    int fd = memfd_create("guest", MFD_CLOEXEC);
    if (fd < 0 || ftruncate(fd, RSIZE) < 0) {
        die("memfd");
    }
    return fd;
}

int main(int argc, char **argv)
{
    int q = 1, addreg = 0, opt, sv[2];
    bool memtable = false, keep = false;
    long h0, h1, h2, h3;
    uint64_t v;

    while ((opt = getopt(argc, argv, "q:ma:k")) != -1) {
        switch (opt) {
        case 'q': q = atoi(optarg); break;
        case 'm': memtable = true; break;
        case 'a': addreg = atoi(optarg); break;
        case 'k': keep = true; break;
        default: return 2;
        }
    }
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) < 0) {
        die("socketpair");
    }
    sock_fe = sv[0];
    /* warm up stdio and the allocator outside the measured deltas */
    free(malloc(1));
    h0 = heap();
    if (!vu_init(&dev, q, sv[1], on_panic, NULL, on_set_watch,
                 on_remove_watch, &iface)) {
        die("vu_init");
    }
    h1 = heap();
    h2 = h1;
    h3 = h1;
    if (memtable || addreg) {
        v = F_VERSION_1 | F_PROTOCOL;
        send_msg(M_SET_OWNER, NULL, 0, NULL, 0);
        send_msg(M_SET_FEATURES, &v, 8, NULL, 0);
        v = PF_MEM_SLOTS;
        send_msg(M_SET_PROTOCOL_FEATURES, &v, 8, NULL, 0);
    }
    h1 = heap(); /* control messages without memory: part of "init" */
    h2 = h1;
    if (memtable) {
        struct {
            uint32_t n, pad;
            struct { uint64_t gpa, size, uaddr, off; } r[8];
        } mt;
        int fds[8], i;
        memset(&mt, 0, sizeof(mt));
        mt.n = 8;
        for (i = 0; i < 8; i++) {
            fds[i] = region_fd();
            mt.r[i].gpa = (uint64_t)i * RSIZE;
            mt.r[i].size = RSIZE;
            mt.r[i].uaddr = 0x100000000ull + (uint64_t)i * RSIZE;
        }
        send_msg(M_SET_MEM_TABLE, &mt, 8 + 32 * 8, fds, 8);
        for (i = 0; i < 8; i++) {
            close(fds[i]);
        }
        h2 = heap();
    }
    h3 = h2;
    if (addreg) {
        int i;
        for (i = 0; i < addreg; i++) {
            int fd = region_fd();
            struct { uint64_t pad, gpa, size, uaddr, off; } ar = {
                0, (uint64_t)(i + 8) * RSIZE, RSIZE,
                0x100000000ull + (uint64_t)(i + 8) * RSIZE, 0 };
            send_msg(M_ADD_MEM_REG, &ar, sizeof(ar), &fd, 1);
            close(fd);
        }
        h3 = heap();
    }
    printf("sizeof_vudev=%zu heap_base=%ld init=%ld memtable=%ld addreg=%ld nregions=%u\n",
           sizeof(VuDev), h0, h1 - h0, h2 - h1, h3 - h2, dev.nregions);
    fflush(stdout);
    if (!keep) {
        vu_deinit(&dev);
    }
    return 0;
}
