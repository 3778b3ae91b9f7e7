"""Nothing a user made is deleted, and nothing outside the workspace is written, moved or deleted (issue 15:
findings 4, 6 and 13): `buildml clean` and restoring outputs, from the CLI."""

import os


def displaced_files(ws) -> list:
    top = ws.root / ".buildml" / "displaced"
    return sorted(p.name for p in top.rglob("*") if p.is_file()) if top.exists() else []


def snapshot(top) -> dict:
    """{relative path: bytes} of every file under top (links not followed)."""
    return {os.path.relpath(os.path.join(d, f), top): open(os.path.join(d, f), "rb").read()
            for d, _, files in os.walk(top) for f in files}


def test_displaced_user_file_survives_clean_all_unless_displaced(ws):
    """A user file a build moved aside survives `clean --all` (which says so); `clean --all --displaced` removes it."""
    ws.write("BUILD.yaml", "targets:\n  a:\n    command: echo built > out.txt\n    outs: [out.txt]\n")
    ws.write("out.txt", "my precious notes\n")
    ws.run("build", check=0)
    assert displaced_files(ws) == ["out.txt"]
    proc = ws.run("clean", "--all", check=0)
    assert displaced_files(ws) == ["out.txt"], proc.stdout
    assert "1 file" in proc.stdout and "buildml clean --displaced" in proc.stdout
    assert not (ws.root / ".buildml" / "state.db").exists()
    kept = next((ws.root / ".buildml" / "displaced").rglob("out.txt"))
    assert kept.read_text() == "my precious notes\n"
    proc = ws.run("clean", "--all", "--displaced", check=0)
    assert displaced_files(ws) == [] and "removed .buildml/displaced/" in proc.stdout


def test_clean_leaves_and_lists_an_output_edited_by_hand(ws):
    """An output edited after buildml wrote it is neither deleted by `clean` nor forgotten: it stays and is listed."""
    ws.write("BUILD.yaml", "targets:\n  a:\n    command: echo one > a.txt && echo two > b.txt\n"
             "    outs: [a.txt, b.txt]\n")
    ws.run("build", check=0)
    ws.write("b.txt", "two, corrected by hand\n")
    proc = ws.run("clean", check=0)
    assert not (ws.root / "a.txt").exists()
    assert ws.read("b.txt") == "two, corrected by hand\n"
    assert "removed 1 output files" in proc.stdout and "b.txt: changed since buildml wrote it" in proc.stdout
    ws.run("build", check=0)  # the next build keeps it too: moved aside, not overwritten
    assert displaced_files(ws) == ["b.txt"] and ws.read("b.txt") == "two\n"


def test_clean_deletes_nothing_through_an_out_dir_that_became_a_symlink(ws, tmp_path):
    """Directories of an out replaced by symlinks to outside directories holding the very files buildml wrote:
    clean deletes none of them (a directory inside the out: listed; the out itself: the load error stops it)."""
    ws.write("BUILD.yaml", "targets:\n  a:\n    command: mkdir -p gen/sub && echo x > gen/sub/x.txt"
             " && echo y > gen/y.txt\n    outs: [gen]\n")
    ws.run("build", check=0)
    outside = tmp_path / "outside"
    os.rename(ws.root / "gen" / "sub", outside)  # the same bytes buildml wrote, now outside the workspace
    os.symlink(outside, ws.root / "gen" / "sub")
    proc = ws.run("clean", check=0)
    assert snapshot(outside) == {"x.txt": b"x\n"}, proc.stdout
    assert "gen/sub/x.txt: is under the symlink gen/sub" in proc.stdout and not (ws.root / "gen" / "y.txt").exists()
    ws.run("build", check=2)  # gen/sub/x.txt is not restored through the link either
    (ws.root / "gen" / "sub").unlink()
    ws.run("build", check=0)
    os.rename(ws.root / "gen", tmp_path / "outside2")
    os.symlink(tmp_path / "outside2", ws.root / "gen")
    proc = ws.run("clean", "--all", check=2)
    assert "is the symlink 'gen'" in proc.stderr
    assert snapshot(tmp_path / "outside2") == {"sub/x.txt": b"x\n", "y.txt": b"y\n"}, proc.stdout


def test_cached_result_is_not_restored_through_a_symlinked_directory(ws, tmp_path):
    """A cached result restored where a directory inside the out is a symlink to outside: nothing outside is written
    or moved, and the error names the symlink; the same for an out that is itself such a symlink."""
    ws.write("BUILD.yaml", "targets:\n  a:\n    command: mkdir -p gen/sub && echo new > gen/sub/x.txt"
             " && echo top > gen/t\n    outs: [gen]\n")
    ws.run("build", check=0)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "x.txt").write_text("someone else's file\n")
    before = snapshot(outside)
    ws.run("clean", check=0)
    os.rmdir(ws.root / "gen" / "sub")
    os.symlink(outside, ws.root / "gen" / "sub")
    proc = ws.run("build", check=2)
    assert snapshot(outside) == before
    assert "gen/sub is a symlink" in proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    assert displaced_files(ws) == []
    ws.run("clean", check=0)
    (ws.root / "gen" / "sub").unlink()
    os.rmdir(ws.root / "gen")
    os.symlink(outside, ws.root / "gen")  # the common `data -> /bigdisk`
    proc = ws.run("build", check=None)
    assert proc.returncode != 0 and "Traceback" not in proc.stdout + proc.stderr
    assert snapshot(outside) == before and displaced_files(ws) == []
