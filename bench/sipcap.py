"""INVITE -> final response times at one UDP port on loopback, from kernel packet timestamps.

    .venv/bin/python bench/sipcap.py PORT OUT.csv

gateway_bench.py runs this next to a SIPp bridge bound to PORT. SIPp's own
-trace_rtt reads CLOCK_MONOTONIC_COARSE, which ticks every jiffy (4 ms at
HZ=250), too coarse for a few-millisecond delay target; the kernel stamps every
packet in nanoseconds. An AF_PACKET socket on `lo` with a BPF filter sees only
UDP to or from PORT; for each Call-ID it keeps the first INVITE sent from PORT
and the first final response (>= 200) to that INVITE sent to PORT.

Prints "sipcap ready" once capturing. On SIGTERM or SIGINT it writes OUT.csv
(call_id;invite_ns;final_ns;status) and one JSON line of counters (packets,
kernel drops) on stdout, then exits. Needs CAP_NET_RAW (root); exits 3 without.
"""

from __future__ import annotations

import array
import json
import re
import signal
import socket
import struct
import sys

ETH_P_IP = 0x0800
SO_ATTACH_FILTER = 26
SO_TIMESTAMPNS = 35
SOL_PACKET = 263
PACKET_STATISTICS = 6
PACKET_OUTGOING = 4
ETH_HLEN = 14

_CALL_ID = re.compile(rb"\r\n(?:call-id|i)[ \t]*:[ \t]*([^\r\n]+)", re.IGNORECASE)
_CSEQ = re.compile(rb"\r\n(?:cseq)[ \t]*:[ \t]*\d+[ \t]+([A-Za-z]+)", re.IGNORECASE)


def bpf_udp_port(port: int) -> list[tuple[int, int, int, int]]:
    """Classic BPF: IPv4, UDP, not a later fragment, source or destination port == port
    (the frame starts with lo's 14-byte Ethernet header)."""
    return [
        (0x28, 0, 0, 12),  # ldh [12]            ethertype
        (0x15, 0, 10, ETH_P_IP),  # jeq #0x800          else drop
        (0x30, 0, 0, 23),  # ldb [23]            IP protocol
        (0x15, 0, 8, 17),  # jeq #17 (UDP)       else drop
        (0x28, 0, 0, 20),  # ldh [20]            flags + fragment offset
        (0x45, 6, 0, 0x1FFF),  # jset #0x1fff        a later fragment: drop
        (0xB1, 0, 0, ETH_HLEN),  # ldxb 4*([14]&0xf)   IP header length
        (0x48, 0, 0, ETH_HLEN),  # ldh [x+14]          source port
        (0x15, 2, 0, port),  # jeq #port           accept
        (0x48, 0, 0, ETH_HLEN + 2),  # ldh [x+16]          destination port
        (0x15, 0, 1, port),  # jeq #port           else drop
        (0x06, 0, 0, 0x40000),  # ret #262144         accept
        (0x06, 0, 0, 0),  # ret #0              drop
    ]


def attach_filter(sock: socket.socket, prog: list[tuple[int, int, int, int]]) -> array.array[int]:
    buf = array.array("B", b"".join(struct.pack("HBBI", *ins) for ins in prog))
    address, _ = buf.buffer_info()  # struct sock_fprog points at the program: no ctypes needed
    fprog = struct.pack("HL", len(prog), address)
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)
    return buf  # the kernel copies the program, but keep it alive until then


def main(argv: list[str]) -> int:
    port, out = int(argv[0]), argv[1]
    try:
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_IP))
    except PermissionError:
        print("sipcap: AF_PACKET needs CAP_NET_RAW", file=sys.stderr)
        return 3
    attach_filter(sock, bpf_udp_port(port))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024 * 1024)
    sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    sock.bind(("lo", ETH_P_IP))
    # Packets that matched before the filter was attached: read them off and ignore them.
    sock.setblocking(False)
    try:
        while True:
            sock.recv(65536)
    except BlockingIOError:
        pass
    sock.settimeout(0.2)
    stop = [False]
    signal.signal(signal.SIGTERM, lambda *_: stop.__setitem__(0, True))
    signal.signal(signal.SIGINT, lambda *_: stop.__setitem__(0, True))
    invites: dict[bytes, int] = {}
    finals: dict[bytes, tuple[int, int]] = {}
    packets = 0
    print("sipcap ready", flush=True)
    cmsg_space = socket.CMSG_SPACE(16)
    while not stop[0]:
        try:
            data, anc, _flags, addr = sock.recvmsg(65536, cmsg_space)
        except TimeoutError:
            continue
        except InterruptedError:
            continue
        if addr[2] == PACKET_OUTGOING:  # lo shows each packet twice: as sent and as received
            continue
        packets += 1
        ts = 0
        for level, kind, value in anc:
            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                sec, nsec = struct.unpack("qq", value[:16])
                ts = sec * 1_000_000_000 + nsec
        ihl = (data[ETH_HLEN] & 0x0F) * 4
        udp = ETH_HLEN + ihl
        sport, dport = struct.unpack_from("!HH", data, udp)
        payload = data[udp + 8 :]
        if sport == port and payload.startswith(b"INVITE "):
            m = _CALL_ID.search(payload)
            if m and m.group(1) not in invites:
                invites[m.group(1)] = ts
        elif dport == port and payload.startswith(b"SIP/2.0 "):
            try:
                status = int(payload[8:11])
            except ValueError:
                continue
            if status < 200:
                continue
            c = _CSEQ.search(payload)
            m = _CALL_ID.search(payload)
            if c and m and c.group(1).upper() == b"INVITE" and m.group(1) not in finals:
                finals[m.group(1)] = (ts, status)
    drops = 0
    try:
        seen, drops = struct.unpack("II", sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8))
    except OSError:
        pass
    with open(out, "w") as f:
        f.write("call_id;invite_ns;final_ns;status\n")
        for cid, t0 in invites.items():
            t1, status = finals.get(cid, (0, 0))
            f.write(f"{cid.decode(errors='replace')};{t0};{t1};{status}\n")
    print(
        json.dumps({"packets": packets, "kernel_drops": drops, "invites": len(invites), "finals": len(finals)}),
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
