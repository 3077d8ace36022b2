#!/usr/bin/env python3
"""Hostile-rack load tools for tests/bench/hostile-rack.sh (stdlib only).

  hostile.py hold --target IP:PORT --from A[,B...] --per-source N
                  [--trickle-every S] [--hold-secs T]
      Opens N TCP connections from each source address and holds them: half
      send nothing (idle), half send one byte of an unfinished request every
      S seconds (trickle). Reports how many the server refused at once
      (closed within 0.5 s), how many it closed later and when (its
      deadlines), and how many were still open after T seconds.

  hostile.py fetch --target IP:PORT --path /file --from A[,B...] --count N
      Fetches the path N times, round-robin over the source addresses (the
      rack's known nodes), one at a time; prints each fetch's time and the
      p50/p99/max, and how many failed.

  hostile.py probes --server IP --count N --known MAC[,MAC...]
      Sends N forged rackboot probe reports (DHCPINFORM with option 224)
      to IP:67 from this host's address: random MACs, and known nodes' MACs
      beside random ones (as chaddr and in the list), with no token, a
      random token, or a token-shaped option of the wrong length. Prints how
      many were sent and how fast.

Every loop is bounded in count and time.
"""

import argparse
import asyncio
import http.client
import json
import os
import random
import socket
import struct
import sys
import time


def addrs(s):
    return [a for a in s.split(",") if a]


async def hold_one(host, port, src, trickle_every, hold_secs, t0, out):
    opened = time.monotonic()
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port, local_addr=(src, 0)), 5
        )
    except Exception:
        out["connect_failed"] += 1
        return
    out["opened"] += 1
    request = b"GET /slow HTTP/1.1\r\nHost: agent\r\nX-Pad: " + b"a" * 4096
    sent = 0
    deadline = t0 + hold_secs
    closed_at = None
    while time.monotonic() < deadline:
        try:
            if trickle_every and sent < len(request):
                writer.write(request[sent : sent + 1])
                sent += 1
                await writer.drain()
            wait = trickle_every if trickle_every else deadline - time.monotonic()
            data = await asyncio.wait_for(reader.read(1), max(0.01, wait))
            if not data:
                closed_at = time.monotonic()
                break
        except asyncio.TimeoutError:
            continue
        except (ConnectionError, OSError):
            closed_at = time.monotonic()
            break
    if closed_at is None:
        out["still_open"] += 1
    else:
        lived = closed_at - opened
        if lived < 0.5:
            out["refused_at_once"] += 1
        else:
            out["closed_later"] += 1
            out["close_times"].append(lived)
    writer.close()


async def hold(args):
    host, port = args.target.rsplit(":", 1)
    port = int(port)
    out = {
        "opened": 0,
        "connect_failed": 0,
        "refused_at_once": 0,
        "closed_later": 0,
        "still_open": 0,
        "close_times": [],
    }
    t0 = time.monotonic()
    tasks = []
    for src in addrs(args.sources):
        for i in range(args.per_source):
            trickle = args.trickle_every if i % 2 else 0
            tasks.append(
                asyncio.create_task(
                    hold_one(host, port, src, trickle, args.hold_secs, t0, out)
                )
            )
            if len(tasks) % 200 == 0:
                await asyncio.sleep(0.01)
    await asyncio.gather(*tasks)
    times = sorted(out.pop("close_times"))
    out["sources"] = len(addrs(args.sources))
    out["close_secs_min"] = round(times[0], 2) if times else None
    out["close_secs_max"] = round(times[-1], 2) if times else None
    print(json.dumps(out))


def pct(xs, p):
    if not xs:
        return None
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def fetch(args):
    host, port = args.target.rsplit(":", 1)
    srcs = addrs(args.sources)
    times, failed, size = [], 0, 0
    end = time.monotonic() + args.max_secs
    for i in range(args.count):
        if time.monotonic() > end:
            break
        src = srcs[i % len(srcs)]
        t = time.monotonic()
        try:
            c = http.client.HTTPConnection(
                host, int(port), timeout=10, source_address=(src, 0)
            )
            c.request("GET", args.path)
            r = c.getresponse()
            body = r.read()
            c.close()
            if r.status != 200:
                failed += 1
                continue
            size = len(body)
            times.append(time.monotonic() - t)
        except Exception:
            failed += 1
        if args.interval:
            time.sleep(args.interval)
    print(
        json.dumps(
            {
                "fetches": len(times),
                "failed": failed,
                "bytes": size,
                "p50_ms": round(pct(times, 50) * 1000, 1) if times else None,
                "p99_ms": round(pct(times, 99) * 1000, 1) if times else None,
                "max_ms": round(max(times) * 1000, 1) if times else None,
            }
        )
    )


def inform(chaddr, macs, token):
    xid = random.getrandbits(32)
    ciaddr = socket.inet_aton(args_global.source)
    head = struct.pack(
        "!BBBBIHH4s4s4s4s16s64s128s",
        1, 1, 6, 0, xid, 0, 0,
        ciaddr, bytes(4), bytes(4), bytes(4),
        chaddr + bytes(10), bytes(64), bytes(128),
    )
    opts = b"\x63\x82\x53\x63" + b"\x35\x01\x08"
    payload = b"".join(macs)
    opts += bytes([224, len(payload)]) + payload
    opts += bytes([225, 7]) + b"cpus=64"
    if token is not None:
        opts += bytes([226, len(token)]) + token
    return head + opts + b"\xff"


def rand_mac():
    return bytes([0x02, random.getrandbits(8)]) + os.urandom(4)


def probes(args):
    known = [bytes.fromhex(m.replace(":", "")) for m in addrs(args.known)]
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((args.source, 68))
    t0 = time.monotonic()
    sent = 0
    kinds = {}
    for i in range(args.count):
        if time.monotonic() - t0 > args.max_secs:
            break
        kind = i % 6
        if kind == 0:  # random MACs, no token
            chaddr = rand_mac()
            macs, token, name = [chaddr, rand_mac(), rand_mac()], None, "random_no_token"
        elif kind == 1:  # random MACs, a random token
            chaddr = rand_mac()
            macs, token, name = [chaddr, rand_mac()], os.urandom(32), "random_bad_token"
        elif kind == 2:  # a known node asking, with new MACs, random token
            chaddr = random.choice(known)
            macs, token, name = [chaddr, rand_mac()], os.urandom(32), "known_asks_bad_token"
        elif kind == 3:  # a random MAC naming a known node's MAC, no token
            chaddr = rand_mac()
            macs, token, name = [chaddr, random.choice(known)], None, "names_known_no_token"
        elif kind == 4:  # a random MAC naming a known node's MAC, random token
            chaddr = rand_mac()
            macs, token, name = [chaddr, random.choice(known)], os.urandom(32), "names_known_bad_token"
        else:  # wrong-length token
            chaddr = rand_mac()
            macs, token, name = [chaddr, rand_mac()], os.urandom(16), "short_token"
        s.sendto(inform(chaddr, macs, token), (args.server, 67))
        sent += 1
        kinds[name] = kinds.get(name, 0) + 1
        if args.rate and sent % 100 == 0:
            ahead = sent / args.rate - (time.monotonic() - t0)
            if ahead > 0:
                time.sleep(ahead)
    dt = time.monotonic() - t0
    print(json.dumps({"sent": sent, "secs": round(dt, 2), "rate": round(sent / dt), "kinds": kinds}))


args_global = None


def main():
    global args_global
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    h = sub.add_parser("hold")
    h.add_argument("--target", required=True)
    h.add_argument("--from", dest="sources", required=True)
    h.add_argument("--per-source", type=int, required=True)
    h.add_argument("--trickle-every", type=float, default=4.0)
    h.add_argument("--hold-secs", type=float, default=60.0)
    f = sub.add_parser("fetch")
    f.add_argument("--target", required=True)
    f.add_argument("--path", required=True)
    f.add_argument("--from", dest="sources", required=True)
    f.add_argument("--count", type=int, default=200)
    f.add_argument("--interval", type=float, default=0.0)
    f.add_argument("--max-secs", type=float, default=120.0)
    q = sub.add_parser("probes")
    q.add_argument("--server", required=True)
    q.add_argument("--source", required=True)
    q.add_argument("--count", type=int, default=10000)
    q.add_argument("--rate", type=int, default=5000)
    q.add_argument("--known", required=True)
    q.add_argument("--max-secs", type=float, default=60.0)
    args = p.parse_args()
    args_global = args
    if args.cmd == "hold":
        asyncio.run(hold(args))
    elif args.cmd == "fetch":
        fetch(args)
    else:
        probes(args)


if __name__ == "__main__":
    sys.exit(main())
