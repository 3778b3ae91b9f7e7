"""Test results for people and CI: a line per finished test, a summary table, JUnit XML."""

from __future__ import annotations

import sys
import time
import xml.etree.ElementTree as ET

from buildml.events import BuildFinished, Outcome, TargetFinished


def test_status(result) -> str:
    """PASSED, PASSED (cached), FLAKY, FAILED or NOT RUN (a dependency failed, or the build stopped first)."""
    if result.status == Outcome.FAILED:
        return "FAILED"
    if result.status in (Outcome.NOT_BUILT, Outcome.DETACHED):
        return "NOT RUN"
    if result.status in (Outcome.CACHED, Outcome.UP_TO_DATE):
        return "PASSED (cached)"
    return "FLAKY" if result.flaky else "PASSED"


def summarize(finished: BuildFinished) -> dict:
    tests = [r for r in finished.results if r.is_test]
    return {
        "tests": len(tests),
        "passed": sum(1 for r in tests if r.status == Outcome.EXECUTED and not r.flaky),
        "cached": sum(1 for r in tests if r.status in (Outcome.CACHED, Outcome.UP_TO_DATE)),
        "flaky": sum(1 for r in tests if r.flaky),
        "failed": sum(1 for r in tests if r.status == Outcome.FAILED),
        "not_run": sum(1 for r in tests if r.status in (Outcome.NOT_BUILT, Outcome.DETACHED)),
    }


class TestReporter:
    """Wraps a build reporter: non-test events go to it; each test prints one line as it finishes."""

    def __init__(self, inner, stream=None):
        self.inner = inner
        self.stream = stream or sys.stdout

    def __call__(self, event) -> None:
        if isinstance(event, TargetFinished) and event.result.is_test:
            r = event.result
            line = f"{time.strftime('%H:%M:%S')} {test_status(r):<16} {r.label}"
            if r.status == Outcome.EXECUTED:
                line += f" ({r.duration:.2f}s)"
            if r.status in (Outcome.NOT_BUILT, Outcome.DETACHED):
                line += f": {r.error}"
            self.stream.write(line + "\n")
            if r.status == Outcome.FAILED:
                self.stream.write(f"    {r.error}\n")
                if r.log_tail:
                    self.stream.write("    --- log tail ---\n" + "".join(f"    {l}\n" for l in r.log_tail.splitlines()))
                self.stream.write(f"    full log: buildml log {r.label}\n")
            self.stream.flush()
            return
        if isinstance(event, BuildFinished):
            self.inner(event)
            self._table(event)
            return
        self.inner(event)

    def _table(self, finished: BuildFinished) -> None:
        s = summarize(finished)
        w = self.stream.write
        w("\nTest summary\n")
        w(f"  {'target':<40} result\n")
        for r in finished.results:
            if r.is_test:
                w(f"  {str(r.label):<40} {test_status(r)}\n")
        w(f"  {s['tests']} tests: {s['passed']} passed, {s['cached']} cached, {s['flaky']} flaky, "
          f"{s['failed']} failed, {s['not_run']} not run\n")
        if s["tests"] and s["cached"] == s["tests"]:
            w("  every test result came from the cache: nothing ran\n")
        self.stream.flush()


def write_junit(finished: BuildFinished, path: str) -> None:
    """A JUnit XML report (one testsuite, a testcase per test target)."""
    tests = [r for r in finished.results if r.is_test]
    s = summarize(finished)
    suite = ET.Element("testsuite", name="buildml", tests=str(len(tests)), failures=str(s["failed"]),
                       errors="0", skipped=str(s["not_run"]), time=f"{finished.duration:.3f}")
    for r in tests:
        case = ET.SubElement(suite, "testcase", classname=r.label.package or "root", name=str(r.label),
                             time=f"{r.duration:.3f}")
        if r.status == Outcome.FAILED:
            failure = ET.SubElement(case, "failure", message=r.error[:200])
            failure.text = r.log_tail
        elif r.status in (Outcome.NOT_BUILT, Outcome.DETACHED):
            ET.SubElement(case, "skipped", message=f"not run: {r.error}")
        else:
            ET.SubElement(case, "system-out").text = test_status(r)
    root = ET.Element("testsuites", tests=str(len(tests)), failures=str(s["failed"]))
    root.append(suite)
    ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)
