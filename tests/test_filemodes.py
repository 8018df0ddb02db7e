"""Tests of hurricane.filemodes: owner-only directories and files, tightened, never loosened."""

from __future__ import annotations

import os
import shutil
import stat
import tempfile

from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from hurricane.filemodes import (
    create_private_file,
    ensure_private_dir,
    is_inside,
    make_dirs,
    tighten,
)


def mode(path: str) -> int:
    """The permission bits of ``path``."""
    return stat.S_IMODE(os.stat(path).st_mode)


class FileModesTests(SynchronousTestCase):
    """Directories and files Hurricane makes are 0700/0600; wider ones are narrowed."""

    def setUp(self) -> None:
        self.top = tempfile.mkdtemp(prefix="hurricane-modes-")
        self.addCleanup(shutil.rmtree, self.top, True)
        # The usual umask, under which plain makedirs/open give 0755/0644.
        old = os.umask(0o022)
        self.addCleanup(os.umask, old)

    def test_new_directory_private(self) -> None:
        """A missing directory and its missing parents are created 0700 under umask 022."""
        path = os.path.join(self.top, "a", "b", "data")
        ensure_private_dir(path)
        for level in ("a", "a/b", "a/b/data"):
            self.assertEqual(mode(os.path.join(self.top, level)), 0o700, level)

    def test_existing_parent_kept(self) -> None:
        """make_dirs leaves the mode of a directory that already existed alone."""
        parent = os.path.join(self.top, "shared")
        os.mkdir(parent, 0o755)
        os.chmod(parent, 0o755)
        make_dirs(os.path.join(parent, "mine"))
        self.assertEqual(mode(parent), 0o755)
        self.assertEqual(mode(os.path.join(parent, "mine")), 0o700)

    def test_wide_directory_tightened(self) -> None:
        """An existing 0755 data directory becomes 0700, with a warning naming it."""
        path = os.path.join(self.top, "data")
        os.mkdir(path)
        os.chmod(path, 0o755)
        with capturedLogs() as events:
            ensure_private_dir(path)
        self.assertEqual(mode(path), 0o700)
        warnings = [e for e in events if e["log_level"].name == "warn"]
        self.assertEqual(len(warnings), 1)
        self.assertEqual(warnings[0]["path"], path)
        self.assertEqual((warnings[0]["old"], warnings[0]["new"]), (0o755, 0o700))

    def test_never_loosened(self) -> None:
        """Only group and other bits are cleared: owner bits are never added."""
        for before, after in ((0o500, 0o500), (0o550, 0o500), (0o751, 0o700), (0o700, 0o700)):
            path = os.path.join(self.top, f"d{before:o}")
            os.mkdir(path)
            os.chmod(path, before)
            ensure_private_dir(path)
            self.assertEqual(mode(path), after, f"{before:o}")
            os.chmod(path, 0o700)  # so that the cleanup can remove it

    def test_private_dir_quiet_when_private(self) -> None:
        """A directory that is already private is left alone, without a warning."""
        path = os.path.join(self.top, "data")
        os.mkdir(path, 0o700)
        with capturedLogs() as events:
            ensure_private_dir(path)
            self.assertIsNone(tighten(path))
        self.assertEqual(list(events), [])

    def test_new_file_private(self) -> None:
        """create_private_file makes an empty 0600 file (and its missing directory 0700)."""
        path = os.path.join(self.top, "new", "store.db")
        create_private_file(path)
        self.assertEqual(mode(path), 0o600)
        self.assertEqual(os.path.getsize(path), 0)
        self.assertEqual(mode(os.path.dirname(path)), 0o700)

    def test_existing_file_tightened_not_touched(self) -> None:
        """An existing 0644 file keeps its content and becomes 0600."""
        path = os.path.join(self.top, "store.db")
        with open(path, "wb") as fp:
            fp.write(b"SQLite format 3\x00")
        os.chmod(path, 0o644)
        create_private_file(path)
        self.assertEqual(mode(path), 0o600)
        with open(path, "rb") as fp:
            self.assertEqual(fp.read(), b"SQLite format 3\x00")

    def test_tighten_missing(self) -> None:
        """tighten() of a missing path does nothing."""
        self.assertIsNone(tighten(os.path.join(self.top, "absent")))

    def test_is_inside(self) -> None:
        """is_inside compares whole path components, after making paths absolute."""
        self.assertTrue(is_inside("/srv/data/cursors/x.json", "/srv/data"))
        self.assertTrue(is_inside("/srv/data", "/srv/data/"))
        self.assertTrue(is_inside("/srv/data/../data/a", "/srv/data"))
        self.assertFalse(is_inside("/srv/data2/a", "/srv/data"))
        self.assertFalse(is_inside("/var/log/hurricane/a.jsonl", "/srv/data"))


class DataDirectoryTests(SynchronousTestCase):
    """build_service makes the data directory and the SQLite store private before start."""

    def setUp(self) -> None:
        self.top = tempfile.mkdtemp(prefix="hurricane-modes-")
        self.addCleanup(shutil.rmtree, self.top, True)
        old = os.umask(0o022)
        self.addCleanup(os.umask, old)

    def build(self, data_dir: str, store_url: str = "") -> None:
        """Build (not start) the service tree of a config on ``data_dir``."""
        from twisted.internet.testing import MemoryReactorClock

        from hurricane.app import build_service
        from hurricane.config import config_from_dict

        config = config_from_dict({"server": {"data_dir": data_dir},
                                   "store": {"url": store_url}})
        build_service(config, MemoryReactorClock(), on_fatal=self.fail)

    def test_fresh(self) -> None:
        """A fresh data directory is 0700; the database and the VERP keys in it are 0600."""
        data = os.path.join(self.top, "data")
        self.build(data)
        self.assertEqual(mode(data), 0o700)
        self.assertEqual(mode(os.path.join(data, "hurricane.db")), 0o600)
        self.assertEqual(mode(os.path.join(data, "verp-keys.json")), 0o600)

    def test_existing_tightened(self) -> None:
        """An existing 0755 data directory with a 0644 database is narrowed, with warnings."""
        data = os.path.join(self.top, "data")
        os.mkdir(data)
        os.chmod(data, 0o755)
        db = os.path.join(data, "hurricane.db")
        with open(db, "wb"):
            pass
        os.chmod(db, 0o644)
        with capturedLogs() as events:
            self.build(data)
        self.assertEqual(mode(data), 0o700)
        self.assertEqual(mode(db), 0o600)
        # compared by inode: a URL written sqlite:////tmp/... names "//tmp/..."
        warned = {os.stat(e["path"]).st_ino for e in events if e["log_level"].name == "warn"}
        self.assertEqual(warned, {os.stat(data).st_ino, os.stat(db).st_ino})

    def test_relative_store_url(self) -> None:
        """``sqlite:name.db`` is checked in the data directory, not left in the cwd."""
        data = os.path.join(self.top, "data")
        cwd = os.getcwd()
        os.chdir(self.top)
        self.addCleanup(os.chdir, cwd)
        self.build(data, "sqlite:rel.db")
        self.assertFalse(os.path.exists(os.path.join(self.top, "rel.db")))
        self.assertEqual(mode(os.path.join(data, "rel.db")), 0o600)
