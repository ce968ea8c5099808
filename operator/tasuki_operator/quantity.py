"""Kubernetes quantities ("1", "500m", "2Gi", 1.5, "1e3"), parsed exactly: the one place that does it.

Pure (no I/O). The manifest builders, the autoscaler and status building import `parse_quantity`
and the helpers below, so that every part of the operator reads `resources.limits` the same way.

The grammar is Kubernetes' own (k8s.io/apimachinery/pkg/api/resource):

    quantity        ::= signedNumber suffix
    signedNumber    ::= [+-] ( digits [ "." [digits] ] | "." digits )
    suffix          ::= binarySI | decimalSI | decimalExponent | ""
    binarySI        ::= Ki | Mi | Gi | Ti | Pi | Ei                    (powers of 1024)
    decimalSI       ::= n | u | m | k | M | G | T | P | E              (powers of 1000; k is lower case)
    decimalExponent ::= (e | E) [+-] digits                            ("1e3" = 1000)

Numbers (int, float) are taken as they are written ("1.5" for 1.5, never 1.4999...). Anything else
(`"1K"`, `"1 Gi"`, `"2GB"`, `""`, `True`, NaN) is a ValueError that names the value and, when given, the
field it came from.
"""
from __future__ import annotations

import math
import re
from decimal import ROUND_CEILING, Decimal, DecimalException

__all__ = ["parse_quantity", "cpu_cores", "memory_bytes", "gpu_count", "format_bytes", "format_number"]

KIB = 1 << 10
MIB = 1 << 20
GIB = 1 << 30

BINARY_SUFFIXES = {"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "Ti": 1 << 40, "Pi": 1 << 50, "Ei": 1 << 60}
DECIMAL_SUFFIXES = {"n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"), "": Decimal(1),
                    "k": Decimal("1e3"), "M": Decimal("1e6"), "G": Decimal("1e9"), "T": Decimal("1e12"),
                    "P": Decimal("1e15"), "E": Decimal("1e18")}

_QUANTITY = re.compile(r"""
    (?P<number>[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))
    (?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE]|[eE][+-]?[0-9]+)?
    """, re.VERBOSE)
_EXPLAIN = ("a Kubernetes quantity is a number with an optional suffix: m (milli), k, M, G, T, P, E "
            "(powers of 1000), Ki, Mi, Gi, Ti, Pi, Ei (powers of 1024) or an exponent such as 1e3")


def _where(field: str | None) -> str:
    return f"{field}: " if field else ""


def parse_quantity(value: str | int | float, field: str | None = None) -> Decimal:
    """The exact value of a Kubernetes quantity: "500m" -> 0.5, "2Gi" -> 2147483648, "1e3" -> 1000.

    `field` (e.g. "spec.head.resources.limits.cpu") is named in the error. Raises ValueError for
    anything Kubernetes would refuse; signs are allowed, as in Kubernetes (callers that need a
    non-negative amount use cpu_cores / memory_bytes / gpu_count).
    """
    if isinstance(value, bool) or not isinstance(value, (str, int, float, Decimal)):
        raise ValueError(f"{_where(field)}{value!r} is not a quantity ({type(value).__name__}); {_EXPLAIN}")
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, (float, Decimal)):
        if not math.isfinite(value):
            raise ValueError(f"{_where(field)}{value!r} is not a quantity; {_EXPLAIN}")
        return Decimal(repr(value)) if isinstance(value, float) else value
    match = _QUANTITY.fullmatch(value)
    if match is None:
        raise ValueError(f"{_where(field)}{value!r} is not a quantity; {_EXPLAIN}")
    number = Decimal(match["number"])
    suffix = match["suffix"] or ""
    if suffix in BINARY_SUFFIXES:
        return number * BINARY_SUFFIXES[suffix]
    if suffix in DECIMAL_SUFFIXES:
        return number * DECIMAL_SUFFIXES[suffix]
    try:                                                   # an exponent: e3, E-2, e+6
        return number.scaleb(int(suffix[1:]))
    except (DecimalException, ValueError, OverflowError):
        raise ValueError(f"{_where(field)}{value!r} is not a quantity: its exponent is out of range") from None


def _non_negative(value, field: str | None, what: str) -> Decimal:
    amount = parse_quantity(value, field)
    if amount < 0:
        raise ValueError(f"{_where(field)}{value!r} is negative; {what} must be 0 or more")
    return amount


def cpu_cores(value: str | int | float, field: str | None = None) -> float:
    """CPU cores as a float: "500m" -> 0.5, "2" -> 2.0, "1.5" -> 1.5. Negative amounts are a ValueError.

    Kubernetes keeps CPU to the millicore and rounds finer amounts up ("0.0004" is 1m); so does this,
    so that the operator never counts less CPU than the pod gets."""
    cores = _non_negative(value, field, "CPU")
    try:
        return float(cores.quantize(Decimal("0.001"), rounding=ROUND_CEILING))
    except DecimalException:
        raise ValueError(f"{_where(field)}{value!r} is too large to be a CPU count") from None


def memory_bytes(value: str | int | float, field: str | None = None) -> int:
    """Bytes as an int: "2Gi" -> 2147483648, "1.5k" -> 1500. A fraction of a byte rounds up, as
    Kubernetes does ("0.5" -> 1). Negative amounts are a ValueError."""
    amount = _non_negative(value, field, "memory")
    return int(amount.to_integral_value(rounding=ROUND_CEILING))


def gpu_count(value: str | int | float, field: str | None = None) -> int:
    """A whole number of GPUs ("1", 2, "2e0"); fractions are a ValueError, because Kubernetes
    extended resources such as nvidia.com/gpu are whole devices."""
    amount = _non_negative(value, field, "a GPU count")
    if amount != amount.to_integral_value():
        raise ValueError(f"{_where(field)}{value!r} is not a whole number; Kubernetes hands out GPUs "
                         f"(nvidia.com/gpu) as whole devices")
    return int(amount)


def format_bytes(n: int) -> str:
    """Bytes as a Kubernetes quantity, exact and short: 3221225472 -> "3Gi", 1610612736 -> "1536Mi",
    805306368 -> "768Mi", 1000 -> "1000". The result parses back to `n` exactly, so it can go into a
    manifest (an emptyDir's sizeLimit) as well as into a message."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"format_bytes takes a non-negative int, got {n!r}")
    for suffix, scale in reversed(BINARY_SUFFIXES.items()):
        if n and n % scale == 0:
            return f"{n // scale}{suffix}"
    return str(n)


def format_number(value: float | int | Decimal) -> str:
    """A number as plain text for an environment variable or a flag: 0.5 -> "0.5", 2.0 -> "2",
    1e-3 -> "0.001" (never "1e-03", never "2.0")."""
    text = format(Decimal(repr(value)) if isinstance(value, float) else Decimal(value), "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text or "0"
