//! Reading and writing vhost-user messages on a unix socket, with their fds.

use std::io;
use std::mem::{size_of, MaybeUninit};
use std::os::fd::{FromRawFd, OwnedFd};

use crate::abi::*;
use crate::fd::close_fd;
use vmm_sys_util::sock_ctrl_msg::ScmSocket;

/// Size of the message header: request, flags, size.
pub const HDR_SIZE: usize = 12;
pub const PAYLOAD_MAX: usize = size_of::<VhostUserPayload>();
/// Protocol version we speak.
pub const VHOST_USER_VERSION: u32 = 1;

/// A zeroed message, as the original starts every dispatch with.
pub fn zeroed_msg() -> VhostUserMsg {
    // SAFETY: VhostUserMsg is plain data (integers, arrays, a raw pointer); all-zero is valid.
    unsafe { MaybeUninit::<VhostUserMsg>::zeroed().assume_init() }
}

/// How many fds came with the message (a caller's `read_msg` may have set any value).
pub fn fd_count(vmsg: &VhostUserMsg) -> usize {
    usize::try_from(vmsg.fd_num as i64).unwrap_or(0).min(VHOST_MEMORY_BASELINE_NREGIONS)
}

/// The fds that came with the message.
pub fn msg_fds(vmsg: &VhostUserMsg) -> ([libc::c_int; VHOST_MEMORY_BASELINE_NREGIONS], usize) {
    (vmsg.fds, fd_count(vmsg))
}

/// Takes ownership of the fds that came with the message (the message forgets them), with
/// their count; a caller's reader may have left -1 in a counted slot (then `None` there).
pub fn take_fds(
    vmsg: &mut VhostUserMsg,
) -> ([Option<OwnedFd>; VHOST_MEMORY_BASELINE_NREGIONS], usize) {
    let n = fd_count(vmsg);
    let raw = vmsg.fds;
    vmsg.fd_num = 0;
    let fds = std::array::from_fn(|i| {
        // SAFETY: the message reader hands the fds it received to whoever handles the
        // message, and the message forgets them (fd_num = 0): we are their only owner.
        (i < n && raw[i] >= 0).then(|| unsafe { OwnedFd::from_raw_fd(raw[i]) })
    });
    (fds, n)
}

/// Closes every fd that came with the message and forgets them.
pub fn close_msg_fds(vmsg: &mut VhostUserMsg) {
    let n = fd_count(vmsg);
    let mut fds = vmsg.fds;
    for fd in fds.iter_mut().take(n) {
        close_fd(*fd);
        *fd = -1;
    }
    vmsg.fds = fds;
    vmsg.fd_num = 0;
}

/// The payload types: plain data that any byte pattern is a valid value of.
///
/// # Safety
/// Implementors are `repr(C)` types of integers and arrays of them, no larger than the payload.
pub unsafe trait Body: Copy {}
// SAFETY: each is a member of the payload union: plain integers and arrays of them.
unsafe impl Body for u64 {}
// SAFETY: as above.
unsafe impl Body for vhost_vring_state {}
// SAFETY: as above.
unsafe impl Body for vhost_vring_addr {}
// SAFETY: as above.
unsafe impl Body for VhostUserMemory {}
// SAFETY: as above.
unsafe impl Body for VhostUserMemRegMsg {}
// SAFETY: as above.
unsafe impl Body for VhostUserLog {}
// SAFETY: as above.
unsafe impl Body for VhostUserConfig {}
// SAFETY: as above.
unsafe impl Body for VhostUserInflight {}
// SAFETY: as above.
unsafe impl Body for VhostUserShared {}
// SAFETY: `struct vhost_iotlb_msg` (not a union member in the 10.0 header, but 32 bytes of
// integers, well inside the payload).
unsafe impl Body for crate::iotlb::IotlbMsg {}

/// How large a request's payload must be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Size {
    Exact(usize),
    AtLeast(usize),
}

impl Size {
    /// Exactly the size of `T`.
    pub const fn of<T>() -> Size {
        Size::Exact(size_of::<T>())
    }

    pub fn admits(self, size: u32) -> bool {
        match self {
            Size::Exact(n) => size as usize == n,
            Size::AtLeast(n) => size as usize >= n,
        }
    }
}

/// The payload as a `T`, whatever size the frontend declared: bytes past `size` are those of
/// the zeroed buffer the message was read into.
#[inline]
pub fn body<T: Body>(vmsg: &VhostUserMsg) -> T {
    const { assert!(size_of::<T>() <= PAYLOAD_MAX) };
    // SAFETY: the payload holds PAYLOAD_MAX initialised bytes, any pattern of which is a
    // valid T (Body); the message is packed, hence the unaligned read.
    unsafe { std::ptr::addr_of!(vmsg.payload).cast::<T>().read_unaligned() }
}

/// Writes `body` as the payload, with its size.
pub fn set_body<T: Body>(vmsg: &mut VhostUserMsg, body: T) {
    const { assert!(size_of::<T>() <= PAYLOAD_MAX) };
    // SAFETY: the payload has room for PAYLOAD_MAX bytes, T no more (checked above); the
    // message is packed, hence the unaligned write.
    unsafe { std::ptr::addr_of_mut!(vmsg.payload).cast::<T>().write_unaligned(body) };
    vmsg.size = size_of::<T>() as u32;
}

/// Makes `vmsg` carry one fd, `fd` (the others are not sent).
pub fn attach_fd(vmsg: &mut VhostUserMsg, fd: libc::c_int) {
    let mut fds = vmsg.fds;
    fds[0] = fd;
    vmsg.fds = fds;
    vmsg.fd_num = 1;
}

/// Sets a u64 reply payload, as the original's `vmsg_set_reply_u64`.
pub fn set_reply_u64(vmsg: &mut VhostUserMsg, val: u64) {
    vmsg.flags = 0;
    vmsg.size = 8;
    vmsg.payload.u64 = val;
    vmsg.fd_num = 0;
}

/// The payload as bytes (all PAYLOAD_MAX of them, whatever `size` says).
pub fn payload_bytes(vmsg: &VhostUserMsg) -> &[u8] {
    // SAFETY: the payload union is PAYLOAD_MAX initialised plain bytes inside the struct
    // (alignment 1 for a u8 view).
    unsafe {
        std::slice::from_raw_parts(std::ptr::addr_of!(vmsg.payload) as *const u8, PAYLOAD_MAX)
    }
}

/// The payload as mutable bytes.
pub fn payload_bytes_mut(vmsg: &mut VhostUserMsg) -> &mut [u8] {
    // SAFETY: the payload union is PAYLOAD_MAX plain bytes inside the struct (alignment 1
    // for a u8 view).
    unsafe {
        std::slice::from_raw_parts_mut(std::ptr::addr_of_mut!(vmsg.payload) as *mut u8, PAYLOAD_MAX)
    }
}

fn header_bytes_mut(vmsg: &mut VhostUserMsg) -> &mut [u8] {
    // SAFETY: the first HDR_SIZE bytes of the struct are the header fields.
    unsafe { std::slice::from_raw_parts_mut(vmsg as *mut VhostUserMsg as *mut u8, HDR_SIZE) }
}

/// Why reading a message failed.
#[derive(Debug)]
pub enum ReadError {
    Io(io::Error),
    TooManyFds,
    ShortHeader(usize),
    TooBig(u32),
    ShortPayload { want: u32, got: usize },
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::Io(e) => write!(f, "Error while recvmsg: {e}"),
            ReadError::TooManyFds => write!(f, "Error: too many fds in message (max {VHOST_MEMORY_BASELINE_NREGIONS})"),
            ReadError::ShortHeader(n) => write!(f, "Error: short message header ({n} of {HDR_SIZE} bytes)"),
            ReadError::TooBig(s) => write!(
                f,
                "Error: too big message request: size: vmsg->size: {s}, while sizeof(vmsg->payload) = {PAYLOAD_MAX}"
            ),
            ReadError::ShortPayload { want, got } => write!(f, "Error while reading: short payload ({got} of {want} bytes)"),
        }
    }
}

/// Waits until `fd` is readable (for sockets a caller left non-blocking).
fn wait_readable(fd: libc::c_int) {
    let mut pfd = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
    // SAFETY: one valid pollfd.
    unsafe { libc::poll(&mut pfd, 1, -1) };
}

/// Reads one message: the header with any fds, then exactly `size` payload bytes.
///
/// At end of file the message stays zeroed (request NONE, no payload), which is how the
/// original reports a closed connection to the dispatcher. On error every received fd is
/// closed.
pub fn read_message(fd: libc::c_int, vmsg: &mut VhostUserMsg) -> Result<(), ReadError> {
    const CMSG_BUF: usize = 128; // >= CMSG_SPACE(8 * sizeof(int)) = 48
    let mut control = [0u64; CMSG_BUF / 8];
    let got = loop {
        let hdr = header_bytes_mut(vmsg);
        let mut iov = libc::iovec { iov_base: hdr.as_mut_ptr().cast(), iov_len: HDR_SIZE };
        // SAFETY: zeroed msghdr is valid; we fill the pointers below.
        let mut mh: libc::msghdr = unsafe { std::mem::zeroed() };
        mh.msg_iov = &mut iov;
        mh.msg_iovlen = 1;
        mh.msg_control = control.as_mut_ptr().cast();
        mh.msg_controllen = std::mem::size_of_val(&control) as _;
        // SAFETY: buffers are valid for the lengths given.
        let rc = unsafe { libc::recvmsg(fd, &mut mh, libc::MSG_CMSG_CLOEXEC) };
        if rc < 0 {
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::EAGAIN) => {
                    wait_readable(fd);
                    continue;
                }
                _ => return Err(ReadError::Io(e)),
            }
        }
        let truncated = mh.msg_flags & libc::MSG_CTRUNC != 0;
        let mut n = 0usize;
        let mut extra = false;
        // SAFETY: walking the control buffer the kernel filled, with the libc CMSG macros.
        unsafe {
            let mut c = libc::CMSG_FIRSTHDR(&mh);
            while !c.is_null() {
                if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                    let data = libc::CMSG_DATA(c) as *const libc::c_int;
                    let count = ((*c).cmsg_len as usize - libc::CMSG_LEN(0) as usize)
                        / size_of::<libc::c_int>();
                    for k in 0..count {
                        let rfd = data.add(k).read_unaligned();
                        if n < VHOST_MEMORY_BASELINE_NREGIONS {
                            let mut fds = vmsg.fds;
                            fds[n] = rfd;
                            vmsg.fds = fds;
                            n += 1;
                        } else {
                            extra = true;
                            close_fd(rfd);
                        }
                    }
                }
                c = libc::CMSG_NXTHDR(&mh, c);
            }
        }
        vmsg.fd_num = n as libc::c_int;
        if truncated || extra {
            close_msg_fds(vmsg);
            return Err(ReadError::TooManyFds);
        }
        break rc as usize;
    };
    if got == 0 {
        return Ok(());
    }
    if got < HDR_SIZE {
        // A stream socket may deliver the header in pieces.
        let rest = read_full(fd, &mut header_bytes_mut(vmsg)[got..]);
        if got + rest < HDR_SIZE {
            close_msg_fds(vmsg);
            return Err(ReadError::ShortHeader(got + rest));
        }
    }
    let size = vmsg.size;
    if size as usize > PAYLOAD_MAX {
        close_msg_fds(vmsg);
        return Err(ReadError::TooBig(size));
    }
    if size > 0 {
        let want = size as usize;
        let got = read_full(fd, &mut payload_bytes_mut(vmsg)[..want]);
        if got < want {
            close_msg_fds(vmsg);
            return Err(ReadError::ShortPayload { want: size, got });
        }
    }
    Ok(())
}

/// Reads until `buf` is full or EOF/error; returns the bytes read.
fn read_full(fd: libc::c_int, buf: &mut [u8]) -> usize {
    let mut done = 0;
    while done < buf.len() {
        // SAFETY: reading into the unfilled tail of buf.
        let rc = unsafe { libc::read(fd, buf[done..].as_mut_ptr().cast(), buf.len() - done) };
        if rc < 0 {
            match io::Error::last_os_error().raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::EAGAIN) => {
                    wait_readable(fd);
                    continue;
                }
                _ => break,
            }
        }
        if rc == 0 {
            break;
        }
        done += rc as usize;
    }
    done
}

/// A socket fd we do not own, for vmm-sys-util's `sendmsg` with fds (`ScmSocket`).
struct SocketFd(libc::c_int);

impl ScmSocket for SocketFd {
    fn socket_fd(&self) -> libc::c_int {
        self.0
    }
}

fn header_bytes(vmsg: &VhostUserMsg) -> &[u8] {
    // SAFETY: the first HDR_SIZE bytes of the struct are the header fields.
    unsafe { std::slice::from_raw_parts(vmsg as *const VhostUserMsg as *const u8, HDR_SIZE) }
}

/// Writes one message: header and payload (from `data` when set) with its fds, in one sendmsg
/// (vmm-sys-util's, with MSG_NOSIGNAL) where possible. Never raises SIGPIPE.
pub fn write_message(fd: libc::c_int, vmsg: &VhostUserMsg) -> io::Result<()> {
    let size = vmsg.size as usize;
    let data = vmsg.data;
    if data.is_null() && size > PAYLOAD_MAX {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    let fd_num = usize::try_from(vmsg.fd_num as i64).unwrap_or(usize::MAX);
    if fd_num > VHOST_MEMORY_BASELINE_NREGIONS {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    let header = header_bytes(vmsg);
    let payload: &[u8] = if data.is_null() {
        &payload_bytes(vmsg)[..size]
    } else {
        // SAFETY: a caller's reader or handler that sets `data` points it at `size` bytes it
        // owns until the message is freed (the original writes them the same way).
        unsafe { std::slice::from_raw_parts(data as *const u8, size) }
    };
    let fds = vmsg.fds;
    let parts: &[&[u8]] = if size > 0 { &[header, payload] } else { &[header] };
    let mut sent = loop {
        match SocketFd(fd).send_with_fds(parts, &fds[..fd_num]) {
            Ok(n) => break n,
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => continue,
            Err(e) => return Err(io::Error::from_raw_os_error(e.errno())),
        }
    };
    // Finish a partial write without the fds (they went with the first byte).
    let total = HDR_SIZE + size;
    while sent < total {
        let rest = if sent < HDR_SIZE { &header[sent..] } else { &payload[sent - HDR_SIZE..] };
        match SocketFd(fd).send_with_fds(&[rest], &[]) {
            Ok(0) => return Err(io::Error::from_raw_os_error(libc::EPIPE)),
            Ok(n) => sent += n,
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => continue,
            Err(e) => return Err(io::Error::from_raw_os_error(e.errno())),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::os::fd::{AsRawFd, IntoRawFd};
    use std::os::unix::net::UnixStream;

    use super::*;

    fn msg(request: i32, size: u32) -> VhostUserMsg {
        let mut m = zeroed_msg();
        m.request = request;
        m.flags = VHOST_USER_VERSION;
        m.size = size;
        m
    }

    #[test]
    fn a_message_with_fds_round_trips() {
        let (a, b) = UnixStream::pair().unwrap();
        let (e1, e2) = UnixStream::pair().unwrap();
        let mut m = msg(13, 8);
        m.payload.u64 = 0x1_0000_0002;
        attach_fd(&mut m, e1.as_raw_fd());
        write_message(a.as_raw_fd(), &m).unwrap();
        let mut got = zeroed_msg();
        read_message(b.as_raw_fd(), &mut got).unwrap();
        assert_eq!(({ got.request }, { got.size }), (13, 8));
        assert_eq!(body::<u64>(&got), 0x1_0000_0002);
        assert_eq!(fd_count(&got), 1);
        // The received fd is a new descriptor for the same socket.
        let fd = got.fds[0];
        assert!(fd >= 0 && fd != e1.as_raw_fd());
        // SAFETY: the fd we just received, writing 1 byte from a local.
        assert_eq!(unsafe { libc::write(fd, b"x".as_ptr().cast(), 1) }, 1);
        let mut buf = [0u8; 1];
        // SAFETY: reading into a local buffer.
        assert_eq!(unsafe { libc::read(e2.as_raw_fd(), buf.as_mut_ptr().cast(), 1) }, 1);
        close_msg_fds(&mut got);
        assert_eq!(fd_count(&got), 0);
    }

    #[test]
    fn end_of_file_reads_as_a_zeroed_message() {
        let (a, b) = UnixStream::pair().unwrap();
        drop(a);
        let mut got = zeroed_msg();
        read_message(b.as_raw_fd(), &mut got).unwrap();
        assert_eq!(({ got.request }, { got.size }, { got.fd_num }), (0, 0, 0));
    }

    #[test]
    fn oversized_and_short_payloads_are_refused() {
        let (mut a, b) = UnixStream::pair().unwrap();
        let m = msg(1, PAYLOAD_MAX as u32 + 1);
        // Header only: the size is refused before any payload is read.
        // SAFETY: the header is the first HDR_SIZE bytes of the message.
        let hdr = unsafe {
            std::slice::from_raw_parts((&m as *const VhostUserMsg).cast::<u8>(), HDR_SIZE)
        };
        a.write_all(hdr).unwrap();
        let mut got = zeroed_msg();
        assert!(matches!(read_message(b.as_raw_fd(), &mut got), Err(ReadError::TooBig(_))));

        let m = msg(1, 8);
        // SAFETY: as above.
        let hdr = unsafe {
            std::slice::from_raw_parts((&m as *const VhostUserMsg).cast::<u8>(), HDR_SIZE)
        };
        a.write_all(hdr).unwrap();
        a.write_all(&[1, 2, 3]).unwrap();
        drop(a);
        let mut got = zeroed_msg();
        assert!(matches!(
            read_message(b.as_raw_fd(), &mut got),
            Err(ReadError::ShortPayload { want: 8, got: 3 })
        ));
    }

    #[test]
    fn a_header_in_pieces_is_reassembled() {
        let (mut a, b) = UnixStream::pair().unwrap();
        let mut m = msg(2, 8);
        m.payload.u64 = 42;
        // SAFETY: header and u64 payload are the first HDR_SIZE + 8 bytes of the message.
        let bytes = unsafe {
            std::slice::from_raw_parts((&m as *const VhostUserMsg).cast::<u8>(), HDR_SIZE + 8)
        };
        let bytes = bytes.to_vec();
        let writer = std::thread::spawn(move || {
            a.write_all(&bytes[..5]).unwrap();
            std::thread::sleep(std::time::Duration::from_millis(20));
            a.write_all(&bytes[5..]).unwrap();
            a.into_raw_fd()
        });
        let mut got = zeroed_msg();
        read_message(b.as_raw_fd(), &mut got).unwrap();
        assert_eq!(({ got.request }, body::<u64>(&got)), (2, 42));
        crate::fd::close_fd(writer.join().unwrap());
    }

    #[test]
    fn body_sizes() {
        assert!(Size::Exact(8).admits(8));
        assert!(!Size::Exact(8).admits(7) && !Size::Exact(8).admits(9));
        assert!(Size::AtLeast(8).admits(8) && Size::AtLeast(8).admits(300));
        assert!(!Size::AtLeast(8).admits(0));
        assert_eq!(Size::of::<vhost_vring_state>(), Size::Exact(8));
        assert_eq!(Size::of::<vhost_vring_addr>(), Size::Exact(40));
        let mut m = msg(9, 40);
        m.payload.addr =
            vhost_vring_addr { index: 3, flags: 1, used_user_addr: 7, ..Default::default() };
        let addr = body::<vhost_vring_addr>(&m);
        assert_eq!((addr.index, addr.flags, addr.used_user_addr), (3, 1, 7));
        // Bytes past the declared size read as the zeroed buffer.
        let m = msg(2, 0);
        assert_eq!(body::<u64>(&m), 0);
    }
}
