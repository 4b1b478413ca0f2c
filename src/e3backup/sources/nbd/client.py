"""A blocking NBD client for one export over a unix or TCP socket.

One connection serves one request at a time (a lock guards it); callers that want parallel
reads open one client per worker. Only what e3backup needs: read and block status.
"""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Iterator
from pathlib import Path

from e3backup.core.errors import SourceError
from e3backup.sources.nbd import protocol as p


class NbdError(SourceError):
    """The NBD server refused or broke the conversation."""


class NbdClient:
    def __init__(
        self,
        sock: socket.socket,
        export_name: str = "",
        meta_contexts: tuple[str, ...] = (),
    ) -> None:
        self._sock = sock
        self._lock = threading.Lock()
        self._handle = 0
        self.meta_context_ids: dict[str, int] = {}
        self.size_bytes, self.transmission_flags = self._handshake(export_name, meta_contexts)

    @classmethod
    def connect_unix(
        cls, path: Path, export_name: str = "", meta_contexts: tuple[str, ...] = ()
    ) -> NbdClient:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(60)
        try:
            sock.connect(str(path))
        except OSError as exc:
            sock.close()
            raise NbdError(f"cannot connect to NBD socket {path}: {exc.strerror or exc}") from exc
        try:
            return cls(sock, export_name, meta_contexts)
        except BaseException:
            sock.close()
            raise

    # --- handshake ------------------------------------------------------------------------------

    def _handshake(self, export_name: str, meta_contexts: tuple[str, ...]) -> tuple[int, int]:
        magic, opt_magic, flags = struct.unpack(">QQH", self._recv(18))
        if magic != p.NBDMAGIC or opt_magic != p.IHAVEOPT:
            raise NbdError("not an NBD server (bad greeting)")
        if not flags & p.FLAG_FIXED_NEWSTYLE:
            raise NbdError("NBD server does not speak fixed newstyle")
        self._sendall(struct.pack(">I", p.FLAG_FIXED_NEWSTYLE | (flags & p.FLAG_NO_ZEROES)))
        self._option(p.OPT_STRUCTURED_REPLY, b"")
        self._expect_ack(p.OPT_STRUCTURED_REPLY)
        name = export_name.encode()
        if meta_contexts:
            queries = b"".join(
                struct.pack(">I", len(q.encode())) + q.encode() for q in meta_contexts
            )
            self._option(
                p.OPT_SET_META_CONTEXT,
                struct.pack(">I", len(name))
                + name
                + struct.pack(">I", len(meta_contexts))
                + queries,
            )
            for reply_type, data in self._option_replies(p.OPT_SET_META_CONTEXT):
                if reply_type == p.REP_META_CONTEXT:
                    (context_id,) = struct.unpack_from(">I", data)
                    self.meta_context_ids[data[4:].decode()] = context_id
            missing = set(meta_contexts) - set(self.meta_context_ids)
            if missing:
                raise NbdError(f"NBD export does not offer {', '.join(sorted(missing))}")
        self._option(p.OPT_GO, _string(name) + struct.pack(">H", 0))
        size = flags_out = None
        for reply_type, data in self._option_replies(p.OPT_GO):
            if reply_type == p.REP_INFO and struct.unpack_from(">H", data)[0] == p.INFO_EXPORT:
                size, flags_out = struct.unpack_from(">QH", data, 2)
        if size is None or flags_out is None:
            raise NbdError("NBD server did not report the export size")
        return size, flags_out

    def _option(self, option: int, data: bytes) -> None:
        self._sendall(p.OPTION.pack(p.IHAVEOPT, option, len(data)) + data)

    def _option_replies(self, option: int) -> Iterator[tuple[int, bytes]]:
        while True:
            magic, got_option, reply_type, length = p.OPTION_REPLY.unpack(
                self._recv(p.OPTION_REPLY.size)
            )
            data = self._recv(length)
            if magic != p.OPT_REPLY_MAGIC or got_option != option:
                raise NbdError("NBD server sent a malformed option reply")
            if reply_type & p.REP_FLAG_ERROR:
                detail = data.decode(errors="replace") or f"error {reply_type & 0xFFFF}"
                raise NbdError(f"NBD server refused option {option}: {detail}")
            if reply_type == p.REP_ACK:
                return
            yield reply_type, data

    def _expect_ack(self, option: int) -> None:
        for _ in self._option_replies(option):
            pass

    # --- transmission ---------------------------------------------------------------------------

    def read(self, offset: int, length: int) -> bytes:
        """Exactly `length` bytes at `offset` (holes come back as zeros)."""
        if offset < 0 or length < 0 or offset + length > self.size_bytes:
            raise NbdError(f"read {offset}+{length} outside the export ({self.size_bytes} bytes)")
        out = bytearray(length)
        pos = 0
        while pos < length:
            part = min(length - pos, p.MAX_READ_BYTES)
            self._read_into(out, pos, offset + pos, part)
            pos += part
        return bytes(out)

    def _read_into(self, out: bytearray, out_pos: int, offset: int, length: int) -> None:
        with self._lock:
            handle = self._send(p.CMD_READ, offset, length)
            for reply_type, payload in self._replies(handle):
                if reply_type == p.REPLY_TYPE_OFFSET_DATA:
                    (data_offset,) = struct.unpack_from(">Q", payload)
                    data = payload[8:]
                    start = data_offset - offset
                    if start < 0 or start + len(data) > length:
                        raise NbdError("NBD server returned data outside the request")
                    out[out_pos + start : out_pos + start + len(data)] = data
                elif reply_type == p.REPLY_TYPE_OFFSET_HOLE:
                    pass  # `out` is zero-filled already
                elif reply_type == -1:  # simple reply: the payload is the data
                    out[out_pos : out_pos + length] = self._recv(length)

    def block_status(self, context: str, offset: int, length: int) -> list[tuple[int, int, int]]:
        """Extents `(offset, length, flags)` for `context` from `offset`, at most `length` long.

        The server may describe less than asked; callers loop (see `extents`).
        """
        context_id = self.meta_context_ids.get(context)
        if context_id is None:
            raise NbdError(f"meta context {context} was not negotiated")
        extents: list[tuple[int, int, int]] = []
        with self._lock:
            handle = self._send(p.CMD_BLOCK_STATUS, offset, min(length, 0xFFFFFFFF))
            for reply_type, payload in self._replies(handle):
                if reply_type != p.REPLY_TYPE_BLOCK_STATUS:
                    continue
                (got_id,) = struct.unpack_from(">I", payload)
                if got_id != context_id:
                    continue
                pos = offset
                for ext_length, flags in struct.iter_unpack(">II", payload[4:]):
                    extents.append((pos, ext_length, flags))
                    pos += ext_length
        if not extents or extents[0][1] == 0:
            raise NbdError("NBD server returned no block status")
        return extents

    def extents(self, context: str) -> Iterator[tuple[int, int, int]]:
        """All extents of the export for `context`, in order."""
        offset = 0
        while offset < self.size_bytes:
            for ext_offset, length, flags in self.block_status(
                context, offset, self.size_bytes - offset
            ):
                length = min(length, self.size_bytes - ext_offset)
                yield ext_offset, length, flags
                offset = ext_offset + length

    def close(self) -> None:
        try:
            with self._lock:
                self._send(p.CMD_DISC, 0, 0)
        except NbdError:
            pass  # the server is gone already
        self._sock.close()

    def _send(self, command: int, offset: int, length: int) -> int:
        self._handle += 1
        self._sendall(p.REQUEST.pack(p.REQUEST_MAGIC, 0, command, self._handle, offset, length))
        return self._handle

    def _replies(self, handle: int) -> Iterator[tuple[int, bytes]]:
        """Reply chunks for `handle`; a simple reply is yielded as type -1 with no payload."""
        while True:
            (magic,) = struct.unpack(">I", self._recv(4))
            if magic == p.SIMPLE_REPLY_MAGIC:
                error, got = struct.unpack(">IQ", self._recv(12))
                self._check_handle(got, handle)
                if error:
                    raise NbdError(f"NBD request failed with error {error}")
                yield -1, b""
                return
            if magic != p.STRUCTURED_REPLY_MAGIC:
                raise NbdError("NBD server sent a malformed reply")
            flags, reply_type, got, length = struct.unpack(">HHQI", self._recv(16))
            self._check_handle(got, handle)
            payload = self._recv(length)
            if reply_type & p.REPLY_TYPE_ERROR_BIT:
                error, msg_len = struct.unpack_from(">IH", payload)
                message = payload[6 : 6 + msg_len].decode(errors="replace")
                raise NbdError(f"NBD request failed (error {error}): {message}")
            if reply_type != p.REPLY_TYPE_NONE:
                yield reply_type, payload
            if flags & p.REPLY_FLAG_DONE:
                return

    @staticmethod
    def _check_handle(got: int, expected: int) -> None:
        if got != expected:
            raise NbdError(f"NBD reply for request {got}, expected {expected}")

    def _sendall(self, data: bytes) -> None:
        try:
            self._sock.sendall(data)
        except OSError as exc:
            raise NbdError(f"NBD connection failed: {exc.strerror or exc}") from exc

    def _recv(self, length: int) -> bytes:
        buf = bytearray(length)
        view = memoryview(buf)
        pos = 0
        while pos < length:
            try:
                n = self._sock.recv_into(view[pos:], length - pos)
            except OSError as exc:  # reset, timeout
                raise NbdError(f"NBD connection failed: {exc.strerror or exc}") from exc
            if n == 0:
                raise NbdError("NBD server closed the connection")
            pos += n
        return bytes(buf)

    def __enter__(self) -> NbdClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def _string(data: bytes) -> bytes:
    """NBD's length-prefixed string."""
    return struct.pack(">I", len(data)) + data
