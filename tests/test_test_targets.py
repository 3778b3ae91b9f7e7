"""`buildml test`: test targets, cached passes, flaky retries, JUnit XML, exit codes."""

import xml.etree.ElementTree as ET

from conftest import executed


def test_quickstart_tests_cached_and_selective(quickstart):
    """All tests run; then all are cached with 0 executions; a param change re-runs the gate, not unit tests."""
    ws = quickstart
    proc = ws.run("test", "//...", check=0)
    assert "PASSED           //:unit_tests" in proc.stdout and "PASSED           //:quality_gate" in proc.stdout
    proc = ws.run("test", "//...", check=0)
    assert proc.stdout.count("PASSED (cached)  //:") == 2 and "every test result came from the cache" in proc.stdout
    proc = ws.run("test", "--json", check=0)
    summary = [l for l in proc.stdout.splitlines() if '"summary"' in l][-1]
    assert '"executed": 0' in summary
    ws.write("params.yaml", ws.read("params.yaml").replace("C: 0.5", "C: 0.4"))
    proc = ws.run("test", "--json", check=0)
    import json
    events = [json.loads(l) for l in proc.stdout.splitlines()]
    ran = executed([e for e in events if e.get("event") == "finished"])
    assert ran == ["//:train", "//:evaluate", "//:quality_gate"]


def test_failing_test_prints_tail_and_exits_1(ws):
    """A failing test shows its log tail and where the full log is, and the run exits 1; junit parses."""
    ws.write("BUILD.yaml", """
        targets:
          bad:
            kind: test
            command: 'echo "assertion failed: 1 != 2"; exit 3'
          good:
            kind: test
            command: "true"
    """)
    proc = ws.run("test", "-k", "--junit-xml", "report.xml", check=1)
    assert "FAILED           //:bad" in proc.stdout and "assertion failed: 1 != 2" in proc.stdout
    assert "buildml log //:bad" in proc.stdout
    assert "assertion failed" in ws.run("log", "//:bad", check=0).stdout
    root = ET.parse(ws.root / "report.xml").getroot()
    cases = {c.get("name"): c for c in root.iter("testcase")}
    assert cases["//:bad"].find("failure") is not None and cases["//:good"].find("failure") is None
    assert root.find("testsuite").get("failures") == "1"
    proc = ws.run("test", "//:bad", check=1)
    assert "PASSED (cached)" not in proc.stdout, "a failure is never served from the cache as a pass"


def test_retries_report_flaky(ws):
    """A test that passes on a retry is FLAKY, not silently green."""
    counter = ws.root.parent / "attempts"
    ws.write("BUILD.yaml", f"""
        targets:
          flaky:
            kind: test
            retries: 2
            command: echo x >> {counter}; test $(wc -l < {counter}) -ge 2
    """)
    proc = ws.run("test", check=0)
    assert "FLAKY" in proc.stdout and "1 flaky" in proc.stdout


def test_no_cache_test_results_reruns(ws):
    """--no-cache-test-results runs a passing test again."""
    ws.write("BUILD.yaml", "targets:\n  t:\n    kind: test\n    command: 'true'\n")
    ws.run("test", check=0)
    assert "PASSED (cached)" in ws.run("test", check=0).stdout
    proc = ws.run("test", "--no-cache-test-results", check=0)
    assert "PASSED           //:t" in proc.stdout


def test_only_tests_are_run(ws):
    """`buildml test //...` runs tests and what they need, not unrelated build targets; no tests is exit 2."""
    ws.write("BUILD.yaml", """
        targets:
          needed:
            command: echo 1 > n.txt
            outs: [n.txt]
          unrelated:
            command: echo 2 > u.txt
            outs: [u.txt]
          t:
            kind: test
            command: cat n.txt
            deps: [n.txt]
    """)
    ws.run("test", check=0)
    assert (ws.root / "n.txt").exists() and not (ws.root / "u.txt").exists()
    proc = ws.run("test", "//:needed", check=2)
    assert "no test targets match" in proc.stderr


def test_gate_conditions_are_validated(ws):
    """A malformed metric threshold is a BUILD error with its location."""
    ws.write("BUILD.yaml", "targets:\n  g:\n    kind: test\n    assert_metrics: {accuracy: 'at least 0.9'}\n")
    proc = ws.run("test", check=2)
    assert "BUILD.yaml:4:22" in proc.stderr and "invalid condition" in proc.stderr


def test_tests_not_run_are_reported_as_not_run(ws):
    """Without -k, tests that never started after a failure (and a test whose dependency failed) stay in the
    summary as NOT RUN and in the JUnit file as skipped with the reason: a CI reading it sees 3 tests of 3."""
    ws.write("BUILD.yaml", """
        targets:
          data:
            command: exit 1
          a_bad:
            kind: test
            command: exit 1
          b_later:
            kind: test
            command: "true"
          c_needs_data:
            kind: test
            command: "true"
            deps: [":data"]
    """)
    proc = ws.run("test", "-j", "1", "--junit-xml", "report.xml", check=1)
    table = proc.stdout.split("Test summary")[1]
    assert "//:c_needs_data                          NOT RUN" in table, proc.stdout
    assert "3 tests: 0 passed, 0 cached, 0 flaky, 1 failed, 2 not run" in table
    suite = ET.parse(ws.root / "report.xml").getroot().find("testsuite")
    assert suite.get("tests") == "3"
    cases = {c.get("name"): c for c in suite.findall("testcase")}
    assert set(cases) == {"//:a_bad", "//:b_later", "//:c_needs_data"}
    skipped = [n for n, c in cases.items() if c.find("skipped") is not None]
    assert "//:c_needs_data" in skipped and all(cases[n].find("skipped").get("message").startswith("not run: ")
                                                for n in skipped)
    assert int(suite.get("skipped")) == len(skipped) and int(suite.get("failures")) >= 1
