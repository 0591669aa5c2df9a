/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The binary layout of QEMU 10.0's libvhost-user.h, checked against our header: every size,
 * alignment, field offset and field type, every enum constant and macro value, and the type of
 * every callback and function. Compile-time (_Static_assert, __builtin_types_compatible_p);
 * at run time the program prints what the compiler computed ("size T n", "offset T.f n") so
 * tests/capi.rs can compare the C view with the Rust definitions in src/abi.rs.
 */
#include <stdio.h>
#include <poll.h>
#include "libvhost-user.h"

#define SAME_TYPE(a, b) __builtin_types_compatible_p(a, b)
#define FIELD_TYPE(T, f) __typeof__(((T *)0)->f)

/* size, alignment */
#define SIZES(X) \
    X(VhostUserMemoryRegion, 32, 8) \
    X(VhostUserMemory, 264, 8) \
    X(VhostUserMemRegMsg, 40, 8) \
    X(VhostUserLog, 16, 8) \
    X(VhostUserConfig, 268, 4) \
    X(VhostUserVringArea, 24, 8) \
    X(VhostUserInflight, 24, 8) \
    X(VhostUserShared, 16, 1) \
    X(VhostUserMsg, 328, 1) \
    X(VuDevRegion, 40, 8) \
    X(VuDevIface, 80, 8) \
    X(VuRing, 48, 8) \
    X(VuDescStateSplit, 16, 8) \
    X(VuVirtqInflight, 16, 8) \
    X(VuVirtqInflightDesc, 16, 8) \
    X(VuVirtq, 168, 8) \
    X(VuDevInflightInfo, 24, 8) \
    X(VuDev, 192, 8) \
    X(VuVirtqElement, 32, 8) \
    X(VhostSetConfigType, 4, 4) \
    X(enum VhostUserProtocolFeature, 4, 4) \
    X(VhostUserRequest, 4, 4) \
    X(VhostUserBackendRequest, 4, 4) \
    X(enum VuWatchCondtion, 4, 4)

/* struct, field, offset, type (as QEMU 10.0 declares it) */
#define FIELDS(X) \
    X(VhostUserMemoryRegion, guest_phys_addr, 0, uint64_t) \
    X(VhostUserMemoryRegion, memory_size, 8, uint64_t) \
    X(VhostUserMemoryRegion, userspace_addr, 16, uint64_t) \
    X(VhostUserMemoryRegion, mmap_offset, 24, uint64_t) \
    X(VhostUserMemory, nregions, 0, uint32_t) \
    X(VhostUserMemory, padding, 4, uint32_t) \
    X(VhostUserMemory, regions, 8, VhostUserMemoryRegion[VHOST_MEMORY_BASELINE_NREGIONS]) \
    X(VhostUserMemRegMsg, padding, 0, uint64_t) \
    X(VhostUserMemRegMsg, region, 8, VhostUserMemoryRegion) \
    X(VhostUserLog, mmap_size, 0, uint64_t) \
    X(VhostUserLog, mmap_offset, 8, uint64_t) \
    X(VhostUserConfig, offset, 0, uint32_t) \
    X(VhostUserConfig, size, 4, uint32_t) \
    X(VhostUserConfig, flags, 8, uint32_t) \
    X(VhostUserConfig, region, 12, uint8_t[VHOST_USER_MAX_CONFIG_SIZE]) \
    X(VhostUserVringArea, u64, 0, uint64_t) \
    X(VhostUserVringArea, size, 8, uint64_t) \
    X(VhostUserVringArea, offset, 16, uint64_t) \
    X(VhostUserInflight, mmap_size, 0, uint64_t) \
    X(VhostUserInflight, mmap_offset, 8, uint64_t) \
    X(VhostUserInflight, num_queues, 16, uint16_t) \
    X(VhostUserInflight, queue_size, 18, uint16_t) \
    X(VhostUserShared, uuid, 0, unsigned char[UUID_LEN]) \
    X(VhostUserMsg, request, 0, int) \
    X(VhostUserMsg, flags, 4, uint32_t) \
    X(VhostUserMsg, size, 8, uint32_t) \
    X(VhostUserMsg, payload.u64, 12, uint64_t) \
    X(VhostUserMsg, payload.state, 12, struct vhost_vring_state) \
    X(VhostUserMsg, payload.addr, 12, struct vhost_vring_addr) \
    X(VhostUserMsg, payload.memory, 12, VhostUserMemory) \
    X(VhostUserMsg, payload.memreg, 12, VhostUserMemRegMsg) \
    X(VhostUserMsg, payload.log, 12, VhostUserLog) \
    X(VhostUserMsg, payload.config, 12, VhostUserConfig) \
    X(VhostUserMsg, payload.area, 12, VhostUserVringArea) \
    X(VhostUserMsg, payload.inflight, 12, VhostUserInflight) \
    X(VhostUserMsg, payload.object, 12, VhostUserShared) \
    X(VhostUserMsg, fds, 284, int[VHOST_MEMORY_BASELINE_NREGIONS]) \
    X(VhostUserMsg, fd_num, 316, int) \
    X(VhostUserMsg, data, 320, uint8_t *) \
    X(VuDevRegion, gpa, 0, uint64_t) \
    X(VuDevRegion, size, 8, uint64_t) \
    X(VuDevRegion, qva, 16, uint64_t) \
    X(VuDevRegion, mmap_offset, 24, uint64_t) \
    X(VuDevRegion, mmap_addr, 32, uint64_t) \
    X(VuDevIface, get_features, 0, vu_get_features_cb) \
    X(VuDevIface, set_features, 8, vu_set_features_cb) \
    X(VuDevIface, get_protocol_features, 16, vu_get_features_cb) \
    X(VuDevIface, set_protocol_features, 24, vu_set_features_cb) \
    X(VuDevIface, process_msg, 32, vu_process_msg_cb) \
    X(VuDevIface, queue_set_started, 40, vu_queue_set_started_cb) \
    X(VuDevIface, queue_is_processed_in_order, 48, vu_queue_is_processed_in_order_cb) \
    X(VuDevIface, get_config, 56, vu_get_config_cb) \
    X(VuDevIface, set_config, 64, vu_set_config_cb) \
    X(VuDevIface, get_shared_object, 72, vu_get_shared_object_cb) \
    X(VuRing, num, 0, unsigned int) \
    X(VuRing, desc, 8, struct vring_desc *) \
    X(VuRing, avail, 16, struct vring_avail *) \
    X(VuRing, used, 24, struct vring_used *) \
    X(VuRing, log_guest_addr, 32, uint64_t) \
    X(VuRing, flags, 40, uint32_t) \
    X(VuDescStateSplit, inflight, 0, uint8_t) \
    X(VuDescStateSplit, padding, 1, uint8_t[5]) \
    X(VuDescStateSplit, next, 6, uint16_t) \
    X(VuDescStateSplit, counter, 8, uint64_t) \
    X(VuVirtqInflight, features, 0, uint64_t) \
    X(VuVirtqInflight, version, 8, uint16_t) \
    X(VuVirtqInflight, desc_num, 10, uint16_t) \
    X(VuVirtqInflight, last_batch_head, 12, uint16_t) \
    X(VuVirtqInflight, used_idx, 14, uint16_t) \
    X(VuVirtqInflight, desc, 16, VuDescStateSplit[]) \
    X(VuVirtqInflightDesc, index, 0, uint16_t) \
    X(VuVirtqInflightDesc, counter, 8, uint64_t) \
    X(VuVirtq, vring, 0, VuRing) \
    X(VuVirtq, inflight, 48, VuVirtqInflight *) \
    X(VuVirtq, resubmit_list, 56, VuVirtqInflightDesc *) \
    X(VuVirtq, resubmit_num, 64, uint16_t) \
    X(VuVirtq, counter, 72, uint64_t) \
    X(VuVirtq, last_avail_idx, 80, uint16_t) \
    X(VuVirtq, shadow_avail_idx, 82, uint16_t) \
    X(VuVirtq, used_idx, 84, uint16_t) \
    X(VuVirtq, signalled_used, 86, uint16_t) \
    X(VuVirtq, signalled_used_valid, 88, bool) \
    X(VuVirtq, notification, 89, bool) \
    X(VuVirtq, inuse, 92, unsigned int) \
    X(VuVirtq, handler, 96, vu_queue_handler_cb) \
    X(VuVirtq, call_fd, 104, int) \
    X(VuVirtq, kick_fd, 108, int) \
    X(VuVirtq, err_fd, 112, int) \
    X(VuVirtq, enable, 116, unsigned int) \
    X(VuVirtq, started, 120, bool) \
    X(VuVirtq, vra, 128, struct vhost_vring_addr) \
    X(VuDevInflightInfo, fd, 0, int) \
    X(VuDevInflightInfo, addr, 8, void *) \
    X(VuDevInflightInfo, size, 16, uint64_t) \
    X(VuDev, sock, 0, int) \
    X(VuDev, nregions, 4, uint32_t) \
    X(VuDev, regions, 8, VuDevRegion *) \
    X(VuDev, vq, 16, VuVirtq *) \
    X(VuDev, inflight_info, 24, VuDevInflightInfo) \
    X(VuDev, log_call_fd, 48, int) \
    X(VuDev, backend_mutex, 56, pthread_mutex_t) \
    X(VuDev, slave_mutex, 56, pthread_mutex_t) \
    X(VuDev, backend_fd, 96, int) \
    X(VuDev, slave_fd, 96, int) \
    X(VuDev, log_size, 104, uint64_t) \
    X(VuDev, log_table, 112, uint8_t *) \
    X(VuDev, features, 120, uint64_t) \
    X(VuDev, protocol_features, 128, uint64_t) \
    X(VuDev, broken, 136, bool) \
    X(VuDev, max_queues, 138, uint16_t) \
    X(VuDev, read_msg, 144, vu_read_msg_cb) \
    X(VuDev, set_watch, 152, vu_set_watch_cb) \
    X(VuDev, remove_watch, 160, vu_remove_watch_cb) \
    X(VuDev, panic, 168, vu_panic_cb) \
    X(VuDev, iface, 176, const VuDevIface *) \
    X(VuDev, postcopy_ufd, 184, int) \
    X(VuDev, postcopy_listening, 188, bool) \
    X(VuVirtqElement, index, 0, unsigned int) \
    X(VuVirtqElement, out_num, 4, unsigned int) \
    X(VuVirtqElement, in_num, 8, unsigned int) \
    X(VuVirtqElement, in_sg, 16, struct iovec *) \
    X(VuVirtqElement, out_sg, 24, struct iovec *)

#define STATIC_SIZE(T, size, align) \
    _Static_assert(sizeof(T) == (size), "sizeof(" #T ")"); \
    _Static_assert(__alignof__(T) == (align), "alignof(" #T ")");
SIZES(STATIC_SIZE)

#define STATIC_FIELD(T, f, off, type) \
    _Static_assert(offsetof(T, f) == (off), "offsetof(" #T ", " #f ")"); \
    _Static_assert(SAME_TYPE(FIELD_TYPE(T, f), type), "type of " #T "." #f);
FIELDS(STATIC_FIELD)

/* The payload union (unnamed in QEMU): 272 bytes, 8-aligned as a type, packed at offset 12. */
typedef __typeof__(((VhostUserMsg *)0)->payload) PayloadType;
_Static_assert(sizeof(PayloadType) == 272, "payload size");
_Static_assert(__alignof__(PayloadType) == 8, "payload alignment");
_Static_assert(offsetof(VhostUserMsg, payload) == 12, "payload offset");

/* Enum constants: 10.0 values, and the old names with their old (= same) values. */
#define ENUMS(X) \
    X(VHOST_SET_CONFIG_TYPE_FRONTEND, 0) X(VHOST_SET_CONFIG_TYPE_MIGRATION, 1) \
    X(VHOST_SET_CONFIG_TYPE_MASTER, 0) \
    X(VHOST_USER_PROTOCOL_F_MQ, 0) X(VHOST_USER_PROTOCOL_F_LOG_SHMFD, 1) \
    X(VHOST_USER_PROTOCOL_F_RARP, 2) X(VHOST_USER_PROTOCOL_F_REPLY_ACK, 3) \
    X(VHOST_USER_PROTOCOL_F_NET_MTU, 4) X(VHOST_USER_PROTOCOL_F_BACKEND_REQ, 5) \
    X(VHOST_USER_PROTOCOL_F_CROSS_ENDIAN, 6) X(VHOST_USER_PROTOCOL_F_CRYPTO_SESSION, 7) \
    X(VHOST_USER_PROTOCOL_F_PAGEFAULT, 8) X(VHOST_USER_PROTOCOL_F_CONFIG, 9) \
    X(VHOST_USER_PROTOCOL_F_BACKEND_SEND_FD, 10) X(VHOST_USER_PROTOCOL_F_HOST_NOTIFIER, 11) \
    X(VHOST_USER_PROTOCOL_F_INFLIGHT_SHMFD, 12) \
    X(VHOST_USER_PROTOCOL_F_INBAND_NOTIFICATIONS, 14) \
    X(VHOST_USER_PROTOCOL_F_CONFIGURE_MEM_SLOTS, 15) \
    X(VHOST_USER_PROTOCOL_F_SHARED_OBJECT, 18) X(VHOST_USER_PROTOCOL_F_MAX, 19) \
    X(VHOST_USER_PROTOCOL_F_SLAVE_REQ, 5) X(VHOST_USER_PROTOCOL_F_SLAVE_SEND_FD, 10) \
    X(VHOST_USER_NONE, 0) X(VHOST_USER_GET_FEATURES, 1) X(VHOST_USER_SET_FEATURES, 2) \
    X(VHOST_USER_SET_OWNER, 3) X(VHOST_USER_RESET_OWNER, 4) X(VHOST_USER_SET_MEM_TABLE, 5) \
    X(VHOST_USER_SET_LOG_BASE, 6) X(VHOST_USER_SET_LOG_FD, 7) X(VHOST_USER_SET_VRING_NUM, 8) \
    X(VHOST_USER_SET_VRING_ADDR, 9) X(VHOST_USER_SET_VRING_BASE, 10) \
    X(VHOST_USER_GET_VRING_BASE, 11) X(VHOST_USER_SET_VRING_KICK, 12) \
    X(VHOST_USER_SET_VRING_CALL, 13) X(VHOST_USER_SET_VRING_ERR, 14) \
    X(VHOST_USER_GET_PROTOCOL_FEATURES, 15) X(VHOST_USER_SET_PROTOCOL_FEATURES, 16) \
    X(VHOST_USER_GET_QUEUE_NUM, 17) X(VHOST_USER_SET_VRING_ENABLE, 18) \
    X(VHOST_USER_SEND_RARP, 19) X(VHOST_USER_NET_SET_MTU, 20) \
    X(VHOST_USER_SET_BACKEND_REQ_FD, 21) X(VHOST_USER_IOTLB_MSG, 22) \
    X(VHOST_USER_SET_VRING_ENDIAN, 23) X(VHOST_USER_GET_CONFIG, 24) \
    X(VHOST_USER_SET_CONFIG, 25) X(VHOST_USER_CREATE_CRYPTO_SESSION, 26) \
    X(VHOST_USER_CLOSE_CRYPTO_SESSION, 27) X(VHOST_USER_POSTCOPY_ADVISE, 28) \
    X(VHOST_USER_POSTCOPY_LISTEN, 29) X(VHOST_USER_POSTCOPY_END, 30) \
    X(VHOST_USER_GET_INFLIGHT_FD, 31) X(VHOST_USER_SET_INFLIGHT_FD, 32) \
    X(VHOST_USER_GPU_SET_SOCKET, 33) X(VHOST_USER_VRING_KICK, 35) \
    X(VHOST_USER_GET_MAX_MEM_SLOTS, 36) X(VHOST_USER_ADD_MEM_REG, 37) \
    X(VHOST_USER_REM_MEM_REG, 38) X(VHOST_USER_GET_SHARED_OBJECT, 41) X(VHOST_USER_MAX, 42) \
    X(VHOST_USER_SET_SLAVE_REQ_FD, 21) \
    X(VHOST_USER_BACKEND_NONE, 0) X(VHOST_USER_BACKEND_IOTLB_MSG, 1) \
    X(VHOST_USER_BACKEND_CONFIG_CHANGE_MSG, 2) \
    X(VHOST_USER_BACKEND_VRING_HOST_NOTIFIER_MSG, 3) X(VHOST_USER_BACKEND_VRING_CALL, 4) \
    X(VHOST_USER_BACKEND_VRING_ERR, 5) X(VHOST_USER_BACKEND_SHARED_OBJECT_ADD, 6) \
    X(VHOST_USER_BACKEND_SHARED_OBJECT_REMOVE, 7) \
    X(VHOST_USER_BACKEND_SHARED_OBJECT_LOOKUP, 8) X(VHOST_USER_BACKEND_MAX, 9) \
    X(VHOST_USER_SLAVE_NONE, 0) X(VHOST_USER_SLAVE_IOTLB_MSG, 1) \
    X(VHOST_USER_SLAVE_CONFIG_CHANGE_MSG, 2) X(VHOST_USER_SLAVE_VRING_HOST_NOTIFIER_MSG, 3) \
    X(VHOST_USER_SLAVE_VRING_CALL, 4) X(VHOST_USER_SLAVE_VRING_ERR, 5) \
    X(VHOST_USER_SLAVE_MAX, 6) \
    X(VU_WATCH_IN, POLLIN) X(VU_WATCH_OUT, POLLOUT) X(VU_WATCH_PRI, POLLPRI) \
    X(VU_WATCH_ERR, POLLERR) X(VU_WATCH_HUP, POLLHUP) \
    X(VU_WATCH_IN, 0x1) X(VU_WATCH_PRI, 0x2) X(VU_WATCH_OUT, 0x4) X(VU_WATCH_ERR, 0x8) \
    X(VU_WATCH_HUP, 0x10)
#define STATIC_ENUM(name, value) _Static_assert((name) == (value), #name);
ENUMS(STATIC_ENUM)

/* Macros: 10.0's values (and types where they matter). */
#define MACROS(X) \
    X(VHOST_USER_F_PROTOCOL_FEATURES, 30) X(VHOST_LOG_PAGE, 4096) \
    X(VIRTQUEUE_MAX_SIZE, 1024) X(VHOST_MEMORY_BASELINE_NREGIONS, 8) \
    X(VHOST_USER_MAX_RAM_SLOTS, 509) X(VHOST_USER_HDR_SIZE, 12) \
    X(VHOST_USER_MAX_CONFIG_SIZE, 256) X(VHOST_USER_PROTOCOL_FEATURE_MASK, 0x7ffff) \
    X(VHOST_USER_MEM_REG_SIZE, 32) X(VHOST_USER_CONFIG_HDR_SIZE, 12) X(UUID_LEN, 16) \
    X(VHOST_USER_VERSION_MASK, 0x3) X(VHOST_USER_REPLY_MASK, 0x4) \
    X(VHOST_USER_NEED_REPLY_MASK, 0x8) X(VHOST_USER_VRING_IDX_MASK, 0xff) \
    X(VHOST_USER_VRING_NOFD_MASK, 0x100)
#define STATIC_MACRO(name, value) _Static_assert((name) == (value), #name);
MACROS(STATIC_MACRO)
_Static_assert(SAME_TYPE(__typeof__(VHOST_USER_HDR_SIZE), size_t), "HDR_SIZE is a size_t");
_Static_assert(SAME_TYPE(__typeof__(VHOST_USER_MEM_REG_SIZE), size_t), "MEM_REG_SIZE type");
_Static_assert(SAME_TYPE(__typeof__(VHOST_USER_CONFIG_HDR_SIZE), size_t), "CONFIG_HDR type");
_Static_assert(SAME_TYPE(__typeof__(VHOST_USER_PROTOCOL_FEATURE_MASK), int), "MASK type");

/* A VU_PACKED struct has alignment 1. */
struct packed_probe { char c; uint64_t x; } VU_PACKED;
_Static_assert(sizeof(struct packed_probe) == 9, "VU_PACKED packs");

/* Callback typedefs, as 10.0 declares them. */
#define CALLBACKS(X) \
    X(vu_get_features_cb, uint64_t (*)(VuDev *)) \
    X(vu_set_features_cb, void (*)(VuDev *, uint64_t)) \
    X(vu_process_msg_cb, int (*)(VuDev *, VhostUserMsg *, int *)) \
    X(vu_read_msg_cb, bool (*)(VuDev *, int, VhostUserMsg *)) \
    X(vu_queue_set_started_cb, void (*)(VuDev *, int, bool)) \
    X(vu_queue_is_processed_in_order_cb, bool (*)(VuDev *, int)) \
    X(vu_get_config_cb, int (*)(VuDev *, uint8_t *, uint32_t)) \
    X(vu_set_config_cb, int (*)(VuDev *, const uint8_t *, uint32_t, uint32_t, uint32_t)) \
    X(vu_get_shared_object_cb, int (*)(VuDev *, const unsigned char *)) \
    X(vu_queue_handler_cb, void (*)(VuDev *, int)) \
    X(vu_panic_cb, void (*)(VuDev *, const char *)) \
    X(vu_watch_cb, void (*)(VuDev *, int, void *)) \
    X(vu_set_watch_cb, void (*)(VuDev *, int, int, vu_watch_cb, void *)) \
    X(vu_remove_watch_cb, void (*)(VuDev *, int))
#define STATIC_CALLBACK(name, type) _Static_assert(SAME_TYPE(name, type), #name);
CALLBACKS(STATIC_CALLBACK)

/* Every function of 10.0, with its exact type (the uuid arrays decay to pointers). */
#define FUNCTIONS(X) \
    X(vu_init, bool (*)(VuDev *, uint16_t, int, vu_panic_cb, vu_read_msg_cb, vu_set_watch_cb, \
                        vu_remove_watch_cb, const VuDevIface *)) \
    X(vu_deinit, void (*)(VuDev *)) \
    X(vu_request_to_string, const char *(*)(unsigned int)) \
    X(vu_dispatch, bool (*)(VuDev *)) \
    X(vu_gpa_to_va, void *(*)(VuDev *, uint64_t *, uint64_t)) \
    X(vu_get_queue, VuVirtq *(*)(VuDev *, int)) \
    X(vu_set_queue_handler, void (*)(VuDev *, VuVirtq *, vu_queue_handler_cb)) \
    X(vu_set_queue_host_notifier, bool (*)(VuDev *, VuVirtq *, int, int, int)) \
    X(vu_lookup_shared_object, bool (*)(VuDev *, unsigned char *, int *)) \
    X(vu_add_shared_object, bool (*)(VuDev *, unsigned char *)) \
    X(vu_rm_shared_object, bool (*)(VuDev *, unsigned char *)) \
    X(vu_queue_set_notification, void (*)(VuDev *, VuVirtq *, int)) \
    X(vu_queue_enabled, bool (*)(VuDev *, VuVirtq *)) \
    X(vu_queue_started, bool (*)(const VuDev *, const VuVirtq *)) \
    X(vu_queue_empty, bool (*)(VuDev *, VuVirtq *)) \
    X(vu_queue_notify, void (*)(VuDev *, VuVirtq *)) \
    X(vu_config_change_msg, void (*)(VuDev *)) \
    X(vu_queue_notify_sync, void (*)(VuDev *, VuVirtq *)) \
    X(vu_queue_pop, void *(*)(VuDev *, VuVirtq *, size_t)) \
    X(vu_queue_unpop, void (*)(VuDev *, VuVirtq *, VuVirtqElement *, size_t)) \
    X(vu_queue_rewind, bool (*)(VuDev *, VuVirtq *, unsigned int)) \
    X(vu_queue_fill, void (*)(VuDev *, VuVirtq *, const VuVirtqElement *, unsigned int, \
                              unsigned int)) \
    X(vu_queue_push, void (*)(VuDev *, VuVirtq *, const VuVirtqElement *, unsigned int)) \
    X(vu_queue_flush, void (*)(VuDev *, VuVirtq *, unsigned int)) \
    X(vu_queue_get_avail_bytes, void (*)(VuDev *, VuVirtq *, unsigned int *, unsigned int *, \
                                         unsigned, unsigned)) \
    X(vu_queue_avail_bytes, bool (*)(VuDev *, VuVirtq *, unsigned int, unsigned int))
#define STATIC_FUNCTION(name, type) _Static_assert(SAME_TYPE(__typeof__(&name), type), #name);
FUNCTIONS(STATIC_FUNCTION)

int main(void)
{
#define PRINT_SIZE(T, size, align) \
    printf("size %s %zu %zu\n", #T, sizeof(T), (size_t)__alignof__(T));
    SIZES(PRINT_SIZE)
#define PRINT_FIELD(T, f, off, type) \
    printf("offset %s.%s %zu\n", #T, #f, offsetof(T, f));
    FIELDS(PRINT_FIELD)
    printf("offset VhostUserMsg.payload %zu\n", offsetof(VhostUserMsg, payload));
    printf("size VhostUserPayload %zu %zu\n", sizeof(PayloadType),
           (size_t)__alignof__(PayloadType));
    return 0;
}
