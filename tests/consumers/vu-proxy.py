#!/usr/bin/python3
# A vhost-user message recorder for the consumer tier: listens on a unix
# socket for the frontend, connects to the backend's socket, forwards every
# message both ways unchanged (file descriptors included) and records what
# was negotiated and which requests were sent.
#
#   vu-proxy.py --listen SOCK --backend SOCK --record FILE.json [--seconds N]
#
# FILE.json: {"requests": {code: count}, "protocol_features_offered": n,
# "protocol_features_acked": n, "features_offered": n, "features_acked": n}
# (the last message's values; null if never seen).  One frontend connection.
# SPDX-License-Identifier: GPL-2.0-or-later

import argparse
import array
import json
import os
import select
import socket
import struct
import sys
import time

GET_FEATURES, SET_FEATURES = 1, 2
GET_PROTOCOL_FEATURES, SET_PROTOCOL_FEATURES = 15, 16
HDR = struct.Struct("<III")
MAX_FDS = 32
MAX_PAYLOAD = 1 << 20


class Closed(Exception):
    pass


def recv_exact(sock, n, fds):
    buf = bytearray()
    while len(buf) < n:
        data, anc, _flags, _addr = sock.recvmsg(n - len(buf), socket.CMSG_SPACE(MAX_FDS * 4))
        if not data:
            raise Closed()
        for level, kind, payload in anc:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                a = array.array("i")
                a.frombytes(payload[: len(payload) - len(payload) % a.itemsize])
                fds.extend(a)
        buf += data
    return bytes(buf)


def read_msg(sock):
    fds = []
    hdr = recv_exact(sock, HDR.size, fds)
    req, flags, size = HDR.unpack(hdr)
    if size > MAX_PAYLOAD:
        raise Closed()
    payload = recv_exact(sock, size, fds) if size else b""
    return req, flags, payload, hdr + payload, fds


def send_msg(sock, raw, fds):
    anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds).tobytes())] if fds else []
    sent = sock.sendmsg([raw], anc)
    if sent < len(raw):
        sock.sendall(raw[sent:])
    for fd in fds:
        os.close(fd)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--listen", required=True)
    ap.add_argument("--backend", required=True)
    ap.add_argument("--record", required=True)
    ap.add_argument("--seconds", type=float, default=300)
    a = ap.parse_args()
    rec = {"requests": {}, "protocol_features_offered": None, "protocol_features_acked": None,
           "features_offered": None, "features_acked": None}

    def save():
        with open(a.record + ".tmp", "w") as f:
            json.dump(rec, f)
        os.rename(a.record + ".tmp", a.record)

    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(a.listen)
    srv.listen(1)
    srv.settimeout(a.seconds)
    front, _ = srv.accept()
    srv.close()
    back = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    back.connect(a.backend)
    end = time.monotonic() + a.seconds
    save()
    try:
        while time.monotonic() < end:
            ready, _, _ = select.select([front, back], [], [], 1.0)
            for s in ready:
                req, flags, payload, raw, fds = read_msg(s)
                value = struct.unpack("<Q", payload[:8])[0] if len(payload) >= 8 else None
                if s is front:
                    key = str(req)
                    rec["requests"][key] = rec["requests"].get(key, 0) + 1
                    if req == SET_PROTOCOL_FEATURES:
                        rec["protocol_features_acked"] = value
                    elif req == SET_FEATURES:
                        rec["features_acked"] = value
                    send_msg(back, raw, fds)
                else:
                    if req == GET_PROTOCOL_FEATURES and flags & 0x4:
                        rec["protocol_features_offered"] = value
                    elif req == GET_FEATURES and flags & 0x4:
                        rec["features_offered"] = value
                    send_msg(front, raw, fds)
                save()
    except (Closed, OSError):
        pass
    save()
    return 0


if __name__ == "__main__":
    sys.exit(main())
