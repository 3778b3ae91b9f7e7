"""Directory datasets of many files (issue 17), from the CLI: inputs are staged as hard links of read-only cache
blobs, so an unchanged file is the same blob build after build, and a command cannot change the cache through one.
"""

from __future__ import annotations

import os

from conftest import executed

FILES = 10_000


def make_dataset(root, files: int) -> None:
    """files small files of distinct bytes under root/data, 1,000 per folder."""
    for i in range(files):
        folder = root / f"data/d{i // 1000:02d}"
        if i % 1000 == 0:
            folder.mkdir(parents=True)
        (folder / f"f{i:05d}.bin").write_text(f"{i:05d}\n" * 170)


def sandbox_inodes(ws) -> dict:
    """{path: inode} of the files the consumer saw in its sandbox (its output lists them)."""
    pairs = (line.split(" ", 1) for line in ws.read("seen.txt").splitlines())
    return {path: inode for inode, path in pairs}


def test_one_changed_file_of_ten_thousand_is_the_one_file_new_in_the_sandbox(ws):
    """A source directory of 10,000 files, one edited: the consumer runs again, and in its sandbox 9,999 files are
    the very inodes of the first run (the cached blobs, linked) and exactly one file is new, with the new bytes."""
    make_dataset(ws.root, FILES)
    ws.write("BUILD.yaml", """
        targets:
          seen:
            command: find data -type f -printf '%i %p\\n' | sort -k2 > seen.txt
            deps: [data/]
            outs: [seen.txt]
    """)
    _, finished = ws.build_json()
    assert executed(finished) == ["//:seen"]
    before = sandbox_inodes(ws)
    assert len(before) == FILES

    changed = ws.root / "data/d04/f04321.bin"
    changed.write_text("edited\n")
    _, finished = ws.build_json()
    assert executed(finished) == ["//:seen"]
    after = sandbox_inodes(ws)
    assert set(after) == set(before)
    assert [p for p in after if after[p] != before[p]] == ["data/d04/f04321.bin"]

    ws.run("cache", "verify", check=0)


def test_a_command_writing_into_a_staged_input_cannot_alter_the_cache(ws):
    """An input made writable and appended to (by a source dep and by another target's output): the action fails
    naming the input, `cache verify` passes, the workspace keeps its bytes, and the next honest build is right."""
    ws.write("data/raw.txt", "raw bytes\n")
    ws.write("BUILD.yaml", """
        targets:
          prep:
            command: mkdir -p gen && echo prepared > gen/prep.txt
            outs: [gen/prep.txt]
          evil:
            command: chmod u+w data/raw.txt gen/prep.txt && echo EVIL >> data/raw.txt && echo EVIL >> gen/prep.txt && cat data/raw.txt gen/prep.txt > out.txt
            deps: [data/raw.txt, //:prep]
            outs: [out.txt]
    """)
    proc = ws.run("build", check=1)
    assert "wrote into its input" in proc.stdout and ("data/raw.txt" in proc.stdout or "gen/prep.txt" in proc.stdout)
    assert "Traceback" not in proc.stdout + proc.stderr
    verify = ws.run("cache", "verify", check=0)
    assert "no corrupt entries" in verify.stdout
    assert ws.read("data/raw.txt") == "raw bytes\n" and ws.read("gen/prep.txt") == "prepared\n"

    ws.write("BUILD.yaml", ws.read("BUILD.yaml").replace(
        "chmod u+w data/raw.txt gen/prep.txt && echo EVIL >> data/raw.txt && echo EVIL >> gen/prep.txt && ", ""))
    ws.run("build", check=0)
    assert ws.read("out.txt") == "raw bytes\nprepared\n"
    ws.run("cache", "verify", check=0)


def test_an_input_moved_into_the_outputs_is_stored(ws):
    """A command that renames an input into its outputs (the output is then a link of the cached blob): stored as
    that blob, restored as a file of its own."""
    ws.write("data/a.txt", "moved\n")
    ws.write("BUILD.yaml", """
        targets:
          mover:
            command: mkdir -p out && mv data/a.txt out/a.txt
            deps: [data/a.txt]
            outs: [out/]
    """)
    ws.run("build", check=0)
    assert ws.read("out/a.txt") == "moved\n" and ws.read("data/a.txt") == "moved\n"
    assert os.stat(ws.root / "out/a.txt").st_nlink == 1
    ws.run("cache", "verify", check=0)


def test_two_datasets_sharing_most_files_store_them_once(ws):
    """Two dataset targets whose 100 files share 99: the cache holds 101 data blobs, not 200."""
    ws.write("gen.py", """\
        import os, sys
        os.makedirs(sys.argv[1], exist_ok=True)
        for i in range(100):
            with open(f"{sys.argv[1]}/{i}.bin", "w") as f:
                f.write(("changed %d" % i if sys.argv[2] == "b" and i == 7 else "row %d" % i).ljust(1111) + "\\n")
    """)
    ws.write("BUILD.yaml", """
        targets:
          a:
            kind: dataset
            command: python3 gen.py data/a a
            deps: [gen.py]
            outs: [data/a/]
          b:
            kind: dataset
            command: python3 gen.py data/b b
            deps: [gen.py]
            outs: [data/b/]
    """)
    ws.run("build", check=0)
    sizes = [p.stat().st_size for p in (ws.cache / "cas").glob("*/*")]
    assert sizes.count(1112) == 101
