"""The feature cache never touches what is not its own, never trusts a damaged or stale cache, and a full disk or a
read-only one is a line (features.py)."""

from __future__ import annotations

import errno
import os
import shutil

import numpy as np
import pytest
from PIL import Image

import data
import features

KEY = {"test": 1}


def cache(folder, key=KEY) -> features.FeatureCache:
    return features.FeatureCache(folder, photos=3, views=2, positions=4, key=key)


def test_a_folder_of_the_users_files_is_refused_and_left_as_it_was(tmp_path):
    mine = tmp_path / "mydocs"
    (mine / "sub").mkdir(parents=True)
    (mine / "letter.txt").write_text("dear")
    (mine / "sub" / "columns.npy").write_bytes(b"mine")
    with pytest.raises(features.CacheError, match=r"holds 2 files that are not a colorgan feature cache \(e.g. letter.txt\)"):
        cache(mine)
    assert (mine / "letter.txt").read_text() == "dear" and (mine / "sub" / "columns.npy").read_bytes() == b"mine"
    assert sorted(p.name for p in mine.iterdir()) == ["letter.txt", "sub"]


def test_an_empty_or_new_folder_is_made_a_cache_and_a_file_or_dead_link_is_a_line(tmp_path):
    (tmp_path / "empty").mkdir()
    for folder in (tmp_path / "empty", tmp_path / "new" / "deeper"):
        c = cache(folder)
        c.open()
        assert c.arrays["columns"].shape == (6, 4, 1472) and not c.arrays["columns"].flags.writeable  # read-only to train
    (tmp_path / "file").write_text("x")
    with pytest.raises(features.CacheError, match="is a file, not a folder"):
        cache(tmp_path / "file")
    (tmp_path / "dead").symlink_to(tmp_path / "nowhere")
    with pytest.raises(features.CacheError, match="is a link to nothing"):
        cache(tmp_path / "dead")
    (tmp_path / "link").symlink_to(tmp_path / "empty")  # a link to a cache folder (on a larger disk) is followed
    cache(tmp_path / "link").open()


def test_a_cache_made_for_other_photos_clears_only_its_own_files(tmp_path, capsys):
    c = cache(tmp_path / "c")
    c.open(write=True)
    c.save_flags(np.ones(6, bool))
    (tmp_path / "c" / "notes.txt").write_text("the user's")
    other = cache(tmp_path / "c", {"test": 2})
    assert "made from other photos" in capsys.readouterr().err
    assert not other.filled().any() and (tmp_path / "c" / "notes.txt").read_text() == "the user's"


def test_a_truncated_or_corrupt_array_is_found_and_the_cache_made_anew(tmp_path, capsys):
    c = cache(tmp_path / "c")
    c.open(write=True)
    c.save_flags(np.ones(6, bool))
    del c
    cols = tmp_path / "c" / "columns.npy"
    full = cols.stat().st_size
    with open(cols, "r+b") as f:
        f.truncate(1000)
    again = cache(tmp_path / "c")
    assert "damaged (columns.npy: 1,000 bytes long, not" in capsys.readouterr().err
    assert not again.filled().any() and cols.stat().st_size == full
    (tmp_path / "c" / "scene.npy").write_bytes(b"\x93NUMPY\x01\x00garbage")
    cache(tmp_path / "c")
    assert "damaged (scene.npy: an unreadable header" in capsys.readouterr().err
    again = cache(tmp_path / "c")
    assert capsys.readouterr().err == ""  # a whole cache of the same key is trusted as it is


def test_no_room_on_the_disk_is_a_line_before_any_row_and_leaves_no_array(tmp_path, monkeypatch):
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(features.shutil, "disk_usage", lambda p: usage._replace(free=1000))
    with pytest.raises(features.CacheError, match=r"needs 0.00 GB and .* has 0.00 GB free"):
        cache(tmp_path / "a")
    monkeypatch.undo()

    def full(fd, offset, length):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(features.os, "posix_fallocate", full)
    with pytest.raises(features.CacheError, match="no space left"):
        cache(tmp_path / "b")
    assert not list((tmp_path / "b").glob("*.npy"))


def test_the_photos_digest_changes_when_a_photo_is_swapped_under_its_name(tmp_path):
    root = tmp_path / "photos"
    root.mkdir()
    for i in range(3):
        Image.new("RGB", (8, 8), (i * 80, 0, 0)).save(root / f"{i}.png")
    before = features.photos_digest(data.make_dataset(str(root), "train", 8, True))
    assert features.photos_digest(data.make_dataset(str(root), "train", 8, True)) == before
    Image.new("RGB", (9, 8), (0, 200, 0)).save(root / "1.png")
    assert features.photos_digest(data.make_dataset(str(root), "train", 8, True)) != before
