"""tasuki_operator.quantity: Kubernetes quantities parsed exactly, and the helpers built on them."""
from __future__ import annotations

from decimal import Decimal

import pytest

from tasuki_operator.quantity import cpu_cores, format_bytes, format_number, gpu_count, memory_bytes, parse_quantity

Ki, Mi, Gi = 1 << 10, 1 << 20, 1 << 30


@pytest.mark.parametrize("value, expected", [
    ("1", Decimal(1)),
    ("0", Decimal(0)),
    ("500m", Decimal("0.5")),
    ("1500m", Decimal("1.5")),
    ("100n", Decimal("1e-7")),
    ("5u", Decimal("0.000005")),
    ("2k", Decimal(2000)),
    ("3M", Decimal(3_000_000)),
    ("1G", Decimal(10**9)),
    ("1T", Decimal(10**12)),
    ("1P", Decimal(10**15)),
    ("1E", Decimal(10**18)),
    ("1Ki", Decimal(Ki)),
    ("2Gi", Decimal(2 * Gi)),
    ("1.5Gi", Decimal(3 * Gi // 2)),
    ("512Mi", Decimal(512 * Mi)),
    ("1Ti", Decimal(1 << 40)),
    ("1Pi", Decimal(1 << 50)),
    ("1Ei", Decimal(1 << 60)),
    ("1e3", Decimal(1000)),
    ("1E3", Decimal(1000)),
    ("1e+3", Decimal(1000)),
    ("25e-2", Decimal("0.25")),
    (".5", Decimal("0.5")),
    ("1.", Decimal(1)),
    ("+2", Decimal(2)),
    ("-1", Decimal(-1)),
    ("0.1", Decimal("0.1")),
    (3, Decimal(3)),
    (1.5, Decimal("1.5")),
    (0.1, Decimal("0.1")),                        # exact as written, not 0.1000000000000000055...
])
def test_parse_quantity(value, expected):
    assert parse_quantity(value) == expected


@pytest.mark.parametrize("value", [
    "", " 1", "1 ", "1 Gi", "1K", "1KB", "2GB", "1gi", "Gi", "m", "1.2.3", "1e", "1e1.5", "1Mi1", "--1",
    "0x10", "1_000", "inf", "nan", "1ei", True, None, [1], float("nan"), float("inf"),
])
def test_parse_quantity_refuses(value):
    with pytest.raises(ValueError) as err:
        parse_quantity(value)
    assert repr(value) in str(err.value)


def test_the_error_names_the_field():
    with pytest.raises(ValueError, match=r"^spec\.head\.resources\.limits\.cpu: '1K' is not a quantity; .*Ki"):
        parse_quantity("1K", "spec.head.resources.limits.cpu")


def test_a_huge_exponent_is_an_error_not_a_hang():
    with pytest.raises(ValueError, match="exponent is out of range"):
        parse_quantity("1e999999999")


@pytest.mark.parametrize("value, cores", [
    ("1", 1.0), ("500m", 0.5), ("250m", 0.25), ("1.5", 1.5), (2, 2.0), (0.5, 0.5), ("0", 0.0),
    ("0.0004", 0.001),                            # Kubernetes rounds CPU up to the millicore
    ("1001m", 1.001), ("1e1", 10.0),
])
def test_cpu_cores(value, cores):
    assert cpu_cores(value) == cores


@pytest.mark.parametrize("value, expected", [
    ("2Gi", 2 * Gi), ("512Mi", 512 * Mi), ("1G", 10**9), ("1.5k", 1500), (1024, 1024), ("0.5", 1),
    ("1500m", 2),                                 # a fraction of a byte rounds up, as in Kubernetes
    ("1e3", 1000), ("0", 0),
])
def test_memory_bytes(value, expected):
    assert memory_bytes(value) == expected
    assert isinstance(memory_bytes(value), int)


@pytest.mark.parametrize("value, expected", [("1", 1), (2, 2), ("0", 0), ("2e0", 2), ("4.0", 4)])
def test_gpu_count(value, expected):
    assert gpu_count(value) == expected


@pytest.mark.parametrize("helper, value, message", [
    (cpu_cores, "-1", "negative"),
    (memory_bytes, "-1Gi", "negative"),
    (gpu_count, "-1", "negative"),
    (gpu_count, "0.5", "not a whole number"),
    (gpu_count, "500m", "not a whole number"),
    (cpu_cores, "1e40", "too large"),
    (memory_bytes, "2GB", "not a quantity"),
])
def test_helpers_refuse(helper, value, message):
    with pytest.raises(ValueError, match=message) as err:
        helper(value, "spec.x")
    assert str(err.value).startswith(f"spec.x: {value!r}")


@pytest.mark.parametrize("n, text", [
    (0, "0"), (1, "1"), (1000, "1000"), (Ki, "1Ki"), (1536, "1536"), (3 * Gi, "3Gi"), (768 * Mi, "768Mi"),
    (3 * Gi // 2, "1536Mi"), (Gi + 1, str(Gi + 1)), (1 << 60, "1Ei"), (5 << 40, "5Ti"),
])
def test_format_bytes_is_exact_and_round_trips(n, text):
    assert format_bytes(n) == text
    assert parse_quantity(text) == n


@pytest.mark.parametrize("n", [-1, 1.5, "1Gi", True])
def test_format_bytes_refuses(n):
    with pytest.raises(ValueError):
        format_bytes(n)


@pytest.mark.parametrize("value, text", [
    (0.5, "0.5"), (2.0, "2"), (2, "2"), (0, "0"), (0.0, "0"), (1e-3, "0.001"), (1.25, "1.25"), (10.0, "10"),
    (100, "100"), (Decimal("1E+3"), "1000"),
])
def test_format_number(value, text):
    assert format_number(value) == text
