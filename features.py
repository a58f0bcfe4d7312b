"""The hypercolumn model's training cache: its frozen VGG16's features of each training photo and augmented view,
computed once, so that the head trains in minutes on a CPU (Larsson et al. train on sampled positions too).

Per (photo, view): `positions` hypercolumns (1472 float16 values each) at positions drawn from (seed, view, photo), the
photo's scene vector (512), the ab truth there (each 4x4 block's mean, what the loss compares) and whether the photo
has colour. View v of a photo is the augmentation epoch v would give it, and epoch e trains on view e % views. Disk:
photos x views x (positions x 2,952 + 1,025) bytes, stated before the first photo and bounded by --cache_gb.

A row counts once it is written and flagged (flags are saved atomically every few batches, and at a stop): a kill
loses at most the rows since the last flag, and the same command fills only what is missing. The folder's
manifest.json names what the rows were made from (each photo's path, size and modification time among it); a cache
made for other photos, sizes or weights, or a damaged one, is made anew with a line. The folder is new, empty or the
cache's own: any other is refused, and only the cache's own files are ever removed.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import sys
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch
from tqdm import tqdm

import data
import models
import weights

FLAG_EVERY = 16  # batches between saved flags: what a kill can cost
MANIFEST = "manifest.json"


class CacheError(ValueError):
    """A cache that cannot be made or used (too large, no room, a folder that is not a cache, unwritable); one line."""


ARRAYS = ("columns", "scene", "ab", "colour")  # one .npy file each
WRITTEN_BY = "colorgan features.py"  # in the manifest: a folder holding it is one this module may clear


def row_bytes(positions: int) -> int:
    """Disk bytes of one (photo, view) row."""
    return positions * (models.HYPERCOLUMN_CHANNELS + 2) * 2 + 512 * 2 + 1


def photos_digest(ds: data.ImageDataset) -> str:
    """What the photos are: each file's path, size and modification time (a folder), or the dataset's fingerprint (a
    Hugging Face dataset); another photo under the same name changes it."""
    h = hashlib.sha256()
    if hasattr(ds.items, "_fingerprint"):
        h.update(ds.items._fingerprint.encode())
    for item in ds.items if isinstance(ds.items, list) else ():
        st = os.stat(item[0])
        h.update(f"{item[0]}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def sample_positions(seed: int, view: int, index: int, grid: tuple[int, int], positions: int) -> torch.Tensor:
    """The positions (flat indices into the h x w grid) that row (index, view) keeps: the same in every run."""
    rng = np.random.default_rng((seed, view, index, 7))
    return torch.from_numpy(rng.choice(grid[0] * grid[1], size=min(positions, grid[0] * grid[1]), replace=False))


def _is_own(name: str) -> bool:
    """A file name this cache writes: its arrays, its flags, its manifest, their temp files."""
    return (name in {f"{a}.npy" for a in ARRAYS} or name == MANIFEST or re.fullmatch(r"filled-\d+\.npy", name) is not None
            or re.fullmatch(r"\.(filled-\d+|manifest)\.\d+-[0-9a-f]{8}\.tmp\.(npy|json)", name) is not None)


def _array_fault(path: Path, shape: tuple, dtype: np.dtype) -> str:
    """Why an array file is not a whole array of this shape and dtype ('' when it is): its header and its length."""
    try:
        with open(path, "rb") as f:
            read = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}.get(
                np.lib.format.read_magic(f))
            if read is None:
                return "an unknown format version"
            got_shape, fortran, got_dtype = read(f)
            offset = f.tell()
    except FileNotFoundError:
        return "missing"
    except (OSError, ValueError) as e:
        return f"an unreadable header ({str(e).splitlines()[0][:80]})"
    if (tuple(got_shape), np.dtype(got_dtype), fortran) != (tuple(shape), np.dtype(dtype), False):
        return f"holds {got_dtype} {tuple(got_shape)}, not {np.dtype(dtype)} {tuple(shape)}"
    want = offset + int(np.prod(shape)) * np.dtype(dtype).itemsize
    size = path.stat().st_size
    return "" if size == want else f"{size:,} bytes long, not {want:,}"


class FeatureCache(torch.utils.data.Dataset):
    """Rows of cached features as a training dataset: item i is photo i's view for the current epoch (epoch % views),
    ({"columns": (1472,K,1), "scene": (512,), "ab": (2,K,1), "colour": bool}, label -1, no bad photo).

    The folder is new, empty, or one this cache wrote (its manifest says so); anything else is refused, and only the
    cache's own files are ever removed. Its arrays are allocated on disk in full before the first row (a full disk is a
    line, never a bus error) and checked (headers, lengths) at every start: a damaged cache is made anew with a line."""

    def __init__(self, folder: Path, photos: int, views: int, positions: int, key: dict, rank: int = 0, world: int = 1):
        self.folder, self.photos, self.views, self.positions, self.key = Path(folder), photos, views, positions, key
        self.rank, self.world, self.epoch = rank, world, 0
        rows = photos * views
        self.shapes = {"columns": ((rows, positions, models.HYPERCOLUMN_CHANNELS), np.float16),
                       "scene": ((rows, 512), np.float16), "ab": ((rows, positions, 2), np.float16), "colour": ((rows,), np.bool_)}
        if rank == 0:
            self._make_anew()
        self.arrays = {}

    def _check_folder(self) -> dict | None:
        """The folder's manifest when it is this cache's, None when it is new or empty; CacheError for anything else."""
        f = self.folder
        if f.is_symlink() and not f.exists():
            raise CacheError(f"--cache_dir={f} is a link to nothing")
        if f.exists() and not f.is_dir():
            raise CacheError(f"--cache_dir={f} is a file, not a folder")
        if not f.exists():
            return None
        try:
            manifest = json.loads((f / MANIFEST).read_text())
        except FileNotFoundError:
            manifest = None
        except (OSError, ValueError):
            manifest = {}
        if isinstance(manifest, dict) and manifest.get("written_by") == WRITTEN_BY:
            return manifest
        if isinstance(manifest, dict) and {"backbone", "views", "positions"} <= manifest.keys():
            return {}  # a cache of colorgan before its manifest said so: its files are the cache's own
        others = sorted(p.name for p in f.iterdir())
        if others:
            raise CacheError(f"--cache_dir={f} holds {len(others)} files that are not a colorgan feature cache (e.g. "
                             f"{others[0]}); give a new or empty folder (colorgan never clears a folder it did not write)")
        return None

    def _make_anew(self) -> None:
        """Check the folder; when it holds no whole cache of these photos and sizes, make one (its own files replaced,
        the arrays allocated in full)."""
        manifest = self._check_folder()
        if manifest is not None and manifest.get("key") == self.key:
            damaged = next(((name, fault) for name, (shape, dtype) in self.shapes.items()
                            if (fault := _array_fault(self.folder / f"{name}.npy", shape, dtype))), None)
            if damaged is None:
                return
            name, fault = damaged
            print(f"colorgan: the feature cache in {self.folder} is damaged ({name}.npy: {fault}): making it anew",
                  file=sys.stderr)
        elif manifest is not None:
            print(f"colorgan: the feature cache in {self.folder} was made from other photos, sizes or weights: making it anew",
                  file=sys.stderr)
        need = sum(int(np.prod(shape)) * np.dtype(dtype).itemsize + 128 for shape, dtype in self.shapes.values())
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            for p in self.folder.iterdir():
                if _is_own(p.name):
                    p.unlink()
            free = shutil.disk_usage(self.folder).free
            if need > free:
                raise CacheError(f"the feature cache needs {need / 2**30:.2f} GB and {self.folder} has {free / 2**30:.2f} GB "
                                 "free: free some, give --cache_dir on another disk, or lower --cache_views or --cache_positions")
            # the manifest first: a folder holding it is this cache's, whatever a kill leaves beside it
            weights.write_atomic(self.folder / MANIFEST, lambda f: f.write(json.dumps(
                {"written_by": WRITTEN_BY, "key": self.key}, indent=1).encode()))
            for name, (shape, dtype) in self.shapes.items():
                path = self.folder / f"{name}.npy"
                np.lib.format.open_memmap(path, "w+", dtype, shape).flush()
                with open(path, "r+b") as f:  # blocks reserved now: writing a memory-mapped row never meets a full disk
                    os.posix_fallocate(f.fileno(), 0, path.stat().st_size)
        except OSError as e:
            for p in self.folder.iterdir() if self.folder.is_dir() else ():
                if _is_own(p.name) and p.name != MANIFEST:
                    p.unlink(missing_ok=True)
            why = "no space left" if e.errno == errno.ENOSPC else (e.strerror or str(e))
            raise CacheError(f"cannot make the feature cache in {self.folder} ({why}; it needs {need / 2**30:.2f} GB)") from None

    def open(self, write: bool = False) -> None:
        """Map the arrays (after the main process made them): read-only to train (a cache on a read-only disk works)."""
        try:
            self.arrays = {name: np.load(self.folder / f"{name}.npy", mmap_mode="r+" if write else "r", allow_pickle=False)
                           for name in ARRAYS}
        except (OSError, ValueError) as e:
            raise CacheError(f"cannot {'write' if write else 'read'} the feature cache in {self.folder} "
                             f"({getattr(e, 'strerror', None) or str(e).splitlines()[0][:120]})") from None

    def _flags(self, rank: int) -> Path:
        return self.folder / f"filled-{rank}.npy"

    def filled(self) -> np.ndarray:
        """(rows,) bool: the rows any process has written and flagged."""
        done = np.zeros(self.photos * self.views, bool)
        for path in self.folder.glob("filled-*.npy"):
            try:
                flags = np.load(path, allow_pickle=False)
            except (OSError, ValueError):  # a flags file cut short by a crash of its writer's machine: its rows are redone
                continue
            if flags.shape == done.shape and flags.dtype == bool:
                done |= flags
        return done

    def save_flags(self, done: np.ndarray) -> None:
        """This process's flags, after its rows reached the disk."""
        for array in self.arrays.values():
            array.flush()
        weights.write_atomic(self._flags(self.rank), lambda f: np.save(f, done))

    def __len__(self) -> int:
        return self.photos

    def __getitem__(self, i: int):
        if not self.arrays:
            self.open()
        row = i * self.views + self.epoch % self.views
        a = self.arrays
        item = {"columns": torch.from_numpy(np.ascontiguousarray(a["columns"][row].T))[:, :, None],
                "scene": torch.from_numpy(a["scene"][row].copy()), "ab": torch.from_numpy(a["ab"][row].T.copy())[:, :, None],
                "colour": torch.tensor(bool(a["colour"][row]))}
        return item, -1, ""


def fill(cache: FeatureCache, G: models.HypercolumnGenerator, photos: torch.utils.data.Dataset, seed: int, batch_size: int,
         num_workers: int, device: torch.device, autocast: Callable, on_bad: Callable[[Iterable[str]], None],
         stopping: Callable[[], bool], show: bool = True, worker_init_fn: Callable[[int], None] | None = None) -> int:
    """Compute the rows this process owns (rows % world == rank) that no process has flagged: photos (the augmenting
    training set) decoded at each view, G's features at the sampled positions. Returns the rows written; stops early
    (flags saved) when stopping() says so."""
    cache.open(write=True)
    done = cache.filled()
    mine = done.copy()
    todo = [r for r in range(cache.photos * cache.views) if r % cache.world == cache.rank and not done[r]]
    written = 0
    bar = tqdm(total=len(todo), unit="photo", desc="caching features", file=sys.stderr, disable=not show or not todo)
    a = cache.arrays
    for view in range(cache.views):
        rows = [r for r in todo if r % cache.views == view]
        if not rows:
            continue
        photos.epoch = view  # the augmentation epoch `view` would give
        subset = torch.utils.data.Subset(photos, [r // cache.views for r in rows])
        loader = torch.utils.data.DataLoader(subset, batch_size, num_workers=num_workers, worker_init_fn=worker_init_fn)
        batches = 0
        for k, (rgb, _, bad) in enumerate(loader):
            on_bad(bad)
            L, ab = data.uint8_to_lab(rgb.to(device))
            with torch.no_grad(), autocast():
                columns, scene = G.features(L)
            block_ab = torch.nn.functional.avg_pool2d(ab, 4)
            batch_rows = rows[k * batch_size:k * batch_size + len(rgb)]
            where = torch.stack([sample_positions(seed, view, row // cache.views, tuple(columns.shape[2:]), cache.positions)
                                 for row in batch_rows]).to(device)[:, None]
            picked = columns.flatten(2).gather(2, where.expand(-1, columns.shape[1], -1))
            picked_ab = block_ab.flatten(2).gather(2, where.expand(-1, 2, -1))
            index = np.array(batch_rows)
            a["columns"][index] = picked.transpose(1, 2).half().cpu().numpy()
            a["ab"][index] = picked_ab.transpose(1, 2).half().cpu().numpy()
            a["scene"][index] = scene.half().cpu().numpy()
            a["colour"][index] = data.has_chroma(ab).cpu().numpy()
            mine[index] = True
            written += len(rgb)
            batches += 1
            bar.update(len(rgb))
            if batches % FLAG_EVERY == 0:
                cache.save_flags(mine)
            if stopping():
                cache.save_flags(mine)
                bar.close()
                return written
        cache.save_flags(mine)
    bar.close()
    return written
