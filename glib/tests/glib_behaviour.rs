//! What vug_* do, observed from C through a glib main loop: sources on the thread-default
//! context, the watch callbacks vug_init() installs, dispatching from the socket, the panic
//! message, vug_deinit() dropping every source.

mod common;

use common::*;
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

const PROGRAM: &str = r#"
#include "libvhost-user-glib.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>

#define CHECK(e) do { if (!(e)) { fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #e); exit(1); } } while (0)

static int calls;
static VuDev *last_dev;
static int last_cond;
static void *last_data;

static void watch_cb(VuDev *dev, int cond, void *data)
{
    calls++;
    last_dev = dev;
    last_cond = cond;
    last_data = data;
}

static int other_calls;
static void other_cb(VuDev *dev, int cond, void *data)
{
    other_calls++;
}

static char panics[8][256];
static int npanics;
static void on_panic(VuDev *dev, const char *msg)
{
    if (npanics < 8) {
        snprintf(panics[npanics], sizeof(panics[0]), "%s", msg);
    }
    npanics++;
}

static const VuDevIface iface;

/* Runs the context until nothing is pending (bounded). */
static void drain(GMainContext *ctx)
{
    int i;
    for (i = 0; i < 100 && g_main_context_iteration(ctx, FALSE); i++) {
    }
}

static void pipe_readable(int p[2])
{
    CHECK(pipe(p) == 0);
    CHECK(write(p[1], "x", 1) == 1);
}

static int source_on_pipe(void)
{
    VugDev dev;
    int p[2];
    int tag;
    GSource *src;

    memset(&dev, 0, sizeof(dev));
    pipe_readable(p);
    src = vug_source_new(&dev, p[0], G_IO_IN, watch_cb, &tag);
    CHECK(src != NULL);
    CHECK(g_source_get_context(src) == g_main_context_default());
    drain(NULL);
    CHECK(calls > 0);
    CHECK(last_dev == &dev.parent);
    CHECK(last_data == &tag);
    CHECK(last_cond & G_IO_IN);
    /* A pipe that is not readable does not dispatch for G_IO_IN. */
    {
        int q[2];
        GSource *idle;
        CHECK(pipe(q) == 0);
        calls = 0;
        vug_source_destroy(src);
        idle = vug_source_new(&dev, q[0], G_IO_IN, watch_cb, NULL);
        drain(NULL);
        CHECK(calls == 0);
        CHECK(write(q[1], "y", 1) == 1);
        drain(NULL);
        CHECK(calls > 0);
        vug_source_destroy(idle);
    }
    /* After vug_source_destroy() nothing dispatches. */
    calls = 0;
    drain(NULL);
    CHECK(calls == 0);
    vug_source_destroy(NULL);
    return 0;
}

static int source_on_thread_default_context(void)
{
    VugDev dev;
    int p[2];
    GMainContext *ctx = g_main_context_new();
    GSource *src;

    memset(&dev, 0, sizeof(dev));
    pipe_readable(p);
    g_main_context_push_thread_default(ctx);
    src = vug_source_new(&dev, p[0], G_IO_IN, watch_cb, NULL);
    g_main_context_pop_thread_default(ctx);
    CHECK(g_source_get_context(src) == ctx);
    drain(NULL);
    CHECK(calls == 0);
    drain(ctx);
    CHECK(calls > 0);
    vug_source_destroy(src);
    g_main_context_unref(ctx);
    return 0;
}

static int init_sets_up_watches(void)
{
    VugDev dev;
    int sv[2], p[2], tag;

    memset(&dev, 0, sizeof(dev));
    CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
    CHECK(vug_init(&dev, 2, sv[0], on_panic, &iface));
    CHECK(dev.parent.sock == sv[0]);
    CHECK(dev.parent.set_watch != NULL && dev.parent.remove_watch != NULL);
    CHECK(dev.parent.panic == on_panic);
    CHECK(dev.fdmap != NULL && dev.src != NULL);
    CHECK(g_source_get_context(dev.src) == g_main_context_default());
    CHECK(g_hash_table_size(dev.fdmap) == 0);

    /* set_watch: a source per fd, kept in fdmap. */
    pipe_readable(p);
    dev.parent.set_watch(&dev.parent, p[0], VU_WATCH_IN, watch_cb, &tag);
    CHECK(g_hash_table_size(dev.fdmap) == 1);
    CHECK(g_hash_table_lookup(dev.fdmap, GINT_TO_POINTER(p[0])) != NULL);
    drain(NULL);
    CHECK(calls > 0 && last_dev == &dev.parent && last_data == &tag && (last_cond & VU_WATCH_IN));

    /* set_watch on the same fd replaces (and destroys) the previous source. */
    calls = 0;
    dev.parent.set_watch(&dev.parent, p[0], VU_WATCH_IN, other_cb, NULL);
    CHECK(g_hash_table_size(dev.fdmap) == 1);
    drain(NULL);
    CHECK(calls == 0 && other_calls > 0);

    /* remove_watch drops it. */
    other_calls = 0;
    dev.parent.remove_watch(&dev.parent, p[0]);
    CHECK(g_hash_table_size(dev.fdmap) == 0);
    drain(NULL);
    CHECK(other_calls == 0);
    /* Removing an fd that is not watched is harmless. */
    dev.parent.remove_watch(&dev.parent, p[1]);

    /* vug_deinit drops every source, the socket's and the watches'. */
    dev.parent.set_watch(&dev.parent, p[0], VU_WATCH_IN, watch_cb, NULL);
    calls = 0;
    vug_deinit(&dev);
    {
        /* A message arriving after vug_deinit is not dispatched. */
        static const char junk[12] = { 1 };
        CHECK(write(sv[1], junk, sizeof(junk)) == sizeof(junk));
    }
    drain(NULL);
    CHECK(calls == 0);
    CHECK(npanics == 0);
    /* Consumers may still call vu_deinit afterwards. */
    vu_deinit(&dev.parent);
    return 0;
}

static int dispatch_failure_panics(void)
{
    VugDev dev;
    int sv[2];
    /* A header announcing a payload larger than any message: reading it fails. */
    uint32_t hdr[3] = { 1 /* GET_FEATURES */, 1 /* version */, 4096 };

    memset(&dev, 0, sizeof(dev));
    CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
    CHECK(vug_init(&dev, 1, sv[0], on_panic, &iface));
    drain(NULL);
    CHECK(npanics == 0);
    CHECK(write(sv[1], hdr, sizeof(hdr)) == sizeof(hdr));
    CHECK(g_main_context_iteration(NULL, TRUE));
    CHECK(npanics >= 1);
    CHECK(strcmp(panics[npanics - 1], "Error processing vhost message") == 0);
    vug_deinit(&dev);
    vu_deinit(&dev.parent);
    close(sv[1]);
    return 0;
}

int main(int argc, char **argv)
{
    const char *c = argc > 1 ? argv[1] : "";
    int rc = 2;

    if (!strcmp(c, "source_on_pipe")) rc = source_on_pipe();
    else if (!strcmp(c, "source_on_thread_default_context")) rc = source_on_thread_default_context();
    else if (!strcmp(c, "init_sets_up_watches")) rc = init_sets_up_watches();
    else if (!strcmp(c, "dispatch_failure_panics")) rc = dispatch_failure_panics();
    else fprintf(stderr, "unknown case %s\n", c);
    if (rc == 0) printf("ok %s\n", c);
    return rc;
}
"#;

fn program() -> &'static PathBuf {
    static EXE: OnceLock<PathBuf> = OnceLock::new();
    EXE.get_or_init(|| compile_c("vug_behaviour", PROGRAM))
}

fn run_case(case: &str) {
    let out = run_bounded(Command::new(program()).arg(case), Duration::from_secs(60));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains(&format!("ok {case}")),
        "case {case} failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn source_new_dispatches_on_the_default_context_until_destroyed() {
    run_case("source_on_pipe");
}

#[test]
fn source_new_attaches_to_the_thread_default_context() {
    run_case("source_on_thread_default_context");
}

#[test]
fn init_installs_glib_watches_and_deinit_removes_them() {
    run_case("init_sets_up_watches");
}

#[test]
fn dispatch_failure_calls_panic_with_the_original_message() {
    run_case("dispatch_failure_panics");
}
