"""A scripted IMAP upstream on 127.0.0.1 that behaves until told to misbehave.

It speaks just enough IMAP for the proxy to log in, list, select INBOX, fetch and
IDLE over a small fixed mailbox. Setting ``mode`` makes every later command (and
DONE) after login get the chosen misbehaviour instead of an answer; LOGIN keeps
working, so the proxy's reconnects can be counted in ``logins``. One thread per
connection; ``close()`` stops them all.
"""

from __future__ import annotations

import socket
import threading
import time

from tests.support.net import LOOPBACK

MODES = ("ok", "garbage", "huge_literal", "endless_line", "drip", "foreign_tag", "bad_fetch")
#: How much of a huge literal or an endless line is streamed before giving up.
FLOOD_BYTES = 400 << 20


def message(uid: int) -> bytes:
    return (
        f"From: a@example.org\r\nTo: b@example.org\r\nSubject: message {uid}\r\n"
        f"Message-ID: <{uid}@fake>\r\n\r\nbody of message {uid}\r\n"
    ).encode()


class FakeUpstream:
    def __init__(self, messages: int = 5) -> None:
        self.messages = messages
        self.mode = "ok"
        self.logins = 0
        self.flooded = 0  # bytes sent by huge_literal / endless_line
        self._listener = socket.create_server((LOOPBACK, 0))
        self.port = self._listener.getsockname()[1]
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        accept = threading.Thread(target=self._accept, daemon=True)
        accept.start()
        self._threads.append(accept)

    @property
    def url(self) -> str:
        return f"imap+plain://{LOOPBACK}:{self.port}"

    def close(self) -> None:
        self._stop.set()
        self._listener.close()
        for sock in list(self._sockets):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()
        for thread in self._threads:
            thread.join(5)

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                sock, _ = self._listener.accept()
            except OSError:
                return
            self._sockets.append(sock)
            thread = threading.Thread(target=self._serve, args=(sock,), daemon=True)
            thread.start()
            self._threads.append(thread)

    # one connection -------------------------------------------------------------

    def _serve(self, sock: socket.socket) -> None:
        try:
            sock.sendall(b"* OK [CAPABILITY IMAP4rev1 IDLE UIDPLUS] fake ready\r\n")
            buffer = b""
            logged_in = False
            state = {"idle": b"*"}
            while not self._stop.is_set():
                chunk = sock.recv(65536)
                if not chunk:
                    return
                buffer += chunk
                while b"\r\n" in buffer:
                    line, buffer = buffer.split(b"\r\n", 1)
                    if logged_in and self.mode != "ok":
                        self._misbehave(sock, line, state)
                        return
                    logged_in = self._answer(sock, line, state) or logged_in
        except OSError:
            return
        finally:
            sock.close()

    def _answer(self, sock: socket.socket, line: bytes, state: dict[str, bytes]) -> bool:
        if line == b"DONE":
            sock.sendall(state["idle"] + b" OK idle done\r\n")
            return False
        tag, _, rest = line.partition(b" ")
        words = rest.split(b" ")
        name = words[0].upper()
        if name == b"UID" and len(words) > 1:
            name = b"UID " + words[1].upper()
        out = b""
        if name == b"LOGIN":
            with self._lock:
                self.logins += 1
            sock.sendall(tag + b" OK [CAPABILITY IMAP4rev1 IDLE UIDPLUS] logged in\r\n")
            return True
        if name == b"CAPABILITY":
            out = b"* CAPABILITY IMAP4rev1 IDLE UIDPLUS\r\n"
        elif name == b"LIST":
            out = b'* LIST () "/" INBOX\r\n'
        elif name == b"LSUB":
            out = b'* LSUB () "/" INBOX\r\n'
        elif name in (b"SELECT", b"EXAMINE"):
            out = (
                b"* %d EXISTS\r\n* FLAGS (\\Seen)\r\n* OK [UIDVALIDITY 42] x\r\n"
                b"* OK [UIDNEXT %d] x\r\n" % (self.messages, self.messages + 1)
            )
        elif name == b"IDLE":
            state["idle"] = tag
            sock.sendall(b"+ idling\r\n")
            return False
        elif name == b"UID FETCH":
            out = self._fetch(rest)
        elif name == b"UID SEARCH":
            out = b"* SEARCH " + b" ".join(b"%d" % u for u in range(1, self.messages + 1)) + b"\r\n"
        elif name == b"LOGOUT":
            out = b"* BYE bye\r\n"
        sock.sendall(out + tag + b" OK done\r\n")
        return False

    def _fetch(self, rest: bytes) -> bytes:
        upper = rest.upper()
        out = b""
        for uid in range(1, self.messages + 1):
            body = message(uid)
            items = [b"UID %d" % uid, b"FLAGS ()"]
            if b"INTERNALDATE" in upper:
                items.append(b'INTERNALDATE "01-Jan-2024 10:00:00 +0000"')
            if b"RFC822.SIZE" in upper:
                items.append(b"RFC822.SIZE %d" % len(body))
            if b"BODY.PEEK[]" in upper:
                items.append(b"BODY[] {%d}\r\n" % len(body) + body)
            out += b"* %d FETCH (" % uid + b" ".join(items) + b")\r\n"
        return out

    def _misbehave(self, sock: socket.socket, line: bytes, state: dict[str, bytes]) -> None:
        tag = line.partition(b" ")[0] if line != b"DONE" else state["idle"]
        mode = self.mode
        if mode == "garbage":
            sock.sendall(b"\x00\xff\xfe\x01 this is not IMAP\r\n" * 100)
        elif mode == "foreign_tag":
            sock.sendall(b"Z999 OK an answer to a command never sent\r\n")
        elif mode == "bad_fetch":
            sock.sendall(b"* 1 FETCH (UID one FLAGS \\Seen)\r\n" + tag + b" OK done\r\n")
        elif mode == "huge_literal":
            sock.sendall(b"* 1 FETCH (UID 1 BODY[] {4000000000}\r\n")
            self._flood(sock, b"\0" * (1 << 20))
        elif mode == "endless_line":
            sock.sendall(b"* OK ")
            self._flood(sock, b"a" * (1 << 20))
        elif mode == "drip":
            for byte in b"* OK [ALERT] " + b"x" * 600 + b"\r\n" + tag + b" OK done\r\n":
                if self._stop.is_set():
                    return
                sock.sendall(bytes([byte]))
                time.sleep(1.0)
        # then hold the connection until the proxy drops it
        sock.settimeout(1.0)
        while not self._stop.is_set():
            try:
                if not sock.recv(65536):
                    return
            except TimeoutError:
                continue

    def _flood(self, sock: socket.socket, chunk: bytes) -> None:
        sent = 0
        while sent < FLOOD_BYTES and not self._stop.is_set():
            sock.sendall(chunk)
            sent += len(chunk)
            with self._lock:
                self.flooded += len(chunk)
