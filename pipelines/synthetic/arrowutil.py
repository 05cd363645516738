"""Vectorised builders for Arrow arrays, so the generator never loops over persons in Python.

Numbers are turned into fixed-width digit strings, cents into decimal128 values and
datetime64 days into date32 by building Arrow buffers directly from NumPy arrays.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

MONEY = pa.decimal128(14, 2)
EPOCH = np.datetime64("1970-01-01", "D")


def digit_strings(values: np.ndarray, width: int, prefix: str = "") -> pa.StringArray:
    """`prefix` + `values` (non-negative ints) zero-padded to `width` digits, as strings."""
    values = np.asarray(values, dtype=np.int64)
    n = len(values)
    powers = 10 ** np.arange(width - 1, -1, -1, dtype=np.int64)
    digits = ((values[:, None] // powers) % 10).astype(np.uint8) + ord("0")
    if prefix:
        head = np.frombuffer(prefix.encode("ascii"), dtype=np.uint8)
        digits = np.hstack([np.broadcast_to(head, (n, len(head))), digits])
    return fixed_width_strings(np.ascontiguousarray(digits))


def fixed_width_strings(chars: np.ndarray) -> pa.StringArray:
    """A string array from an (n, w) uint8 matrix of ASCII codes, one row per string."""
    n, w = chars.shape
    offsets = np.arange(0, n * w + 1, w, dtype=np.int32)
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(chars.tobytes()))


def pick_strings(choices: tuple[str, ...], codes: np.ndarray) -> pa.Array:
    """Strings chosen by integer code (negative code = null), via a dictionary decode."""
    codes = np.asarray(codes)
    dictionary = pa.array(list(choices), pa.string())
    indices = pa.array(codes.astype(np.int32), mask=codes < 0)
    return pa.DictionaryArray.from_arrays(indices, dictionary).cast(pa.string())


def money(cents: np.ndarray, valid: np.ndarray | None = None) -> pa.Array:
    """decimal128(14,2) from integer cents; rows where `valid` is False become null."""
    cents = np.asarray(cents, dtype=np.int64)
    words = np.empty((len(cents), 2), dtype=np.int64)
    words[:, 0] = cents
    words[:, 1] = cents >> 63  # sign extension into the high 64 bits
    arr = pa.Array.from_buffers(MONEY, len(cents), [None, pa.py_buffer(words.tobytes())])
    return _with_nulls(arr, valid)


def euros(amount: np.ndarray, valid: np.ndarray | None = None) -> pa.Array:
    """decimal128(14,2) from float euros, rounded to whole cents."""
    return money(np.round(np.asarray(amount, dtype=np.float64) * 100.0).astype(np.int64), valid)


def dates(days: np.ndarray, valid: np.ndarray | None = None) -> pa.Array:
    """date32 from days since 1970-01-01 (int or datetime64[D])."""
    days = np.asarray(days)
    if np.issubdtype(days.dtype, np.datetime64):
        days = (days.astype("datetime64[D]") - EPOCH).astype(np.int64)
    arr = pa.array(days.astype(np.int32), pa.date32())
    return _with_nulls(arr, valid)


def ints(values: np.ndarray) -> pa.Array:
    return pa.array(np.asarray(values, dtype=np.int64), pa.int64())


def _with_nulls(arr: pa.Array, valid: np.ndarray | None) -> pa.Array:
    if valid is None or bool(np.all(valid)):
        return arr
    return pc.if_else(pa.array(np.asarray(valid, dtype=bool)), arr, pa.scalar(None, arr.type))


def day_number(day: dt.date) -> int:
    """Days since 1970-01-01 for a date."""
    return (day - dt.date(1970, 1, 1)).days


def years_before(day: dt.date, years: np.ndarray) -> np.ndarray:
    """datetime64[D] of the same calendar day `years` years before `day` (Feb 29 -> Mar 1)."""
    month = np.datetime64(f"{day.year:04d}-{day.month:02d}", "M")
    start = (month - 12 * np.asarray(years, dtype=np.int64)).astype("datetime64[D]")
    return start + np.timedelta64(day.day - 1, "D")


def add_years(days: np.ndarray, years: int | np.ndarray) -> np.ndarray:
    """datetime64[D] the given number of calendar years later (Feb 29 -> Mar 1)."""
    month = days.astype("datetime64[M]")
    day_in_month = days - month.astype("datetime64[D]")
    later = (month + 12 * np.asarray(years, dtype=np.int64)).astype("datetime64[D]")
    return later + day_in_month


def jan_first(years: np.ndarray) -> np.ndarray:
    """datetime64[D] of 1 January of each year."""
    return (
        (np.asarray(years, dtype=np.int64) - 1970).astype("datetime64[Y]").astype("datetime64[D]")
    )


def year_of(days: np.ndarray) -> np.ndarray:
    """Calendar year of datetime64[D] values."""
    return days.astype("datetime64[Y]").astype(np.int64) + 1970
