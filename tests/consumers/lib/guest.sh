# Real-frontend tests: Debian 12's qemu-system-x86_64 (TCG) boots Debian's
# cloud kernel with a busybox initramfs against a consumer backend
# (sourced by run.sh).
# SPDX-License-Identifier: GPL-2.0-or-later

GUEST_MODULES="virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci
 virtio_blk fuse virtiofs failover net_failover virtio_net"
GUEST_TIMEOUT=${VU_GUEST_TIMEOUT:-150}
BACKEND_TIMEOUT=$((GUEST_TIMEOUT + 60))

make_initramfs() {
    local key dir m f
    key=$(cat "$TIER_DIR/guest/init" /bin/busybox | sha256sum | cut -c1-12)
    INITRD=$CACHE/guest/initramfs-$KVER-$key.cpio.gz
    [ -s "$INITRD" ] && return 0
    log "generating the guest initramfs"
    dir=$CACHE/guest/initramfs-tree
    rm -rf "$dir"; mkdir -p "$dir/bin" "$dir/lib/modules"
    cp /bin/busybox "$dir/bin/busybox"
    cp "$TIER_DIR/guest/init" "$dir/init"; chmod 755 "$dir/init"
    for m in $GUEST_MODULES; do
        f=$(find "$KROOT/lib/modules/$KVER" -name "$m.ko" -o -name "$m.ko.xz" -o -name "$m.ko.zst" -o -name "$m.ko.gz" | head -1)
        [ -n "$f" ] || { log "module $m not found (built in?)"; continue; }
        case $f in
            *.xz) xz -dc "$f" > "$dir/lib/modules/$m.ko" ;;
            *.zst) zstd -dcq "$f" > "$dir/lib/modules/$m.ko" ;;
            *.gz) gzip -dc "$f" > "$dir/lib/modules/$m.ko" ;;
            *) cp "$f" "$dir/lib/modules/$m.ko" ;;
        esac
    done
    (cd "$dir" && find . | LC_ALL=C sort | cpio -o -H newc --quiet | gzip -1) > "$INITRD.tmp" ||
        die "cpio failed"
    mv "$INITRD.tmp" "$INITRD"
    rm -rf "$dir"
}

# run_guest DIR SMP "KERNEL ARGS" QEMU-ARGS...: boots the guest, returns
# QEMU's exit status (124/137: killed by the timeout).
run_guest() {
    local dir=$1 smp=$2 kargs=$3; shift 3
    local rc=0
    timeout -k 5 "$GUEST_TIMEOUT" "$QEMU_BIN" "${QEMU_DATA_ARGS[@]}" \
        -accel tcg -machine q35,memory-backend=mem \
        -object memory-backend-memfd,id=mem,size=512M,share=on -m 512M -smp "$smp" \
        -nodefaults -display none -serial "file:$dir/console.log" -no-reboot \
        -kernel "$KERNEL" -initrd "$INITRD" \
        -append "console=ttyS0 panic=-1 quiet $kargs" "$@" > "$dir/qemu.log" 2>&1 &
    local pid=$!
    track_pid "$pid"
    wait "$pid" || rc=$?
    untrack_pid "$pid"
    return "$rc"
}

# guest_value DIR NONCE KEY...: the rest of the first "VU NONCE KEY..." line
guest_value() {
    local dir=$1 n=$2; shift 2
    local key="$*"
    tr -d '\r' < "$dir/console.log" | awk -v p="VU $n $key " '
        !done && index($0, p) == 1 { print substr($0, length(p) + 1); done = 1 }'
}
guest_has() { grep -q -x "VU $2 $3" <<< "$(tr -d '\r' < "$1/console.log")"; }

# the pattern the guest writes (same commands, same bytes)
host_pattern() { seq 1 $(( $2 / 8 + 1 )) | sed "s/\$/ $1 $3/" | head -c "$2"; }
md5() { md5sum | cut -d' ' -f1; }

# start_backend DIR NAME CMD...: background, bounded, tracked; sets BPID
start_backend() {
    local dir=$1 name=$2; shift 2
    timeout -k 5 "$BACKEND_TIMEOUT" "$@" > "$dir/$name.log" 2>&1 &
    BPID=$!
    track_pid "$BPID"
}

tail_logs() {
    local dir=$1 f
    for f in "$dir"/*.log; do
        [ -s "$f" ] || continue
        echo "---- $f (last 15 lines)"
        tail -n 15 "$f" | tr -d '\r'
    done
}

# ---------------------------------------------------------------- blk
# test_blk GEN LIB BACKEND(vhost-user-blk|qemu-storage-daemon) QUEUES
test_blk() {
    local gen=$1 lib=$2 backend=$3 nq=$4
    local name="guest/$gen/$lib/$backend/blk-q$nq"
    local bin=$CACHE/bin/$gen/$lib/$backend
    if [ ! -x "$bin" ]; then
        result SKIP "$name" "$backend did not build" "$backend" "$gen" "$lib"; return
    fi
    local dir=$RUNDIR/$gen-$lib-$backend-blk-q$nq n fails=()
    rm -rf "$dir"; mkdir -p "$dir"
    n=$(nonce)
    local MiB=1048576
    host_pattern host "$MiB" "$n" > "$dir/disk.img"
    truncate -s 32M "$dir/disk.img"
    local hostmd5; hostmd5=$(head -c "$MiB" "$dir/disk.img" | md5)

    local sock=$dir/blk.sock
    if [ "$backend" = vhost-user-blk ]; then
        LD_LIBRARY_PATH=$CACHE/bin/$gen/$lib/lib start_backend "$dir" backend "$bin" -s "$sock" -b "$dir/disk.img"
    else
        LD_LIBRARY_PATH=$CACHE/bin/$gen/$lib/lib start_backend "$dir" backend "$bin" \
            --blockdev "driver=file,node-name=f0,filename=$dir/disk.img" \
            --export "type=vhost-user-blk,id=e0,node-name=f0,addr.type=unix,addr.path=$sock,writable=on,num-queues=$nq"
    fi
    local bpid=$BPID
    if ! wait_for_socket "$sock" 20 "$bpid"; then
        stop_pid "$bpid"
        result FAIL "$name" "backend did not listen on its socket" "$backend" "$gen" "$lib"
        tail_logs "$dir"; return
    fi
    local qrc=0
    run_guest "$dir" "$nq" "vu_test=blk vu_nonce=$n vu_queues=$nq" \
        -chardev "socket,id=c0,path=$sock" \
        -device "vhost-user-blk-pci,chardev=c0,num-queues=$nq" || qrc=$?
    local brc=0
    if [ "$backend" = vhost-user-blk ]; then
        # contrib vhost-user-blk ends by itself when the frontend goes away
        wait_pid_bounded "$bpid" 20 || brc=$?
    else
        kill -TERM "$bpid" 2>/dev/null
        wait_pid_bounded "$bpid" 20 || brc=$?
    fi

    [ "$qrc" = 0 ] || fails+=("qemu exit status $qrc")
    [ "$brc" = 0 ] || fails+=("backend exit status $brc")
    guest_has "$dir" "$n" END || fails+=("guest did not finish")
    # contrib vhost-user-blk does not offer VIRTIO_BLK_F_MQ (config
    # num_queues = 1), so the guest drives one queue whatever QEMU's
    # num-queues; its two writers then share that queue.
    local want_nq=$nq
    [ "$backend" = vhost-user-blk ] && want_nq=1
    [ "$(guest_value "$dir" "$n" nq)" = "$want_nq" ] || fails+=("guest sees $(guest_value "$dir" "$n" nq) queues, want $want_nq")
    [ "$(guest_value "$dir" "$n" sectors)" = $((32 * 2048)) ] || fails+=("capacity $(guest_value "$dir" "$n" sectors) sectors")
    [ "$(guest_value "$dir" "$n" hostmd5)" = "$hostmd5" ] || fails+=("guest read of host data differs")
    local q exp
    for ((q = 0; q < nq; q++)); do
        exp=$(host_pattern "q$q" $((4 * MiB)) "$n" | md5)
        [ "$(guest_value "$dir" "$n" patmd5 "q$q")" = "$exp" ] || fails+=("guest pattern q$q differs from host's")
        [ "$(guest_value "$dir" "$n" write "q$q" rc)" = 0 ] || fails+=("guest write q$q failed")
        [ "$(guest_value "$dir" "$n" readback "q$q")" = "$exp" ] || fails+=("guest read-back q$q differs")
        [ "$(dd if="$dir/disk.img" bs=$MiB skip=$((1 + 8 * q)) count=4 2>/dev/null | md5)" = "$exp" ] ||
            fails+=("image on the host lacks the guest's q$q data")
    done
    if [ ${#fails[@]} = 0 ]; then
        result PASS "$name" "" "$backend" "$gen" "$lib"
        rm -f "$dir/disk.img"
    else
        result FAIL "$name" "$(IFS=';'; echo "${fails[*]}")" "$backend" "$gen" "$lib"
        tail_logs "$dir"
    fi
}

# ---------------------------------------------------------------- fs
test_fs() {
    local gen=$1 lib=$2
    local name="guest/$gen/$lib/virtiofsd/fs"
    local bin=$CACHE/bin/$gen/$lib/virtiofsd
    if [ "$gen" != 7.2 ]; then return; fi
    if [ ! -x "$bin" ]; then
        result SKIP "$name" "virtiofsd did not build" virtiofsd "$gen" "$lib"; return
    fi
    local dir=$RUNDIR/$gen-$lib-virtiofsd-fs n fails=()
    rm -rf "$dir"; mkdir -p "$dir/share/empty-dir"
    n=$(nonce)
    local share=$dir/share
    host_pattern hostfile 200000 "$n" > "$share/hostfile.txt"
    echo "rename me $n" > "$share/rename-me.txt"
    echo "delete me $n" > "$share/delete-me.txt"
    local hostmd5; hostmd5=$(md5 < "$share/hostfile.txt")
    local sock=$dir/fs.sock
    LD_LIBRARY_PATH=$CACHE/bin/$gen/$lib/lib start_backend "$dir" backend "$bin" \
        "--socket-path=$sock" -o "source=$share" -o cache=auto -o sandbox=namespace
    local bpid=$BPID
    if ! wait_for_socket "$sock" 20 "$bpid"; then
        stop_pid "$bpid"
        result FAIL "$name" "virtiofsd did not listen on its socket" virtiofsd "$gen" "$lib"
        tail_logs "$dir"; return
    fi
    local qrc=0
    run_guest "$dir" 1 "vu_test=fs vu_nonce=$n vu_tag=vutag" \
        -chardev "socket,id=c0,path=$sock" \
        -device "vhost-user-fs-pci,chardev=c0,tag=vutag" || qrc=$?
    local brc=0
    wait_pid_bounded "$bpid" 20 || brc=$?

    [ "$qrc" = 0 ] || fails+=("qemu exit status $qrc")
    [ "$brc" = 0 ] || fails+=("virtiofsd exit status $brc")
    guest_has "$dir" "$n" END || fails+=("guest did not finish")
    [ "$(guest_value "$dir" "$n" hostfile)" = "$hostmd5" ] || fails+=("guest read of the host file differs")
    local op
    for op in mkdir-rename rename unlink rmdir umount; do
        [ "$(guest_value "$dir" "$n" ops "$op")" = 0 ] || fails+=("guest $op failed")
    done
    [ "$(cat "$share/new.txt" 2>/dev/null)" = "written by the guest $n" ] || fails+=("new.txt wrong on the host")
    [ "$(md5 < "$share/big.bin" 2>/dev/null)" = "$(host_pattern big 1048576 "$n" | md5)" ] || fails+=("big.bin wrong on the host")
    [ "$(guest_value "$dir" "$n" bigmd5)" = "$(host_pattern big 1048576 "$n" | md5)" ] || fails+=("guest read-back of big.bin differs")
    [ "$(cat "$share/dir1/b" 2>/dev/null)" = "inner $n" ] || fails+=("dir1/b wrong on the host")
    [ ! -e "$share/dir1/a" ] || fails+=("dir1/a still exists")
    [ "$(cat "$share/renamed.txt" 2>/dev/null)" = "rename me $n" ] || fails+=("renamed.txt wrong on the host")
    [ ! -e "$share/rename-me.txt" ] || fails+=("rename-me.txt still exists")
    [ ! -e "$share/delete-me.txt" ] || fails+=("delete-me.txt still exists")
    [ ! -e "$share/empty-dir" ] || fails+=("empty-dir still exists")
    if [ ${#fails[@]} = 0 ]; then
        result PASS "$name" "" virtiofsd "$gen" "$lib"
    else
        result FAIL "$name" "$(IFS=';'; echo "${fails[*]}")" virtiofsd "$gen" "$lib"
        tail_logs "$dir"
    fi
}

# ---------------------------------------------------------------- net
free_udp_port() {
    /usr/bin/python3 -c 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

test_net() {
    local gen=$1 lib=$2
    local name="guest/$gen/$lib/vhost-user-bridge/net"
    local bin=$CACHE/bin/$gen/$lib/vhost-user-bridge
    if [ ! -x "$bin" ]; then
        result SKIP "$name" "vhost-user-bridge did not build" vhost-user-bridge "$gen" "$lib"; return
    fi
    local dir=$RUNDIR/$gen-$lib-vhost-user-bridge-net n fails=()
    rm -rf "$dir"; mkdir -p "$dir"
    n=$(nonce)
    local lport rport
    lport=$(free_udp_port); rport=$(free_udp_port)
    while [ "$rport" = "$lport" ]; do rport=$(free_udp_port); done
    timeout -k 5 "$BACKEND_TIMEOUT" /usr/bin/python3 "$TIER_DIR/net-responder.py" --listen-port "$rport" \
        --bridge-port "$lport" --seconds "$BACKEND_TIMEOUT" --stats "$dir/responder.json" > "$dir/responder.log" 2>&1 &
    local rpid=$!
    track_pid "$rpid"
    local sock=$dir/net.sock
    LD_LIBRARY_PATH=$CACHE/bin/$gen/$lib/lib start_backend "$dir" backend "$bin" \
        -u "$sock" -l "127.0.0.1:$lport" -r "127.0.0.1:$rport"
    local bpid=$BPID
    if ! wait_for_socket "$sock" 20 "$bpid"; then
        stop_pid "$bpid"; stop_pid "$rpid"
        result FAIL "$name" "vhost-user-bridge did not listen on its socket" vhost-user-bridge "$gen" "$lib"
        tail_logs "$dir"; return
    fi
    local qrc=0
    run_guest "$dir" 1 "vu_test=net vu_nonce=$n" \
        -chardev "socket,id=c0,path=$sock" \
        -netdev vhost-user,id=n0,chardev=c0 \
        -device virtio-net-pci,netdev=n0,vectors=0,romfile=,mac=52:54:00:12:34:56 || qrc=$?
    # vhost-user-bridge ends by itself once the frontend has gone
    local brc=0
    wait_pid_bounded "$bpid" 20 || brc=$?
    kill -TERM "$rpid" 2>/dev/null
    local rrc=0
    wait_pid_bounded "$rpid" 20 || rrc=$?

    [ "$qrc" = 0 ] || fails+=("qemu exit status $qrc")
    [ "$brc" = 0 ] || fails+=("vhost-user-bridge exit status $brc")
    [ "$rrc" = 0 ] || fails+=("responder exit status $rrc")
    guest_has "$dir" "$n" END || fails+=("guest did not finish")
    local key want
    for key in "ping56:5" "ping1400:20" "pingflood:200"; do
        want=${key#*:}; key=${key%%:*}
        case "$(guest_value "$dir" "$n" "$key")" in
            "$want packets transmitted, $want packets received, 0% packet loss") ;;
            *) fails+=("$key: $(guest_value "$dir" "$n" "$key")") ;;
        esac
    done
    local st
    st=$(/usr/bin/python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(d["arp_replies"], d["icmp_replies"], d["icmp_bad_checksum"])' "$dir/responder.json" 2>/dev/null || echo "x x x")
    set -- $st
    [ "$1" != x ] && [ "$1" -ge 1 ] || fails+=("responder answered no ARP request")
    [ "$2" != x ] && [ "$2" -ge 225 ] || fails+=("responder answered $2 echo requests, want >= 225")
    [ "$3" = 0 ] || fails+=("responder saw $3 corrupted echo requests")
    if [ ${#fails[@]} = 0 ]; then
        result PASS "$name" "" vhost-user-bridge "$gen" "$lib"
    else
        result FAIL "$name" "$(IFS=';'; echo "${fails[*]}")" vhost-user-bridge "$gen" "$lib"
        tail_logs "$dir"
    fi
}

run_guest_tests() {
    local gen=$1 lib=$2
    case ",$GUEST_TESTS," in *,blk,*)
        test_blk "$gen" "$lib" vhost-user-blk 1
        test_blk "$gen" "$lib" vhost-user-blk 2
        test_blk "$gen" "$lib" qemu-storage-daemon 1
        test_blk "$gen" "$lib" qemu-storage-daemon 2 ;;
    esac
    case ",$GUEST_TESTS," in *,fs,*) test_fs "$gen" "$lib" ;; esac
    case ",$GUEST_TESTS," in *,net,*) test_net "$gen" "$lib" ;; esac
}
