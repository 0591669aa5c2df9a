//! The handful of glib-2.0 declarations the wrapper needs, written from glib's public API.
//!
//! glib's ABI for these has been frozen since 2.0: `GSource` is a public struct of 96 bytes on
//! LP64 (12 pointer-sized words), `GPollFD` is `{ gint fd; gushort events; gushort revents; }`.
//! The crate's tests compile a C program against the system's `<glib.h>` to confirm both.
//!
//! None of these items is exported to C; the header generator is told to leave them out and
//! to refer to glib's own definitions instead.

#![allow(non_camel_case_types, dead_code)]

use libc::{c_char, c_int, c_uint, c_ushort, c_void};

pub type gpointer = *mut c_void;
pub type gboolean = c_int;
/// `GIOCondition` is a C enum; every value fits an `unsigned int`, which has the same ABI.
pub type GIOCondition = c_uint;
pub type GSourceFunc = Option<unsafe extern "C" fn(user_data: gpointer) -> gboolean>;
pub type GDestroyNotify = Option<unsafe extern "C" fn(data: gpointer)>;
pub type GHashFunc = Option<unsafe extern "C" fn(key: *const c_void) -> c_uint>;
pub type GEqualFunc = Option<unsafe extern "C" fn(a: *const c_void, b: *const c_void) -> gboolean>;

pub const FALSE: gboolean = 0;
pub const TRUE: gboolean = 1;
pub const G_SOURCE_CONTINUE: gboolean = TRUE;

pub const G_IO_IN: GIOCondition = 1;
pub const G_IO_OUT: GIOCondition = 4;
pub const G_IO_PRI: GIOCondition = 2;
pub const G_IO_ERR: GIOCondition = 8;
pub const G_IO_HUP: GIOCondition = 16;
pub const G_IO_NVAL: GIOCondition = 32;

/// glib's `GSource`. Only glib touches its fields; we need its size to place our own data
/// behind it, as `g_source_new()` expects.
#[repr(C)]
pub struct GSource {
    _opaque: [usize; 12],
}

/// glib's `GMainContext` (opaque).
#[repr(C)]
pub struct GMainContext {
    _opaque: [u8; 0],
}

/// glib's `GHashTable` (opaque).
#[repr(C)]
pub struct GHashTable {
    _opaque: [u8; 0],
}

/// glib's `GPollFD` (the Unix layout).
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct GPollFD {
    pub fd: c_int,
    pub events: c_ushort,
    pub revents: c_ushort,
}

/// glib's `GSourceFuncs`.
#[repr(C)]
pub struct GSourceFuncs {
    pub prepare:
        Option<unsafe extern "C" fn(source: *mut GSource, timeout: *mut c_int) -> gboolean>,
    pub check: Option<unsafe extern "C" fn(source: *mut GSource) -> gboolean>,
    pub dispatch: Option<
        unsafe extern "C" fn(
            source: *mut GSource,
            callback: GSourceFunc,
            user_data: gpointer,
        ) -> gboolean,
    >,
    pub finalize: Option<unsafe extern "C" fn(source: *mut GSource)>,
    pub closure_callback: Option<unsafe extern "C" fn()>,
    pub closure_marshal: Option<unsafe extern "C" fn()>,
}

extern "C" {
    pub fn g_source_new(source_funcs: *mut GSourceFuncs, struct_size: c_uint) -> *mut GSource;
    pub fn g_source_set_callback(
        source: *mut GSource,
        func: GSourceFunc,
        data: gpointer,
        notify: GDestroyNotify,
    );
    pub fn g_source_add_poll(source: *mut GSource, fd: *mut GPollFD);
    pub fn g_source_attach(source: *mut GSource, context: *mut GMainContext) -> c_uint;
    pub fn g_source_destroy(source: *mut GSource);
    pub fn g_source_unref(source: *mut GSource);
    pub fn g_main_context_get_thread_default() -> *mut GMainContext;

    pub fn g_hash_table_new_full(
        hash_func: GHashFunc,
        key_equal_func: GEqualFunc,
        key_destroy_func: GDestroyNotify,
        value_destroy_func: GDestroyNotify,
    ) -> *mut GHashTable;
    pub fn g_hash_table_replace(table: *mut GHashTable, key: gpointer, value: gpointer)
        -> gboolean;
    pub fn g_hash_table_remove(table: *mut GHashTable, key: *const c_void) -> gboolean;
    pub fn g_hash_table_unref(table: *mut GHashTable);

    /// What `g_assert()` calls on failure: logs "assertion failed: (expr)" and aborts.
    pub fn g_assertion_message_expr(
        domain: *const c_char,
        file: *const c_char,
        line: c_int,
        func: *const c_char,
        expr: *const c_char,
    ) -> !;
}
