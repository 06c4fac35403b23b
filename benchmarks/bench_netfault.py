"""Cost of the fault proxy with no fault set: round-trip latency and message throughput through
the proxy against the direct path, measured in the same run on loopback.

An echo server and the client run as separate processes (as a board and a broker would), so the
proxy thread in this process competes with nothing of ours for the GIL. Last line: JSON.

    python benchmarks/bench_netfault.py [--rounds 2000] [--messages 50000]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import textwrap

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from micropython_hil.netfault import FaultProxy  # noqa: E402

ECHO = textwrap.dedent("""
    import socket, sys, threading
    srv = socket.create_server(("127.0.0.1", 0))
    print(srv.getsockname()[1], flush=True)
    def serve(c):
        c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        while data := c.recv(65536):
            c.sendall(data)
        c.close()
    while True:
        conn, _ = srv.accept()
        threading.Thread(target=serve, args=(conn,), daemon=True).start()
""")

CLIENT = textwrap.dedent("""
    import json, socket, sys, threading, time
    rounds, messages, size = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    paths = {"direct": int(sys.argv[4]), "proxy": int(sys.argv[5])}

    def connect(port):
        c = socket.create_connection(("127.0.0.1", port))
        c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return c

    def recv_n(c, n):
        got = 0
        while got < n:
            chunk = c.recv(min(65536, n - got))
            if not chunk:
                raise SystemExit("connection closed")
            got += len(chunk)

    def round_trips(c, n, msg):
        out = []
        for _ in range(n):
            t = time.perf_counter()
            c.sendall(msg)
            recv_n(c, len(msg))
            out.append(time.perf_counter() - t)
        return out

    def throughput(c, n, msg):
        # one writer, one reader: messages stream through without waiting for each echo
        reader = threading.Thread(target=recv_n, args=(c, n * len(msg)))
        t = time.perf_counter()
        reader.start()
        for _ in range(n):
            c.sendall(msg)
        reader.join()
        return n / (time.perf_counter() - t)

    msg = bytes(size)
    conns = {k: connect(p) for k, p in paths.items()}
    for c in conns.values():
        round_trips(c, 200, msg)  # warm up
    rtts = {k: [] for k in paths}
    rates = {k: [] for k in paths}
    for block in range(10):  # interleave the two paths so drift hits both alike
        for k, c in conns.items():
            rtts[k] += round_trips(c, rounds // 10, msg)
    for block in range(10):
        for k, c in conns.items():
            rates[k].append(throughput(c, messages // 10, msg))
    p50 = {k: sorted(v)[len(v) // 2] for k, v in rtts.items()}
    print(json.dumps({"p50": p50, "rate": {k: sorted(v)[len(v) // 2] for k, v in rates.items()}}))
""")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=2000, help="round trips per path")
    ap.add_argument("--messages", type=int, default=500000, help="messages per path for throughput")
    ap.add_argument("--size", type=int, default=64, help="message size in bytes")
    args = ap.parse_args()
    echo = subprocess.Popen([sys.executable, "-c", ECHO], stdout=subprocess.PIPE, text=True)
    try:
        port = int(echo.stdout.readline())
        with FaultProxy("127.0.0.1", port) as proxy:
            out = subprocess.run([sys.executable, "-c", CLIENT, str(args.rounds), str(args.messages),
                                  str(args.size), str(port), str(proxy.port)],
                                 capture_output=True, text=True, timeout=300)
            if out.returncode:
                raise SystemExit(f"bench_netfault: client failed: {out.stderr.strip()}")
            res = json.loads(out.stdout.strip().splitlines()[-1])
            stats = proxy.stats()
    finally:
        echo.kill()
        echo.wait()
    p50, rate = res["p50"], res["rate"]
    print(f"round trip p50: direct {p50['direct'] * 1e3:.3f} ms, proxy {p50['proxy'] * 1e3:.3f} ms; "
          f"throughput: direct {rate['direct']:.0f} msg/s, proxy {rate['proxy']:.0f} msg/s; "
          f"proxy saw {stats.connections_seen} connection(s), {stats.bytes_up} B up", file=sys.stderr)
    print(json.dumps({
        "proxy_added_latency_p50_ms": round((p50["proxy"] - p50["direct"]) * 1e3, 4),
        "proxy_throughput_msgs_s": round(rate["proxy"]),
        "direct_throughput_msgs_s": round(rate["direct"]),
        "proxy_throughput_ratio": round(rate["proxy"] / rate["direct"], 3),
        "direct_latency_p50_ms": round(p50["direct"] * 1e3, 4),
        "proxy_latency_p50_ms": round(p50["proxy"] * 1e3, 4),
        "message_bytes": args.size,
    }))


if __name__ == "__main__":
    main()
