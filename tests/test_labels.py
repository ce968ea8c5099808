"""Node labels and label selectors (runtime/tasuki/labels.py): one table per function."""
from __future__ import annotations

import pytest

from tasuki.labels import format_selector, matches, parse_labels, parse_selector, selector_dict


@pytest.mark.parametrize("given, expected", [
    (None, {}), ("", {}), ('{"zone": "a"}', {"zone": "a"}), ({"topology.kubernetes.io/zone": "eu-1a"},
                                                             {"topology.kubernetes.io/zone": "eu-1a"}),
    ({"empty": ""}, {"empty": ""}),
])
def test_parse_labels(given, expected):
    assert parse_labels(given) == expected


@pytest.mark.parametrize("given, words", [
    ("zone=a", ["JSON object", "'zone=a'"]),
    ('["a"]', ["JSON object", "['a']"]),
    ('{"zone": 1}', ["'zone' has the value 1", "int"]),
    ('{"zone": "a b"}', ["'zone' has the value 'a b'", "63 characters"]),
    ('{"-zone": "a"}', ["label key '-zone'"]),
    ('{"bad_prefix_/zone": "a"}', ["prefix 'bad_prefix_'"]),
    ({"zone": "x" * 64}, ["63 characters"]),
])
def test_bad_labels_say_what_and_the_value(given, words):
    with pytest.raises(ValueError) as err:
        parse_labels(given)
    for w in words:
        assert w in str(err.value)


@pytest.mark.parametrize("selector, canonical", [
    (None, ()), ({}, ()),
    ({"zone": "a"}, (("zone", False, ("a",)),)),
    ({"zone": "in(a)"}, (("zone", False, ("a",)),)),                  # the same queue as {"zone": "a"}
    ({"zone": "!a"}, (("zone", True, ("a",)),)),
    ({"zone": "in(b, a)"}, (("zone", False, ("a", "b")),)),
    ({"zone": "!in(a,b)", "disk": "ssd"}, (("disk", False, ("ssd",)), ("zone", True, ("a", "b")))),
])
def test_parse_selector_is_canonical(selector, canonical):
    assert parse_selector(selector) == canonical
    assert parse_selector(selector_dict(canonical)) == canonical    # round trip through Ray's syntax


@pytest.mark.parametrize("selector, error", [
    ("zone=a", TypeError), (["zone"], TypeError),
    ({"zone": "in()"}, ValueError), ({"zone": "!!a"}, ValueError), ({"zone": "in(a,)"}, ValueError),
    ({"zone": ""}, ValueError), ({"zone": 1}, ValueError), ({"-z": "a"}, ValueError), ({"zone": "a b"}, ValueError),
])
def test_bad_selectors_are_refused(selector, error):
    with pytest.raises(error, match="label"):
        parse_selector(selector)


@pytest.mark.parametrize("labels, selector, ok", [
    ({"zone": "a"}, {"zone": "a"}, True),
    ({"zone": "b"}, {"zone": "a"}, False),
    ({}, {"zone": "a"}, False),
    ({}, {"zone": "!a"}, True),                       # as Kubernetes' NotIn: a node without the key matches
    ({"zone": "a"}, {"zone": "!a"}, False),
    ({"zone": "b"}, {"zone": "in(a,b)"}, True),
    ({"zone": "c"}, {"zone": "!in(a,b)"}, True),
    ({"zone": "a", "disk": "hdd"}, {"zone": "a", "disk": "ssd"}, False),
    ({"zone": "a"}, {}, True),
])
def test_matches(labels, selector, ok):
    assert matches(labels, parse_selector(selector)) is ok


def test_format_selector():
    assert format_selector(parse_selector({"zone": "!in(b,a)", "disk": "ssd"})) == "disk=ssd, zone=!in(a,b)"
