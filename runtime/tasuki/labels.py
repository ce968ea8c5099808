"""Node labels and label selectors: parsing, checking and matching. Pure: no I/O, no clocks.

A node carries labels, string to string (`tasuki start --labels '{"zone": "a"}'`, TASUKI_LABELS;
on Kubernetes the operator passes a worker group's pod labels). A task or actor may ask for nodes
by label with Ray's `label_selector` (Ray 2.x syntax, Kubernetes' label rules):

    {"zone": "a"}              the node's label zone is "a"
    {"zone": "!a"}             zone is not "a" (a node without zone matches)
    {"zone": "in(a,b)"}        zone is "a" or "b"
    {"zone": "!in(a,b)"}       zone is neither (a node without zone matches)

Every condition of a selector must hold. `parse_selector` turns the dict into a `Selector`, a
sorted tuple of (key, negated, values) with values a sorted tuple: hashable and canonical, so
{"zone": "a"} and {"zone": "in(a)"} queue together. The runtime's scheduler (scheduler.py) and
the operator's autoscaler (tasuki_operator.autoscaler) both match with `matches`, so they place
by the same rules. The empty selector () matches every node and costs nothing on the task path.
"""
from __future__ import annotations

import json
import re

Selector = tuple        # sorted ((key, negated, (value, ...)), ...)

_NAME = r"[A-Za-z0-9]([A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?"
NAME_RE = re.compile(_NAME)
PREFIX_RE = re.compile(rf"{_NAME}(\.{_NAME})*")
IN_RE = re.compile(r"in\((.*)\)")
RULES = ("63 characters at most, starting and ending with a letter or digit, with letters, digits, "
         "'-', '_' and '.' between")


def key_problem(key) -> str | None:
    """Why `key` is not a valid label key (Kubernetes: [prefix/]name), or None."""
    if not isinstance(key, str):
        return f"label key {key!r} is a {type(key).__name__}, not a string"
    prefix, _, name = key.rpartition("/")
    if "/" in key and (len(prefix) > 253 or not PREFIX_RE.fullmatch(prefix)):
        return f"label key {key!r}: its prefix {prefix!r} must be a DNS subdomain (such as example.com)"
    if len(name) > 63 or not NAME_RE.fullmatch(name):
        return f"label key {key!r}: the name {name!r} must be {RULES}"
    return None


def value_problem(key: str, value) -> str | None:
    """Why `value` is not a valid value of label `key`, or None ("" is allowed, as in Kubernetes)."""
    if not isinstance(value, str):
        return f"label {key!r} has the value {value!r}, a {type(value).__name__}: label values are strings"
    if value and (len(value) > 63 or not NAME_RE.fullmatch(value)):
        return f"label {key!r} has the value {value!r}, which must be empty or {RULES}"
    return None


def parse_labels(value) -> dict[str, str]:
    """A node's labels from a dict or a JSON object string (None or "" for none); ValueError saying
    which key or value is wrong, with the value given."""
    if value in (None, ""):
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError as e:
            raise ValueError(f"labels must be a JSON object of strings such as '{{\"zone\": \"a\"}}', "
                             f"got {value!r}: {e}") from None
    if not isinstance(value, dict):
        raise ValueError(f"labels must be a JSON object of strings such as '{{\"zone\": \"a\"}}', got {value!r}")
    for key, v in value.items():
        problem = key_problem(key) or value_problem(key, v)
        if problem:
            raise ValueError(problem)
    return dict(value)


def parse_selector(selector) -> Selector:
    """A label_selector dict checked and made canonical (see the module docstring); () for None or
    {}. ValueError or TypeError naming the key and the value, and the syntax that is accepted."""
    if selector is None:
        return ()
    if not isinstance(selector, dict):
        raise TypeError(f"label_selector must be a dict such as {{\"zone\": \"a\"}}, got "
                        f"{type(selector).__name__} {selector!r}"[:200])
    out = []
    for key, text in selector.items():
        problem = key_problem(key)
        if problem:
            raise ValueError(f"label_selector: {problem}")
        if not isinstance(text, str):
            raise ValueError(f"label_selector[{key!r}] is {text!r}: give a string: 'a', '!a', 'in(a,b)' or '!in(a,b)'")
        negated = text.startswith("!")
        body = text[1:] if negated else text
        found = IN_RE.fullmatch(body)
        values = [v.strip() for v in found.group(1).split(",")] if found else [body]
        if not all(values) or any(value_problem(key, v) for v in values):
            raise ValueError(f"label_selector[{key!r}] is {text!r}, which is not a selector: give a label value "
                             f"('a'), its negation ('!a'), a set ('in(a,b)') or its negation ('!in(a,b)'); "
                             f"each value {RULES}")
        out.append((str(key), negated, tuple(sorted(set(values)))))     # plain str: the head unpickles it
    return tuple(sorted(out))


def matches(labels: dict, selector: Selector) -> bool:
    """Whether a node with `labels` satisfies every condition of `selector`."""
    for key, negated, values in selector:
        if (labels.get(key) in values) == negated:
            return False
    return True


def selector_dict(selector: Selector) -> dict[str, str]:
    """The selector in Ray's syntax again, for people and JSON: {"zone": "in(a,b)"}."""
    out = {}
    for key, negated, values in selector:
        text = values[0] if len(values) == 1 else f"in({','.join(values)})"
        out[key] = ("!" if negated else "") + text
    return out


def format_selector(selector: Selector) -> str:
    return ", ".join(f"{k}={v}" for k, v in selector_dict(selector).items())
