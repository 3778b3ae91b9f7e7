"""Honest limits for large directories (issue 17, item 5), from the CLI: a directory of many files shows its file
count, bytes and elapsed time while it is hashed, staged and stored (transfer events), and a folder of a directory
out holding more than max_files_per_folder files warns once a build, with the figure.
"""

from __future__ import annotations

import json

from conftest import executed

from buildml.store.progress import LARGE_DIR_FILES

FILES = 1_200  # over LARGE_DIR_FILES and over the max_files_per_folder the tests set
assert FILES >= LARGE_DIR_FILES

WRITER = """
    targets:
      images:
        command: >-
          mkdir -p data/imgs data/labels &&
          for i in $(seq 1 {big}); do echo $i > data/imgs/$i.png; done &&
          for i in $(seq 1 {small}); do echo $i > data/labels/$i.txt; done
        outs: [data/]
"""


def lines(proc) -> list[dict]:
    return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]


def warnings(events) -> list[str]:
    return [e["message"] for e in events if e.get("event") == "warning"]


def test_a_crowded_folder_of_a_directory_out_warns_once_with_the_figure(ws):
    """1,200 files in one folder with max_files_per_folder: 1000 warn once, naming the folder, the count and the
    setting, in --json and in plain text (and that build is not certified as a no-op); the folder beside it, under the
    limit, is not named. Up to date, nothing is produced and nothing warns; with a higher limit nothing warns either."""
    ws.write("buildml.yaml", "max_files_per_folder: 1000\n")
    ws.write("BUILD.yaml", WRITER.format(big=FILES, small=999))
    proc = ws.run("build", "--json", check=0)
    events = lines(proc)
    assert executed([e for e in events if e.get("event") == "finished"]) == ["//:images"]
    assert warnings(events) == [
        "//:images: out data/imgs/ holds 1,200 files in one folder (max_files_per_folder: 1000); file systems and "
        "tools slow down past this: shard it into subfolders"]

    ws.write("BUILD.yaml", WRITER.format(big=FILES, small=999).replace("seq 1", "seq 0"))  # a new key: it runs
    proc = ws.run("build", "-v", check=0)
    text = proc.stdout
    assert "no-op certificate: not written: the build warned" in proc.stderr, proc.stderr
    crowded = [line for line in text.splitlines() if "WARNING" in line]
    assert len(crowded) == 1, text
    assert "data/imgs/ holds 1,201 files in one folder (max_files_per_folder: 1000)" in crowded[0]
    assert "data/labels" not in text

    assert warnings(lines(ws.run("build", "--json", check=0))) == []  # up to date: nothing produced, no warning

    ws.write("buildml.yaml", "max_files_per_folder: 5000\n")
    ws.write("BUILD.yaml", WRITER.format(big=FILES, small=10))
    events = lines(ws.run("build", "--json", check=0))
    assert executed([e for e in events if e.get("event") == "finished"]) == ["//:images"]
    assert warnings(events) == []


def test_a_bad_max_files_per_folder_is_a_load_error_naming_buildml_yaml(ws):
    """Zero, a negative, a boolean or text: the build stops before anything runs, naming buildml.yaml and the field."""
    ws.write("BUILD.yaml", """
        targets:
          t: {command: touch t.txt, outs: [t.txt]}
    """)
    for bad in ("0", "-5", "true", "lots", "1.5"):
        ws.write("buildml.yaml", f"max_files_per_folder: {bad}\n")
        proc = ws.run("build", check=None)
        said = proc.stdout + proc.stderr
        assert proc.returncode == 2, said
        assert "max_files_per_folder must be a positive integer" in said, said
        assert "buildml.yaml" in said, said
        assert "Traceback" not in said
        assert not (ws.root / "t.txt").exists()


def test_a_large_directory_dep_shows_files_bytes_and_time_as_it_is_hashed_staged_and_stored(ws):
    """A dep of 1,200 files (4,893 bytes) and a directory out of as many: --json has transfer events of hashing and
    staging data/ and storing out/ (with the target's one small file each), each closing with every file and byte
    counted and an elapsed time, throttled; a target with a small directory dep has none."""
    data = ws.root / "data"
    data.mkdir()
    for i in range(1, FILES + 1):
        (data / f"f{i}.txt").write_text(f"{i}\n")
    total = sum(len(f"{i}\n") for i in range(1, FILES + 1))
    ws.write("small/a.txt", "a\n")
    ws.write("BUILD.yaml", """
        targets:
          copy:
            command: mkdir -p out/x && cp data/* out/x/ && cat small/a.txt > small.txt
            deps: [data/, small/]
            outs: [out/, small.txt]
          tiny:
            command: cat small/a.txt > tiny.txt
            deps: [small/]
            outs: [tiny.txt]
    """)
    events = lines(ws.run("build", "--json", check=0))
    transfers = [e for e in events if e.get("event") == "transfer"]
    assert {e["target"] for e in transfers} == {"//:copy"}, transfers  # //:tiny's one file shows nothing
    by_what: dict = {}
    for e in transfers:
        by_what.setdefault(e["what"], []).append(e)
    assert set(by_what) == {"hash data/, small/", "stage data/, small/", "store out/"}, sorted(by_what)
    files = FILES + 1  # and small/a.txt (hash, stage), or small.txt (store)
    for seen in by_what.values():
        last = seen[-1]
        assert last["files"] == last["total_files"] == files, seen
        assert last["done"] == last["total"] == total + 2, seen
        assert isinstance(last["elapsed"], float) and last["elapsed"] >= 0
        assert all(e["files"] <= files and e["done"] <= last["done"] for e in seen)
        assert [e["elapsed"] for e in seen] == sorted(e["elapsed"] for e in seen)
        assert len(seen) <= 2 + 5 * (last["elapsed"] + 1), seen  # throttled: a few a second, never one a file
    assert by_what["hash data/, small/"][0]["total"] == total + 2  # the walk knows every size before hashing
    started = next(i for i, e in enumerate(events) if e.get("event") == "started" and e["target"] == "//:copy")
    assert all(events.index(e) < started for e in by_what["hash data/, small/"])  # hashed while deciding

    events = lines(ws.run("build", "--json", check=0))  # up to date: hashed again (from the stat cache), not run
    assert [e["what"] for e in events if e.get("event") == "transfer"][-1:] == ["hash data/, small/"]
    assert [e["files"] for e in events if e.get("event") == "transfer"][-1] == files


def test_the_live_view_shows_a_large_directory_as_files_bytes_and_time():
    """A file-counting Transfer is a row of files done of the total, bytes and elapsed seconds, gone when every
    file is done (not when the bytes are: empty files may be left)."""
    import io
    import re

    from rich.console import Console

    from buildml.events import BuildStarted, TargetStarted, Transfer
    from buildml.labels import Label
    from buildml.report.live import LiveReporter

    label = Label("", "images")
    reporter = LiveReporter(console=Console(file=io.StringIO(), width=120))
    reporter(BuildStarted((label,)))
    reporter(TargetStarted(label, "local"))
    reporter(Transfer("hash data/", 12_000_000, 20_000_000, label, 12_345, 20_000, 3.21))

    def screen() -> str:
        out = Console(file=io.StringIO(), width=120, color_system=None)
        out.print(reporter)
        return out.file.getvalue()
    try:
        assert re.search(r"//:images\s+hash data/ .*12,345 / 20,000 files, 12\.0 MB / 20\.0 MB, 3\.2s", screen()), screen()
        reporter(Transfer("hash data/", 20_000_000, 20_000_000, label, 19_000, 20_000, 4.0))  # empty files to go
        assert "19,000 / 20,000 files" in screen(), screen()
        reporter(Transfer("hash data/", 20_000_000, 20_000_000, label, 20_000, 20_000, 4.0))
        assert "hash data/" not in screen()
    finally:
        reporter.close()
