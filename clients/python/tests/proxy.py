"""A small HTTP/1.1 proxy in front of the API that can lose answers: the
first ``drop`` POSTs are forwarded and answered by drover, but the proxy
closes the client's connection instead of passing the answer on, as a
connection broken after the server acted would. It records what it threw
away, so a test can compare it with what the client got after retrying."""

from __future__ import annotations

import json
import socket
import threading
from typing import Any


def _read_message(sock: socket.socket, buf: bytearray) -> bytes | None:
    """One HTTP message (head and a Content-Length body) from ``sock``."""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            return None
        buf += chunk
    head_end = buf.index(b"\r\n\r\n") + 4
    length = 0
    for line in bytes(buf[:head_end]).split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    while len(buf) < head_end + length:
        chunk = sock.recv(65536)
        if not chunk:
            return None
        buf += chunk
    msg = bytes(buf[: head_end + length])
    del buf[: head_end + length]
    return msg


class DroppingProxy:
    def __init__(self, upstream: tuple[str, int], drop: int) -> None:
        self.upstream = upstream
        self.drop = drop
        self.dropped: list[Any] = []
        self.forwarded = 0
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self._stop = False
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        self._stop = True
        self._listener.close()

    def _accept(self) -> None:
        while not self._stop:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn, socket.create_connection(self.upstream) as up:
            cbuf, ubuf = bytearray(), bytearray()
            while True:
                req = _read_message(conn, cbuf)
                if req is None:
                    return
                up.sendall(req)
                resp = _read_message(up, ubuf)
                if resp is None:
                    return
                with self._lock:
                    self.forwarded += 1
                    lose = req.startswith(b"POST ") and len(self.dropped) < self.drop
                    if lose:
                        self.dropped.append(json.loads(resp.split(b"\r\n\r\n", 1)[1]))
                if lose:
                    # Close without answering: the client sees the connection
                    # break after drover has acted on the request.
                    conn.shutdown(socket.SHUT_RDWR)
                    return
                conn.sendall(resp)
