"""A loopback TCP proxy that injects storage faults in front of an HTTP server (the tests' moto S3).

Each connection's first request is read, then by a seeded schedule the proxy resets the connection (TCP RST),
answers `503 Slow Down` (S3's throttling reply), delays it, or passes it through; after that the connection
is piped as is. The schedule is keyed by the request (method, target, range) and its occurrence, so it does
not depend on thread timing: each distinct request is faulted on its first `faults_per_request`
occurrences at most, and a client that retries more often than that always gets through.

    proxy = FaultProxy("127.0.0.1", moto_port, seed=0, reset=0.2, slow_down=0.2, delay=0.1)
    endpoint = proxy.start()          # http://127.0.0.1:<port>, use it as the S3 endpoint
    ... proxy.counts                  # {"reset": n, "slow_down": n, "delay": n, "pass": n}
    proxy.stop()
"""

from __future__ import annotations

import random
import socket
import struct
import threading
import time
from collections import Counter

SLOW_DOWN_BODY = (b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code>'
                  b"<Message>Please reduce your request rate.</Message></Error>")
HEAD_LIMIT = 64 * 1024


class FaultProxy:
    """Faults by a seeded schedule: `reset`, `slow_down` and `delay` are the shares of first occurrences of
    a request that get each fault; `delay_s` is how long a delayed request waits."""

    def __init__(self, host: str, port: int, seed: int = 0, reset: float = 0.0, slow_down: float = 0.0,
                 delay: float = 0.0, delay_s: float = 0.2, faults_per_request: int = 1) -> None:
        self.upstream = (host, port)
        self.seed, self.shares = seed, (("reset", reset), ("slow_down", slow_down), ("delay", delay))
        self.delay_s, self.faults_per_request = delay_s, faults_per_request
        self.counts: Counter[str] = Counter()
        self._seen: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._server = socket.create_server(("127.0.0.1", 0), backlog=512)
        self._stopped = threading.Event()

    def start(self) -> str:
        threading.Thread(target=self._accept, daemon=True, name="faultproxy").start()
        return f"http://127.0.0.1:{self._server.getsockname()[1]}"

    def stop(self) -> None:
        self._stopped.set()
        self._server.close()

    def _fault(self, key: str) -> str:
        with self._lock:
            self._seen[key] += 1
            occurrence = self._seen[key]
        if occurrence > self.faults_per_request:
            return "pass"
        draw = random.Random(f"{self.seed}:{key}:{occurrence if self.faults_per_request > 1 else 1}").random()
        for kind, share in self.shares:
            if draw < share:
                return kind
            draw -= share
        return "pass"

    def _accept(self) -> None:
        while not self._stopped.is_set():
            try:
                client, _ = self._server.accept()
            except OSError:   # closed by stop(), or one aborted connection: keep serving the others
                if self._stopped.is_set():
                    return
                continue
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        head = b""
        try:
            while b"\r\n\r\n" not in head and len(head) < HEAD_LIMIT:
                chunk = client.recv(65536)
                if not chunk:
                    client.close()
                    return
                head += chunk
        except OSError:
            client.close()
            return
        lines = head.split(b"\r\n")
        request = lines[0].decode("latin-1")
        ranges = [line.decode("latin-1") for line in lines[1:] if line.lower().startswith(b"range:")]
        kind = self._fault(" ".join([request, *ranges]))
        with self._lock:
            self.counts[kind] += 1
        if kind == "reset":
            client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            client.close()
            return
        if kind == "slow_down":
            client.sendall(b"HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\nConnection: close\r\n"
                           b"Content-Length: " + str(len(SLOW_DOWN_BODY)).encode() + b"\r\n\r\n" + SLOW_DOWN_BODY)
            client.close()
            return
        if kind == "delay":
            time.sleep(self.delay_s)
        try:
            upstream = socket.create_connection(self.upstream)
            upstream.sendall(head)
        except OSError:
            client.close()
            return
        threading.Thread(target=_pipe, args=(upstream, client), daemon=True).start()
        _pipe(client, upstream)


def _pipe(source: socket.socket, target: socket.socket) -> None:
    try:
        while chunk := source.recv(65536):
            target.sendall(chunk)
    except OSError:
        pass
    finally:
        for sock in (source, target):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()
