#!/usr/bin/env python3
"""Does a SIGKILL of redis-server lose writes it already acknowledged? The evidence behind the
service databases' `appendfsync always` (docs/FAULTS.md, "Durability").

    bench/aof_loss.py [--policy everysec|always] [--trials 10] [--seconds 6] [--dir /var/tmp]

Each trial starts a redis-server (AOF on, the given fsync policy) in a fresh directory on the
disk under test, loads that disk as image builds and compilers do (two threads writing 256 MiB
each and calling sync(2)), sends INCR from one client and remembers the last value Redis
answered, SIGKILLs the server, restarts it on the same AOF and reads the counter back. A value
below the last answer means acknowledged writes were lost: with `everysec`, Redis postpones its
AOF write(2) while a background fsync runs (up to 2 s) but still answers the clients.
Exit status: 0 when no trial lost anything, 1 otherwise.
"""
import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Resp:
    """The smallest RESP client there is: one command at a time, integer answers."""

    def __init__(self, port: int):
        deadline = time.monotonic() + 10
        while True:
            try:
                self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        self.buf = b""

    def call(self, *args: str) -> bytes:
        msg = f"*{len(args)}\r\n" + "".join(f"${len(a)}\r\n{a}\r\n" for a in args)
        self.sock.sendall(msg.encode())
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("redis closed the connection")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        if line.startswith(b"$") and line != b"$-1":
            n = int(line[1:])
            while len(self.buf) < n + 2:
                self.buf += self.sock.recv(65536)
            line, self.buf = self.buf[:n], self.buf[n + 2:]
        return line


def trial(policy: str, seconds: float, root: str) -> tuple[int, int]:
    data = tempfile.mkdtemp(prefix=f"aof-{policy}-", dir=root)
    port = free_port()
    argv = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", data,
            "--appendonly", "yes", "--appendfsync", policy, "--save", ""]
    server = subprocess.Popen(argv, stdout=subprocess.DEVNULL)
    stop = threading.Event()

    def pressure(path: str):
        block = os.urandom(1 << 20)
        with open(path, "wb") as f:
            while not stop.is_set():
                for _ in range(256):
                    f.write(block)
                f.seek(0)
                os.sync()

    loaders = [threading.Thread(target=pressure, args=(os.path.join(data, f"ballast{i}"),))
               for i in range(2)]
    try:
        client = Resp(port)
        for t in loaders:
            t.start()
        acked, end = 0, time.monotonic() + seconds
        while time.monotonic() < end:
            acked = int(client.call("INCR", "n")[1:])
        server.send_signal(signal.SIGKILL)
        server.wait()
        stop.set()
        for t in loaders:
            t.join()
        server = subprocess.Popen(argv, stdout=subprocess.DEVNULL)
        reader = Resp(port)
        got = reader.call("GET", "n")
        while got.startswith(b"-LOADING"):
            time.sleep(0.05)
            got = reader.call("GET", "n")
        return acked, int(got) if got != b"$-1" else 0
    finally:
        stop.set()
        server.kill()
        server.wait()
        shutil.rmtree(data, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--policy", default="everysec", choices=["everysec", "always"])
    ap.add_argument("--trials", type=int, default=10)
    ap.add_argument("--seconds", type=float, default=6.0)
    ap.add_argument("--dir", default="/var/tmp", help="a directory on the disk under test")
    args = ap.parse_args()
    lost_any = False
    for i in range(args.trials):
        acked, got = trial(args.policy, args.seconds, args.dir)
        lost_any |= got < acked
        print(f"{args.policy} trial {i + 1}: acknowledged {acked}, after SIGKILL and restart {got}, "
              f"lost {acked - got}", flush=True)
    return 1 if lost_any else 0


if __name__ == "__main__":
    sys.exit(main())
