//! The frontend's request codes: decoding a raw code into [`VhostUserRequest`] and the names
//! `vu_request_to_string` reports (the original's table, which also names the codes this
//! library does not handle).

use std::ffi::CStr;

use crate::abi::VhostUserRequest::{self, *};

/// Every request this library knows, indexed by its code (gaps are codes the C enum lacks).
const KNOWN: [Option<VhostUserRequest>; 42] = [
    Some(VHOST_USER_NONE),
    Some(VHOST_USER_GET_FEATURES),
    Some(VHOST_USER_SET_FEATURES),
    Some(VHOST_USER_SET_OWNER),
    Some(VHOST_USER_RESET_OWNER),
    Some(VHOST_USER_SET_MEM_TABLE),
    Some(VHOST_USER_SET_LOG_BASE),
    Some(VHOST_USER_SET_LOG_FD),
    Some(VHOST_USER_SET_VRING_NUM),
    Some(VHOST_USER_SET_VRING_ADDR),
    Some(VHOST_USER_SET_VRING_BASE),
    Some(VHOST_USER_GET_VRING_BASE),
    Some(VHOST_USER_SET_VRING_KICK),
    Some(VHOST_USER_SET_VRING_CALL),
    Some(VHOST_USER_SET_VRING_ERR),
    Some(VHOST_USER_GET_PROTOCOL_FEATURES),
    Some(VHOST_USER_SET_PROTOCOL_FEATURES),
    Some(VHOST_USER_GET_QUEUE_NUM),
    Some(VHOST_USER_SET_VRING_ENABLE),
    Some(VHOST_USER_SEND_RARP),
    Some(VHOST_USER_NET_SET_MTU),
    Some(VHOST_USER_SET_BACKEND_REQ_FD),
    Some(VHOST_USER_IOTLB_MSG),
    Some(VHOST_USER_SET_VRING_ENDIAN),
    Some(VHOST_USER_GET_CONFIG),
    Some(VHOST_USER_SET_CONFIG),
    Some(VHOST_USER_CREATE_CRYPTO_SESSION),
    Some(VHOST_USER_CLOSE_CRYPTO_SESSION),
    Some(VHOST_USER_POSTCOPY_ADVISE),
    Some(VHOST_USER_POSTCOPY_LISTEN),
    Some(VHOST_USER_POSTCOPY_END),
    Some(VHOST_USER_GET_INFLIGHT_FD),
    Some(VHOST_USER_SET_INFLIGHT_FD),
    Some(VHOST_USER_GPU_SET_SOCKET),
    None, // RESET_DEVICE: not in the C enum of this API
    Some(VHOST_USER_VRING_KICK),
    Some(VHOST_USER_GET_MAX_MEM_SLOTS),
    Some(VHOST_USER_ADD_MEM_REG),
    Some(VHOST_USER_REM_MEM_REG),
    None, // SET_STATUS
    None, // GET_STATUS
    Some(VHOST_USER_GET_SHARED_OBJECT),
];

const NAMES: [&CStr; 42] = [
    c"VHOST_USER_NONE",
    c"VHOST_USER_GET_FEATURES",
    c"VHOST_USER_SET_FEATURES",
    c"VHOST_USER_SET_OWNER",
    c"VHOST_USER_RESET_OWNER",
    c"VHOST_USER_SET_MEM_TABLE",
    c"VHOST_USER_SET_LOG_BASE",
    c"VHOST_USER_SET_LOG_FD",
    c"VHOST_USER_SET_VRING_NUM",
    c"VHOST_USER_SET_VRING_ADDR",
    c"VHOST_USER_SET_VRING_BASE",
    c"VHOST_USER_GET_VRING_BASE",
    c"VHOST_USER_SET_VRING_KICK",
    c"VHOST_USER_SET_VRING_CALL",
    c"VHOST_USER_SET_VRING_ERR",
    c"VHOST_USER_GET_PROTOCOL_FEATURES",
    c"VHOST_USER_SET_PROTOCOL_FEATURES",
    c"VHOST_USER_GET_QUEUE_NUM",
    c"VHOST_USER_SET_VRING_ENABLE",
    c"VHOST_USER_SEND_RARP",
    c"VHOST_USER_NET_SET_MTU",
    c"VHOST_USER_SET_BACKEND_REQ_FD",
    c"VHOST_USER_IOTLB_MSG",
    c"VHOST_USER_SET_VRING_ENDIAN",
    c"VHOST_USER_GET_CONFIG",
    c"VHOST_USER_SET_CONFIG",
    c"VHOST_USER_CREATE_CRYPTO_SESSION",
    c"VHOST_USER_CLOSE_CRYPTO_SESSION",
    c"VHOST_USER_POSTCOPY_ADVISE",
    c"VHOST_USER_POSTCOPY_LISTEN",
    c"VHOST_USER_POSTCOPY_END",
    c"VHOST_USER_GET_INFLIGHT_FD",
    c"VHOST_USER_SET_INFLIGHT_FD",
    c"VHOST_USER_GPU_SET_SOCKET",
    c"VHOST_USER_RESET_DEVICE",
    c"VHOST_USER_VRING_KICK",
    c"VHOST_USER_GET_MAX_MEM_SLOTS",
    c"VHOST_USER_ADD_MEM_REG",
    c"VHOST_USER_REM_MEM_REG",
    c"VHOST_USER_SET_STATUS",
    c"VHOST_USER_GET_STATUS",
    c"VHOST_USER_GET_SHARED_OBJECT",
];

impl VhostUserRequest {
    /// The request with this code, or `None` for codes the C enum does not name.
    #[inline]
    pub fn from_raw(code: u32) -> Option<VhostUserRequest> {
        KNOWN.get(code as usize).copied().flatten()
    }
}

/// The name of a request code, "unknown" past the end of the table.
pub fn request_name(code: u32) -> &'static CStr {
    NAMES.get(code as usize).copied().unwrap_or(c"unknown")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_known_code_decodes_to_itself() {
        for code in 0..64u32 {
            if let Some(r) = VhostUserRequest::from_raw(code) {
                assert_eq!(r as u32, code);
                let expected = format!("{r:?}");
                assert_eq!(request_name(code).to_str().unwrap(), expected);
            }
        }
    }

    #[test]
    fn unknown_codes() {
        assert_eq!(VhostUserRequest::from_raw(34), None);
        assert_eq!(VhostUserRequest::from_raw(42), None);
        assert_eq!(VhostUserRequest::from_raw(u32::MAX), None);
        assert_eq!(request_name(34), c"VHOST_USER_RESET_DEVICE");
        assert_eq!(request_name(42), c"unknown");
        assert_eq!(request_name(u32::MAX), c"unknown");
    }
}
