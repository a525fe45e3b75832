"""The SMTP DATA reader: finds the one true end of data and checks the message on the way in.

Pure byte logic (no twisted): fed raw bytes after ``354``, it returns the bytes that follow the
final ``<CRLF>.<CRLF>``. Only that sequence ends the DATA (RFC 5321 §4.1.1.4); a bare CR or LF
anywhere makes the message refused after the end (RFC 5321 §2.3.8, SMTP smuggling CVE-2023-51764
family), so ``\\n.\\n``, ``\\r.\\r``, ``\\r\\n.\\n`` and the rest never end a message and never
let a second one be smuggled in. Lines are dot-unstuffed (§4.5.2). Size, line length and the
Received-header loop count (§6.3) are enforced while reading, with bounded memory: once a
limit is exceeded the rest is read and discarded, and the refusal is given after the final dot.
"""

from __future__ import annotations

from typing import Optional, Union

from cgtwist.errors import MailError

_END = b"\r\n.\r\n"


class DataReader:
    """One message's DATA phase. ``feed`` until it returns the leftover bytes, then ``result``."""

    def __init__(self, max_size: int, max_line: int, max_received: int) -> None:
        self.max_size = max_size
        self.max_line = max_line
        self.max_received = max_received
        self.size = 0  # unstuffed octets received (counted even after a refusal)
        self.received_headers = 0
        self.error: Optional[MailError] = None
        self._parts: list[bytes] = []
        self._buf = b""
        self._midline = False  # True: _buf starts inside an over-long line that was discarded
        self._in_headers = True
        self.done = False

    def feed(self, data: bytes) -> Optional[bytes]:
        """Consume ``data``; return None while DATA continues, else the bytes after the end."""
        buf = self._buf + data if self._buf else data
        end = -1
        if not self._midline and buf.startswith(b".\r\n"):
            end = 0
        else:
            i = buf.find(_END)
            if i >= 0:
                end = i + 2
        if end >= 0:
            self._lines(buf[:end])
            self._buf = b""
            self.done = True
            return buf[end + 3 :]
        last = buf.rfind(b"\r\n")
        if last >= 0:
            self._lines(buf[: last + 2])
            buf = buf[last + 2 :]
        if len(buf) > self.max_line:
            # RFC 5321 §4.5.3.1.6: text line limit; keep reading but remember the refusal.
            self._fail(MailError(552, "5.3.4", "Message line too long"))
            # Keep the last byte: it may be the CR of the CRLF that ends this line.
            buf = buf[-1:]
            self._midline = True
        self._buf = buf
        return None

    def _fail(self, err: MailError) -> None:
        if self.error is None:
            self.error = err
        self._parts = []

    def _lines(self, chunk: bytes) -> None:
        """Complete lines (``chunk`` ends with CRLF, or is empty)."""
        if not chunk:
            return
        midline, self._midline = self._midline, False
        if self.error is not None:
            self.size += len(chunk)
            return
        crlf = chunk.count(b"\r\n")
        if chunk.count(b"\n") != crlf or chunk.count(b"\r") != crlf:
            # RFC 5321 §2.3.8: CR and LF only as CRLF. Never guess where the message ends.
            self._fail(MailError(554, "5.6.0", "Message refused: bare CR or LF in message data"))
            return
        if len(chunk) > self.max_line and max(map(len, chunk.split(b"\r\n"))) > self.max_line:
            self._fail(MailError(552, "5.3.4", "Message line too long"))
            return
        # RFC 5321 §4.5.2: remove the leading dot of every line that starts with one.
        if not midline and chunk[:1] == b".":
            chunk = chunk[1:]
        chunk = chunk.replace(b"\r\n.", b"\r\n")
        self.size += len(chunk)
        if self.size > self.max_size:
            self._fail(MailError(552, "5.3.4", "Message size exceeds fixed maximum message size"))
            return
        if self._in_headers and not midline:
            self._scan_headers(chunk)
            if self.received_headers > self.max_received:
                self._fail(MailError(554, "5.4.6", "Too many Received headers: mail loop detected"))
                return
        self._parts.append(chunk)

    def _scan_headers(self, chunk: bytes) -> None:
        pos, n = 0, len(chunk)
        while pos < n:
            nl = chunk.find(b"\r\n", pos)
            line = chunk[pos:nl]
            if not line:
                self._in_headers = False
                return
            if line[:9].lower() == b"received:":
                self.received_headers += 1
            pos = nl + 2

    def result(self) -> Union[bytes, MailError]:
        """The unstuffed message (CRLF line ends, as sent) or the refusal."""
        if self.error is not None:
            return self.error
        return b"".join(self._parts)
