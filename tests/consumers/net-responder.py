#!/usr/bin/python3
# The far end of vhost-user-bridge's UDP "wire" for the consumer tier.
#
# vhost-user-bridge sends each Ethernet frame the guest transmits as one UDP
# datagram to 127.0.0.1:RPORT (where this listens) and injects every datagram
# it receives on 127.0.0.1:LPORT into the guest.  This answers ARP requests
# for, and ICMP echo requests to, the responder address, counts what it
# saw, writes the counts as JSON and exits after --seconds or on SIGTERM.
# SPDX-License-Identifier: GPL-2.0-or-later

import argparse
import json
import signal
import socket
import struct
import sys
import time

ap = argparse.ArgumentParser()
ap.add_argument("--listen-port", type=int, required=True, help="RPORT of vhost-user-bridge")
ap.add_argument("--bridge-port", type=int, required=True, help="LPORT of vhost-user-bridge")
ap.add_argument("--ip", default="192.0.2.1")
ap.add_argument("--mac", default="52:54:00:12:34:01")
ap.add_argument("--seconds", type=float, default=120.0)
ap.add_argument("--stats", required=True)
args = ap.parse_args()

MY_IP = socket.inet_aton(args.ip)
MY_MAC = bytes(int(x, 16) for x in args.mac.split(":"))
stats = {"frames": 0, "arp_requests": 0, "arp_replies": 0, "icmp_requests": 0,
         "icmp_replies": 0, "icmp_bad_checksum": 0, "bytes": 0, "other": 0}


def csum(data):
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return (~s) & 0xFFFF


def handle(frame):
    if len(frame) < 14:
        return None
    dst, src, etype = frame[0:6], frame[6:12], struct.unpack("!H", frame[12:14])[0]
    if etype == 0x0806 and len(frame) >= 42:
        arp = frame[14:42]
        oper = struct.unpack("!H", arp[6:8])[0]
        spa, tpa, sha = arp[14:18], arp[24:28], arp[8:14]
        if oper == 1 and tpa == MY_IP:
            stats["arp_requests"] += 1
            reply = (struct.pack("!HHBBH", 1, 0x0800, 6, 4, 2) + MY_MAC + MY_IP + sha + spa)
            stats["arp_replies"] += 1
            return sha + MY_MAC + struct.pack("!H", 0x0806) + reply
        return None
    if etype == 0x0800 and len(frame) >= 34:
        ip = frame[14:]
        ihl = (ip[0] & 0x0F) * 4
        total = struct.unpack("!H", ip[2:4])[0]
        if ip[9] != 1 or ip[16:20] != MY_IP or total > len(ip):
            return None
        icmp = ip[ihl:total]
        if len(icmp) < 8 or icmp[0] != 8:
            return None
        stats["icmp_requests"] += 1
        if csum(icmp) != 0:
            stats["icmp_bad_checksum"] += 1
            return None
        rep_icmp = b"\0\0\0\0" + icmp[4:]
        c = csum(rep_icmp)
        rep_icmp = b"\0\0" + struct.pack("!H", c) + icmp[4:]
        hdr = bytearray(ip[:ihl])
        hdr[8] = 64
        hdr[12:16], hdr[16:20] = ip[16:20], ip[12:16]
        hdr[10:12] = b"\0\0"
        hdr[10:12] = struct.pack("!H", csum(bytes(hdr)))
        stats["icmp_replies"] += 1
        return src + MY_MAC + struct.pack("!H", 0x0800) + bytes(hdr) + rep_icmp
    stats["other"] += 1
    return None


def write_stats():
    with open(args.stats, "w") as f:
        json.dump(stats, f)


stop = False


def on_term(*_):
    global stop
    stop = True


signal.signal(signal.SIGTERM, on_term)
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.bind(("127.0.0.1", args.listen_port))
sock.settimeout(0.2)
deadline = time.monotonic() + args.seconds
write_stats()
print("ready", flush=True)
while not stop and time.monotonic() < deadline:
    try:
        frame = sock.recv(65536)
    except socket.timeout:
        continue
    stats["frames"] += 1
    stats["bytes"] += len(frame)
    out = handle(frame)
    if out is not None:
        sock.sendto(out, ("127.0.0.1", args.bridge_port))
    if stats["frames"] % 50 == 0:
        write_stats()
write_stats()
sys.exit(0)
