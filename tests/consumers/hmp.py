#!/usr/bin/python3
# A QEMU human monitor (HMP) client for the consumer tier.
#
#   hmp.py SOCKET COMMAND...      runs each command, prints its output
#   hmp.py SOCKET --wait-for TEXT COMMAND [SECONDS]
#                                 repeats COMMAND until its output contains
#                                 TEXT (exit 0) or SECONDS pass (exit 1)
#   hmp.py SOCKET --wait-line LINE COMMAND [SECONDS]
#                                 the same, until a whole line is LINE
#
# SOCKET is a `-monitor unix:SOCKET,server=on,wait=off` socket.
# SPDX-License-Identifier: GPL-2.0-or-later

import socket
import sys
import time

PROMPT = b"(qemu) "


def connect(path, seconds=20.0):
    end = time.monotonic() + seconds
    while True:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(path)
            s.settimeout(60)
            read_to_prompt(s)
            return s
        except OSError:
            s.close()
            if time.monotonic() > end:
                raise
            time.sleep(0.1)


def read_to_prompt(s):
    buf = b""
    while not buf.endswith(PROMPT):
        chunk = s.recv(4096)
        if not chunk:
            raise OSError("monitor closed the connection")
        buf += chunk
    return buf[: -len(PROMPT)]


def run(s, cmd):
    s.sendall(cmd.encode() + b"\n")
    try:
        out = read_to_prompt(s)
    except OSError:
        if cmd.strip() == "quit":
            return ""
        raise
    # the monitor echoes the command line (with terminal escapes) first
    text = out.decode(errors="replace").replace("\r", "")
    lines = text.split("\n")
    return "\n".join(lines[1:]).strip()


def main():
    if len(sys.argv) < 3:
        sys.exit("usage: hmp.py SOCKET COMMAND... | SOCKET --wait-for|--wait-line TEXT COMMAND [SECONDS]")
    path = sys.argv[1]
    s = connect(path)
    if sys.argv[2] in ("--wait-for", "--wait-line"):
        whole_line = sys.argv[2] == "--wait-line"
        text, cmd = sys.argv[3], sys.argv[4]
        seconds = float(sys.argv[5]) if len(sys.argv) > 5 else 60.0
        end = time.monotonic() + seconds
        while True:
            out = run(s, cmd)
            if (text in out.split("\n")) if whole_line else (text in out):
                print(out)
                return 0
            if time.monotonic() > end:
                print(out)
                return 1
            time.sleep(0.2)
    for cmd in sys.argv[2:]:
        print(run(s, cmd))
    return 0


if __name__ == "__main__":
    sys.exit(main())
