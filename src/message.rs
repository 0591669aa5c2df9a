//! Reading and writing vhost-user messages on a unix socket, with their fds.

use std::io;
use std::mem::{size_of, MaybeUninit};

use crate::abi::{VhostUserMsg, VhostUserPayload, VHOST_MEMORY_BASELINE_NREGIONS};
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

fn payload_bytes_mut(vmsg: &mut VhostUserMsg) -> &mut [u8] {
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
