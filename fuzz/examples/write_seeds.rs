// SPDX-License-Identifier: GPL-2.0-or-later
//! Writes every target's seed inputs to fuzz/corpus/<target>/seed-<name> (the committed seed
//! corpora): `cargo run --example write_seeds` in fuzz/.
use std::path::Path;

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    for t in &vhost_user_fuzz::targets::TARGETS {
        let dir = root.join(t.name);
        std::fs::create_dir_all(&dir).unwrap();
        for (name, bytes) in (t.seeds)() {
            std::fs::write(dir.join(format!("seed-{name}")), bytes).unwrap();
        }
    }
}
