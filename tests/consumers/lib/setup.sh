# Installing what the tier needs and fetching QEMU sources (sourced by run.sh).
# SPDX-License-Identifier: GPL-2.0-or-later

QEMU72_SRCVER='1:7.2+dfsg-7+deb12u18'
QEMU72_TARBALL='qemu_7.2+dfsg.orig.tar.xz'
QEMU72_DIR='qemu-7.2.0'
QEMU10_SRCVER='1:10.0.2+ds-2+deb13u1~bpo12+1'
QEMU10_TARBALL='qemu_10.0.2+ds.orig.tar.xz'
QEMU10_DIR='qemu-10.0.2'

BUILD_PKGS="meson ninja-build gcc pkg-config libglib2.0-dev libpixman-1-dev libcap-ng-dev
 libseccomp-dev libiscsi-dev python3 python3-venv python3-pip busybox-static cpio xz-utils
 dpkg-dev binutils procps util-linux coreutils"
GPU_PKGS="libvirglrenderer-dev libgbm-dev libepoxy-dev libdrm-dev"

# Types: deb deb-src, and bookworm-backports in Suites, in the stanza of
# debian.sources that serves the main archive.  Idempotent.
enable_apt_sources() {
    local f=/etc/apt/sources.list.d/debian.sources
    if [ -f "$f" ]; then
        /usr/bin/python3 - "$f" <<'EOF'
import sys
path = sys.argv[1]
text = open(path).read()
stanzas = text.split("\n\n")
out = []
changed = False
for st in stanzas:
    lines = st.split("\n")
    uris = [l for l in lines if l.startswith("URIs:")]
    suites = [l for l in lines if l.startswith("Suites:")]
    is_main = any("/debian" in u and "security" not in u for u in uris) and \
        any(" bookworm" in s.replace("\t", " ") for s in suites)
    new = []
    for l in lines:
        if l.startswith("Types:"):
            types = l.split()[1:]
            if "deb-src" not in types:
                types.append("deb-src")
                changed = True
            l = "Types: " + " ".join(types)
        elif l.startswith("Suites:") and is_main:
            s = l.split()[1:]
            if "bookworm-backports" not in s:
                s.append("bookworm-backports")
                changed = True
            l = "Suites: " + " ".join(s)
        new.append(l)
    out.append("\n".join(new))
if changed:
    open(path, "w").write("\n\n".join(out))
    print("changed")
EOF
    else
        # Old-style sources.list machine: add our own list once.
        local g=/etc/apt/sources.list.d/vu-consumers.list
        if [ ! -f "$g" ]; then
            cat > "$g" <<'EOF'
deb-src http://deb.debian.org/debian bookworm main
deb http://deb.debian.org/debian bookworm-backports main
deb-src http://deb.debian.org/debian bookworm-backports main
EOF
            echo changed
        fi
    fi
}

apt_install() {
    DEBIAN_FRONTEND=noninteractive timeout 1200 apt-get install -y -q --no-install-recommends "$@"
}

# The frontends: Debian 12's qemu-system-x86 7.2 and bookworm-backports'
# 10.0.2.  Both are unpacked into the cache rather than installed: only one
# qemu-system-common can be installed at a time, and a machine may carry
# qemu-utils from bookworm-backports, which Breaks qemu-system-common 7.2.
# Their run-time library dependencies are installed normally.
FRONTENDS_ALL="7.2 10.0"
# frontend_suite FE: the apt suite FE's packages come from
frontend_suite() {
    case $1 in
        7.2) echo bookworm ;;
        10.0) echo bookworm-backports ;;
        *) die "unknown frontend $1" ;;
    esac
}
# frontend_pkgs FE: the packages unpacked for FE (10.0 wants seabios >= 1.16.3,
# which only bookworm-backports has; it is data files only)
frontend_pkgs() {
    case $1 in
        7.2) echo "qemu-system-x86 qemu-system-common qemu-system-data" ;;
        10.0) echo "qemu-system-x86 qemu-system-common qemu-system-data seabios" ;;
    esac
}
# missing_libdeps SUITE PKG...: the run-time dependencies of PKG (from
# SUITE) that are not installed, without QEMU's own packages and firmware
missing_libdeps() {
    local suite=$1 p; shift
    for p in "$@"; do
        apt-cache depends --no-recommends --no-suggests --no-conflicts --no-breaks \
            --no-replaces --no-enhances "$p/$suite" 2>/dev/null |
            awk '$1 == "Depends:" { print $2 }'
    done | grep -v -E '^(qemu-|<|seabios$|ipxe-qemu$)' |
        sort -u | while read -r p; do
        # only what is missing: never upgrade an installed library as a side effect
        dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed' || echo "$p"
    done
}

setup_host() {
    [ "$(id -u)" = 0 ] || die "the consumer tier needs root (apt-get, virtiofsd sandbox)"
    local stamp=$CACHE/.apt-done
    if [ "${VU_NO_APT:-0}" = 1 ]; then
        log "VU_NO_APT=1: not touching apt"
        return 0
    fi
    log "enabling deb-src and bookworm-backports"
    [ -x /usr/bin/python3 ] || { timeout 600 apt-get update -q && apt_install python3; } >> "$LOGDIR/apt.log" 2>&1
    enable_apt_sources >> "$LOGDIR/apt.log" 2>&1 || die "editing apt sources failed"
    log "apt-get update"
    timeout 600 apt-get update -q >> "$LOGDIR/apt.log" 2>&1 || die "apt-get update failed (see $LOGDIR/apt.log)"
    log "installing build packages"
    # shellcheck disable=SC2086
    apt_install $BUILD_PKGS >> "$LOGDIR/apt.log" 2>&1 || die "apt-get install failed (see $LOGDIR/apt.log)"
    GPU_OK=1
    # shellcheck disable=SC2086
    if ! apt_install $GPU_PKGS >> "$LOGDIR/apt.log" 2>&1; then
        GPU_OK=0
        log "vhost-user-gpu build dependencies did not install; it will be reported as SKIP"
    fi
    if [ "${VU_NO_GUEST:-0}" != 1 ]; then
        log "installing the frontends' run-time libraries, seabios, ipxe-qemu"
        local deps="" fe suite
        for fe in $FRONTENDS_ALL; do
            suite=$(frontend_suite "$fe")
            apt-cache show "qemu-system-x86/$suite" > /dev/null 2>&1 ||
                die "apt does not know qemu-system-x86/$suite"
            # shellcheck disable=SC2046
            deps="$deps $(missing_libdeps "$suite" $(frontend_pkgs "$fe"))"
        done
        # shellcheck disable=SC2086
        apt_install $(echo $deps | tr ' ' '\n' | sort -u) seabios ipxe-qemu >> "$LOGDIR/apt.log" 2>&1 ||
            die "installing the frontends' libraries failed (see $LOGDIR/apt.log)"
    fi
    touch "$stamp"
}

gpu_deps_present() {
    pkg-config --exists virglrenderer epoxy gbm 2>/dev/null
}

# fetch_source GEN: tarball into $CACHE/dl, unpacked into $CACHE/src.
fetch_source() {
    local gen=$1 srcver tarball dir
    case $gen in
        7.2)  srcver=$QEMU72_SRCVER; tarball=$QEMU72_TARBALL; dir=$QEMU72_DIR ;;
        10.0) srcver=$QEMU10_SRCVER; tarball=$QEMU10_TARBALL; dir=$QEMU10_DIR ;;
        *) die "unknown generation $gen" ;;
    esac
    mkdir -p "$CACHE/dl" "$CACHE/src"
    if [ ! -s "$CACHE/dl/$tarball" ]; then
        log "downloading QEMU $gen source ($srcver)"
        (cd "$CACHE/dl" && timeout 900 apt-get source --download-only --tar-only "qemu=$srcver") \
            >> "$LOGDIR/download.log" 2>&1 || die "apt-get source qemu=$srcver failed (see $LOGDIR/download.log)"
        [ -s "$CACHE/dl/$tarball" ] || die "apt-get source did not produce $tarball"
    fi
    local src=$CACHE/src/$dir
    if [ ! -f "$src/.vu-unpacked" ]; then
        log "unpacking $tarball"
        rm -rf "$src"
        timeout 600 tar -C "$CACHE/src" -xJf "$CACHE/dl/$tarball" || die "unpacking $tarball failed"
        [ -f "$src/subprojects/libvhost-user/meson.build" ] || die "$tarball has no subprojects/libvhost-user"
        # Keep the shipped subproject beside the slot at the same depth: its
        # include/ and standard-headers/ are relative symlinks into QEMU's tree.
        mv "$src/subprojects/libvhost-user" "$src/subprojects/libvhost-user.c-original"
        ln -s libvhost-user.c-original "$src/subprojects/libvhost-user"
        if [ "$gen" = 10.0 ]; then
            fetch_wheels
            cp "$CACHE/wheels/"meson-1.5.0-*.whl "$CACHE/wheels/"pycotap-1.3.1-*.whl "$src/python/wheels/"
        fi
        record_consumer_sums "$src"
        touch "$src/.vu-unpacked"
    fi
    SRC_DIR=$src
}

fetch_wheels() {
    mkdir -p "$CACHE/wheels"
    if ! ls "$CACHE/wheels/"meson-1.5.0-*.whl >/dev/null 2>&1 ||
       ! ls "$CACHE/wheels/"pycotap-1.3.1-*.whl >/dev/null 2>&1; then
        log "downloading meson 1.5.0 and pycotap 1.3.1 wheels"
        timeout 600 /usr/bin/python3 -m pip download --no-deps --only-binary=:all: \
            meson==1.5.0 pycotap==1.3.1 -d "$CACHE/wheels" >> "$LOGDIR/download.log" 2>&1 ||
            die "pip download of the 10.0 wheels failed (see $LOGDIR/download.log)"
    fi
}

# The guest kernel (Debian 12 cloud 6.1) and the frontend, unpacked in the cache.
fetch_guest_bits() {
    mkdir -p "$CACHE/guest/debs"
    local kpkg
    kpkg=$(apt-cache depends linux-image-cloud-amd64 2>/dev/null | awk '$1 == "Depends:" && $2 ~ /^linux-image-6\.1\./ { print $2; exit }')
    [ -n "$kpkg" ] || kpkg=$(apt-cache depends linux-image-cloud-amd64/bookworm 2>/dev/null | awk '$1 == "Depends:" && $2 ~ /^linux-image-/ { print $2; exit }')
    [ -n "$kpkg" ] || kpkg=$(ls "$CACHE/guest/" 2>/dev/null | sed -n 's/^kernel-\(linux-image-.*\)$/\1/p' | head -1)
    [ -n "$kpkg" ] || die "cannot find a linux-image-6.1 cloud kernel package"
    KROOT=$CACHE/guest/kernel-$kpkg
    if [ ! -f "$KROOT/.vu-done" ]; then
        log "downloading $kpkg"
        rm -rf "$KROOT"; mkdir -p "$KROOT"
        (cd "$CACHE/guest/debs" && rm -f "$kpkg"_*.deb && timeout 900 apt-get download "$kpkg") >> "$LOGDIR/download.log" 2>&1 ||
            die "apt-get download $kpkg failed"
        dpkg-deb -x "$CACHE/guest/debs/$kpkg"_*.deb "$KROOT" || die "dpkg-deb -x $kpkg failed"
        touch "$KROOT/.vu-done"
    fi
    KVER=$(ls "$KROOT/lib/modules" | head -1)
    KERNEL=$KROOT/boot/vmlinuz-$KVER
    [ -f "$KERNEL" ] || die "no kernel image in $KROOT"

    local fe
    for fe in $FRONTENDS; do fetch_frontend "$fe"; done
    log "guest kernel $KVER"
}

# fetch_frontend FE: FE's qemu-system-x86 unpacked in $CACHE/guest; sets
# QEMU_VERSION_<FE>.
fetch_frontend() {
    local fe=$1 suite root p
    suite=$(frontend_suite "$fe")
    root=$(frontend_root "$fe")
    if [ ! -f "$root/.vu-done" ]; then
        log "downloading qemu-system-x86 from $suite (frontend $fe)"
        rm -rf "$root" "$CACHE/guest/debs/$fe"; mkdir -p "$root" "$CACHE/guest/debs/$fe"
        (cd "$CACHE/guest/debs/$fe" &&
            for p in $(frontend_pkgs "$fe"); do timeout 900 apt-get download "$p/$suite" || exit 1; done) \
            >> "$LOGDIR/download.log" 2>&1 || die "apt-get download qemu-system-x86/$suite failed"
        for p in "$CACHE/guest/debs/$fe"/*.deb; do
            dpkg-deb -x "$p" "$root" || die "dpkg-deb -x $p failed"
        done
        touch "$root/.vu-done"
    fi
    use_frontend "$fe"
    [ -x "$QEMU_BIN" ] || die "no qemu-system-x86_64 in $root"
    local v
    v=$(QEMU_MODULE_DIR=$QEMU_MODULE_DIR "$QEMU_BIN" "${QEMU_DATA_ARGS[@]}" --version 2>&1 | head -1)
    case $v in "QEMU emulator version $fe"*) ;; *) die "frontend $fe does not run: $v" ;; esac
    printf -v "QEMU_VERSION_${fe/./_}" '%s' "$v"
    log "frontend $fe: $v"
}

frontend_root() {
    case $1 in
        7.2) echo "$CACHE/guest/qemu-system" ;;
        *) echo "$CACHE/guest/qemu-system-$1" ;;
    esac
}

# use_frontend FE: QEMU_BIN, QEMU_DATA_ARGS and QEMU_MODULE_DIR for FE.
use_frontend() {
    local root
    root=$(frontend_root "$1")
    QEMU_FE=$1
    QEMU_BIN=$root/usr/bin/qemu-system-x86_64
    # qemu-system-data's bios symlinks point at ../seabios; 10.0 brings its
    # own seabios; option ROMs come from the installed ipxe-qemu
    QEMU_DATA_ARGS=(-L "$root/usr/share/qemu")
    [ -d "$root/usr/share/seabios" ] && QEMU_DATA_ARGS+=(-L "$root/usr/share/seabios")
    QEMU_DATA_ARGS+=(-L /usr/share/seabios -L /usr/share/qemu -L /usr/lib/ipxe/qemu)
    # never the modules of an installed QEMU of another version
    QEMU_MODULE_DIR=$root/usr/lib/x86_64-linux-gnu/qemu
}
