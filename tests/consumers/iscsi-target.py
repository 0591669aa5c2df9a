#!/usr/bin/python3
# A minimal iSCSI target on 127.0.0.1 for the consumer tier's vhost-user-scsi
# guest test: one target, LUN 0 = a disk backed by an image file.
#
#   iscsi-target.py --image FILE --iqn IQN --port-file FILE [--seconds N]
#                   [--stats FILE]
#
# Why not Debian's tgt: contrib vhost-user-scsi sends every command to LUN 0
# of its target, whatever LUN its URI names, and tgt reserves LUN 0 for its
# controller device (no storage behind it).
#
# What it implements (RFC 7143, as libiscsi uses it): login (no
# authentication, no digests, InitialR2T=Yes, ImmediateData=No), SCSI
# commands with Data-In, R2T/Data-Out, NOP, task management (answered
# "function complete"), logout; SCSI: INQUIRY (standard and VPD 0x00, 0x80,
# 0x83), REPORT LUNS, TEST UNIT READY, REQUEST SENSE, READ CAPACITY 10/16,
# MODE SENSE 6/10, READ/WRITE 6/10/16, SYNCHRONIZE CACHE 10/16, START STOP
# UNIT; anything else gets CHECK CONDITION, ILLEGAL REQUEST.
# SPDX-License-Identifier: GPL-2.0-or-later

import argparse
import json
import os
import socket
import struct
import sys
import threading
import time

BLOCK = 512
MAX_RECV = 262144      # our MaxRecvDataSegmentLength
MAX_BURST = 262144     # MaxBurstLength we negotiate
CMD_WINDOW = 32

stats = {"logins": 0, "reads": 0, "writes": 0, "read_bytes": 0, "write_bytes": 0,
         "syncs": 0, "errors": 0}
stats_lock = threading.Lock()


def count(key, n=1):
    with stats_lock:
        stats[key] += n


class Closed(Exception):
    pass


def recv_exact(sock, n):
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise Closed()
        buf += chunk
    return bytes(buf)


def read_pdu(sock):
    bhs = recv_exact(sock, 48)
    ahs_len = bhs[4] * 4
    dlen = int.from_bytes(bhs[5:8], "big")
    if ahs_len:
        recv_exact(sock, ahs_len)
    data = recv_exact(sock, (dlen + 3) & ~3)[:dlen] if dlen else b""
    return bhs, data


def pdu(opcode, flags, rest, data=b""):
    """rest: bytes 2..47 of the BHS without the data segment length."""
    bhs = bytearray(48)
    bhs[0] = opcode
    bhs[1] = flags
    bhs[2:48] = rest
    bhs[4] = 0
    bhs[5:8] = len(data).to_bytes(3, "big")
    return bytes(bhs) + data + b"\0" * ((4 - len(data) % 4) % 4)


def parse_keys(data):
    out = []
    for item in data.split(b"\0"):
        if b"=" in item:
            k, v = item.split(b"=", 1)
            out.append((k.decode(errors="replace"), v.decode(errors="replace")))
    return out


def sense(key, asc, ascq=0):
    s = bytearray(18)
    s[0] = 0x70
    s[2] = key
    s[7] = 10
    s[12] = asc
    s[13] = ascq
    return bytes(s)


class Lun:
    def __init__(self, path, iqn):
        self.fd = os.open(path, os.O_RDWR)
        self.blocks = os.fstat(self.fd).st_size // BLOCK
        self.iqn = iqn
        self.lock = threading.Lock()

    def inquiry(self, cdb):
        alloc = int.from_bytes(cdb[3:5], "big")
        if cdb[1] & 1:
            page = cdb[2]
            if page == 0x00:
                body = bytes([0x00, 0x80, 0x83])
            elif page == 0x80:
                body = b"VUTIER0001"
            elif page == 0x83:
                ident = b"VUTIER  " + self.iqn.encode()[:64]
                body = bytes([0x02, 0x01, 0x00, len(ident)]) + ident   # ASCII, T10 vendor id
            else:
                return None, sense(0x05, 0x24)
            data = bytes([0x00, page]) + len(body).to_bytes(2, "big") + body
        else:
            data = bytes([0x00, 0x00, 0x05, 0x02, 31, 0, 0, 0x02]) + \
                b"VUTIER  " + b"IMAGE FILE LUN  " + b"0001"
        return data[:alloc], None

    def execute(self, cdb, data_out):
        """Returns (data_in or None, sense or None); data_out for writes."""
        op = cdb[0]
        if op == 0x00 or op == 0x1B:            # TEST UNIT READY, START STOP UNIT
            return b"", None
        if op == 0x12:
            return self.inquiry(cdb)
        if op == 0xA0:                          # REPORT LUNS: LUN 0 only
            alloc = int.from_bytes(cdb[6:10], "big")
            return (struct.pack(">II", 8, 0) + bytes(8))[:alloc], None
        if op == 0x03:                          # REQUEST SENSE
            return sense(0, 0)[:cdb[4]], None
        if op == 0x25:                          # READ CAPACITY 10
            return struct.pack(">II", min(self.blocks - 1, 0xFFFFFFFF), BLOCK), None
        if op == 0x9E and cdb[1] & 0x1F == 0x10:  # READ CAPACITY 16
            alloc = int.from_bytes(cdb[10:14], "big")
            return (struct.pack(">QI", self.blocks - 1, BLOCK) + bytes(20))[:alloc], None
        if op == 0x1A:                          # MODE SENSE 6: header only
            return bytes([3, 0, 0, 0])[:cdb[4]], None
        if op == 0x5A:                          # MODE SENSE 10: header only
            alloc = int.from_bytes(cdb[7:9], "big")
            return bytes([0, 6, 0, 0, 0, 0, 0, 0])[:alloc], None
        if op in (0x35, 0x91):                  # SYNCHRONIZE CACHE 10/16
            os.fsync(self.fd)
            count("syncs")
            return b"", None
        rw = self.lba_len(cdb)
        if rw is None:
            return None, sense(0x05, 0x20)      # invalid command operation code
        lba, nblk, write = rw
        if lba + nblk > self.blocks:
            return None, sense(0x05, 0x21)      # LBA out of range
        with self.lock:
            if write:
                if len(data_out) != nblk * BLOCK:
                    return None, sense(0x05, 0x24)
                os.pwrite(self.fd, data_out, lba * BLOCK)
                count("writes")
                count("write_bytes", len(data_out))
                return b"", None
            data = os.pread(self.fd, nblk * BLOCK, lba * BLOCK)
            count("reads")
            count("read_bytes", len(data))
            return data, None

    @staticmethod
    def lba_len(cdb):
        op = cdb[0]
        if op in (0x08, 0x0A):
            lba = int.from_bytes(cdb[1:4], "big") & 0x1FFFFF
            n = cdb[4] or 256
            return lba, n, op == 0x0A
        if op in (0x28, 0x2A):
            return int.from_bytes(cdb[2:6], "big"), int.from_bytes(cdb[7:9], "big"), op == 0x2A
        if op in (0x88, 0x8A):
            return int.from_bytes(cdb[2:10], "big"), int.from_bytes(cdb[10:14], "big"), op == 0x8A
        return None


class Session:
    def __init__(self, sock, lun, iqn):
        self.sock = sock
        self.lun = lun
        self.iqn = iqn
        self.stat_sn = 0
        self.exp_cmd_sn = 0
        self.peer_max_recv = 8192
        self.ttt = 1

    def sn_fields(self, advance_stat=True):
        sn = self.stat_sn
        if advance_stat:
            self.stat_sn = (self.stat_sn + 1) & 0xFFFFFFFF
        return struct.pack(">III", sn, self.exp_cmd_sn, (self.exp_cmd_sn + CMD_WINDOW) & 0xFFFFFFFF)

    def note_cmd_sn(self, bhs):
        cmd_sn = int.from_bytes(bhs[24:28], "big")
        if not bhs[0] & 0x40:                   # not immediate
            self.exp_cmd_sn = (cmd_sn + 1) & 0xFFFFFFFF
        elif self.exp_cmd_sn == 0:
            self.exp_cmd_sn = cmd_sn

    def send(self, b):
        self.sock.sendall(b)

    def login(self, bhs, data):
        keys = parse_keys(data)
        csg = (bhs[1] >> 2) & 3
        nsg = bhs[1] & 3
        transit = bhs[1] & 0x80
        cmd_sn = int.from_bytes(bhs[24:28], "big")
        self.exp_cmd_sn = cmd_sn
        self.stat_sn = int.from_bytes(bhs[28:32], "big")
        answers = []
        status = 0
        for k, v in keys:
            if k == "InitiatorName" or k == "SessionType":
                continue
            if k == "TargetName":
                if v != self.iqn:
                    status = 0x0203             # not found
                continue
            if k == "AuthMethod":
                answers.append((k, "None"))
            elif k in ("HeaderDigest", "DataDigest"):
                answers.append((k, "None"))
            elif k == "MaxRecvDataSegmentLength":
                self.peer_max_recv = max(512, min(int(v), 16777215))
            elif k == "InitialR2T":
                answers.append((k, "Yes"))
            elif k == "ImmediateData":
                answers.append((k, "No"))
            elif k in ("MaxBurstLength", "FirstBurstLength"):
                answers.append((k, str(min(int(v), MAX_BURST))))
            elif k == "MaxConnections":
                answers.append((k, "1"))
            elif k == "MaxOutstandingR2T":
                answers.append((k, "1"))
            elif k in ("DataPDUInOrder", "DataSequenceInOrder"):
                answers.append((k, "Yes"))
            elif k == "ErrorRecoveryLevel":
                answers.append((k, "0"))
            elif k == "DefaultTime2Wait":
                answers.append((k, v))
            elif k == "DefaultTime2Retain":
                answers.append((k, "0"))
            elif k in ("IFMarker", "OFMarker"):
                answers.append((k, "No"))
            else:
                answers.append((k, "NotUnderstood"))
        if csg == 0:
            answers.append(("TargetPortalGroupTag", "1"))
        if csg == 1 or nsg == 3:
            answers.append(("MaxRecvDataSegmentLength", str(MAX_RECV)))
        body = b"".join(("%s=%s" % kv).encode() + b"\0" for kv in answers)
        final = transit and nsg == 3 and status == 0
        flags = (bhs[1] & 0xC3 & ~0x40) | (csg << 2)
        if not transit:
            flags &= ~0x03
        rest = bytearray(46)
        rest[0] = 0x00                          # version max
        rest[1] = 0x00                          # version active
        rest[6:12] = bhs[8:14]                  # ISID
        rest[12:14] = (1 if final else 0).to_bytes(2, "big")   # TSIH
        rest[14:18] = bhs[16:20]                # ITT
        rest[22:34] = self.sn_fields()
        rest[34] = status >> 8
        rest[35] = status & 0xFF
        self.send(pdu(0x23, flags, bytes(rest), body if status == 0 else b""))
        if status:
            raise Closed()
        if final:
            count("logins")
        return final

    def response(self, bhs, status, sense_data, residual=0, under=False):
        rest = bytearray(46)
        rest[0] = 0                             # response: completed at target
        rest[1] = status
        rest[6:14] = bhs[8:16]
        rest[14:18] = bhs[16:20]
        rest[22:34] = self.sn_fields()
        rest[42:46] = residual.to_bytes(4, "big")
        data = len(sense_data).to_bytes(2, "big") + sense_data if sense_data else b""
        self.send(pdu(0x21, 0x80 | (0x02 if under else 0), bytes(rest), data))

    def data_in(self, bhs, data, edtl):
        send = data[:edtl]
        residual = edtl - len(send)
        off = 0
        data_sn = 0
        while True:
            chunk = send[off:off + self.peer_max_recv]
            last = off + len(chunk) >= len(send)
            rest = bytearray(46)
            rest[6:14] = bhs[8:16]
            rest[14:18] = bhs[16:20]
            rest[18:22] = b"\xff\xff\xff\xff"
            if last:
                rest[1] = 0                     # status GOOD
                rest[22:34] = self.sn_fields()
                rest[42:46] = residual.to_bytes(4, "big")
            else:
                rest[22:34] = self.sn_fields(advance_stat=False)
                rest[22:26] = b"\0\0\0\0"
            rest[34:38] = data_sn.to_bytes(4, "big")
            rest[38:42] = off.to_bytes(4, "big")
            flags = 0x80 | 0x01 | (0x02 if residual else 0) if last else 0
            self.send(pdu(0x25, flags, bytes(rest), chunk))
            data_sn += 1
            off += len(chunk)
            if last:
                return

    def collect_write(self, bhs, want):
        """R2Ts for WANT bytes (one burst each), Data-Out PDUs into a buffer."""
        buf = bytearray(want)
        done = 0
        r2t_sn = 0
        while done < want:
            burst = min(MAX_BURST, want - done)
            ttt = self.ttt
            self.ttt = (self.ttt % 0x7FFFFFFF) + 1
            rest = bytearray(46)
            rest[6:14] = bhs[8:16]
            rest[14:18] = bhs[16:20]
            rest[18:22] = ttt.to_bytes(4, "big")
            rest[22:34] = self.sn_fields(advance_stat=False)
            rest[34:38] = r2t_sn.to_bytes(4, "big")
            rest[38:42] = done.to_bytes(4, "big")
            rest[42:46] = burst.to_bytes(4, "big")
            self.send(pdu(0x31, 0x80, bytes(rest)))
            r2t_sn += 1
            while True:
                dbhs, data = read_pdu(self.sock)
                op = dbhs[0] & 0x3F
                if op == 0x00:
                    self.nop(dbhs, data)
                    continue
                if op != 0x05:
                    raise Closed()              # a protocol error on this test link
                off = int.from_bytes(dbhs[40:44], "big")
                if off < done or off + len(data) > done + burst:
                    raise Closed()
                buf[off:off + len(data)] = data
                if dbhs[1] & 0x80:
                    break
            done += burst
        return bytes(buf)

    def nop(self, bhs, data):
        itt = bhs[16:20]
        if itt == b"\xff\xff\xff\xff":
            return
        self.note_cmd_sn(bhs)
        rest = bytearray(46)
        rest[6:14] = bhs[8:16]
        rest[14:18] = itt
        rest[18:22] = b"\xff\xff\xff\xff"
        rest[22:34] = self.sn_fields()
        self.send(pdu(0x20, 0x80, bytes(rest), data))

    def command(self, bhs, data):
        self.note_cmd_sn(bhs)
        cdb = bhs[32:48]
        edtl = int.from_bytes(bhs[20:24], "big")
        data_out = b""
        if bhs[1] & 0x20 and edtl:              # W (ImmediateData=No: no data here)
            data_out = self.collect_write(bhs, edtl)
        try:
            out, err = self.lun.execute(cdb, data_out)
        except OSError:
            out, err = None, sense(0x03, 0x11)  # medium error
        if err is not None:
            count("errors")
            self.response(bhs, 0x02, err)
        elif bhs[1] & 0x40 and out:             # R
            self.data_in(bhs, out, edtl)
        else:
            under = edtl > len(out or b"") and not bhs[1] & 0x20
            self.response(bhs, 0x00, b"", edtl - len(out or b"") if under else 0, under)

    def serve(self):
        while True:
            bhs, data = read_pdu(self.sock)
            if bhs[0] & 0x3F == 0x03 and self.login(bhs, data):
                break
        while True:
            bhs, data = read_pdu(self.sock)
            op = bhs[0] & 0x3F
            if op == 0x01:
                self.command(bhs, data)
            elif op == 0x00:
                self.nop(bhs, data)
            elif op == 0x02:                    # task management: function complete
                self.note_cmd_sn(bhs)
                rest = bytearray(46)
                rest[14:18] = bhs[16:20]
                rest[22:34] = self.sn_fields()
                self.send(pdu(0x22, 0x80, bytes(rest)))
            elif op == 0x06:                    # logout
                self.note_cmd_sn(bhs)
                rest = bytearray(46)
                rest[14:18] = bhs[16:20]
                rest[22:34] = self.sn_fields()
                self.send(pdu(0x26, 0x80, bytes(rest)))
                return
            elif op == 0x04:                    # text: nothing to say
                self.note_cmd_sn(bhs)
                rest = bytearray(46)
                rest[14:18] = bhs[16:20]
                rest[18:22] = b"\xff\xff\xff\xff"
                rest[22:34] = self.sn_fields()
                self.send(pdu(0x24, 0x80, bytes(rest)))
            else:
                rest = bytearray(46)
                rest[0] = 0x04                  # reject: protocol error
                rest[14:18] = b"\xff\xff\xff\xff"
                rest[22:34] = self.sn_fields()
                self.send(pdu(0x3F, 0x80, bytes(rest), bhs))


def handle(conn, lun, iqn):
    try:
        Session(conn, lun, iqn).serve()
    except (Closed, OSError, ValueError):
        pass
    finally:
        conn.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--image", required=True)
    ap.add_argument("--iqn", required=True)
    ap.add_argument("--port-file", required=True)
    ap.add_argument("--seconds", type=float, default=300)
    ap.add_argument("--stats")
    a = ap.parse_args()
    lun = Lun(a.image, a.iqn)
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", 0))
    srv.listen(4)
    with open(a.port_file + ".tmp", "w") as f:
        f.write("%d\n" % srv.getsockname()[1])
    os.rename(a.port_file + ".tmp", a.port_file)
    stop = [False]

    def on_term(*_):
        stop[0] = True
    import signal
    signal.signal(signal.SIGTERM, on_term)
    end = time.monotonic() + a.seconds
    srv.settimeout(0.2)
    while not stop[0] and time.monotonic() < end:
        try:
            conn, _ = srv.accept()
        except socket.timeout:
            continue
        conn.settimeout(None)
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        threading.Thread(target=handle, args=(conn, lun, a.iqn), daemon=True).start()
    os.fsync(lun.fd)
    if a.stats:
        with stats_lock:
            json.dump(stats, open(a.stats, "w"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
