"""Tokens for ``--auth``: making them, hashing them for the token file, checking them.

Apart from ``beanq.auth`` so that ``beanqctl auth`` can make entries without the server's
modules. A token is ``NAME.SECRET``: the name picks the file's entry to check.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os

SCRYPT_LOG_N = 12  # 4 MiB and ~20 ms a hash: tokens are 256 random bits, see hash_token


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def hash_token(token: str, log_n: int = SCRYPT_LOG_N, r: int = 8, parallel: int = 1) -> str:
    """``scrypt$LOGN$R$P$SALT$KEY``. The tokens beanqctl makes carry 256 random bits, beyond
    any guessing, so the hash only has to keep a leaked file from being a list of tokens:
    scrypt's default cost here is low (one hash is work the loop does before answering)."""
    salt = os.urandom(16)
    key = hashlib.scrypt(token.encode(), salt=salt, n=1 << log_n, r=r, p=parallel, dklen=32)
    return f"scrypt${log_n}${r}${parallel}${_b64(salt)}${_b64(key)}"


def verify_token(token: bytes, encoded: str) -> bool:
    try:
        kind, log_n, r, parallel, salt, key = encoded.split("$")
        if kind != "scrypt":
            return False
        want = _unb64(key)
        got = hashlib.scrypt(
            token,
            salt=_unb64(salt),
            n=1 << int(log_n),
            r=int(r),
            p=int(parallel),
            dklen=len(want),
            maxmem=1 << 30,
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, want)


def new_token(name: str) -> str:
    if not name or "." in name or not name.isprintable() or " " in name:
        raise ValueError("a token name is printable, without spaces or dots")
    return f"{name}.{_b64(os.urandom(32))}"
