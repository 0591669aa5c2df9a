//! The C-visible types of libvhost-user, byte for byte as in QEMU 10.0's `libvhost-user.h`.
//!
//! cbindgen turns this module into `include/libvhost-user.h`; the doc comments become the
//! header's documentation. Nothing here has behaviour: the structs are plain data shared with C
//! code that embeds `VuDev` by value and reads its fields directly.
//!
//! Kernel types (`struct vring_desc`, `struct vhost_vring_addr`, ...) are redeclared here with
//! their uapi layout so Rust can use them; the header refers to the system definitions instead.

#![allow(non_camel_case_types, non_upper_case_globals)]

use libc::{c_char, c_int, c_uchar, c_uint, c_void, iovec, pthread_mutex_t};

/// Feature bit of the vhost-user protocol features extension.
pub const VHOST_USER_F_PROTOCOL_FEATURES: u32 = 30;
/// Granularity of the dirty log: one bit per page of this size.
pub const VHOST_LOG_PAGE: u32 = 4096;
/// The largest virtqueue size the library accepts.
pub const VIRTQUEUE_MAX_SIZE: u32 = 1024;
/// The number of memory regions (and fds) one SET_MEM_TABLE message carries.
pub const VHOST_MEMORY_BASELINE_NREGIONS: usize = 8;
/// The number of memory slots the library offers (VHOST_USER_GET_MAX_MEM_SLOTS).
pub const VHOST_USER_MAX_RAM_SLOTS: usize = 509;
/// Maximum size of the virtio device config space.
pub const VHOST_USER_MAX_CONFIG_SIZE: usize = 256;
/// Length of a shared-object UUID.
pub const UUID_LEN: usize = 16;

/// Version bits of `VhostUserMsg.flags`.
pub const VHOST_USER_VERSION_MASK: u32 = 0x3;
/// Set in `VhostUserMsg.flags` of a reply.
pub const VHOST_USER_REPLY_MASK: u32 = 0x1 << 2;
/// Set in `VhostUserMsg.flags` when the sender wants a reply.
pub const VHOST_USER_NEED_REPLY_MASK: u32 = 0x1 << 3;
/// Queue index bits of a vring fd message's u64 payload.
pub const VHOST_USER_VRING_IDX_MASK: u64 = 0xff;
/// Set in a vring fd message's u64 payload when no fd comes with it.
pub const VHOST_USER_VRING_NOFD_MASK: u64 = 0x1 << 8;

/// Type of a SET_CONFIG request.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VhostSetConfigType {
    VHOST_SET_CONFIG_TYPE_FRONTEND = 0,
    VHOST_SET_CONFIG_TYPE_MIGRATION = 1,
}

/// Protocol feature bits (VHOST_USER_GET/SET_PROTOCOL_FEATURES).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VhostUserProtocolFeature {
    VHOST_USER_PROTOCOL_F_MQ = 0,
    VHOST_USER_PROTOCOL_F_LOG_SHMFD = 1,
    VHOST_USER_PROTOCOL_F_RARP = 2,
    VHOST_USER_PROTOCOL_F_REPLY_ACK = 3,
    VHOST_USER_PROTOCOL_F_NET_MTU = 4,
    VHOST_USER_PROTOCOL_F_BACKEND_REQ = 5,
    VHOST_USER_PROTOCOL_F_CROSS_ENDIAN = 6,
    VHOST_USER_PROTOCOL_F_CRYPTO_SESSION = 7,
    VHOST_USER_PROTOCOL_F_PAGEFAULT = 8,
    VHOST_USER_PROTOCOL_F_CONFIG = 9,
    VHOST_USER_PROTOCOL_F_BACKEND_SEND_FD = 10,
    VHOST_USER_PROTOCOL_F_HOST_NOTIFIER = 11,
    VHOST_USER_PROTOCOL_F_INFLIGHT_SHMFD = 12,
    VHOST_USER_PROTOCOL_F_INBAND_NOTIFICATIONS = 14,
    VHOST_USER_PROTOCOL_F_CONFIGURE_MEM_SLOTS = 15,
    VHOST_USER_PROTOCOL_F_SHARED_OBJECT = 18,
    VHOST_USER_PROTOCOL_F_MAX = 19,
}

/// Requests from the frontend to the backend.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VhostUserRequest {
    VHOST_USER_NONE = 0,
    VHOST_USER_GET_FEATURES = 1,
    VHOST_USER_SET_FEATURES = 2,
    VHOST_USER_SET_OWNER = 3,
    VHOST_USER_RESET_OWNER = 4,
    VHOST_USER_SET_MEM_TABLE = 5,
    VHOST_USER_SET_LOG_BASE = 6,
    VHOST_USER_SET_LOG_FD = 7,
    VHOST_USER_SET_VRING_NUM = 8,
    VHOST_USER_SET_VRING_ADDR = 9,
    VHOST_USER_SET_VRING_BASE = 10,
    VHOST_USER_GET_VRING_BASE = 11,
    VHOST_USER_SET_VRING_KICK = 12,
    VHOST_USER_SET_VRING_CALL = 13,
    VHOST_USER_SET_VRING_ERR = 14,
    VHOST_USER_GET_PROTOCOL_FEATURES = 15,
    VHOST_USER_SET_PROTOCOL_FEATURES = 16,
    VHOST_USER_GET_QUEUE_NUM = 17,
    VHOST_USER_SET_VRING_ENABLE = 18,
    VHOST_USER_SEND_RARP = 19,
    VHOST_USER_NET_SET_MTU = 20,
    VHOST_USER_SET_BACKEND_REQ_FD = 21,
    VHOST_USER_IOTLB_MSG = 22,
    VHOST_USER_SET_VRING_ENDIAN = 23,
    VHOST_USER_GET_CONFIG = 24,
    VHOST_USER_SET_CONFIG = 25,
    VHOST_USER_CREATE_CRYPTO_SESSION = 26,
    VHOST_USER_CLOSE_CRYPTO_SESSION = 27,
    VHOST_USER_POSTCOPY_ADVISE = 28,
    VHOST_USER_POSTCOPY_LISTEN = 29,
    VHOST_USER_POSTCOPY_END = 30,
    VHOST_USER_GET_INFLIGHT_FD = 31,
    VHOST_USER_SET_INFLIGHT_FD = 32,
    VHOST_USER_GPU_SET_SOCKET = 33,
    VHOST_USER_VRING_KICK = 35,
    VHOST_USER_GET_MAX_MEM_SLOTS = 36,
    VHOST_USER_ADD_MEM_REG = 37,
    VHOST_USER_REM_MEM_REG = 38,
    VHOST_USER_GET_SHARED_OBJECT = 41,
    VHOST_USER_MAX = 42,
}

/// Requests from the backend to the frontend, on the backend channel.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VhostUserBackendRequest {
    VHOST_USER_BACKEND_NONE = 0,
    VHOST_USER_BACKEND_IOTLB_MSG = 1,
    VHOST_USER_BACKEND_CONFIG_CHANGE_MSG = 2,
    VHOST_USER_BACKEND_VRING_HOST_NOTIFIER_MSG = 3,
    VHOST_USER_BACKEND_VRING_CALL = 4,
    VHOST_USER_BACKEND_VRING_ERR = 5,
    VHOST_USER_BACKEND_SHARED_OBJECT_ADD = 6,
    VHOST_USER_BACKEND_SHARED_OBJECT_REMOVE = 7,
    VHOST_USER_BACKEND_SHARED_OBJECT_LOOKUP = 8,
    VHOST_USER_BACKEND_MAX = 9,
}

/// One guest memory region as the frontend describes it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VhostUserMemoryRegion {
    pub guest_phys_addr: u64,
    pub memory_size: u64,
    pub userspace_addr: u64,
    pub mmap_offset: u64,
}

/// Payload of VHOST_USER_SET_MEM_TABLE.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct VhostUserMemory {
    pub nregions: u32,
    pub padding: u32,
    pub regions: [VhostUserMemoryRegion; VHOST_MEMORY_BASELINE_NREGIONS],
}

/// Payload of VHOST_USER_ADD_MEM_REG and VHOST_USER_REM_MEM_REG.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct VhostUserMemRegMsg {
    pub padding: u64,
    pub region: VhostUserMemoryRegion,
}

/// Payload of VHOST_USER_SET_LOG_BASE.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct VhostUserLog {
    pub mmap_size: u64,
    pub mmap_offset: u64,
}

/// Payload of VHOST_USER_GET_CONFIG and VHOST_USER_SET_CONFIG.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct VhostUserConfig {
    pub offset: u32,
    pub size: u32,
    pub flags: u32,
    pub region: [u8; VHOST_USER_MAX_CONFIG_SIZE],
}

/// Payload of VHOST_USER_BACKEND_VRING_HOST_NOTIFIER_MSG.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct VhostUserVringArea {
    pub u64: u64,
    pub size: u64,
    pub offset: u64,
}

/// Payload of VHOST_USER_GET_INFLIGHT_FD and VHOST_USER_SET_INFLIGHT_FD.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct VhostUserInflight {
    pub mmap_size: u64,
    pub mmap_offset: u64,
    pub num_queues: u16,
    pub queue_size: u16,
}

/// Payload of the shared-object requests.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct VhostUserShared {
    pub uuid: [c_uchar; UUID_LEN],
}

/// `struct vhost_vring_state` of `<linux/vhost_types.h>`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct vhost_vring_state {
    pub index: c_uint,
    pub num: c_uint,
}

/// `struct vhost_vring_addr` of `<linux/vhost_types.h>`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct vhost_vring_addr {
    pub index: c_uint,
    pub flags: c_uint,
    pub desc_user_addr: u64,
    pub used_user_addr: u64,
    pub avail_user_addr: u64,
    pub log_guest_addr: u64,
}

/// The payload of a vhost-user message: one of these, as `request` says.
#[repr(C)]
#[derive(Clone, Copy)]
pub union VhostUserPayload {
    pub u64: u64,
    pub state: vhost_vring_state,
    pub addr: vhost_vring_addr,
    pub memory: VhostUserMemory,
    pub memreg: VhostUserMemRegMsg,
    pub log: VhostUserLog,
    pub config: VhostUserConfig,
    pub area: VhostUserVringArea,
    pub inflight: VhostUserInflight,
    pub object: VhostUserShared,
}

/// One vhost-user message: the 12-byte header, the payload, and the fds that came with it.
#[repr(C, packed)]
#[derive(Clone, Copy)]
pub struct VhostUserMsg {
    pub request: c_int,
    pub flags: u32,
    /// The size of the payload that follows the header.
    pub size: u32,
    pub payload: VhostUserPayload,
    pub fds: [c_int; VHOST_MEMORY_BASELINE_NREGIONS],
    pub fd_num: c_int,
    pub data: *mut u8,
}

/// One mapped guest memory region, as C code sees it in `VuDev.regions`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VuDevRegion {
    /// Guest Physical address.
    pub gpa: u64,
    /// Memory region size.
    pub size: u64,
    /// QEMU virtual address (userspace).
    pub qva: u64,
    /// Starting offset in our mmaped space.
    pub mmap_offset: u64,
    /// Start address of mmaped space.
    pub mmap_addr: u64,
}

pub type vu_get_features_cb = Option<unsafe extern "C" fn(dev: *mut VuDev) -> u64>;
pub type vu_set_features_cb = Option<unsafe extern "C" fn(dev: *mut VuDev, features: u64)>;
pub type vu_process_msg_cb = Option<
    unsafe extern "C" fn(dev: *mut VuDev, vmsg: *mut VhostUserMsg, do_reply: *mut c_int) -> c_int,
>;
pub type vu_read_msg_cb =
    Option<unsafe extern "C" fn(dev: *mut VuDev, sock: c_int, vmsg: *mut VhostUserMsg) -> bool>;
pub type vu_queue_set_started_cb =
    Option<unsafe extern "C" fn(dev: *mut VuDev, qidx: c_int, started: bool)>;
pub type vu_queue_is_processed_in_order_cb =
    Option<unsafe extern "C" fn(dev: *mut VuDev, qidx: c_int) -> bool>;
pub type vu_get_config_cb =
    Option<unsafe extern "C" fn(dev: *mut VuDev, config: *mut u8, len: u32) -> c_int>;
pub type vu_set_config_cb = Option<
    unsafe extern "C" fn(
        dev: *mut VuDev,
        data: *const u8,
        offset: u32,
        size: u32,
        flags: u32,
    ) -> c_int,
>;
pub type vu_get_shared_object_cb =
    Option<unsafe extern "C" fn(dev: *mut VuDev, uuid: *const c_uchar) -> c_int>;

/// Saves the device state for migration (see vu_set_device_state_handlers()): on success
/// returns true with `*data` a malloc()'d buffer of `*size` bytes holding the whole state (the
/// library frees it with free()); `*data` may stay NULL when `*size` is 0. Returns false if
/// the state cannot be saved now.
pub type vu_save_state_cb = Option<
    unsafe extern "C" fn(
        dev: *mut VuDev,
        opaque: *mut c_void,
        data: *mut *mut u8,
        size: *mut usize,
    ) -> bool,
>;
/// Loads a device state that vu_save_state_cb produced on the source (see
/// vu_set_device_state_handlers()): `data` holds all `size` bytes the frontend sent and is
/// valid only during the call. Returns true if the state was accepted and applied.
pub type vu_load_state_cb = Option<
    unsafe extern "C" fn(
        dev: *mut VuDev,
        opaque: *mut c_void,
        data: *const u8,
        size: usize,
    ) -> bool,
>;

/// The device's callbacks. Every member may be NULL.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct VuDevIface {
    /// called by VHOST_USER_GET_FEATURES to get the features bitmask
    pub get_features: vu_get_features_cb,
    /// enable vhost implementation features
    pub set_features: vu_set_features_cb,
    /// get the protocol feature bitmask from the underlying vhost implementation
    pub get_protocol_features: vu_get_features_cb,
    /// enable protocol features in the underlying vhost implementation.
    pub set_protocol_features: vu_set_features_cb,
    /// process_msg is called for each vhost-user message received;
    /// skip libvhost-user processing if return value != 0
    pub process_msg: vu_process_msg_cb,
    /// tells when queues can be processed
    pub queue_set_started: vu_queue_set_started_cb,
    /// If the queue is processed in order, in which case it will be
    /// resumed to vring.used->idx. This can help to support resuming
    /// on unmanaged exit/crash.
    pub queue_is_processed_in_order: vu_queue_is_processed_in_order_cb,
    /// get the config space of the device
    pub get_config: vu_get_config_cb,
    /// set the config space of the device
    pub set_config: vu_set_config_cb,
    /// get virtio shared object from the underlying vhost implementation.
    pub get_shared_object: vu_get_shared_object_cb,
}

pub type vu_queue_handler_cb = Option<unsafe extern "C" fn(dev: *mut VuDev, qidx: c_int)>;

/// `struct vring_desc` of `<linux/virtio_ring.h>` (little-endian fields).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct vring_desc {
    pub addr: u64,
    pub len: u32,
    pub flags: u16,
    pub next: u16,
}

/// `struct vring_avail` of `<linux/virtio_ring.h>`.
#[repr(C)]
pub struct vring_avail {
    pub flags: u16,
    pub idx: u16,
    pub ring: [u16; 0],
}

/// `struct vring_used_elem` of `<linux/virtio_ring.h>`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct vring_used_elem {
    pub id: u32,
    pub len: u32,
}

/// `struct vring_used` of `<linux/virtio_ring.h>`.
#[repr(C)]
pub struct vring_used {
    pub flags: u16,
    pub idx: u16,
    pub ring: [vring_used_elem; 0],
}

/// Where a virtqueue's three parts live in our address space.
///
/// With a packed ring (VIRTIO_F_RING_PACKED negotiated; see vu_set_packed_ring_enabled) the
/// pointers keep their types but point to the packed parts: `desc` to the descriptor ring
/// (`num` 16-byte descriptors `{le64 addr; le32 len; le16 id; le16 flags}`), `avail` to the
/// driver event suppression area and `used` to the device event suppression area (4 bytes
/// each: `{le16 off_wrap; le16 flags}`).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct VuRing {
    pub num: c_uint,
    /// The descriptor table (split) or descriptor ring (packed).
    pub desc: *mut vring_desc,
    /// The avail ring (split) or driver event suppression area (packed).
    pub avail: *mut vring_avail,
    /// The used ring (split) or device event suppression area (packed).
    pub used: *mut vring_used,
    pub log_guest_addr: u64,
    pub flags: u32,
}

/// Inflight state of one descriptor, in the shared inflight area.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct VuDescStateSplit {
    /// Indicate whether this descriptor is inflight or not.
    /// Only available for head-descriptor.
    pub inflight: u8,
    /// Padding
    pub padding: [u8; 5],
    /// Maintain a list for the last batch of used descriptors.
    /// Only available when batching is used for submitting
    pub next: u16,
    /// Used to preserve the order of fetching available descriptors.
    /// Only available for head-descriptor.
    pub counter: u64,
}

/// The inflight area of one queue, shared with the frontend so it survives a backend crash.
#[repr(C)]
#[derive(Debug)]
pub struct VuVirtqInflight {
    /// The feature flags of this region. Now it's initialized to 0.
    pub features: u64,
    /// The version of this region. It's 1 currently.
    /// Zero value indicates a vm reset happened.
    pub version: u16,
    /// The size of VuDescStateSplit array. It's equal to the virtqueue size.
    /// Backend could get it from queue size field of VhostUserInflight.
    pub desc_num: u16,
    /// The head of list that track the last batch of used descriptors.
    pub last_batch_head: u16,
    /// Storing the idx value of used ring
    pub used_idx: u16,
    /// Used to track the state of each descriptor in descriptor table
    pub desc: [VuDescStateSplit; 0],
}

/// A descriptor to resubmit after a reconnect, with its fetch order.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct VuVirtqInflightDesc {
    pub index: u16,
    pub counter: u64,
}

/// One virtqueue. C code reads these fields; the library keeps them truthful.
#[repr(C)]
pub struct VuVirtq {
    pub vring: VuRing,
    pub inflight: *mut VuVirtqInflight,
    pub resubmit_list: *mut VuVirtqInflightDesc,
    pub resubmit_num: u16,
    pub counter: u64,
    /// Next head to pop. Packed ring: the next descriptor ring slot to read in bits 0-14, the
    /// driver's wrap counter in bit 15 (the VHOST_USER_SET_VRING_BASE encoding).
    pub last_avail_idx: u16,
    /// Last avail_idx read from VQ. Packed ring: the position after the last chain popped.
    pub shadow_avail_idx: u16,
    /// Next used index. Packed ring: the next slot for a used descriptor in bits 0-14, the
    /// device's wrap counter in bit 15.
    pub used_idx: u16,
    /// Last used index value we have signalled on
    pub signalled_used: u16,
    /// Last used index value we have signalled on
    pub signalled_used_valid: bool,
    /// Notification enabled?
    pub notification: bool,
    pub inuse: c_uint,
    pub handler: vu_queue_handler_cb,
    pub call_fd: c_int,
    pub kick_fd: c_int,
    pub err_fd: c_int,
    pub enable: c_uint,
    pub started: bool,
    /// Guest addresses of our ring
    pub vra: vhost_vring_addr,
}

/// Conditions for `set_watch`; equal to the `poll()` events.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VuWatchCondtion {
    VU_WATCH_IN = 0x001,
    VU_WATCH_OUT = 0x004,
    VU_WATCH_PRI = 0x002,
    VU_WATCH_ERR = 0x008,
    VU_WATCH_HUP = 0x010,
}

pub type vu_panic_cb = Option<unsafe extern "C" fn(dev: *mut VuDev, err: *const c_char)>;
pub type vu_watch_cb =
    Option<unsafe extern "C" fn(dev: *mut VuDev, condition: c_int, data: *mut c_void)>;
pub type vu_set_watch_cb = Option<
    unsafe extern "C" fn(
        dev: *mut VuDev,
        fd: c_int,
        condition: c_int,
        cb: vu_watch_cb,
        data: *mut c_void,
    ),
>;
pub type vu_remove_watch_cb = Option<unsafe extern "C" fn(dev: *mut VuDev, fd: c_int)>;

/// The inflight area the library shares with the frontend.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct VuDevInflightInfo {
    pub fd: c_int,
    pub addr: *mut c_void,
    pub size: u64,
}

/// A vhost-user device context. C code embeds it by value; the library never writes past it.
#[repr(C)]
pub struct VuDev {
    pub sock: c_int,
    pub nregions: u32,
    pub regions: *mut VuDevRegion,
    pub vq: *mut VuVirtq,
    pub inflight_info: VuDevInflightInfo,
    pub log_call_fd: c_int,
    /// Must be held while using backend_fd
    pub backend_mutex: pthread_mutex_t,
    pub backend_fd: c_int,
    pub log_size: u64,
    pub log_table: *mut u8,
    pub features: u64,
    pub protocol_features: u64,
    pub broken: bool,
    pub max_queues: u16,
    /// @read_msg: custom method to read vhost-user message
    ///
    /// Read data from vhost_user socket fd and fill up
    /// the passed VhostUserMsg *vmsg struct.
    ///
    /// If reading fails, it should close the received set of file
    /// descriptors as socket message's auxiliary data.
    ///
    /// Returns: true if vhost-user message successfully received,
    ///          otherwise return false.
    pub read_msg: vu_read_msg_cb,
    /// @set_watch: add or update the given fd to the watch set,
    /// call cb when condition is met.
    pub set_watch: vu_set_watch_cb,
    /// @remove_watch: remove the given fd from the watch set
    pub remove_watch: vu_remove_watch_cb,
    /// @panic: encountered an unrecoverable error, you may try to re-initialize
    pub panic: vu_panic_cb,
    pub iface: *const VuDevIface,
    /// Postcopy data
    pub postcopy_ufd: c_int,
    pub postcopy_listening: bool,
}

/// One popped request: the head index and its scatter-gather lists.
#[repr(C)]
pub struct VuVirtqElement {
    pub index: c_uint,
    pub out_num: c_uint,
    pub in_num: c_uint,
    pub in_sg: *mut iovec,
    pub out_sg: *mut iovec,
}

// The layout is the contract with C; these fail the build if a field moves.
const _: () = {
    use core::mem::{align_of, offset_of, size_of};
    assert!(size_of::<VhostUserMsg>() == 328);
    assert!(offset_of!(VhostUserMsg, payload) == 12);
    assert!(offset_of!(VhostUserMsg, fds) == 284);
    assert!(offset_of!(VhostUserMsg, fd_num) == 316);
    assert!(offset_of!(VhostUserMsg, data) == 320);
    assert!(size_of::<VhostUserPayload>() == 272);
    assert!(size_of::<VuDev>() == 192 && align_of::<VuDev>() == 8);
    assert!(offset_of!(VuDev, inflight_info) == 24);
    assert!(offset_of!(VuDev, log_call_fd) == 48);
    assert!(offset_of!(VuDev, backend_mutex) == 56);
    assert!(offset_of!(VuDev, backend_fd) == 96);
    assert!(offset_of!(VuDev, log_size) == 104);
    assert!(offset_of!(VuDev, broken) == 136);
    assert!(offset_of!(VuDev, max_queues) == 138);
    assert!(offset_of!(VuDev, read_msg) == 144);
    assert!(offset_of!(VuDev, iface) == 176);
    assert!(offset_of!(VuDev, postcopy_ufd) == 184);
    assert!(offset_of!(VuDev, postcopy_listening) == 188);
    assert!(size_of::<VuVirtq>() == 168);
    assert!(offset_of!(VuVirtq, inflight) == 48);
    assert!(offset_of!(VuVirtq, resubmit_num) == 64);
    assert!(offset_of!(VuVirtq, counter) == 72);
    assert!(offset_of!(VuVirtq, last_avail_idx) == 80);
    assert!(offset_of!(VuVirtq, signalled_used_valid) == 88);
    assert!(offset_of!(VuVirtq, inuse) == 92);
    assert!(offset_of!(VuVirtq, handler) == 96);
    assert!(offset_of!(VuVirtq, call_fd) == 104);
    assert!(offset_of!(VuVirtq, enable) == 116);
    assert!(offset_of!(VuVirtq, started) == 120);
    assert!(offset_of!(VuVirtq, vra) == 128);
    assert!(size_of::<VuRing>() == 48);
    assert!(size_of::<VuDevIface>() == 80);
    assert!(size_of::<VuVirtqElement>() == 32);
    assert!(size_of::<VuDevRegion>() == 40);
    assert!(size_of::<VuDescStateSplit>() == 16);
    assert!(size_of::<VuVirtqInflight>() == 16);
    assert!(size_of::<VuVirtqInflightDesc>() == 16);
    assert!(size_of::<VuDevInflightInfo>() == 24);
    assert!(size_of::<VhostUserMemRegMsg>() == 40);
    assert!(size_of::<VhostUserConfig>() == 268);
    assert!(size_of::<VhostUserInflight>() == 24);
};
