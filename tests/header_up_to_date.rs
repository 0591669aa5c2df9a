//! The checked-in `include/libvhost-user.h` must be exactly what build.rs generates from the
//! current sources (regenerate with `VHOST_USER_UPDATE_HEADER=1 cargo build`).

use std::fs;

#[test]
fn checked_in_header_matches_fresh_generation() {
    let generated_path = env!("VHOST_USER_GENERATED_HEADER");
    let checked_in_path = concat!(env!("CARGO_MANIFEST_DIR"), "/include/libvhost-user.h");
    let generated = fs::read_to_string(generated_path).expect("read generated header");
    let checked_in = fs::read_to_string(checked_in_path).expect("read include/libvhost-user.h");
    if generated == checked_in {
        return;
    }
    let first_difference = generated
        .lines()
        .zip(checked_in.lines())
        .enumerate()
        .find(|(_, (g, c))| g != c)
        .map(|(i, (g, c))| format!("line {}:\n  generated:  {g}\n  checked in: {c}", i + 1))
        .unwrap_or_else(|| {
            format!(
                "one is a prefix of the other ({} vs {} lines)",
                generated.lines().count(),
                checked_in.lines().count()
            )
        });
    panic!(
        "include/libvhost-user.h is stale; run `VHOST_USER_UPDATE_HEADER=1 cargo build` and \
         commit it. First difference at {first_difference}"
    );
}

#[test]
fn root_forwarders_include_the_generated_headers() {
    // QEMU includes subprojects/libvhost-user/libvhost-user.h (and -glib.h) by path.
    for (file, target) in [
        ("libvhost-user.h", "#include \"include/libvhost-user.h\""),
        ("libvhost-user-glib.h", "#include \"include/libvhost-user-glib.h\""),
    ] {
        let path = format!("{}/{file}", env!("CARGO_MANIFEST_DIR"));
        let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        assert!(text.lines().any(|l| l.trim() == target), "{file} must contain {target}");
    }
}
