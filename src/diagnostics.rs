//! Diagnostics for C users: `LIBVHOST_USER_LOG=error|warn|info|debug|trace` installs a logger
//! for the `log` records of this library, written to stderr. Unset (or `off`), nothing is
//! installed and the library stays silent, as the original is.
//!
//! What each level adds:
//! - `error`: refusals (the message given to the `panic` callback), internal errors;
//! - `debug`: one line per frontend request (name, payload size, fd count, outcome) and per
//!   backend-channel message;
//! - `trace`: queue events (pop, fill, flush, push, notify).

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Once;

use log::{Level, LevelFilter, Log, Metadata, Record};

use crate::abi::{VhostUserBackendRequest, VuVirtqElement};
use crate::control::Outcome;
use crate::queue::split::Notify;

/// The environment variable that selects the level.
pub const LOG_ENV: &str = "LIBVHOST_USER_LOG";

/// Writes every record as one line, `libvhost-user[PID]: LEVEL: message`, with one write(2)
/// so that lines from several threads do not interleave.
struct StderrLogger;

impl Log for StderrLogger {
    fn enabled(&self, metadata: &Metadata) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let line = format!(
            "libvhost-user[{}]: {}: {}\n",
            std::process::id(),
            record.level().as_str().to_ascii_lowercase(),
            record.args()
        );
        // Diagnostics must never disturb the caller: a failed write is dropped.
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }

    fn flush(&self) {}
}

static LOGGER: StderrLogger = StderrLogger;
static INIT: Once = Once::new();

/// The level a value of LIBVHOST_USER_LOG selects: `None` for a value that is not one.
pub fn parse_level(value: &str) -> Option<LevelFilter> {
    match value.trim().to_ascii_lowercase().as_str() {
        "" | "off" | "0" => Some(LevelFilter::Off),
        "error" => Some(LevelFilter::Error),
        "warn" | "warning" => Some(LevelFilter::Warn),
        "info" => Some(LevelFilter::Info),
        "debug" => Some(LevelFilter::Debug),
        "trace" => Some(LevelFilter::Trace),
        _ => None,
    }
}

/// Installs the stderr logger if LIBVHOST_USER_LOG asks for it; once per process (every
/// `vu_init` calls this). A process that installed its own `log` logger keeps it.
pub fn init_from_env() {
    INIT.call_once(|| {
        let Some(value) = std::env::var_os(LOG_ENV) else { return };
        let value = value.to_string_lossy();
        match parse_level(&value) {
            Some(LevelFilter::Off) => {}
            Some(level) => {
                if log::set_logger(&LOGGER).is_ok() {
                    log::set_max_level(level);
                    TRACING.store(level >= LevelFilter::Trace, Ordering::Relaxed);
                }
            }
            None => {
                let _ = writeln!(
                    std::io::stderr(),
                    "libvhost-user[{}]: {LOG_ENV}={value:?} is not one of \
                     error, warn, info, debug, trace, off; logging stays off",
                    std::process::id()
                );
            }
        }
    });
}

fn plural(n: impl Into<u64>, one: &str, many: &str) -> String {
    let n = n.into();
    format!("{n} {}", if n == 1 { one } else { many })
}

/// One frontend request, once handled: its number, the payload size and fd count it arrived
/// with, what the handler made of it and whether the frontend asked for an ack.
pub fn request(request: u32, size: u32, fd_num: usize, outcome: Outcome, need_reply: bool) {
    if !log::log_enabled!(Level::Debug) {
        return;
    }
    let name = crate::request::request_name(request).to_str().unwrap_or("unknown");
    let outcome = match (outcome, need_reply) {
        (Outcome::Reply, _) => "replied",
        (Outcome::Done, false) => "done",
        (Outcome::Done, true) => "done, acked",
        (Outcome::Failed, false) => "refused",
        (Outcome::Failed, true) => "refused, acked as failed",
    };
    log::debug!(
        "frontend request {name} ({request}): {}, {}: {outcome}",
        plural(size, "byte", "bytes"),
        plural(fd_num as u64, "fd", "fds")
    );
}

/// The name of a backend-channel request.
pub fn backend_request_name(request: i32) -> &'static str {
    use VhostUserBackendRequest::*;
    const NAMES: [(VhostUserBackendRequest, &str); 9] = [
        (VHOST_USER_BACKEND_NONE, "VHOST_USER_BACKEND_NONE"),
        (VHOST_USER_BACKEND_IOTLB_MSG, "VHOST_USER_BACKEND_IOTLB_MSG"),
        (VHOST_USER_BACKEND_CONFIG_CHANGE_MSG, "VHOST_USER_BACKEND_CONFIG_CHANGE_MSG"),
        (VHOST_USER_BACKEND_VRING_HOST_NOTIFIER_MSG, "VHOST_USER_BACKEND_VRING_HOST_NOTIFIER_MSG"),
        (VHOST_USER_BACKEND_VRING_CALL, "VHOST_USER_BACKEND_VRING_CALL"),
        (VHOST_USER_BACKEND_VRING_ERR, "VHOST_USER_BACKEND_VRING_ERR"),
        (VHOST_USER_BACKEND_SHARED_OBJECT_ADD, "VHOST_USER_BACKEND_SHARED_OBJECT_ADD"),
        (VHOST_USER_BACKEND_SHARED_OBJECT_REMOVE, "VHOST_USER_BACKEND_SHARED_OBJECT_REMOVE"),
        (VHOST_USER_BACKEND_SHARED_OBJECT_LOOKUP, "VHOST_USER_BACKEND_SHARED_OBJECT_LOOKUP"),
    ];
    NAMES.iter().find(|(r, _)| *r as i32 == request).map_or("unknown", |(_, name)| name)
}

/// One backend-channel message sent to the frontend, and what became of it.
pub fn backend_message(request: i32, size: u32, fd_num: usize, outcome: &str) {
    if !log::log_enabled!(Level::Debug) {
        return;
    }
    log::debug!(
        "backend message {} ({request}): {}, {}: {outcome}",
        backend_request_name(request),
        plural(size, "byte", "bytes"),
        plural(fd_num as u64, "fd", "fds")
    );
}

/// Set once the logger is installed at `trace`.
static TRACING: AtomicBool = AtomicBool::new(false);

/// Whether queue events are logged: the data path asks this first (one relaxed load of a
/// flag set only at init, cheaper than `log::max_level()`) and calls the `#[cold]` trace
/// functions below only when it is true.
#[inline(always)]
pub fn tracing() -> bool {
    TRACING.load(Ordering::Relaxed)
}

/// `vu_queue_pop` on queue `qidx` returned `elem` (NULL: nothing available).
///
/// # Safety
/// `elem` is NULL or a valid element (the one vu_queue_pop just filled).
#[cold]
pub unsafe fn trace_pop(qidx: usize, elem: *const VuVirtqElement) {
    if elem.is_null() {
        log::trace!("queue {qidx}: pop: empty");
        return;
    }
    // SAFETY: non-NULL, it is valid (the caller's contract).
    let (index, out_num, in_num) = unsafe { ((*elem).index, (*elem).out_num, (*elem).in_num) };
    log::trace!("queue {qidx}: pop: head {index}, {out_num} out + {in_num} in buffers");
}

/// `vu_queue_notify(_sync)` on queue `qidx` decided `action`.
#[cold]
pub fn trace_notify(qidx: usize, action: Notify) {
    match action {
        Notify::None => log::trace!("queue {qidx}: notify: suppressed"),
        Notify::Eventfd(fd) => log::trace!("queue {qidx}: notify: call eventfd {fd}"),
        Notify::InBand { ack } => {
            log::trace!(
                "queue {qidx}: notify: in-band call{}",
                if ack { ", waits for ack" } else { "" }
            )
        }
    }
}

/// `vu_queue_fill`/`vu_queue_push` (`op`) of element `head` with `len` bytes written.
#[cold]
pub fn trace_used(qidx: usize, op: &str, head: u32, len: u32) {
    log::trace!("queue {qidx}: {op}: head {head}, {len} bytes written");
}

/// `vu_queue_flush` of `num` filled elements.
#[cold]
pub fn trace_flush(qidx: usize, num: u32) {
    log::trace!("queue {qidx}: flush: {num} elements");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels() {
        assert_eq!(parse_level("debug"), Some(LevelFilter::Debug));
        assert_eq!(parse_level(" TRACE\n"), Some(LevelFilter::Trace));
        assert_eq!(parse_level("warning"), Some(LevelFilter::Warn));
        assert_eq!(parse_level("error"), Some(LevelFilter::Error));
        assert_eq!(parse_level("info"), Some(LevelFilter::Info));
        assert_eq!(parse_level("off"), Some(LevelFilter::Off));
        assert_eq!(parse_level(""), Some(LevelFilter::Off));
        assert_eq!(parse_level("verbose"), None);
    }

    #[test]
    fn backend_request_names() {
        assert_eq!(backend_request_name(2), "VHOST_USER_BACKEND_CONFIG_CHANGE_MSG");
        assert_eq!(backend_request_name(8), "VHOST_USER_BACKEND_SHARED_OBJECT_LOOKUP");
        assert_eq!(backend_request_name(9), "unknown");
        assert_eq!(backend_request_name(-1), "unknown");
    }
}
