"""Whole-or-nothing writes: a build killed outright (SIGKILL, no cleanup runs) leaves nothing in the folder
DVC watches, only a scratch folder that the next write removes."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from facebench.atomic import SCRATCH, atomic_write_text, build_dir, remove_stale, replace_dir, scratch_dir

pytestmark = pytest.mark.skipif(os.name != "posix", reason="SIGKILL and pid checks are POSIX")


def project(tmp_path: Path) -> Path:
    """A project root (params.yaml marks it) with the folder DVC stages depend on whole."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "params.yaml").write_text("profile: smoke\n")
    (tmp_path / "data" / "prepared").mkdir(parents=True)
    return tmp_path


def run_killed(code: str) -> int:
    """Run ``code`` in a child Python that SIGKILLs itself where the code says; the child's pid."""
    child = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True)
    assert child.returncode == -signal.SIGKILL, child.stderr
    return int(child.stdout.strip())


KILLED_BUILD = """
    import os, signal, sys
    from pathlib import Path
    from facebench.atomic import build_dir

    def write(tmp):
        (tmp / "train.parquet").write_bytes(b"half a file")
        print(os.getpid(), flush=True)
        os.kill(os.getpid(), signal.SIGKILL)  # no finally, no cleanup

    build_dir(Path(sys.argv[1]) if len(sys.argv) > 1 else Path({dst!r}), write)
"""


def test_a_killed_build_leaves_nothing_beside_the_destination(tmp_path):
    root = project(tmp_path)
    dst = root / "data" / "prepared" / "aflw"
    pid = run_killed(KILLED_BUILD.format(dst=str(dst)))
    assert list(dst.parent.iterdir()) == []  # no .aflw.tmp-* for DVC to hash, no partial aflw
    left = list((root / SCRATCH / socket.gethostname() / str(pid)).iterdir())
    assert [p.name.split(".")[0] for p in left] == ["aflw"] and (left[0] / "train.parquet").is_file()

    build_dir(dst, lambda tmp: (tmp / "train.parquet").write_bytes(b"whole"))
    assert [p.name for p in dst.parent.iterdir()] == ["aflw"]
    assert (dst / "train.parquet").read_bytes() == b"whole"
    assert not (root / SCRATCH).exists()  # the dead build's folder removed, the scratch folder tidied


def test_a_killed_rebuild_keeps_the_previous_output(tmp_path):
    root = project(tmp_path)
    dst = root / "data" / "prepared" / "aflw"
    build_dir(dst, lambda tmp: (tmp / "train.parquet").write_bytes(b"v1"))
    run_killed(KILLED_BUILD.format(dst=str(dst)))
    assert [p.name for p in dst.parent.iterdir()] == ["aflw"]
    assert [p.name for p in dst.iterdir()] == ["train.parquet"] and (dst / "train.parquet").read_bytes() == b"v1"


def test_a_kill_between_the_two_renames_leaves_the_old_folder_in_scratch_only(tmp_path):
    """replace_dir moves the old output aside before moving the new one in: aside is the scratch folder."""
    root = project(tmp_path)
    dst = root / "data" / "prepared" / "aflw"
    build_dir(dst, lambda tmp: (tmp / "train.parquet").write_bytes(b"v1"))
    pid = run_killed(f"""
        import os, signal
        from pathlib import Path
        import facebench.atomic as atomic

        real = os.replace
        def replace(src, dst):
            real(src, dst)
            if Path(dst).name.startswith("aflw.old-"):  # the old output is aside, the new not yet in
                print(os.getpid(), flush=True)
                os.kill(os.getpid(), signal.SIGKILL)
        atomic.os.replace = replace
        atomic.build_dir(Path({str(dst)!r}), lambda tmp: (tmp / "train.parquet").write_bytes(b"v2"))
    """)
    assert list(dst.parent.iterdir()) == []  # no aflw.old beside it
    own = root / SCRATCH / socket.gethostname() / str(pid)
    left = sorted(own.iterdir(), key=lambda p: p.name.startswith("aflw.old-"))
    assert [p.name.startswith(("aflw.old-", "aflw.")) for p in left] == [True, True]
    assert [p.name.startswith("aflw.old-") for p in left] == [False, True]  # the new build's folder, the old output
    assert (left[1] / "train.parquet").read_bytes() == b"v1"
    assert remove_stale(root / SCRATCH) == [own] and not own.exists()


def test_a_killed_file_write_leaves_no_temp_file_in_the_watched_folder(tmp_path):
    root = project(tmp_path)
    metrics = root / "metrics"
    atomic_write_text(metrics / "run.json", "{}\n")
    run_killed(f"""
        import os, signal
        from pathlib import Path
        import facebench.atomic as atomic

        def replace(src, dst):
            print(os.getpid(), flush=True)
            os.kill(os.getpid(), signal.SIGKILL)
        atomic.os.replace = replace
        atomic.atomic_write_text(Path({str(metrics / 'run.json')!r}), '{{"nme": 1}}\\n')
    """)
    assert [p.name for p in metrics.iterdir()] == ["run.json"] and (metrics / "run.json").read_text() == "{}\n"
    atomic_write_text(metrics / "other.json", "{}\n")  # the next write removes the dead one's temp file
    assert not (root / SCRATCH).exists()


def test_a_failed_build_leaves_nothing_anywhere(tmp_path):
    root = project(tmp_path)
    dst = root / "data" / "prepared" / "aflw"

    def failing(tmp):
        (tmp / "train.parquet").write_bytes(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        build_dir(dst, failing)
    assert sorted(p.name for p in root.iterdir()) == ["data", "params.yaml"]
    assert list(dst.parent.iterdir()) == []


def test_leftovers_of_earlier_versions_beside_the_destination_are_removed(tmp_path):
    root = project(tmp_path)
    dst = root / "data" / "prepared" / "aflw"
    (dst.parent / ".aflw.tmp-k2j3h4").mkdir()
    (dst.parent / ".aflw.tmp-k2j3h4" / "train.parquet").write_bytes(b"half")
    (dst.parent / ".w300.tmp-zz").mkdir()  # another dataset's: that build removes it, not this one
    (dst.parent / "aflw.old").mkdir()
    build_dir(dst, lambda tmp: (tmp / "train.parquet").write_bytes(b"whole"))
    assert sorted(p.name for p in dst.parent.iterdir()) == [".w300.tmp-zz", "aflw"]


def test_where_the_scratch_folder_goes(tmp_path):
    plain = tmp_path / "plain" / "prepared"  # no project above: beside the destination's folder
    plain.mkdir(parents=True)
    assert scratch_dir(plain) == tmp_path / "plain" / SCRATCH
    root = project(tmp_path / "proj")
    assert scratch_dir(root / "data" / "prepared") == root / SCRATCH
    sweeps = root / "metrics" / "sweeps"
    sweeps.mkdir(parents=True)
    assert scratch_dir(sweeps) == root / SCRATCH  # not metrics/, which the report stage depends on


def test_live_and_foreign_working_folders_are_kept(tmp_path):
    scratch = tmp_path / SCRATCH
    mine = scratch / socket.gethostname() / str(os.getpid())
    other_host = scratch / "another-node" / "1"
    for folder in (mine, other_host):
        folder.mkdir(parents=True)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    gone = scratch / socket.gethostname() / dead.stdout.strip()
    gone.mkdir()
    assert remove_stale(scratch) == [gone]
    assert mine.is_dir() and other_host.is_dir()


def test_replace_dir_moves_a_folder_in_whole(tmp_path):
    src, dst = tmp_path / "new", tmp_path / "out" / "x"
    src.mkdir()
    (src / "a").write_text("new")
    dst.mkdir(parents=True)
    (dst / "b").write_text("old")
    replace_dir(src, dst)
    assert [p.name for p in dst.iterdir()] == ["a"] and not src.exists()
    assert [p.name for p in dst.parent.iterdir()] == ["x"]
