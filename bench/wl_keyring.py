"""Key ring: encrypt + blind-index phone numbers, against bare AES-GCM on the same inputs.

The anchor is ``cryptography``'s AESGCM.encrypt alone (nonce from os.urandom, no framing, no
index), so the ratio shows what our envelope and the HMAC index cost on top of the cipher.
"""

from __future__ import annotations

import os
import time
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from hongyan.security.keyring import KeyRing

N = 200_000


def run() -> dict[str, Any]:
    numbers = [f"+86138{i:08d}" for i in range(N)]
    ring = KeyRing.parse(f"k1:{KeyRing.generate_key()}", "k1", KeyRing.generate_key())
    ctx = "tenant:1:contact-phone"

    raw = AESGCM(os.urandom(32))
    aad = ctx.encode()
    t0 = time.perf_counter()
    for n in numbers:
        raw.encrypt(os.urandom(12), n.encode(), aad)
    anchor = time.perf_counter() - t0

    t0 = time.perf_counter()
    blobs = [(ring.encrypt(n, ctx), ring.blind_index(n, ctx)) for n in numbers]
    ours = time.perf_counter() - t0

    t0 = time.perf_counter()
    for blob, _ in blobs:
        ring.decrypt(blob, ctx)
    dec = time.perf_counter() - t0
    return {
        "numbers": N,
        "anchor_bare_aesgcm_per_s": round(N / anchor),
        "encrypt_and_index_per_s": round(N / ours),
        "decrypt_per_s": round(N / dec),
        "ratio_to_anchor": round(anchor / ours, 3),
    }
