// SPDX-License-Identifier: GPL-2.0-or-later
//! The functions a generated header declares (shared by tests/exports.rs and
//! tests/meson_install.rs, which include this file by path).

use std::collections::BTreeSet;

/// Removes `/* */` and `//` comments.
pub fn strip_comments(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix("/*") {
            rest = r.find("*/").map_or("", |end| &r[end + 2..]);
            out.push(' ');
        } else if let Some(r) = rest.strip_prefix("//") {
            rest = r.find('\n').map_or("", |end| &r[end..]);
        } else {
            let c = rest.chars().next().unwrap();
            out.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    out
}

/// The functions declared in the header's `extern "C"` block: for each declaration (up to
/// `;`), the identifier before its first `(`.
pub fn declared_functions(header: &str) -> BTreeSet<String> {
    let start = header.find("extern \"C\" {").expect("extern \"C\" block") + "extern \"C\" {".len();
    let end = start + header[start..].find("}  // extern \"C\"").expect("end of extern \"C\"");
    let block = strip_comments(&header[start..end]);
    let mut names = BTreeSet::new();
    for decl in block.split(';') {
        let decl: String = decl.lines().filter(|l| !l.trim_start().starts_with('#')).collect();
        let Some(paren) = decl.find('(') else { continue };
        let name: String = decl[..paren]
            .trim_end()
            .chars()
            .rev()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        assert!(!name.is_empty(), "cannot parse declaration {decl:?}");
        assert!(names.insert(name.clone()), "{name} declared twice");
    }
    names
}
