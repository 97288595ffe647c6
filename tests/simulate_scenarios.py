"""The compiled-in `simulate` scenarios (fcgi/scenarios/NAME.json) as data,
and the syntax of their templates: {{id:...}} and {{time:OFFSET}}
placeholders, offsets such as +30d+1m.  Shared by test_simulate (which runs
them) and test_scenario_files (which checks the files themselves)."""

import glob
import json
import os
import re

import harness

SCENARIO_DIR = os.path.join(harness.REPO_ROOT, "fcgi", "scenarios")


def load_scenarios():
    out = {}
    for path in sorted(glob.glob(os.path.join(SCENARIO_DIR, "*.json"))):
        with open(path, encoding="utf-8") as f:
            out[os.path.splitext(os.path.basename(path))[0]] = json.load(f)
    return out


SCENARIOS = load_scenarios()

TABLES = {"customer": "paddle.customers", "subscription": "paddle.subscriptions",
          "transaction": "paddle.transactions", "adjustment": "paddle.adjustments", "address": "paddle.addresses"}

PLACEHOLDER = re.compile(r"\{\{(id|time):([^{}]*)\}\}")


def offset(text):
    """Seconds of an offset such as 0, +30d, -2h, +30d+1m (simulate's syntax)."""
    if text == "0":
        return 0
    parts = re.findall(r"([+-]?)(\d+)([dhms])", text)
    if "".join("".join(p) for p in parts) != text:
        raise ValueError("bad offset %r" % text)
    unit = {"d": 86400, "h": 3600, "m": 60, "s": 1}
    return sum((-1 if sign == "-" else 1) * int(n) * unit[u] for sign, n, u in parts)


def walk(v, path=""):
    """(path, value) for every node; list elements as path[]."""
    yield path, v
    if isinstance(v, dict):
        for k, x in v.items():
            yield from walk(x, path + "." + k if path else k)
    elif isinstance(v, list):
        for x in v:
            yield from walk(x, path + "[]")
