// SPDX-License-Identifier: GPL-2.0-or-later
//! Runs inputs of a target without the fuzzer (debugging): `cargo run --example replay --
//! TARGET FILE_OR_DIR...`; VUFUZZ_VERBOSE=1 prints the library's panic messages,
//! VUFUZZ_DUMP=1 the decoded scenario.
fn main() {
    let mut args = std::env::args().skip(1);
    let target = args.next().expect("usage: replay TARGET FILE_OR_DIR...");
    for a in args {
        let p = std::path::Path::new(&a);
        let files: Vec<_> = if p.is_dir() {
            let mut v: Vec<_> = std::fs::read_dir(p).unwrap().map(|e| e.unwrap().path()).collect();
            v.sort();
            v
        } else {
            vec![p.to_path_buf()]
        };
        for f in files {
            eprintln!("== {}", f.display());
            let data = std::fs::read(&f).unwrap();
            if std::env::var_os("VUFUZZ_DUMP").is_some() {
                let t = vhost_user_fuzz::targets::TARGETS.iter().find(|t| t.name == target);
                eprintln!("{:#?}", (t.expect("unknown target").decode)(&data));
            }
            vhost_user_fuzz::targets::run(&target, &data);
        }
    }
}
