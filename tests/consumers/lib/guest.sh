# Real-frontend tests: Debian 12's qemu-system-x86_64 (TCG) boots Debian's
# cloud kernel with a busybox initramfs against a consumer backend
# (sourced by run.sh).
# SPDX-License-Identifier: GPL-2.0-or-later

GUEST_MODULES="virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci
 virtio_blk fuse virtiofs failover net_failover virtio_net scsi_common scsi_mod virtio_scsi sd_mod"
GUEST_TIMEOUT=${VU_GUEST_TIMEOUT:-300}
BACKEND_TIMEOUT=$((GUEST_TIMEOUT + 60))

make_initramfs() {
    local key dir m f
    key=$( (cat "$TIER_DIR/guest/init" /bin/busybox; echo "$GUEST_MODULES") | sha256sum | cut -c1-12)
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

# start_guest DIR NAME SMP "KERNEL ARGS" QEMU-ARGS...: boots the guest in
# the background (console in DIR/console[-NAME].log, QEMU's output in
# DIR/qemu[-NAME].log); sets GPID.
start_guest() {
    local dir=$1 tag=${2:+-$2} smp=$3 kargs=$4; shift 4
    QEMU_MODULE_DIR=$QEMU_MODULE_DIR timeout -k 5 "$GUEST_TIMEOUT" "$QEMU_BIN" "${QEMU_DATA_ARGS[@]}" \
        -accel tcg -machine q35,memory-backend=mem \
        -object memory-backend-memfd,id=mem,size=512M,share=on -m 512M -smp "$smp" \
        -nodefaults -display none -serial "file:$dir/console$tag.log" -no-reboot \
        -kernel "$KERNEL" -initrd "$INITRD" \
        -append "console=ttyS0 panic=-1 quiet $kargs" "$@" > "$dir/qemu$tag.log" 2>&1 &
    GPID=$!
    track_pid "$GPID"
}

# run_guest DIR SMP "KERNEL ARGS" QEMU-ARGS...: boots the guest, returns
# QEMU's exit status (124/137: killed by the timeout).
run_guest() {
    local dir=$1 smp=$2 kargs=$3; shift 3
    local rc=0
    start_guest "$dir" "" "$smp" "$kargs" "$@"
    local pid=$GPID
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
# test_blk GEN LIB BACKEND(vhost-user-blk|qemu-storage-daemon) QUEUES [VARIANT]
# VARIANT iommu-split / iommu-packed (on by default, VU_TIER_IOMMU=0 skips them): behind an
# emulated intel-iommu with iommu_platform=on; the guest must negotiate
# VIRTIO_F_IOMMU_PLATFORM (bit 33; and RING_PACKED, bit 34, for packed).  A
# library that does not offer bit 33 (the C original) makes QEMU refuse the
# device at start-up: that refusal is the expected result for c-original.
# VARIANT status (on by default, VU_TIER_STATUS=0 skips it): the frontend talks to the backend
# through vu-proxy.py, which records the negotiation; the protocol features
# STATUS (16) and RESET_DEVICE (13) must be negotiated and SET_STATUS (39)
# and RESET_DEVICE (34) sent by QEMU 10.0 (a guest boot resets the device at
# probe) for a library that offers them, and neither for the C original.
test_blk() {
    local gen=$1 lib=$2 backend=$3 nq=$4 variant=${5:-}
    local kind=test test=blk-q$nq devtype=vhost-user-blk-pci devopts="" kextra="" pre=()
    case $variant in
        "") ;;
        iommu-split|iommu-packed)
            kind=iommu test=$variant-q$nq devtype=vhost-user-blk-pci-non-transitional
            devopts=",iommu_platform=on"
            [ "$variant" = iommu-packed ] && devopts="$devopts,packed=on"
            # the IOMMU must come before the device it translates for
            pre=(-device intel-iommu,intremap=on)
            # no_timer_check: under TCG on a loaded host the kernel's IO-APIC timer check
            # through interrupt remapping can miss its ticks and panic at boot ("timer doesn't
            # work through Interrupt-remapped IO-APIC"), before any virtio traffic
            kextra=" intel_iommu=on iommu.strict=1 no_timer_check" ;;
        status) kind=status test=status-q$nq ;;
        *) die "test_blk: unknown variant $variant" ;;
    esac
    local name="guest/qemu$QEMU_FE/$gen/$lib/$backend/$test"
    local bin=$CACHE/bin/$gen/$lib/$backend
    if [ ! -x "$bin" ]; then
        result SKIP "$name" "$backend did not build" "$backend" "$gen" "$lib" "$kind" "$QEMU_FE"; return
    fi
    local dir=$RUNDIR/fe$QEMU_FE-$gen-$lib-$backend-$test n fails=()
    rm -rf "$dir"; mkdir -p "$dir"
    n=$(nonce)
    local MiB=1048576
    host_pattern host "$MiB" "$n" > "$dir/disk.img"
    truncate -s 32M "$dir/disk.img"
    local hostmd5; hostmd5=$(head -c "$MiB" "$dir/disk.img" | md5)

    local sock=$dir/blk.sock
    start_blk_backend "$dir" backend "$bin" "$backend" "$sock" "$nq" "$lib" "$gen"
    local bpid=$BPID
    if ! wait_for_socket "$sock" 20 "$bpid"; then
        stop_pid "$bpid"
        result FAIL "$name" "backend did not listen on its socket" "$backend" "$gen" "$lib" "$kind" "$QEMU_FE"
        tail_logs "$dir"; return
    fi
    local fsock=$sock ppid=""
    if [ "$kind" = status ]; then
        fsock=$dir/proxy.sock
        timeout -k 5 "$BACKEND_TIMEOUT" /usr/bin/python3 "$TIER_DIR/vu-proxy.py" --listen "$fsock" \
            --backend "$sock" --record "$dir/proxy.json" --seconds "$BACKEND_TIMEOUT" > "$dir/proxy.log" 2>&1 &
        ppid=$!
        track_pid "$ppid"
        if ! wait_for_socket "$fsock" 20 "$ppid"; then
            stop_pid "$ppid"; stop_pid "$bpid"
            result FAIL "$name" "vu-proxy.py did not listen" "$backend" "$gen" "$lib" "$kind" "$QEMU_FE"
            tail_logs "$dir"; return
        fi
    fi
    local qrc=0
    run_guest "$dir" "$nq" "vu_test=blk vu_nonce=$n vu_queues=$nq$kextra" "${pre[@]}" \
        -chardev "socket,id=c0,path=$fsock" \
        -device "$devtype,chardev=c0,num-queues=$nq$devopts" || qrc=$?
    local prc=0
    [ -n "$ppid" ] && { wait_pid_bounded "$ppid" 20 || prc=$?; }
    [ "$prc" = 0 ] || fails+=("vu-proxy.py exit status $prc")
    local brc=0
    end_blk_backend "$bpid" "$backend" || brc=$?

    if [ "$kind" = iommu ] && [ "$lib" = c-original ]; then
        # the C original offers no VIRTIO_F_IOMMU_PLATFORM
        [ "$qrc" != 0 ] || fails+=("qemu accepted iommu_platform=on from a backend without bit 33")
        grep -q "iommu_platform=true is not supported by the device" "$dir/qemu.log" ||
            fails+=("qemu did not refuse with 'iommu_platform=true is not supported by the device'")
        guest_has "$dir" "$n" END && fails+=("the guest ran")
    else
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
        if [ "$kind" = status ]; then
            local rec want
            rec=$(/usr/bin/python3 -c '
import json, sys
d = json.load(open(sys.argv[1]))
acked = d["protocol_features_acked"] or 0
r = d["requests"]
print(acked >> 16 & 1, acked >> 13 & 1, r.get("39", 0), r.get("34", 0))' "$dir/proxy.json" 2>/dev/null || echo "x x x x")
            # the C original offers neither STATUS nor RESET_DEVICE
            want="1 1"; [ "$lib" = c-original ] && want="0 0"
            set -- $rec
            [ "$1 $2" = "$want" ] ||
                fails+=("protocol features STATUS, RESET_DEVICE negotiated: '$1 $2', want '$want'")
            if [ "$lib" = c-original ]; then
                [ "$3 $4" = "0 0" ] || fails+=("QEMU sent SET_STATUS x$3, RESET_DEVICE x$4 without the features")
            else
                [ "$3" != x ] && [ "$3" -ge 1 ] || fails+=("QEMU sent no SET_STATUS")
                [ "$4" != x ] && [ "$4" -ge 1 ] || fails+=("QEMU sent no RESET_DEVICE")
            fi
        fi
        if [ "$kind" = iommu ]; then
            local feat
            feat=$(guest_value "$dir" "$n" features)
            [ "${feat:33:1}" = 1 ] || fails+=("guest features bit 33 (IOMMU_PLATFORM) not negotiated")
            [ "$variant" != iommu-packed ] || [ "${feat:34:1}" = 1 ] ||
                fails+=("guest features bit 34 (RING_PACKED) not negotiated")
        fi
    fi
    if [ ${#fails[@]} = 0 ]; then
        result PASS "$name" "" "$backend" "$gen" "$lib" "$kind" "$QEMU_FE"
        rm -f "$dir/disk.img"
    else
        result FAIL "$name" "$(IFS=';'; echo "${fails[*]}")" "$backend" "$gen" "$lib" "$kind" "$QEMU_FE"
        tail_logs "$dir"
    fi
}

# start_blk_backend DIR NAME BIN BACKEND SOCK NQ LIB GEN: sets BPID
start_blk_backend() {
    local dir=$1 tag=$2 bin=$3 backend=$4 sock=$5 nq=$6 lib=$7 gen=$8
    if [ "$backend" = vhost-user-blk ]; then
        LD_LIBRARY_PATH=$CACHE/bin/$gen/$lib/lib start_backend "$dir" "$tag" "$bin" -s "$sock" -b "$dir/disk.img"
    else
        LD_LIBRARY_PATH=$CACHE/bin/$gen/$lib/lib start_backend "$dir" "$tag" "$bin" \
            --blockdev "driver=file,node-name=f0,filename=$dir/disk.img" \
            --export "type=vhost-user-blk,id=e0,node-name=f0,addr.type=unix,addr.path=$sock,writable=on,num-queues=$nq"
    fi
}

# end_blk_backend PID BACKEND: contrib vhost-user-blk ends with its
# frontend; qemu-storage-daemon is asked to
end_blk_backend() {
    [ "$2" = vhost-user-blk ] || kill -TERM "$1" 2>/dev/null
    wait_pid_bounded "$1" 20
}

# ---------------------------------------------------------------- fs
test_fs() {
    local gen=$1 lib=$2
    local name="guest/qemu$QEMU_FE/$gen/$lib/virtiofsd/fs"
    local bin=$CACHE/bin/$gen/$lib/virtiofsd
    if [ "$gen" != 7.2 ]; then return; fi
    if [ ! -x "$bin" ]; then
        result SKIP "$name" "virtiofsd did not build" virtiofsd "$gen" "$lib" test "$QEMU_FE"; return
    fi
    local dir=$RUNDIR/fe$QEMU_FE-$gen-$lib-virtiofsd-fs n fails=()
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
        result FAIL "$name" "virtiofsd did not listen on its socket" virtiofsd "$gen" "$lib" test "$QEMU_FE"
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
        result PASS "$name" "" virtiofsd "$gen" "$lib" test "$QEMU_FE"
    else
        result FAIL "$name" "$(IFS=';'; echo "${fails[*]}")" virtiofsd "$gen" "$lib" test "$QEMU_FE"
        tail_logs "$dir"
    fi
}

# ---------------------------------------------------------------- net
free_udp_port() {
    /usr/bin/python3 -c 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

test_net() {
    local gen=$1 lib=$2
    local name="guest/qemu$QEMU_FE/$gen/$lib/vhost-user-bridge/net"
    local bin=$CACHE/bin/$gen/$lib/vhost-user-bridge
    if [ ! -x "$bin" ]; then
        result SKIP "$name" "vhost-user-bridge did not build" vhost-user-bridge "$gen" "$lib" test "$QEMU_FE"; return
    fi
    local dir=$RUNDIR/fe$QEMU_FE-$gen-$lib-vhost-user-bridge-net n fails=()
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
        result FAIL "$name" "vhost-user-bridge did not listen on its socket" vhost-user-bridge "$gen" "$lib" test "$QEMU_FE"
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
        result PASS "$name" "" vhost-user-bridge "$gen" "$lib" test "$QEMU_FE"
    else
        result FAIL "$name" "$(IFS=';'; echo "${fails[*]}")" vhost-user-bridge "$gen" "$lib" test "$QEMU_FE"
        tail_logs "$dir"
    fi
}

# ---------------------------------------------------------------- scsi
# start_iscsi_target DIR IMAGE IQN: iscsi-target.py on 127.0.0.1 serving
# IMAGE as LUN 0 of target IQN; sets ISCSI_PID and ISCSI_URI.
start_iscsi_target() {
    local dir=$1 img=$2 iqn=$3 i=0
    rm -f "$dir/iscsi.port"
    timeout -k 5 "$BACKEND_TIMEOUT" /usr/bin/python3 "$TIER_DIR/iscsi-target.py" --image "$img" \
        --iqn "$iqn" --port-file "$dir/iscsi.port" --seconds "$BACKEND_TIMEOUT" \
        --stats "$dir/iscsi.json" > "$dir/iscsi-target.log" 2>&1 &
    ISCSI_PID=$!
    track_pid "$ISCSI_PID"
    while [ ! -s "$dir/iscsi.port" ]; do
        kill -0 "$ISCSI_PID" 2>/dev/null || return 1
        i=$((i + 1)); [ "$i" -ge 200 ] && return 1
        sleep 0.1
    done
    ISCSI_URI="iscsi://127.0.0.1:$(cat "$dir/iscsi.port")/$iqn/0"
}

stop_iscsi_target() {
    kill -TERM "$ISCSI_PID" 2>/dev/null
    wait_pid_bounded "$ISCSI_PID" 20
}

# test_scsi GEN LIB: contrib vhost-user-scsi (vhost-user-scsi-pci) in front
# of an iSCSI LUN backed by an image file; the guest (virtio_scsi + sd_mod)
# reads host data, writes a pattern, reads it back; the host checks the file.
# (Not Debian's tgt: contrib vhost-user-scsi sends every command to LUN 0 of
# its target, and tgt's LUN 0 is a storage-less controller device.)
test_scsi() {
    local gen=$1 lib=$2 backend=vhost-user-scsi
    local name="guest/qemu$QEMU_FE/$gen/$lib/$backend/scsi"
    local bin=$CACHE/bin/$gen/$lib/$backend
    if [ ! -x "$bin" ]; then
        result SKIP "$name" "$backend did not build" "$backend" "$gen" "$lib" test "$QEMU_FE"; return
    fi
    local dir=$RUNDIR/fe$QEMU_FE-$gen-$lib-$backend-scsi n fails=()
    rm -rf "$dir"; mkdir -p "$dir"
    n=$(nonce)
    local MiB=1048576
    host_pattern host "$MiB" "$n" > "$dir/disk.img"
    truncate -s 32M "$dir/disk.img"
    local hostmd5; hostmd5=$(head -c "$MiB" "$dir/disk.img" | md5)
    if ! start_iscsi_target "$dir" "$dir/disk.img" "iqn.2026-12.org.example.vu-tier:$n"; then
        stop_iscsi_target || true
        result FAIL "$name" "the iSCSI target did not start" "$backend" "$gen" "$lib" test "$QEMU_FE"
        tail_logs "$dir"; return
    fi
    local sock=$dir/scsi.sock
    LD_LIBRARY_PATH=$CACHE/bin/$gen/$lib/lib start_backend "$dir" backend "$bin" -s "$sock" -i "$ISCSI_URI"
    local bpid=$BPID
    if ! wait_for_socket "$sock" 20 "$bpid"; then
        stop_pid "$bpid"; stop_iscsi_target || true
        result FAIL "$name" "backend did not listen on its socket" "$backend" "$gen" "$lib" test "$QEMU_FE"
        tail_logs "$dir"; return
    fi
    local qrc=0
    run_guest "$dir" 1 "vu_test=scsi vu_nonce=$n vu_queues=1" \
        -chardev "socket,id=c0,path=$sock" \
        -device "vhost-user-scsi-pci,chardev=c0" || qrc=$?
    # vhost-user-scsi ends by itself when the frontend goes away
    local brc=0 trc=0
    wait_pid_bounded "$bpid" 20 || brc=$?
    stop_iscsi_target || trc=$?

    [ "$qrc" = 0 ] || fails+=("qemu exit status $qrc")
    [ "$brc" = 0 ] || fails+=("backend exit status $brc")
    [ "$trc" = 0 ] || fails+=("iSCSI target exit status $trc")
    local st
    st=$(/usr/bin/python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(d["logins"], d["writes"])' "$dir/iscsi.json" 2>/dev/null || echo "x x")
    set -- $st
    [ "$1" != x ] && [ "$1" -ge 1 ] || fails+=("the backend never logged in to the iSCSI target")
    [ "$2" != x ] && [ "$2" -ge 1 ] || fails+=("the iSCSI target saw no write")
    guest_has "$dir" "$n" END || fails+=("guest did not finish")
    [ "$(guest_value "$dir" "$n" sectors)" = $((32 * 2048)) ] || fails+=("capacity $(guest_value "$dir" "$n" sectors) sectors")
    [ "$(guest_value "$dir" "$n" hostmd5)" = "$hostmd5" ] || fails+=("guest read of host data differs")
    local exp
    exp=$(host_pattern q0 $((4 * MiB)) "$n" | md5)
    [ "$(guest_value "$dir" "$n" patmd5 q0)" = "$exp" ] || fails+=("guest pattern differs from host's")
    [ "$(guest_value "$dir" "$n" write q0 rc)" = 0 ] || fails+=("guest write failed")
    [ "$(guest_value "$dir" "$n" readback q0)" = "$exp" ] || fails+=("guest read-back differs")
    [ "$(dd if="$dir/disk.img" bs=$MiB skip=1 count=4 2>/dev/null | md5)" = "$exp" ] ||
        fails+=("image on the host lacks the guest's data")
    if [ ${#fails[@]} = 0 ]; then
        result PASS "$name" "" "$backend" "$gen" "$lib" test "$QEMU_FE"
        rm -f "$dir/disk.img"
    else
        result FAIL "$name" "$(IFS=';'; echo "${fails[*]}")" "$backend" "$gen" "$lib" test "$QEMU_FE"
        tail_logs "$dir"
    fi
}

# ---------------------------------------------------------------- packed
# vhost-user-blk-pci,packed=on under the 10.0.2 frontend, a stop/cont and a
# migration to a file and back into a fresh backend process, data intact.
hmp() { timeout 120 /usr/bin/python3 "$TIER_DIR/hmp.py" "$@"; }

# wait_console DIR FILE NONCE LINE SECONDS PID: LINE appears in FILE (or PID ends)
wait_console() {
    local dir=$1 file=$2 n=$3 line=$4 secs=$5 pid=$6 i=0
    while ! tr -d '\r' 2>/dev/null < "$dir/$file" | grep -q -x "VU $n $line"; do
        kill -0 "$pid" 2>/dev/null || return 1
        i=$((i + 1))
        [ "$i" -ge $((secs * 10)) ] && return 1
        sleep 0.1
    done
}

# put_marker IMAGE WORD NONCE: what the guest's wait_marker polls for
put_marker() {
    { printf '%s %s\n' "$2" "$3"; head -c 512 /dev/zero; } | head -c 512 |
        dd of="$1" bs=512 seek=$((30 * 2048)) conv=notrunc,fsync 2>/dev/null
}

# migrate_to_file DIR: the source QEMU (monitor DIR/mon-src.sock) stops and migrates to
# DIR/vm.mig; fails unless the migration completes within 60 s
migrate_to_file() {
    hmp "$1/mon-src.sock" stop "migrate file:$1/vm.mig" >> "$1/hmp.log" 2>&1
    hmp "$1/mon-src.sock" --wait-for "Migration status: completed" "info migrate" 60 >> "$1/hmp.log" 2>&1
}

# cont_after_load DIR: the destination QEMU (monitor DIR/mon-dst.sock, -incoming) loads the
# stopped source's state and then waits for cont (not "paused (inmigrate)": that is before
# the load): cont it, or quit it and fail if it never gets there
cont_after_load() {
    if hmp "$1/mon-dst.sock" --wait-line "VM status: paused" "info status" 60 >> "$1/hmp.log" 2>&1; then
        hmp "$1/mon-dst.sock" cont >> "$1/hmp.log" 2>&1
    else
        hmp "$1/mon-dst.sock" quit >> "$1/hmp.log" 2>&1
        return 1
    fi
}

# test_packed GEN LIB BACKEND QUEUES
test_packed() {
    local gen=$1 lib=$2 backend=$3 nq=$4
    local name="guest/qemu$QEMU_FE/$gen/$lib/$backend/packed-migrate-q$nq"
    local bin=$CACHE/bin/$gen/$lib/$backend
    if [ ! -x "$bin" ]; then
        result SKIP "$name" "$backend did not build" "$backend" "$gen" "$lib" packed "$QEMU_FE"; return
    fi
    local dir=$RUNDIR/fe$QEMU_FE-$gen-$lib-$backend-packed-q$nq n fails=() t0=$SECONDS
    rm -rf "$dir"; mkdir -p "$dir"
    n=$(nonce)
    local MiB=1048576
    host_pattern host "$MiB" "$n" > "$dir/disk.img"
    truncate -s 32M "$dir/disk.img"
    local hostmd5; hostmd5=$(head -c "$MiB" "$dir/disk.img" | md5)
    local kargs="vu_test=blkmig vu_nonce=$n vu_queues=$nq"
    # one QEMU runs two phases and a migration: twice a boot's time
    # (start_guest sees this through bash's dynamic scoping)
    local GUEST_TIMEOUT=$((GUEST_TIMEOUT * 2))
    local BACKEND_TIMEOUT=$((GUEST_TIMEOUT + 60))
    local dev="vhost-user-blk-pci,chardev=c0,num-queues=$nq,packed=on"

    # source: backend A, QEMU with a monitor
    start_blk_backend "$dir" backend-a "$bin" "$backend" "$dir/a.sock" "$nq" "$lib" "$gen"
    local apid=$BPID
    if ! wait_for_socket "$dir/a.sock" 20 "$apid"; then
        stop_pid "$apid"
        result FAIL "$name" "backend did not listen on its socket" "$backend" "$gen" "$lib" packed "$QEMU_FE"
        tail_logs "$dir"; return
    fi
    start_guest "$dir" "" "$nq" "$kargs" -chardev "socket,id=c0,path=$dir/a.sock" -device "$dev" \
        -monitor "unix:$dir/mon-src.sock,server=on,wait=off"
    local spid=$GPID src_ok=1
    # phase A, then stop/cont
    if ! wait_console "$dir" console.log "$n" "phase A" "$GUEST_TIMEOUT" "$spid"; then
        fails+=("guest did not reach phase A"); src_ok=0
    else
        hmp "$dir/mon-src.sock" stop >> "$dir/hmp.log" 2>&1
        hmp "$dir/mon-src.sock" --wait-for "VM status: paused" "info status" 20 >> "$dir/hmp.log" 2>&1 ||
            fails+=("source did not pause at stop")
        put_marker "$dir/disk.img" GO1 "$n"
        sleep 1
        hmp "$dir/mon-src.sock" cont >> "$dir/hmp.log" 2>&1
        wait_console "$dir" console.log "$n" "phase B" "$GUEST_TIMEOUT" "$spid" ||
            { fails+=("guest did not reach phase B after stop/cont"); src_ok=0; }
    fi
    # migration to a file
    if [ "$src_ok" = 1 ]; then
        migrate_to_file "$dir" || { fails+=("migration to a file did not complete"); src_ok=0; }
    fi
    hmp "$dir/mon-src.sock" quit >> "$dir/hmp.log" 2>&1
    local qrc=0
    wait_pid_bounded "$spid" 30 || qrc=$?
    [ "$qrc" = 0 ] || fails+=("source qemu exit status $qrc")
    local brc=0
    end_blk_backend "$apid" "$backend" || brc=$?
    [ "$brc" = 0 ] || fails+=("backend A exit status $brc")

    # destination: a fresh backend process, QEMU -incoming
    if [ "$src_ok" = 1 ]; then
        start_blk_backend "$dir" backend-b "$bin" "$backend" "$dir/b.sock" "$nq" "$lib" "$gen"
        local bpid=$BPID
        if ! wait_for_socket "$dir/b.sock" 20 "$bpid"; then
            stop_pid "$bpid"
            fails+=("backend B did not listen on its socket")
        else
            put_marker "$dir/disk.img" GO2 "$n"
            start_guest "$dir" dst "$nq" "$kargs" -chardev "socket,id=c0,path=$dir/b.sock" -device "$dev" \
                -monitor "unix:$dir/mon-dst.sock,server=on,wait=off" -incoming "file:$dir/vm.mig"
            local dpid=$GPID
            cont_after_load "$dir" || fails+=("destination did not load the migration")
            local drc=0
            wait_pid_bounded "$dpid" "$GUEST_TIMEOUT" || drc=$?
            [ "$drc" = 0 ] || fails+=("destination qemu exit status $drc")
            brc=0
            end_blk_backend "$bpid" "$backend" || brc=$?
            [ "$brc" = 0 ] || fails+=("backend B exit status $brc")
        fi
    fi
    # the guest's lines from both sides, in order
    [ -f "$dir/console-dst.log" ] && cat "$dir/console-dst.log" >> "$dir/console.log"

    guest_has "$dir" "$n" END || fails+=("guest did not finish")
    guest_has "$dir" "$n" "phase C" || fails+=("guest did not reach phase C after the migration")
    local feat want_bit bit
    feat=$(guest_value "$dir" "$n" features)
    bit=${feat:34:1}
    # the C original does not offer VIRTIO_F_RING_PACKED: split rings then
    want_bit=1; [ "$lib" = c-original ] && want_bit=0
    [ "$bit" = "$want_bit" ] || fails+=("guest features bit 34 (RING_PACKED) is '${bit}', want $want_bit")
    [ "$(guest_value "$dir" "$n" features-after)" = "$feat" ] || fails+=("features changed across the migration")
    local want_nq=$nq
    [ "$backend" = vhost-user-blk ] && want_nq=1
    [ "$(guest_value "$dir" "$n" nq)" = "$want_nq" ] || fails+=("guest sees $(guest_value "$dir" "$n" nq) queues, want $want_nq")
    [ "$(guest_value "$dir" "$n" sectors)" = $((32 * 2048)) ] || fails+=("capacity $(guest_value "$dir" "$n" sectors) sectors")
    [ "$(guest_value "$dir" "$n" hostmd5)" = "$hostmd5" ] || fails+=("guest read of host data differs")
    local q exp t at
    for ((q = 0; q < nq; q++)); do
        for t in a:1 b:3 c:5; do
            at=${t#*:}; t=${t%%:*}
            exp=$(host_pattern "$t$q" $((2 * MiB)) "$n" | md5)
            [ "$(guest_value "$dir" "$n" patmd5 "$t$q")" = "$exp" ] || fails+=("guest pattern $t$q differs from host's")
            [ "$(guest_value "$dir" "$n" write "$t$q" rc)" = 0 ] || fails+=("guest write $t$q failed")
            [ "$(guest_value "$dir" "$n" readback "$t$q")" = "$exp" ] || fails+=("guest read-back $t$q differs")
            [ "$t" = c ] || [ "$(guest_value "$dir" "$n" verify "$t$q")" = "$exp" ] ||
                fails+=("guest's $t$q data differs after the migration")
            [ "$(dd if="$dir/disk.img" bs=$MiB skip=$((at + 8 * q)) count=2 2>/dev/null | md5)" = "$exp" ] ||
                fails+=("image on the host lacks the guest's $t$q data")
        done
    done
    log "$name took $((SECONDS - t0)) s"
    if [ ${#fails[@]} = 0 ]; then
        result PASS "$name" "" "$backend" "$gen" "$lib" packed "$QEMU_FE"
        rm -f "$dir/disk.img" "$dir/vm.mig"
    else
        result FAIL "$name" "$(IFS=';'; echo "${fails[*]}")" "$backend" "$gen" "$lib" packed "$QEMU_FE"
        tail_logs "$dir"
    fi
}

# ---------------------------------------------------------------- netstate
# test_netstate: device state through a real frontend. examples-c's
# vhost-user-net-sink (this library; it registers device state handlers, so
# the library offers DEVICE_STATE) behind QEMU 10.0's virtio-net, whose
# vhost-user netdev migrates the backend's state when bit 19 is negotiated:
# the guest transmits for ~30 s; the host stops the VM during that, migrates
# it to a file, and starts a fresh backend process and QEMU -incoming from
# it. The source must save the counters, the destination load exactly them,
# and its final count must be the guest's own transmit count (frames and
# bytes): without the state it would miss what the source counted.
test_netstate() {
    local name="guest/qemu$QEMU_FE/example/ours/vhost-user-net-sink/netstate-migrate"
    local dir=$RUNDIR/fe$QEMU_FE-example-ours-net-sink n fails=()
    rm -rf "$dir"; mkdir -p "$dir"
    local tdir=${CARGO_TARGET_DIR:-$OURS/target}
    local bin=$dir/vhost-user-net-sink
    if ! (cd "$OURS" && cargo build --release --lib -q) > "$dir/build.log" 2>&1 ||
       ! gcc -std=gnu11 -O2 -g -Wall -Werror -I"$OURS/include" -o "$bin" \
           "$OURS/examples-c/vhost-user-net-sink.c" "$tdir/release/libvhost_user.a" \
           -lpthread -ldl -lm -lrt -lutil -lgcc_s >> "$dir/build.log" 2>&1; then
        result FAIL "$name" "the example did not build" vhost-user-net-sink example ours test "$QEMU_FE"
        tail_logs "$dir"; return
    fi
    n=$(nonce)
    local GUEST_TIMEOUT=$((GUEST_TIMEOUT * 2))
    local BACKEND_TIMEOUT=$((GUEST_TIMEOUT + 60))
    local net=(-netdev vhost-user,id=n0,chardev=c0
               -device virtio-net-pci,netdev=n0,vectors=0,romfile=,mac=52:54:00:12:34:56)
    local t0=$SECONDS

    start_backend "$dir" backend-a "$bin" -s "$dir/a.sock"
    local apid=$BPID
    if ! wait_for_socket "$dir/a.sock" 20 "$apid"; then
        stop_pid "$apid"
        result FAIL "$name" "backend did not listen on its socket" vhost-user-net-sink example ours test "$QEMU_FE"
        tail_logs "$dir"; return
    fi
    start_guest "$dir" "" 1 "vu_test=netmig vu_nonce=$n" -chardev "socket,id=c0,path=$dir/a.sock" \
        "${net[@]}" -monitor "unix:$dir/mon-src.sock,server=on,wait=off"
    local spid=$GPID src_ok=1
    if ! wait_console "$dir" console.log "$n" "phase A" "$GUEST_TIMEOUT" "$spid"; then
        fails+=("guest did not reach phase A"); src_ok=0
    else
        # a few seconds of traffic before the stop
        sleep 3
        migrate_to_file "$dir" || { fails+=("migration to a file did not complete"); src_ok=0; }
    fi
    hmp "$dir/mon-src.sock" quit >> "$dir/hmp.log" 2>&1
    local qrc=0
    wait_pid_bounded "$spid" 30 || qrc=$?
    [ "$qrc" = 0 ] || fails+=("source qemu exit status $qrc")
    local brc=0
    wait_pid_bounded "$apid" 20 || brc=$?
    [ "$brc" = 0 ] || fails+=("backend A exit status $brc")

    if [ "$src_ok" = 1 ]; then
        start_backend "$dir" backend-b "$bin" -s "$dir/b.sock"
        local bpid=$BPID
        if ! wait_for_socket "$dir/b.sock" 20 "$bpid"; then
            stop_pid "$bpid"
            fails+=("backend B did not listen on its socket")
        else
            start_guest "$dir" dst 1 "vu_test=netmig vu_nonce=$n" -chardev "socket,id=c0,path=$dir/b.sock" \
                "${net[@]}" -monitor "unix:$dir/mon-dst.sock,server=on,wait=off" -incoming "file:$dir/vm.mig"
            local dpid=$GPID
            cont_after_load "$dir" || fails+=("destination did not load the migration")
            local drc=0
            wait_pid_bounded "$dpid" "$GUEST_TIMEOUT" || drc=$?
            [ "$drc" = 0 ] || fails+=("destination qemu exit status $drc")
            brc=0
            wait_pid_bounded "$bpid" 20 || brc=$?
            [ "$brc" = 0 ] || fails+=("backend B exit status $brc")
        fi
    fi
    [ -f "$dir/console-dst.log" ] && cat "$dir/console-dst.log" >> "$dir/console.log"
    guest_has "$dir" "$n" END || fails+=("guest did not finish")

    # "state saved: tx F frames B bytes" (A) and "state loaded: ..." (B) must agree; B's
    # final "tx F frames B bytes; loaded ..." must be the guest's counters
    local saved loaded final gtx gbytes
    saved=$(sed -n 's/^vhost-user-net-sink: state saved: tx \([0-9]*\) frames \([0-9]*\) bytes$/\1 \2/p' "$dir/backend-a.log" | tail -1)
    loaded=$(sed -n 's/^vhost-user-net-sink: state loaded: tx \([0-9]*\) frames \([0-9]*\) bytes$/\1 \2/p' "$dir/backend-b.log" 2>/dev/null | tail -1)
    final=$(sed -n 's/^vhost-user-net-sink: tx \([0-9]*\) frames \([0-9]*\) bytes; loaded \([0-9]*\) frames; migrations \([0-9]*\)$/\1 \2 \3 \4/p' "$dir/backend-b.log" 2>/dev/null | tail -1)
    gtx=$(guest_value "$dir" "$n" tx); gbytes=$(guest_value "$dir" "$n" txbytes)
    [ -n "$saved" ] || fails+=("backend A saved no state")
    [ -n "$saved" ] && [ "${saved%% *}" -gt 0 ] || fails+=("backend A had counted no frames before the migration")
    [ -n "$loaded" ] && [ "$loaded" = "$saved" ] || fails+=("backend B loaded '${loaded}', backend A saved '${saved}'")
    set -- $final
    if [ $# != 4 ]; then
        fails+=("backend B printed no final count")
    else
        [ "$1" = "$gtx" ] || fails+=("backend B counted $1 frames in all, the guest transmitted '$gtx'")
        [ "$2" = "$gbytes" ] || fails+=("backend B counted $2 bytes in all, the guest transmitted '$gbytes'")
        [ "$4" = 1 ] || fails+=("backend B reports $4 migrations, want 1")
        [ -n "$saved" ] && [ "$1" -gt "${saved%% *}" ] || fails+=("backend B counted no frames of its own (the migration came after the traffic)")
    fi
    log "netstate: A saved '$saved', B loaded '$loaded', B final '$final', guest tx '$gtx' bytes '$gbytes' ($((SECONDS - t0)) s)"
    if [ ${#fails[@]} = 0 ]; then
        result PASS "$name" "" vhost-user-net-sink example ours test "$QEMU_FE"
    else
        result FAIL "$name" "$(IFS=';'; echo "${fails[*]}")" vhost-user-net-sink example ours test "$QEMU_FE"
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
    case ",$GUEST_TESTS," in *,scsi,*) test_scsi "$gen" "$lib" ;; esac
    # packed=on under the 10.0.2 frontend. The C original has no packed
    # rings: one row per generation shows QEMU falling back to split rings
    # (all four would only repeat that, at ~2 boots each)
    if [ "$QEMU_FE" != 7.2 ]; then
        case ",$GUEST_TESTS," in *,blk,*|*,packed,*)
            test_packed "$gen" "$lib" vhost-user-blk 1
            if [ "$lib" != c-original ]; then
                test_packed "$gen" "$lib" vhost-user-blk 2
                test_packed "$gen" "$lib" qemu-storage-daemon 1
                test_packed "$gen" "$lib" qemu-storage-daemon 2
            fi ;;
        esac
    fi
    # STATUS / RESET_DEVICE rows: on by default (about 50 s each); VU_TIER_STATUS=0 skips them.
    if [ "${VU_TIER_STATUS:-1}" = 1 ] && [ "$QEMU_FE" != 7.2 ]; then
        case ",$GUEST_TESTS," in *,blk,*|*,status,*)
            test_blk "$gen" "$lib" vhost-user-blk 1 status
            test_blk "$gen" "$lib" qemu-storage-daemon 2 status ;;
        esac
    fi
    # vIOMMU rows: on by default (a boot each, ~10 s on an idle machine); VU_TIER_IOMMU=0 skips them.
    if [ "${VU_TIER_IOMMU:-1}" = 1 ] && [ "$QEMU_FE" != 7.2 ]; then
        case ",$GUEST_TESTS," in *,blk,*|*,iommu,*)
            local b v
            for b in vhost-user-blk qemu-storage-daemon; do
                for v in iommu-split iommu-packed; do test_blk "$gen" "$lib" "$b" 1 "$v"; done
            done ;;
        esac
    fi
}
