#!/usr/bin/env python3
"""RSS of a running tollgate through a flood of sign-ins (a benchmark, not a test).

    python3 tests/load/signin_rss.py [--bin target/release/tollgate] [--users 200]
                                     [--logins 1000] [--threads 2]

Starts the binary on a fresh SQLite file with rate limits off, signs `--users` users up,
then sends `--logins` sign-ins at once (one thread each, spread over the users), `--rounds`
times, sampling the server's VmRSS every 50 ms from /proc. Prints idle, peak and settled RSS in MB, and how
the sign-ins were answered. `--threads` sets auth.hashing_threads, so the bounded pool can
be compared with a wide one in the same run.
"""

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request


def rss_mb(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def post(base, path, body):
    request = urllib.request.Request(
        base + path,
        data=json.dumps(body).encode(),
        headers={"content-type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status
    except urllib.error.HTTPError as err:
        return err.code
    except Exception:  # noqa: BLE001 - a refused or reset connection counts as an error
        return -1


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--bin", default="target/release/tollgate")
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--logins", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    work = tempfile.mkdtemp()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    catalog = os.path.join(work, "catalog.toml")
    with open("config/default.toml") as src, open(catalog, "w") as dst:
        dst.writelines(l for l in src if not l.startswith("rate_limit = "))
    env = dict(
        os.environ,
        TOLLGATE_CONFIG_DIR=os.path.abspath("config"),
        TOLLGATE_CONFIG=catalog,
        TOLLGATE_ENV="production",
        TOLLGATE__SERVER__PORT=str(port),
        TOLLGATE__DATABASE__URL=f"sqlite://{work}/t.db",
        TOLLGATE__AUTH__JWT_SECRET="bench-jwt-secret-0123456789abcdef0123",
        TOLLGATE__AUTH__HASHING_THREADS=str(args.threads),
        TOLLGATE__AUTH__HASHING_QUEUE_SECONDS="120",
        TOLLGATE__HTTP__ANONYMOUS_RATE_LIMIT__REQUESTS="100000000",
        TOLLGATE__MAIL__OUTBOX_DIR=os.path.join(work, "outbox"),
        TOLLGATE__LOG__LEVEL="warn",
        # Production refuses the local payment stand-in; no payment is made here.
        TOLLGATE__PAYMENTS__LOCAL_ADAPTER="false",
    )
    server = subprocess.Popen([args.bin, "serve"], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(base + "/health", timeout=1)
                break
            except Exception:  # noqa: BLE001
                time.sleep(0.1)
        idle = rss_mb(server.pid)
        password = "correct horse battery"
        for i in range(args.users):
            post(base, "/v1/auth/signup", {"email": f"u{i}@example.com", "password": password})
        after_signups = rss_mb(server.pid)

        rounds = []
        statuses = []
        lock = threading.Lock()
        started = time.time()
        for _ in range(args.rounds):
            samples = []
            done = threading.Event()

            def sample():
                while not done.is_set():
                    samples.append(rss_mb(server.pid))
                    time.sleep(0.05)

            sampler = threading.Thread(target=sample)
            sampler.start()
            gate = threading.Barrier(args.logins)

            def login(i):
                gate.wait()
                status = post(base, "/v1/auth/login",
                              {"email": f"u{i % args.users}@example.com", "password": password})
                with lock:
                    statuses.append(status)

            threads = [threading.Thread(target=login, args=(i,)) for i in range(args.logins)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            time.sleep(1)
            done.set()
            sampler.join()
            rounds.append(round(max(samples or [0]), 1))
        elapsed = time.time() - started
        settled = rss_mb(server.pid)
        answered = {s: statuses.count(s) for s in sorted(set(statuses))}
        print(json.dumps({
            "hashing_threads": args.threads,
            "rss_mb": {"idle": round(idle, 1), "after_signups": round(after_signups, 1),
                       "peak_per_round": rounds,
                       "settled": round(settled, 1)},
            "logins_per_round": args.logins, "answered": answered,
            "seconds": round(elapsed, 1),
        }))
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    sys.exit(main())
