# Configuring and building QEMU's libvhost-user consumers (sourced by run.sh).
# SPDX-License-Identifier: GPL-2.0-or-later

configure_flags() {
    local gen=$1
    local f="--without-default-features --without-default-devices --target-list= --disable-system
 --disable-user --enable-tools --enable-vhost-user --enable-vhost-user-blk-server --enable-seccomp
 --enable-cap-ng --disable-docs --disable-install-blobs --enable-libiscsi"
    case $gen in
        7.2)  f="$f --enable-virtiofsd --with-git-submodules=ignore" ;;
        10.0) f="$f --disable-download" ;;
    esac
    if [ "${GPU_OK:-0}" = 1 ]; then
        f="$f --enable-virglrenderer --enable-opengl"
        [ "$gen" = 10.0 ] && f="$f --enable-pixman"
    fi
    echo $f
}

# consumer name -> ninja target, per generation
consumer_targets() {
    local gen=$1
    echo "vhost-user-blk contrib/vhost-user-blk/vhost-user-blk"
    echo "vhost-user-input contrib/vhost-user-input/vhost-user-input"
    echo "vhost-user-scsi contrib/vhost-user-scsi/vhost-user-scsi"
    echo "vhost-user-gpu contrib/vhost-user-gpu/vhost-user-gpu"
    echo "vhost-user-bridge tests/vhost-user-bridge"
    [ "$gen" = 7.2 ] && echo "virtiofsd tools/virtiofsd/virtiofsd"
    echo "qemu-storage-daemon storage-daemon/qemu-storage-daemon"
    echo "link-test subprojects/libvhost-user/link-test"
}

# Checksums of everything in the QEMU tree except the library slot, taken
# at unpack time; checked before every build (consumers are never modified).
consumer_sums_file() { echo "$1/.vu-consumer-sums"; }
record_consumer_sums() {
    local src=$1
    (cd "$src" && find . -path "./build*" -prune -o -path './subprojects/libvhost-user*' -prune \
        -o -name '.vu-*' -prune -o -type f -print0 | sort -z | xargs -0 sha256sum) > "$(consumer_sums_file "$src")"
}
check_consumer_sums() {
    local src=$1 f
    f=$(consumer_sums_file "$src")
    [ -s "$f" ] || record_consumer_sums "$src"
    (cd "$src" && sha256sum -c --quiet "$f") > "$LOGDIR/sums.log" 2>&1
}

# What implementation of libvhost-user did BIN link?  Prints "rust", "c",
# or "none" (no vu_init at all).  Looks at the binary and at any shared
# library of its that carries vu_init.
lib_evidence() {
    local bin=$1 syms libs l
    syms=$(nm "$bin" 2>/dev/null; nm -D --defined-only "$bin" 2>/dev/null)
    libs=$(ldd "$bin" 2>/dev/null | awk '$3 ~ /^\// { print $3 }')
    for l in $libs; do
        if grep -q ' T vu_init$' <<< "$(nm -D --defined-only "$l" 2>/dev/null)"; then
            syms="$syms
$(nm -D --defined-only "$l" 2>/dev/null; nm "$l" 2>/dev/null)"
        fi
    done
    # here-strings, not pipes: with pipefail, grep -q closing early would
    # make a printf pipeline fail at random
    if ! grep -q -E ' [TtWi] vu_init$' <<< "$syms"; then
        echo none
    elif grep -q -E ' (rust_begin_unwind|rust_eh_personality|__rust_alloc|__rust_dealloc|_ZN[0-9A-Za-z_$.]*17h[0-9a-f]{16}E|_R[NCM][0-9A-Za-z_]+)$' <<< "$syms"; then
        echo rust
    else
        echo c
    fi
}

# Copies BIN into DIR; shared libraries it takes from the build trees go to
# DIR/lib (used through LD_LIBRARY_PATH by the tests and consumers.env).
collect_binary() {
    local bin=$1 dir=$2 l
    mkdir -p "$dir/lib"
    cp -f "$bin" "$dir/"
    for l in $(ldd "$bin" 2>/dev/null | awk '$3 ~ /^\// { print $3 }'); do
        case $l in
            "$CACHE"/*|"$REPO"/*|"$OURS"/*|"${CARGO_TARGET_DIR:-/nonexistent}"/*) cp -fL "$l" "$dir/lib/" ;;
        esac
    done
}

# The tree that stands in for subprojects/libvhost-user for LIB.
slot_target() {
    case $1 in
        c-original) echo libvhost-user.c-original ;;
        ours) echo "$OURS" ;;
    esac
}

# Points subprojects/libvhost-user at the implementation for LIB.
swap_library() {
    local src=$1 want cur
    want=$(slot_target "$2")
    cur=$(readlink "$src/subprojects/libvhost-user" 2>/dev/null || true)
    if [ "$cur" != "$want" ]; then
        rm -f "$src/subprojects/libvhost-user"
        ln -s "$want" "$src/subprojects/libvhost-user"
    fi
}

# build_consumers GEN LIB: records one build result per consumer, fills
# BIN_DIR with what built.
build_consumers() {
    local gen=$1 lib=$2 src=$SRC_DIR bdir t0 flags
    bdir=$src/build-$lib
    rm -rf "$src/build"   # the single shared build directory of older versions
    BIN_DIR=$CACHE/bin/$gen/$lib
    rm -rf "$BIN_DIR"; mkdir -p "$BIN_DIR"
    local blog=$LOGDIR/build-$gen-$lib.log
    : > "$blog"

    if ! check_consumer_sums "$src"; then
        die "QEMU $gen consumer sources differ from the tarball (see $LOGDIR/sums.log); delete $src"
    fi
    if [ "$lib" = ours ] && [ ! -f "$OURS/meson.build" ]; then
        local c t
        while read -r c t; do
            result FAIL "build/$gen/$lib/$c" "the repository has no meson.build to stand in for subprojects/libvhost-user" "$c" "$gen" "$lib" build
        done < <(consumer_targets "$gen")
        return 0
    fi

    # One source tree per generation, one build directory per library: the
    # two libraries' vhost_user_dep differ in include flags, which would make
    # a shared build directory recompile most of libqemuutil at every swap.
    # The slot is pointed at LIB before LIB's build directory is used, so
    # each build directory only ever sees its own library there.
    swap_library "$src" "$lib"
    flags=$(configure_flags "$gen")
    t0=$(date +%s)
    local need_conf=0
    [ -f "$bdir/build.ninja" ] || need_conf=1
    [ "$(cat "$bdir/.vu-flags" 2>/dev/null)" = "$flags" ] || need_conf=1
    # another checkout as "ours": mtimes cannot be trusted, start afresh
    [ "$(cat "$bdir/.vu-slot" 2>/dev/null)" = "$(slot_target "$lib")" ] || need_conf=1
    if [ "$need_conf" = 1 ]; then
        log "configuring QEMU $gen for $lib"
        rm -rf "$bdir"; mkdir -p "$bdir"
        # shellcheck disable=SC2086
        if ! (cd "$bdir" && PATH=$SYS_PATH timeout 900 ../configure $flags) >> "$blog" 2>&1; then
            rm -f "$bdir/build.ninja"
            local c t
            while read -r c t; do
                result FAIL "build/$gen/$lib/$c" "configure failed (see $blog)" "$c" "$gen" "$lib" build
            done < <(consumer_targets "$gen")
            return 0
        fi
        echo "$flags" > "$bdir/.vu-flags"
        slot_target "$lib" > "$bdir/.vu-slot"
    fi

    local names=() targets=() c t
    while read -r c t; do
        if [ "$c" = vhost-user-gpu ] && [ "${GPU_OK:-0}" != 1 ]; then
            result SKIP "build/$gen/$lib/$c" "build dependencies (virglrenderer, epoxy, gbm) not installable" "$c" "$gen" "$lib" build
            continue
        fi
        names+=("$c"); targets+=("$t")
        rm -f "$bdir/$t"   # a stale binary must not count
    done < <(consumer_targets "$gen")

    log "building QEMU $gen consumers against $lib"
    PATH=$SYS_PATH timeout 1800 ninja -C "$bdir" -k 0 "${targets[@]}" >> "$blog" 2>&1 || true
    log "QEMU $gen / $lib build took $(( $(date +%s) - t0 )) s"

    local i ev
    for i in "${!names[@]}"; do
        c=${names[$i]}; t=${targets[$i]}
        if [ ! -x "$bdir/$t" ]; then
            local why
            why=$(grep -m1 -E "error:|undefined reference|ERROR:" "$blog" | cut -c1-200)
            result FAIL "build/$gen/$lib/$c" "did not build unchanged${why:+: $why} (see $blog)" "$c" "$gen" "$lib" build
            continue
        fi
        ev=$(lib_evidence "$bdir/$t")
        case "$lib:$ev" in
            c-original:c|ours:rust)
                collect_binary "$bdir/$t" "$BIN_DIR"
                result PASS "build/$gen/$lib/$c" "" "$c" "$gen" "$lib" build ;;
            *)
                result FAIL "build/$gen/$lib/$c" "built, but the linked libvhost-user looks like '$ev', not $lib" "$c" "$gen" "$lib" build ;;
        esac
    done
}
