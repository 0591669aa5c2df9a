/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * A backend written against QEMU 7.2's header: 8-argument vu_init with a custom read_msg (as
 * qemu-storage-daemon does), VHOST_USER_HDR_SIZE, VHOST_USER_MEM_REG_SIZE,
 * vu_request_to_string, process_msg intercepting a request, and the still-SLAVE names.
 */
#include <poll.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include "libvhost-user.h"
#include "peer.h"

static int read_msg_calls;
static int intercepted_fd = -1;

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

/* Like util/vhost-user-server.c: header with fds, then the payload. */
static bool my_read_msg(VuDev *dev, int sock, VhostUserMsg *vmsg)
{
    struct iovec iov = { .iov_base = (char *)vmsg, .iov_len = VHOST_USER_HDR_SIZE };
    char control[CMSG_SPACE(VHOST_MEMORY_BASELINE_NREGIONS * sizeof(int))];
    struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = control,
                         .msg_controllen = sizeof(control) };
    struct cmsghdr *cmsg;
    ssize_t n;

    (void)dev;
    read_msg_calls++;
    n = recvmsg(sock, &mh, MSG_WAITALL);
    if (n != (ssize_t)VHOST_USER_HDR_SIZE) {
        return false;
    }
    vmsg->fd_num = 0;
    for (cmsg = CMSG_FIRSTHDR(&mh); cmsg; cmsg = CMSG_NXTHDR(&mh, cmsg)) {
        if (cmsg->cmsg_level == SOL_SOCKET && cmsg->cmsg_type == SCM_RIGHTS) {
            vmsg->fd_num = (int)((cmsg->cmsg_len - CMSG_LEN(0)) / sizeof(int));
            memcpy(vmsg->fds, CMSG_DATA(cmsg), vmsg->fd_num * sizeof(int));
        }
    }
    if (vmsg->size > sizeof(vmsg->payload)) {
        return false;
    }
    if (vmsg->size) {
        n = recv(sock, &vmsg->payload, vmsg->size, MSG_WAITALL);
        if (n != (ssize_t)vmsg->size) {
            return false;
        }
    }
    return true;
}

static int process_msg(VuDev *dev, VhostUserMsg *vmsg, int *do_reply)
{
    (void)dev;
    if (vmsg->request == VHOST_USER_GPU_SET_SOCKET) {
        intercepted_fd = vmsg->fd_num == 1 ? vmsg->fds[0] : -1;
        *do_reply = 0;
        return 1;
    }
    return 0;
}

static const VuDevIface iface = {
    .process_msg = process_msg,
};

int main(void)
{
    VuDev dev;
    int sv[2], gpu[2], memfd;
    VhostUserMsg msg;
    uint64_t plen;
    unsigned char *va, *shared;
    const size_t region_size = 1 << 20;

    peer_socketpair(sv);
    peer_socketpair(gpu);

    CHECK(vu_init(&dev, 1, sv[0], panic_cb, my_read_msg, set_watch, remove_watch, &iface));
    CHECK(dev.read_msg == my_read_msg);
    CHECK(VHOST_USER_HDR_SIZE == 12 && VHOST_USER_MEM_REG_SIZE == 32);

    CHECK(peer_get_u64(&dev, sv[1], VHOST_USER_GET_QUEUE_NUM) == 1);
    CHECK(read_msg_calls == 1);

    /* process_msg takes the request and its fd; no reply. */
    peer_send(sv[1], VHOST_USER_GPU_SET_SOCKET, 0, NULL, 0, &gpu[1], 1);
    CHECK(vu_dispatch(&dev));
    CHECK(intercepted_fd >= 0);
    CHECK(read_msg_calls == 2);

    /* A memory region added by ADD_MEM_REG is visible through dev.regions and vu_gpa_to_va. */
    memfd = (int)syscall(SYS_memfd_create, "capi", 0);
    CHECK(memfd >= 0);
    CHECK(ftruncate(memfd, region_size) == 0);
    shared = mmap(NULL, region_size, PROT_READ | PROT_WRITE, MAP_SHARED, memfd, 0);
    CHECK(shared != MAP_FAILED);
    memset(&msg, 0, sizeof(msg));
    msg.payload.memreg.region.guest_phys_addr = 0x100000;
    msg.payload.memreg.region.memory_size = region_size;
    msg.payload.memreg.region.userspace_addr = 0x7f0000000000ULL;
    msg.payload.memreg.region.mmap_offset = 0;
    peer_send(sv[1], VHOST_USER_ADD_MEM_REG, 0, &msg.payload, sizeof(msg.payload.memreg), &memfd,
              1);
    CHECK(vu_dispatch(&dev));
    CHECK(dev.nregions == 1);
    CHECK(dev.regions[0].gpa == 0x100000);
    CHECK(dev.regions[0].size == region_size);
    CHECK(dev.regions[0].qva == 0x7f0000000000ULL);
    shared[0x1234] = 0x5a;
    plen = 16;
    va = vu_gpa_to_va(&dev, &plen, 0x100000 + 0x1234);
    CHECK(va != NULL && plen == 16);
    CHECK(va && va[0] == 0x5a);
    plen = 16;
    CHECK(vu_gpa_to_va(&dev, &plen, 0x10) == NULL);

    /* vu_request_to_string, new in 7.2 (10.0's names). */
    CHECK(strcmp(vu_request_to_string(VHOST_USER_GET_FEATURES), "VHOST_USER_GET_FEATURES") == 0);
    CHECK(strcmp(vu_request_to_string(VHOST_USER_SET_MEM_TABLE), "VHOST_USER_SET_MEM_TABLE") == 0);
    CHECK(strcmp(vu_request_to_string(VHOST_USER_REM_MEM_REG), "VHOST_USER_REM_MEM_REG") == 0);
    CHECK(strcmp(vu_request_to_string(VHOST_USER_MAX), "unknown") == 0);
    CHECK(strcmp(vu_request_to_string(1000), "unknown") == 0);

    /* 7.2 still spelled these the old way. */
    CHECK(dev.slave_fd == -1);
    CHECK(VHOST_USER_PROTOCOL_F_SLAVE_REQ == 5 && VHOST_SET_CONFIG_TYPE_MASTER == 0);
    CHECK(VHOST_USER_SLAVE_VRING_HOST_NOTIFIER_MSG == 3);

    vu_deinit(&dev);
    munmap(shared, region_size);
    close(memfd);
    close(intercepted_fd);
    close(sv[1]);
    return peer_result("gen-7.2");
}
