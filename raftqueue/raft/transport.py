"""PySyncObj's TCP transport with the holes closed.

As shipped (PYSYNCOBJ-NOTES.md):
- every frame is `pickle.loads`-ed, so without a password anyone who reaches the Raft port runs code;
- anyone may register as a 'readonly' node and receive the whole log, or send utility commands
  (status, add, remove, set_version, transfer);
- a frame may announce any length (up to 2 GiB) and any zlib expansion.

`HardenedTransport` keeps the library's connection handling but swaps each connection's class to
`SafeTcpConnection`, whose frame parser caps the frame and decompressed sizes and unpickles with
`safe_loads` (no globals except the two that protocol-2 pickles of `bytes` need), and refuses every
peer that does not introduce itself as a configured member. With a cluster secret, frames are sealed with
AES-GCM (`frame_cipher`) instead of the library's Fernet, and the tag is checked before anything is
decompressed or unpickled.
"""
from __future__ import annotations

import errno
import io
import logging
import pickle
import socket
import struct
import time
import zlib

from cryptography.exceptions import InvalidTag

from pysyncobj.tcp_connection import CONNECTION_STATE, TcpConnection
from pysyncobj.transport import TCPTransport

from raftqueue.raft.frame_cipher import FrameCipher, SessionCipher

log = logging.getLogger("raftqueue.raft.transport")

MAX_FRAME_BYTES = 256 * 1024 * 1024
MAX_MESSAGE_BYTES = 512 * 1024 * 1024
_FRAME_LEN = struct.Struct("i")
# Frames go as plain pickle. They used to be zlib-compressed from 2 KB up, but level 1 costs ~12 ms per MB to
# compress and ~2 ms to inflate, per follower, against ~3 ms per MB on a 1 Gbit/s wire: on a LAN it only
# burned the leader's Raft thread. The reader still takes zlib frames (first byte 0x78; a protocol-5 pickle
# starts with PROTO, 0x80), so an older member without a secret can still talk to this one.
_PICKLE_START = b"\x80"


def _latin1_encode(text: object, encoding: object = "latin1") -> bytes:
    # Protocol-2 pickles of non-empty bytes are `_codecs.encode(<str>, 'latin1')`.
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError("only latin1 str -> bytes is allowed")
    return text.encode("latin1")


def _empty_bytes(*args: object) -> bytes:
    # Protocol-2 pickles of b'' are `__builtin__.bytes()`.
    if args:
        raise pickle.UnpicklingError("bytes() with arguments is not allowed")
    return b""


_ALLOWED = {
    ("_codecs", "encode"): _latin1_encode,
    ("__builtin__", "bytes"): _empty_bytes,
    ("builtins", "bytes"): _empty_bytes,
}


class _NoGlobalsUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):  # noqa: D401
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refusing global {module}.{name} in a Raft frame") from None


def safe_loads(data: bytes):
    """Unpickle a Raft message made only of dicts, lists, tuples, str, bytes, numbers, bools and None."""
    return _NoGlobalsUnpickler(io.BytesIO(data)).load()


def bounded_decompress(data: bytes, limit: int = MAX_MESSAGE_BYTES) -> bytes:
    inflater = zlib.decompressobj()
    out = inflater.decompress(data, limit)
    if inflater.unconsumed_tail:
        raise ValueError(f"frame expands beyond {limit} bytes")
    return out


class _RateLimitedLog:
    def __init__(self, every_s: float = 5.0) -> None:
        self._every = every_s
        self._last = 0.0

    def warning(self, msg: str, *args: object) -> None:
        now = time.monotonic()
        if now - self._last >= self._every:
            self._last = now
            log.warning(msg, *args)


_bad_frames = _RateLimitedLog()


_WOULD_BLOCK = (errno.EAGAIN, errno.EWOULDBLOCK)
_RECV_CHUNK = 1 << 20


class SafeTcpConnection(TcpConnection):
    """A TcpConnection whose frame parser cannot be made to run code or exhaust memory, and whose sender is
    cheaper: pickle protocol 5 (bytes travel as bytes; protocol 2 turns them into latin-1 strings), no
    compression, AES-GCM instead of Fernet, and one slice of the send buffer per flush instead of one per
    socket write. Every member runs this class, so both ends agree on the format. With a cluster secret a
    member of an older version (Fernet) cannot talk to this one: upgrade all members together."""

    frame_cipher: FrameCipher | None = None  # set by HardenedTransport when the cluster has a secret
    _send_session: SessionCipher | None = None
    _recv_session: SessionCipher | None = None
    _scratch: memoryview | None = None

    def _session(self, slot: str, rand_key: bytes) -> SessionCipher:
        """The cipher of one direction of this connection, made anew when the handshake picked a new key."""
        session = getattr(self, slot)
        if session is None or session.rand_key is not rand_key:
            session = self.frame_cipher.session(rand_key)
            setattr(self, slot, session)
        return session

    def _sealer(self):
        """Seals the next outgoing frame: under the session key the peer picked, once we know it."""
        if not self.sendRandKey:
            return self.frame_cipher.seal_hello
        return self._session("_send_session", self.sendRandKey).seal

    def _opener(self):
        if not self.recvRandKey:
            return self.frame_cipher.open_hello
        return self._session("_recv_session", self.recvRandKey).open

    def send(self, message) -> None:
        data = pickle.dumps(message, protocol=5)
        if self.encryptor:
            if self.frame_cipher is None:
                raise RuntimeError("a cluster secret is set but the transport has no frame cipher")
            data = self._sealer()(data)
        self._TcpConnection__writeBuffer += _FRAME_LEN.pack(len(data)) + data
        self._TcpConnection__trySendBuffer()

    def _TcpConnection__trySendBuffer(self) -> None:  # overrides the library's send loop
        self._TcpConnection__processConnectionTimeout()
        if self.state == CONNECTION_STATE.DISCONNECTED:
            return
        buf = self._TcpConnection__writeBuffer
        if not buf:
            return
        sock = self._TcpConnection__socket
        view = memoryview(buf)
        sent = 0
        while sent < len(buf):
            try:
                n = sock.send(view[sent:])
            except socket.error as exc:
                if exc.errno not in _WOULD_BLOCK:
                    view.release()
                    self.disconnect()
                    return
                break
            if n <= 0:
                break
            sent += n
        view.release()
        if sent:
            self._TcpConnection__writeBuffer = buf[sent:]

    def _TcpConnection__processRead(self) -> bool:  # overrides the library's reader
        """Read what the socket holds into a buffer kept for the connection; False once nothing more came.

        The library asks `recv(recvBufferSize)` for a new 1 MB bytes object on every call, and the call that
        finds the socket empty ends every read. glibc maps and unmaps each of those buffers: under scenario 1
        of `scripts/bench`, a follower made about 225 1 MB mmaps a second and the machine spent about 3% of
        its CPU in mmap, munmap, mremap and their page faults (strace and perf, 2026-11-27). The library also
        asks for SO_ERROR after every read; a broken socket fails `recv_into` itself. The poller is
        level-triggered, so whatever arrives after a short read wakes the next tick.
        """
        scratch = self._scratch
        if scratch is None:
            scratch = self._scratch = memoryview(bytearray(_RECV_CHUNK))
        try:
            n = self._TcpConnection__socket.recv_into(scratch)
        except OSError as exc:
            if exc.errno not in _WOULD_BLOCK:
                self.disconnect()
            return False
        if not n:
            self.disconnect()
            return False
        self._TcpConnection__readBuffer += scratch[:n]
        return n == len(scratch)  # a short read emptied the socket: skip the recv that would only say EAGAIN

    def _TcpConnection__processParseMessage(self):  # overrides the library's private parser
        buf = self._TcpConnection__readBuffer
        if len(buf) < 4:
            return None
        (length,) = _FRAME_LEN.unpack_from(buf, 0)
        if length < 0 or length > MAX_FRAME_BYTES:
            _bad_frames.warning("raft: dropping a connection that announced a %d-byte frame", length)
            self.disconnect()
            return None
        if len(buf) - 4 < length:
            return None
        data = buf[4:4 + length]
        try:
            if self.encryptor:
                if self.frame_cipher is None:
                    raise RuntimeError("a cluster secret is set but the transport has no frame cipher")
                data = self._opener()(data)  # checks the tag (and with it the order) before anything else
            message = safe_loads(data if data[:1] == _PICKLE_START else bounded_decompress(data))
        except InvalidTag:
            _bad_frames.warning("raft: dropping a connection after a frame that failed authentication")
            self.disconnect()
            return None
        except Exception as exc:  # any bad frame: drop the connection, never the node
            _bad_frames.warning("raft: dropping a connection after a bad frame (%s: %s)", type(exc).__name__, exc)
            self.disconnect()
            return None
        self._TcpConnection__readBuffer = buf[4 + length:]
        return message


class HardenedTransport(TCPTransport):
    """TCPTransport that speaks only to configured members, through SafeTcpConnection."""

    def addNode(self, node) -> None:  # noqa: N802 (library's name)
        super().addNode(node)
        conn = self._connections.get(node)
        if conn is not None and type(conn) is TcpConnection:
            self._harden(conn)

    def _harden(self, conn) -> None:
        conn.__class__ = SafeTcpConnection
        conn.frame_cipher = getattr(self._syncObj, "frame_cipher", None)

    def send(self, node, message) -> bool:
        blocked = getattr(self._syncObj, "blocked_peers", None)
        if blocked and getattr(node, "address", None) in blocked:
            return False  # chaos testing: a simulated partition (see RaftNode.blocked_peers)
        if self._syncObj.encryptor:
            conn = self._connections.get(node)
            if conn is not None and not conn.sendRandKey:
                # An outgoing connection counts as connected once TCP is up, before the session keys are
                # swapped. A frame sent then goes without the key, the peer drops the connection for it (seen
                # under load: "too many values to unpack") and both sides reconnect. Raft resends; drop it.
                return False
        return super().send(node, message)

    def _onNewIncomingConnection(self, conn) -> None:  # noqa: N802
        if type(conn) is TcpConnection:
            self._harden(conn)
        super()._onNewIncomingConnection(conn)

    def _onIncomingMessageReceived(self, conn, message) -> None:  # noqa: N802
        if self._syncObj.encryptor and not conn.sendRandKey:
            super()._onIncomingMessageReceived(conn, message)  # the session-key exchange
            return
        if isinstance(message, str) and message in self._nodeAddrToNode:
            super()._onIncomingMessageReceived(conn, message)
            return
        # 'readonly' registrations and utility commands (lists) from anyone: refused.
        _bad_frames.warning("raft: refusing a peer that introduced itself as %r", type(message).__name__
                            if not isinstance(message, str) else message[:64])
        self._unknownConnections.discard(conn)
        conn.disconnect()
