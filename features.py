"""The hypercolumn model's training cache: its frozen VGG16's features of each training photo and augmented view,
computed once, so that the head trains in minutes on a CPU (Larsson et al. train on sampled positions too).

Per (photo, view): `positions` hypercolumns (1472 float16 values each) at positions drawn from (seed, view, photo), the
photo's scene vector (512), the ab truth there (each 4x4 block's mean, what the loss compares) and whether the photo
has colour. View v of a photo is the augmentation epoch v would give it, and epoch e trains on view e % views. Disk:
photos x views x (positions x 2,952 + 1,025) bytes, stated before the first photo and bounded by --cache_gb.

A row counts once it is written and flagged (flags are saved atomically every few batches, and at a stop): a kill
loses at most the rows since the last flag, and the same command fills only what is missing. The folder's
manifest.json names what the rows were made from; a cache made for other photos, sizes or weights is made anew.
"""

from __future__ import annotations

import json
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
    """A cache that cannot be made (too large for --cache_gb, a folder that cannot be written); one line."""


def row_bytes(positions: int) -> int:
    """Disk bytes of one (photo, view) row."""
    return positions * (models.HYPERCOLUMN_CHANNELS + 2) * 2 + 512 * 2 + 1


def sample_positions(seed: int, view: int, index: int, grid: tuple[int, int], positions: int) -> torch.Tensor:
    """The positions (flat indices into the h x w grid) that row (index, view) keeps: the same in every run."""
    rng = np.random.default_rng((seed, view, index, 7))
    return torch.from_numpy(rng.choice(grid[0] * grid[1], size=min(positions, grid[0] * grid[1]), replace=False))


class FeatureCache(torch.utils.data.Dataset):
    """Rows of cached features as a training dataset: item i is photo i's view for the current epoch (epoch % views),
    ({"columns": (1472,K,1), "scene": (512,), "ab": (2,K,1), "colour": bool}, label -1, no bad photo)."""

    def __init__(self, folder: Path, photos: int, views: int, positions: int, key: dict, rank: int = 0, world: int = 1):
        self.folder, self.photos, self.views, self.positions, self.key = Path(folder), photos, views, positions, key
        self.rank, self.world, self.epoch = rank, world, 0
        rows = photos * views
        shapes = {"columns": (rows, positions, models.HYPERCOLUMN_CHANNELS), "scene": (rows, 512), "ab": (rows, positions, 2),
                  "colour": (rows,)}
        fresh = rank == 0 and not self._matches()
        if fresh:
            if self.folder.exists():
                shutil.rmtree(self.folder)
            self.folder.mkdir(parents=True)
            for name, shape in shapes.items():
                np.lib.format.open_memmap(self.folder / f"{name}.npy", "w+", bool if name == "colour" else np.float16, shape).flush()
            (self.folder / MANIFEST).write_text(json.dumps(key, indent=1))
        self.fresh = fresh
        self.arrays = {}

    def _matches(self) -> bool:
        """The folder holds a cache made from the same photos, sizes and weights."""
        try:
            return json.loads((self.folder / MANIFEST).read_text()) == self.key
        except (OSError, ValueError):
            return False

    def open(self) -> None:
        """Map the arrays (after the main process made them)."""
        self.arrays = {name: np.load(self.folder / f"{name}.npy", mmap_mode="r+") for name in ("columns", "scene", "ab", "colour")}

    def _flags(self, rank: int) -> Path:
        return self.folder / f"filled-{rank}.npy"

    def filled(self) -> np.ndarray:
        """(rows,) bool: the rows any process has written and flagged."""
        done = np.zeros(self.photos * self.views, bool)
        for path in self.folder.glob("filled-*.npy"):
            try:
                done |= np.load(path, allow_pickle=False)
            except (OSError, ValueError):  # a flags file cut short by a crash of its writer's machine: its rows are redone
                pass
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
    cache.open()
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
