"""AES-256-GCM for Raft frames, in place of PySyncObj's Fernet.

Fernet (AES-CBC, HMAC-SHA256, base64, a new cipher and HMAC object per frame) costs ~17 us on a 150-byte
frame and ~4.6 ms on a 400 KB one here; AES-GCM costs ~1 us and ~0.09 ms. The leader seals every
AppendEntries once per follower, so under load this was a tenth of its Raft thread.

Keys: a master key from the cluster secret (PBKDF2, as the library does, with our own salt), and one key per
direction of each connection, derived (HKDF) from the random session key the receiving side picked in the
library's handshake. A per-direction key is used for one TCP connection only, so its nonce can be a counter
that both sides keep: a frame that is replayed, dropped or reordered fails the tag check and the connection
is dropped. Only the first frame of a connection (the initiator's session key) goes under the master key,
with a random nonce sent in front of it.
"""
from __future__ import annotations

import os

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC

_SALT = b"raftqueue raft frames v1"
_HELLO_AAD = b"raftqueue hello"
_NONCE_BYTES = 12


class SessionCipher:
    """One direction of one connection: frames sealed and opened in order, the nonce a shared counter."""

    __slots__ = ("rand_key", "_aead", "_counter")

    def __init__(self, master: bytes, rand_key: bytes) -> None:
        self.rand_key = rand_key
        key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
                   info=b"raftqueue raft session v1" + rand_key).derive(master)
        self._aead = AESGCM(key)
        self._counter = 0

    def _next_nonce(self) -> bytes:
        nonce = self._counter.to_bytes(_NONCE_BYTES, "big")
        self._counter += 1
        return nonce

    def seal(self, plaintext: bytes) -> bytes:
        return self._aead.encrypt(self._next_nonce(), plaintext, None)

    def open(self, sealed: bytes) -> bytes:
        """Raises cryptography.exceptions.InvalidTag for a forged, replayed or out-of-order frame."""
        plaintext = self._aead.decrypt(self._counter.to_bytes(_NONCE_BYTES, "big"), sealed, None)
        self._counter += 1
        return plaintext


class FrameCipher:
    """The cluster's key material; hands out a SessionCipher per connection direction."""

    def __init__(self, secret: str | bytes) -> None:
        if isinstance(secret, str):
            secret = secret.encode()
        self._master = PBKDF2HMAC(algorithm=hashes.SHA256(), length=32, salt=_SALT,
                                  iterations=100_000).derive(secret)
        self._hello = AESGCM(self._master)

    def seal_hello(self, plaintext: bytes) -> bytes:
        nonce = os.urandom(_NONCE_BYTES)
        return nonce + self._hello.encrypt(nonce, plaintext, _HELLO_AAD)

    def open_hello(self, sealed: bytes) -> bytes:
        return self._hello.decrypt(sealed[:_NONCE_BYTES], sealed[_NONCE_BYTES:], _HELLO_AAD)

    def session(self, rand_key: bytes) -> SessionCipher:
        return SessionCipher(self._master, rand_key)
