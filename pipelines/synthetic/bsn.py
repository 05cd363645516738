"""A vectorised pool of synthetic, unique BSNs that pass the 11-proef.

The first eight digits are drawn without replacement from all 10^8 prefixes, so about one
in ten BSNs starts with a zero: that makes the "lost leading zero" corruption (an 8-digit
BSN) realistic. The ninth digit is the check digit that makes the weighted sum
9*d1 + 8*d2 + ... + 2*d8 - d9 divisible by 11 and non-zero; prefixes without such a digit
are discarded.
"""

from __future__ import annotations

import numpy as np

WEIGHTS = np.array([9, 8, 7, 6, 5, 4, 3, 2], dtype=np.int64)


def bsn_pool(n: int, rng: np.random.Generator) -> np.ndarray:
    """`n` distinct valid BSNs as int64 (format with 9 digits, leading zeros kept)."""
    # ~1/11 of prefixes have no valid check digit and a few have a zero sum: oversample.
    # Distinct prefixes give distinct BSNs, so one draw needs no de-duplication.
    want = int(n * 1.12) + 64
    while True:
        prefixes = rng.choice(10**8, size=min(want, 10**8), replace=False).astype(np.int64)
        bsns = _with_check_digit(prefixes)
        bsns = bsns[bsns >= 0]
        if len(bsns) >= n:
            return bsns[:n]  # choice() already returns the prefixes in random order
        if want >= 10**8:
            raise ValueError(f"cannot draw {n} distinct valid BSNs")
        want *= 2


def _with_check_digit(prefixes: np.ndarray) -> np.ndarray:
    """Prefix * 10 + check digit, or -1 where no check digit satisfies the 11-proef."""
    powers = 10 ** np.arange(7, -1, -1, dtype=np.int64)
    digits = (prefixes[:, None] // powers) % 10
    weighted = digits @ WEIGHTS
    check = weighted % 11
    # total = weighted - check is a multiple of 11; it must not be 0 and check must be a digit
    ok = (check <= 9) & (weighted - check != 0)
    return np.where(ok, prefixes * 10 + check, -1)


def is_valid(values: np.ndarray) -> np.ndarray:
    """Vectorised 11-proef on int64 BSN values (9 digits including leading zeros)."""
    powers = 10 ** np.arange(8, -1, -1, dtype=np.int64)
    digits = (np.asarray(values, dtype=np.int64)[:, None] // powers) % 10
    total = digits[:, :8] @ WEIGHTS - digits[:, 8]
    return (total % 11 == 0) & (total != 0) & (np.asarray(values) < 10**9)
