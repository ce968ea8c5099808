"""Run Ray's own Core tests against tasuki and report how many pass.

    python compat/run_ray_tests.py /tmp/raytests [--timeout 60] [--files test_basic.py ...]
                                   [--report PATH] [--run-out-of-scope] [--ray-report RAY.json ...]
    python compat/run_ray_tests.py /tmp/raytests --real-ray --python /tmp/rayvenv/bin/python \
                                   --report /tmp/raytests/ray_report.md

Ray's test files are not in this repository (Ray's code is never committed here); put them in a
folder (compat/README.md says which files and how). Each file runs in its own pytest process with
`import ray` bound to tasuki (compat/ray_shim on PYTHONPATH, fixtures from ray_fixtures.py) and a
per-test timeout. Tests that use features tasuki does not claim are counted apart, decided from
their source by compat/ray_scope.py, and not run unless --run-out-of-scope.

Writes REPORT (default: <folder>/tasuki_report.md) and its data as JSON beside it: per file
passed/failed/error/skipped/out-of-scope, the in-scope pass rate, the failures grouped by their first
error line, and the Ray names tasuki lacks that tests touched.

--real-ray runs the same files, fixtures and scope rules with Ray itself (the `ray` installed for
--python; no shim) to calibrate: a test Ray does not pass on this machine (a Python-version detail,
a bundled tool, a timing assumption) says nothing about tasuki. --ray-report takes that run's JSON
and counts such tests apart ("fails_under_ray") with Ray's own error, instead of against tasuki.
"""
from __future__ import annotations

import argparse
import collections
import datetime
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SHIM = HERE / "ray_shim"
sys.path.insert(0, str(HERE))
import ray_scope  # noqa: E402

OUTCOMES = ("passed", "failed", "error", "skipped")
FILE_GRACE_S = 120          # per file on top of its tests' timeouts: interpreter, imports, module fixtures


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path, help="folder holding Ray's test files (test_*.py)")
    parser.add_argument("--timeout", type=float, default=60, help="seconds per test (default 60)")
    parser.add_argument("--files", nargs="*", help="only these files (names in the folder)")
    parser.add_argument("--report", type=Path, help="markdown report path (default <folder>/tasuki_report.md)")
    parser.add_argument("--run-out-of-scope", action="store_true", help="run out-of-scope tests too (they "
                        "are still counted apart)")
    parser.add_argument("--python", default=sys.executable, help="the Python that has tasuki installed "
                        "(with --real-ray: the one that has Ray installed)")
    parser.add_argument("--real-ray", action="store_true", help="run with Ray itself instead of tasuki")
    parser.add_argument("--ray-report", type=Path, nargs="+", help="--real-ray runs' JSON reports: tests Ray "
                        "does not pass here are counted apart")
    args = parser.parse_args(argv)

    folder = args.folder.resolve()
    if not folder.is_dir():
        parser.error(f"{folder} is not a folder; put Ray's test files there first (compat/README.md)")
    files = sorted(folder.glob("test_*.py")) if not args.files else [folder / f for f in args.files]
    missing = [f.name for f in files if not f.exists()]
    if missing or not files:
        parser.error(f"no such test files in {folder}: {missing or 'test_*.py'}")
    report_path = (args.report or folder / ("ray_report.md" if args.real_ray else "tasuki_report.md")).resolve()
    ray_outcomes = {k: v for path in args.ray_report for k, v in _ray_outcomes(path).items()} \
        if args.ray_report else None

    started = time.monotonic()
    results = {}
    for path in files:
        t0 = time.monotonic()
        results[path.name] = run_file(path, args.timeout, args.run_out_of_scope, args.python, args.real_ray,
                                      ray_outcomes)
        counts = results[path.name]["counts"]
        print(f"{path.name:40s} " + "  ".join(f"{k} {counts[k]}" for k in (*OUTCOMES, "out_of_scope"))
              + f"  ({time.monotonic() - t0:.0f} s)", flush=True)
    data = summarize(results, folder, args.timeout, time.monotonic() - started,
                     "Ray itself" if args.real_ray else "tasuki")
    report_path.write_text(render(data), encoding="utf-8")
    report_path.with_suffix(".json").write_text(json.dumps(data, indent=1), encoding="utf-8")
    t = data["total"]
    print(f"\nin scope: {t['passed']} passed of {t['in_scope']} ({t['rate']:.1%}); "
          f"out of scope: {t['out_of_scope']}; report: {report_path}")
    return 0


# How the message of a test that never ran starts (its file failed to import, or was killed): under
# Ray that says nothing about the test, so it is not counted apart.
_FILE_FAILED = "the file's pytest run"


def _ray_outcomes(path: Path) -> dict[str, tuple[str, str]]:
    """{nodeid: (outcome, message)} of a --real-ray run's JSON report."""
    data = json.loads(path.read_text(encoding="utf-8"))
    if data.get("runtime") != "Ray itself":
        raise SystemExit(f"{path} is not a --real-ray report (its runtime is {data.get('runtime', 'tasuki')!r})")
    return {t["nodeid"]: (t["outcome"], t.get("message", "")) for f in data["files"].values() for t in f["tests"]
            if t["scope"] == "in_scope" and not t.get("message", "").startswith(_FILE_FAILED)}


def run_file(path: Path, timeout: float, run_out_of_scope: bool, python: str, real_ray: bool = False,
             ray_outcomes: dict | None = None) -> dict:
    """Run one test file in its own pytest process; its tests' outcomes and scope decisions.

    real_ray: Ray's own `ray` (no shim). ray_outcomes: a real-Ray run's results; an in-scope test that
    Ray did not pass there is counted apart as "fails_under_ray"."""
    decisions = ray_scope.classify_source(path.read_text(encoding="utf-8"))
    out_of_scope = {name: f"{d.category}: {d.reason}" for name, d in decisions.items() if d.category != "in_scope"}
    with tempfile.TemporaryDirectory(prefix="ray-compat-") as tmp:
        results_file, missing_log, scope_file = (Path(tmp) / n for n in ("results.jsonl", "missing.log", "scope.json"))
        scope_file.write_text(json.dumps({} if run_out_of_scope else out_of_scope))
        plugin_dir = SHIM
        if real_ray:            # only the fixtures plugin on the path, so `import ray` is Ray's
            plugin_dir = Path(tmp) / "plugin"
            plugin_dir.mkdir()
            (plugin_dir / "ray_fixtures.py").symlink_to(SHIM / "ray_fixtures.py")
        env = {**os.environ,
               "PYTHONPATH": os.pathsep.join([str(plugin_dir), str(path.parent), os.environ.get("PYTHONPATH", "")]),
               "RAY_COMPAT_RESULTS": str(results_file), "RAY_COMPAT_MISSING_LOG": str(missing_log),
               "RAY_COMPAT_SCOPE": str(scope_file), "PYTHONDONTWRITEBYTECODE": "1"}
        cmd = [python, "-m", "pytest", str(path), "-p", "ray_fixtures", "-p", "no:cacheprovider",
               "-p", "no:randomly", "-q", "--no-header", "-rN", f"--timeout={timeout}", "--timeout-method=signal",
               f"--rootdir={path.parent}", "-o", "addopts=", "-o", "asyncio_mode=strict",
               "-o", "asyncio_default_fixture_loop_scope=function", "-W", "ignore::DeprecationWarning"]
        n_tests = max(1, len(decisions))
        budget = FILE_GRACE_S + timeout * (n_tests if run_out_of_scope else max(1, n_tests - len(out_of_scope)))
        proc = subprocess.Popen(cmd, cwd=tmp, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                start_new_session=True)
        killed = False
        try:
            output, _ = proc.communicate(timeout=budget)
        except subprocess.TimeoutExpired:
            killed = True
            _kill_group(proc.pid)
            output, _ = proc.communicate()
        _kill_group(proc.pid)         # what the tests left behind (workers, embedded clusters)
        records = [json.loads(line) for line in results_file.read_text().splitlines()] if results_file.exists() else []
        missing_names = sorted(set(missing_log.read_text().splitlines())) if missing_log.exists() else []
    tail = output.decode(errors="replace").strip().splitlines()[-15:]

    tests = []
    seen = set()
    for r in records:
        nodeid = r["nodeid"]
        if r["outcome"] == "collect-error":
            tests.append({"nodeid": nodeid, "test": "(collection)", "outcome": "error", "scope": "in_scope",
                          "message": r["message"] or "; ".join(tail[-3:])})
            continue
        name = _test_name(nodeid)
        seen.add(name)
        decision = decisions.get(name, ray_scope.Decision("in_scope", ""))
        outcome = r["outcome"] or "error"
        if ray_outcomes is not None and decision.category == "in_scope" and outcome != "skipped":
            ray_outcome, ray_message = ray_outcomes.get(nodeid, ("not run", ""))
            if ray_outcome in ("failed", "error"):      # not a collection error: the file imports fine there
                decision = ray_scope.Decision("fails_under_ray", f"Ray 2.60 here: {ray_outcome}: {ray_message}"[:300])
        tests.append({"nodeid": nodeid, "test": name, "outcome": outcome, "message": r.get("message", ""),
                      "scope": decision.category, "reason": decision.reason,
                      "duration": round(r.get("duration", 0.0), 2)})
    if killed or proc.returncode not in (0, 1, 5):
        why = f"{_FILE_FAILED} was killed after {budget:.0f} s" if killed else \
            f"{_FILE_FAILED} ended with exit status {proc.returncode}: " + " | ".join(tail[-3:])
        for name, d in decisions.items():
            if name not in seen and (d.category == "in_scope" or run_out_of_scope):
                tests.append({"nodeid": f"{path.name}::{name}", "test": name, "outcome": "error",
                              "message": why, "scope": d.category, "reason": d.reason})

    counts = collections.Counter()
    for t in tests:
        counts["out_of_scope" if t["scope"] != "in_scope" else t["outcome"]] += 1
    for name in OUTCOMES + ("out_of_scope",):
        counts.setdefault(name, 0)
    return {"tests": tests, "counts": dict(counts), "missing": missing_names, "returncode": proc.returncode,
            "killed": killed, "output_tail": tail}


def _test_name(nodeid: str) -> str:
    parts = nodeid.split("::")[1:]
    parts[-1] = parts[-1].split("[")[0]
    return "::".join(parts)


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


_VOLATILE = [(re.compile(r"0x[0-9a-fA-F]+"), "<addr>"), (re.compile(r"\b[0-9a-f]{12,}\b"), "<id>"),
             (re.compile(r"/tmp/[^\s'\"]+"), "/tmp/…"), (re.compile(r"\d+(\.\d+)?"), "N")]


def error_key(message: str) -> str:
    """The first line of an error with ids, addresses, paths and numbers blurred, to group by."""
    line = (message or "(no message)").strip().splitlines()[0] if (message or "").strip() else "(no message)"
    for pattern, repl in _VOLATILE:
        line = pattern.sub(repl, line)
    return line[:200]


def summarize(results: dict, folder: Path, timeout: float, seconds: float, runtime: str = "tasuki") -> dict:
    total = collections.Counter()
    by_category = collections.Counter()
    groups = collections.defaultdict(list)
    missing = collections.Counter()
    for name, r in results.items():
        for k, v in r["counts"].items():
            total[k] += v
        for t in r["tests"]:
            if t["scope"] != "in_scope":
                by_category[t["scope"]] += 1
            elif t["outcome"] in ("failed", "error"):
                groups[error_key(t["message"])].append(f"{name}::{t['nodeid'].split('::', 1)[-1]}")
        for m in r["missing"]:
            missing[m] += 1
    in_scope = total["passed"] + total["failed"] + total["error"]
    manifest = folder / "MANIFEST.md"
    return {
        "date": datetime.date.today().isoformat(),
        "runtime": runtime,
        "folder": str(folder),
        "manifest": manifest.read_text(encoding="utf-8") if manifest.exists() else "",
        "tasuki_commit": _git_head(),
        "timeout_s": timeout,
        "seconds": round(seconds),
        "total": {**{k: total[k] for k in (*OUTCOMES, "out_of_scope")}, "in_scope": in_scope,
                  "rate": total["passed"] / in_scope if in_scope else 0.0},
        "out_of_scope_by_category": dict(by_category.most_common()),
        "rules": ray_scope.describe_rules(),
        "files": {name: {"counts": r["counts"], "killed": r["killed"], "returncode": r["returncode"],
                         "tests": r["tests"]} for name, r in results.items()},
        "failure_groups": sorted(([k, v] for k, v in groups.items()), key=lambda kv: (-len(kv[1]), kv[0])),
        "missing_names": sorted(missing),
    }


def _git_head() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=HERE, capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def render(d: dict) -> str:
    t = d["total"]
    lines = [f"# {d.get('runtime', 'tasuki')} against Ray's Core tests — {d['date']}", "",
             f"tasuki commit {d['tasuki_commit']}; tests from {d['folder']}; {d['timeout_s']:.0f} s per test; "
             f"run took {d['seconds']} s.", "",
             f"**In scope: {t['passed']} passed of {t['in_scope']} ({t['rate']:.1%})** — failed {t['failed']}, "
             f"error {t['error']}; skipped by the tests themselves {t['skipped']} (not counted); "
             f"out of scope {t['out_of_scope']} (not run).", "",
             "| file | passed | failed | error | in scope | rate | skipped | out of scope |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name, f in d["files"].items():
        c = f["counts"]
        n = c["passed"] + c["failed"] + c["error"]
        rate = f"{c['passed'] / n:.0%}" if n else "–"
        note = " (killed)" if f["killed"] else ""
        lines.append(f"| {name}{note} | {c['passed']} | {c['failed']} | {c['error']} | {n} | {rate} | "
                     f"{c['skipped']} | {c['out_of_scope']} |")
    lines.append(f"| **total** | {t['passed']} | {t['failed']} | {t['error']} | {t['in_scope']} | "
                 f"{t['rate']:.0%} | {t['skipped']} | {t['out_of_scope']} |")
    lines += ["", "## Out of scope, by rule", "",
              "A test is out of scope when the code it runs (the test, the file's fixtures it requests, the "
              "module-level helpers it names, transitively; names resolved through the file's imports) "
              "matches one of these rules, first match wins (compat/ray_scope.py):", ""]
    for category, text in d["rules"]:
        lines.append(f"- **{category}** ({d['out_of_scope_by_category'].get(category, 0)}): {text}")
    if "fails_under_ray" in d["out_of_scope_by_category"]:
        lines.append(f"- **fails_under_ray** ({d['out_of_scope_by_category']['fails_under_ray']}): in scope by "
                     "the rules, but Ray 2.60 itself does not pass it on this machine (--ray-report); "
                     "tasuki's outcome is listed with Ray's error below")
    lines += ["", "## In-scope failures, grouped by first error line", ""]
    for key, tests in d["failure_groups"]:
        lines.append(f"- **{len(tests)}** × `{key}`")
        for test in tests[:12]:
            lines.append(f"  - {test}")
        if len(tests) > 12:
            lines.append(f"  - … {len(tests) - 12} more")
    lines += ["", "## Ray names tasuki lacks that the tests touched (shim placeholders)", "",
              ", ".join(f"`{m}`" for m in d["missing_names"]) or "none", "",
              "## Out-of-scope tests", ""]
    for name, f in d["files"].items():
        for test in f["tests"]:
            if test["scope"] != "in_scope":
                if test["scope"] == "fails_under_ray":
                    lines.append(f"- {test['nodeid']} — {test['reason']} (tasuki: {test['outcome']})")
                else:
                    lines.append(f"- {name}::{test['test']} — {test['scope']}: {test['reason']}")
    if d["manifest"]:
        lines += ["", "## The test files", "", d["manifest"]]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
