#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""Runs cargo for meson.build.

  cargo.py native-libs --cargo CARGO --workdir DIR
      Prints the native libraries a Rust static library needs (rustc --print
      native-static-libs on an empty crate), space separated.

  cargo.py build --cargo CARGO --objcopy OBJCOPY --source-root DIR --target-dir DIR
                 --profile release|debug --depfile FILE OUTPUT...
      Builds the workspace (libvhost-user and libvhost-user-glib) and copies the
      artifacts to the OUTPUT paths, chosen by their names:
        libvhost-user.a, libvhost-user.so.0, libvhost-user-glib.a, libvhost-user-glib.so.0
      and writes a ninja depfile listing the Rust sources cargo read.
      The static libraries are copied without their embedded LLVM bitcode (see
      strip_bitcode).

Cargo runs with a clean environment: meson and QEMU's build export variables for C
compilers (CC, CFLAGS, LDFLAGS...) and make's jobserver, none of which is meant for it.
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile

# Variables that must not leak from the calling build into cargo/rustc.
SCRUB = {
    "CC", "CXX", "CPP", "AR", "AS", "LD", "NM", "RANLIB", "STRIP", "OBJCOPY", "OBJDUMP",
    "CFLAGS", "CXXFLAGS", "CPPFLAGS", "LDFLAGS", "LIBS", "ARFLAGS",
    "RUSTFLAGS", "RUSTDOCFLAGS", "CARGO_ENCODED_RUSTFLAGS", "CARGO_ENCODED_RUSTDOCFLAGS",
    "CARGO_TARGET_DIR", "CARGO_BUILD_TARGET", "CARGO_BUILD_TARGET_DIR", "CARGO_BUILD_RUSTFLAGS",
    "CARGO_BUILD_DEP_INFO_BASEDIR", "CARGO", "CARGO_MANIFEST_DIR", "CARGO_PRIMARY_PACKAGE",
    "MAKEFLAGS", "MFLAGS", "MAKELEVEL", "CARGO_MAKEFLAGS", "MAKEOVERRIDES",
    "VHOST_USER_UPDATE_HEADER",
}
SCRUB_PREFIXES = ("CARGO_PROFILE_", "CARGO_PKG_", "CARGO_CFG_", "CARGO_FEATURE_", "DEP_")

ARTIFACTS = {
    "libvhost-user.a": "libvhost_user.a",
    "libvhost-user.so.0": "libvhost_user.so",
    "libvhost-user-glib.a": "libvhost_user_glib.a",
    "libvhost-user-glib.so.0": "libvhost_user_glib.so",
}


def clean_env(cargo):
    env = {k: v for k, v in os.environ.items()
           if k not in SCRUB and not k.startswith(SCRUB_PREFIXES)}
    # Find rustc (and rustup's proxies) beside the cargo we were given.
    bindir = os.path.dirname(os.path.abspath(cargo))
    env["PATH"] = bindir + os.pathsep + env.get("PATH", "/usr/bin:/bin")
    return env


def native_libs(args):
    env = clean_env(args.cargo)
    rustc = os.path.join(os.path.dirname(os.path.abspath(args.cargo)), "rustc")
    if not os.path.exists(rustc):
        rustc = shutil.which("rustc", path=env["PATH"]) or "rustc"
    os.makedirs(args.workdir, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        src = os.path.join(tmp, "probe.rs")
        with open(src, "w") as f:
            f.write("")
        p = subprocess.run(
            [rustc, "--crate-type", "staticlib", "--crate-name", "probe",
             "--print", "native-static-libs", "-o", os.path.join(tmp, "libprobe.a"), src],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True,
            timeout=300)
    if p.returncode != 0:
        sys.stderr.write(p.stdout)
        sys.exit("rustc failed to build a probe static library")
    for line in p.stdout.splitlines():
        _, sep, libs = line.partition("native-static-libs:")
        if sep:
            print(" ".join(libs.split()))
            return
    sys.stderr.write(p.stdout)
    sys.exit("rustc did not print native-static-libs")


def depfile_escape(path):
    return path.replace("\\", "\\\\").replace(" ", "\\ ").replace("#", "\\#").replace("$", "$$")


def read_cargo_depinfo(path):
    """The prerequisites of a cargo .d file (`targets: deps`, backslash-escaped spaces)."""
    deps = []
    with open(path) as f:
        text = f.read().replace("\\\n", " ")
    for line in text.splitlines():
        # The separator is the first ': ' not escaped.
        i = 0
        while True:
            i = line.find(": ", i)
            if i < 0 or line[i - 1] != "\\":
                break
            i += 1
        if i < 0:
            continue
        rest = line[i + 2:]
        word = ""
        j = 0
        while j < len(rest):
            c = rest[j]
            if c == "\\" and j + 1 < len(rest):
                word += rest[j + 1]
                j += 2
                continue
            if c.isspace():
                if word:
                    deps.append(word)
                word = ""
            else:
                word += c
            j += 1
        if word:
            deps.append(word)
    return deps


# The sections in which rustc embeds LLVM bitcode next to the machine code of every object
# of a static library (its own and those of the precompiled std, which cannot be rebuilt
# without them on stable Rust; `-C embed-bitcode=no` conflicts with `lto`).
BITCODE_SECTIONS = (".llvmbc", ".llvmcmd")


def strip_bitcode(objcopy, archive):
    """Removes the embedded bitcode from every member of `archive`, in place.

    binutils hands any object with an .llvmbc section to the LLVM linker plugin installed in
    bfd-plugins (Debian's llvm-*-linker-tools), which claims it as IR; bitcode from a newer
    LLVM than the plugin's makes the plugin fail, and `nm`, `ar`, `objdump`-based packaging
    tools and LTO links then see an object without symbols. Without the bitcode, every member
    is an ordinary ELF object; the machine code is unchanged.
    """
    cmd = [objcopy]
    for section in BITCODE_SECTIONS:
        cmd += ["--remove-section", section]
    p = subprocess.run(cmd + [archive], timeout=600)
    if p.returncode != 0:
        sys.exit("cargo.py: %s failed on %s (exit status %d)" % (objcopy, archive, p.returncode))


def copy_if_changed(src, dst, objcopy=None):
    """Copies src to dst (stripping bitcode with `objcopy` if given) unless the result matches
    dst already (keeps dst's mtime then)."""
    tmp = dst + ".tmp"
    shutil.copyfile(src, tmp)
    shutil.copymode(src, tmp)
    if objcopy:
        strip_bitcode(objcopy, tmp)
    if os.path.exists(dst):
        with open(tmp, "rb") as a, open(dst, "rb") as b:
            if a.read() == b.read():
                os.remove(tmp)
                return
    os.replace(tmp, dst)


def build(args):
    env = clean_env(args.cargo)
    manifest = os.path.join(args.source_root, "Cargo.toml")
    target_dir = os.path.abspath(args.target_dir)
    cmd = [args.cargo, "build", "--manifest-path", manifest, "--target-dir", target_dir,
           "--locked", "-p", "vhost-user-rs", "-p", "vhost-user-glib", "--lib"]
    if args.profile == "release":
        cmd.append("--release")
    print("cargo.py: " + " ".join(cmd), flush=True)
    p = subprocess.run(cmd, env=env, cwd=args.source_root, timeout=3600)
    if p.returncode != 0:
        sys.exit("cargo build failed (exit status %d)" % p.returncode)

    outdir = os.path.join(target_dir, args.profile)
    deps = set()
    for out in args.outputs:
        name = os.path.basename(out)
        if name not in ARTIFACTS:
            sys.exit("cargo.py: unknown output %s" % name)
        src = os.path.join(outdir, ARTIFACTS[name])
        copy_if_changed(src, out, args.objcopy if name.endswith(".a") else None)
        d = os.path.splitext(src)[0] + ".d"
        if os.path.exists(d):
            deps.update(read_cargo_depinfo(d))
    # Inputs that cargo does not list in its dep-info but that change the result.
    for extra in ("Cargo.toml", "Cargo.lock", "build.rs", "cbindgen.toml",
                  "glib/Cargo.toml", "glib/build.rs", "glib/cbindgen.toml"):
        path = os.path.join(os.path.abspath(args.source_root), extra)
        if os.path.exists(path):
            deps.add(path)
    with open(args.depfile, "w") as f:
        f.write(depfile_escape(args.outputs[0]) + ":")
        for dep in sorted(deps):
            f.write(" \\\n  " + depfile_escape(dep))
        f.write("\n")


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd")
    n = sub.add_parser("native-libs")
    n.add_argument("--cargo", required=True)
    n.add_argument("--workdir", required=True)
    b = sub.add_parser("build")
    b.add_argument("--cargo", required=True)
    b.add_argument("--objcopy", required=True)
    b.add_argument("--source-root", required=True)
    b.add_argument("--target-dir", required=True)
    b.add_argument("--profile", choices=["release", "debug"], default="release")
    b.add_argument("--depfile", required=True)
    b.add_argument("outputs", nargs="+")
    args = ap.parse_args()
    if args.cmd == "native-libs":
        native_libs(args)
    elif args.cmd == "build":
        build(args)
    else:
        ap.error("missing command")


if __name__ == "__main__":
    main()
