"""The training skeleton that train_finetune.py and train_gan.py share, written once (nanochat's helpers):
refusals before anything heavy loads, data that survives bad photos, the resumable epoch/batch loop with
checkpoints on a timer, at epoch ends and on SIGTERM/SIGINT, validation, logging and the cross-process
checks. Each script owns its models and its step; gan_step is train_gan.py's step, also what bench.py times.

    run = training.Run("train_gan.py", config)
    for rgb in run.batches(epochs, max_steps, validate, state):   # uint8 RGB on the device
        ...one step...
        run.record(finite, logs)                                 # device tensors: no host sync
    run.finish(G, D)
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import sys
import time
from pathlib import Path
from typing import Callable, Iterator, NoReturn

import torch
import torch.nn as nn
from tqdm import tqdm

import data
import features
import losses
import metrics
import models
import weights

CHOICES = {"mixed_precision": ("no", "fp16", "bf16"), "loss": ("auto", "mse", "classification", "huber"), "gan_mode": ("vanilla", "lsgan", "hinge"),
           "arch": ("auto", *models.ARCHS), "hint_centres": ("gaussian", "uniform"),
           "resize": data.RESIZE_MODES, "fid": tuple(metrics.FID_FLAVOURS), "lpips_net": tuple(metrics.LPIPS_NETS),
           "device": ("auto", "cpu", "cuda"), "perceptual_net": models.VGG_NETS}
POSITIVE = ("image_size", "batch_size", "epochs", "log_every", "save_every_epochs", "save_every_minutes", "lr", "lr_g", "lr_d",
            "max_bad_steps", "max_bad_images", "prior_images", "hint_p_stop", "cache_views", "cache_positions", "cache_gb")
SHOWN = ("loss/train", "loss/D", "loss/G", "loss/G_L1")  # on the progress bar; TensorBoard has every loss
RESUME_FIXED = ("image_size", "batch_size", "loss")  # what a resume cannot change: the step's shapes and its loss
NOT_NEGATIVE = ("num_workers", "rebalance", "max_steps", "val_images", "val_every_steps", "sample_images", "lambda_l1", "lambda_perceptual",
                "max_images", "grid_images", "lambda_class")


def main_process() -> bool:
    """True on the process that speaks (rank 0), also before Accelerate has started."""
    return int(os.environ.get("RANK", "0")) == 0


_replaced: dict[int, object] = {}  # the SIGTERM/SIGINT handlers a Run replaced, given back when it closes or fails


def give_back_signals() -> None:
    """Put back the signal handlers a Run replaced (run in-process, the caller keeps its own)."""
    for s, h in _replaced.items():
        signal.signal(s, h)
    _replaced.clear()


def fail(script: str, message: str, code: int = 1) -> NoReturn:
    """One line on stderr (from the main process only), the signal handlers given back, and a non-zero exit."""
    give_back_signals()
    if main_process():
        print(f"{script}: {message}", file=sys.stderr, flush=True)
    sys.exit(code)


@contextlib.contextmanager
def refusals(script: str):
    """Turn the errors a user can cause while loading (data, weights) into fail()."""
    try:
        yield
    except (data.DataError, models.ModelError, models.VGGError, features.CacheError) as e:
        fail(script, str(e).strip().splitlines()[-1])


def check_config(script: str, config: dict) -> None:
    """Refuse a bad value in one line, before any data or weights load (the training scripts' and evaluate.py's keys)."""
    for key, options in CHOICES.items():
        if key in config and config[key] not in options:
            fail(script, f"--{key} must be {', '.join(options[:-1])} or {options[-1]}, not {config[key]!r}")
    for key in POSITIVE:
        if key in config and not config[key] > 0:
            fail(script, f"--{key} must be positive, not {config[key]!r}")
    for key in NOT_NEGATIVE:
        if key in config and not config[key] >= 0:
            fail(script, f"--{key} must be 0 or more, not {config[key]!r}")
    if config["image_size"] % 8:
        fail(script, f"--image_size must be a multiple of 8 (the generator works at 1/8 scale), not {config['image_size']}")
    if not 0 <= config.get("ema_decay", 0) < 1:
        fail(script, f"--ema_decay must be in [0, 1), not {config['ema_decay']!r}")
    if not config.get("hint_p_stop", 0.5) <= 1:
        fail(script, f"--hint_p_stop must be in (0, 1] (1/8: mean 7 hints; 1: none), not {config['hint_p_stop']!r}")
    vgg = config.get("vgg_weights", "none")
    if vgg not in ("imagenet", "random", "none") and not Path(vgg).is_file():
        fail(script, f"--vgg_weights must be imagenet, random, none or a vgg19 .pth file; {vgg!r} is none of them")
    if "out_dir" not in config:  # evaluate.py's options: no run to resume or replace
        return
    ckpt = Path(config["out_dir"]) / "ckpt.pt"
    if config.get("resume") and not ckpt.is_file():
        fail(script, f"--resume=True but {ckpt} does not exist")
    if config.get("resume") and config.get("overwrite"):
        fail(script, "--resume=True continues the run in out_dir and --overwrite=True replaces it: choose one")
    if not config.get("resume") and not config.get("overwrite") and ckpt.is_file():
        fail(script, f"{ckpt} holds a run: --resume=True continues it, --overwrite=True starts afresh over it (its checkpoint "
                     "and TensorBoard logs replaced), or choose another --out_dir")


def generator(script: str, init: str, arch: str, state: dict | None) -> nn.Module:
    """The generator to train (train mode): the resumed run's architecture, or init's (scratch: arch's, ECCV16 for auto);
    one line when init is not of the architecture --arch asks for."""
    with refusals(script):
        if state is not None:
            G = models.load_generator("scratch", arch=models.state_arch(state["generator"]))
            G.load_state_dict(state["generator"])
        else:
            G = models.load_generator(init, arch="eccv16" if arch == "auto" else arch)
    if arch not in ("auto", G.arch):
        fail(script, f"--init={init} is a {G.arch} model, not {arch}: drop --arch (or use --arch=auto), or give a {arch} --init")
    return G.train()


def hint_generator(seed: int, process: int, state: dict | None) -> torch.Generator:
    """The generator of a SIGGRAPH17 run's simulated hints (its own, one per process, saved in ckpt.pt as hint_rng), set
    where the resumed run left it: a resume draws the hints it would have drawn."""
    g = torch.Generator().manual_seed(seed + process)
    if state is not None and "hint_rng" in state:
        g.set_state(state["hint_rng"])
    return g


def default_workers() -> int:
    """DataLoader workers: up to 4, no more than the CPUs this process may use (PyTorch warns above that)."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return min(4, cpus)


def _ignore_stop_signals(worker_id: int) -> None:
    """DataLoader workers leave SIGINT/SIGTERM to the main process, which finishes its step and saves."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def _rate(x: float) -> str:
    """Two significant digits, without exponents below 1000."""
    return f"{x:.2g}" if x < 100 else f"{x:.0f}"


class Run:
    """One training run: the accelerator, the position (step, epoch, batch), checkpoints, signals, logs."""

    def __init__(self, script: str, config: dict):
        from accelerate import Accelerator  # heavy: after the config has been checked
        from accelerate.utils import set_seed

        self.script, self.config, self.out = script, config, Path(config["out_dir"])
        self.accelerator = Accelerator(mixed_precision=config["mixed_precision"])
        self.is_main, self.device = self.accelerator.is_main_process, self.accelerator.device
        self.step = self.epoch = self.batch_in_epoch = 0
        self.bad_images: dict[str, None] = {}  # every photo that failed to decode, in order met
        self._nonfinite_run = torch.zeros((), dtype=torch.int64, device=self.device)  # skipped steps in a row
        self._logs: dict[str, torch.Tensor] = {}
        self._stop: int | None = None  # the signal that asked for a stop
        self._last_save = time.monotonic()
        self._resume_rng = None
        set_seed(config["seed"])  # the same on every process: identical initial weights
        if config.get("overwrite") and self.is_main:  # asked for: the old run's logs and prior go, its checkpoint is replaced
            for old in [*self.out.glob("events.out.tfevents.*"), self.out / "ab_prior.npy"]:
                old.unlink(missing_ok=True)
        _replaced.update({s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGINT)})

    @functools.cached_property
    def writer(self):
        """TensorBoard's writer on the main process (None elsewhere), made at first use: a run refused at start leaves no
        log (nor out_dir: the checkpoint and the prior make it when they are first written)."""
        from torch.utils.tensorboard import SummaryWriter

        return SummaryWriter(str(self.out)) if self.is_main else None

    def fail(self, message: str, code: int = 1) -> NoReturn:
        """Close the logs, then fail()."""
        self.close()
        fail(self.script, message, code)

    def _on_signal(self, signum: int, frame) -> None:
        """Ask for a stop after the current step; a second signal stops at once."""
        self._stop = signum
        signal.signal(signum, _replaced[signum])
        if self.is_main:
            print(f"\n{self.script}: {signal.Signals(signum).name}: finishing this step, then saving "
                  "(send it again to stop without saving)", file=sys.stderr, flush=True)

    # ------------------------------------------------------------------------- data

    def datasets(self, spec: str, image_size: int, batch_size: int, val_images: int) -> tuple[data.ImageDataset, torch.utils.data.Dataset]:
        """Training and validation sets, refused in one line when missing, empty or smaller than one batch."""
        with refusals(self.script):
            train_ds, val_ds, note = data.train_val_datasets(spec, image_size, self.config["seed"])
        need = batch_size * self.accelerator.num_processes
        if len(train_ds) < need:
            self.fail(f"{spec}: {len(train_ds)} training photos, fewer than one batch ({batch_size} x {self.accelerator.num_processes} "
                      "process(es)); lower --batch_size or add photos")
        if self.is_main:
            print(f"{self.script}: {len(train_ds)} training photos; {note}", file=sys.stderr)
        self.train_ds = train_ds
        return train_ds, torch.utils.data.Subset(val_ds, range(min(val_images, len(val_ds)))) if val_images else val_ds

    def cache_features(self, G: nn.Module, folder: Path, views: int, positions: int, max_gb: float, batch_size: int,
                       num_workers: int) -> features.FeatureCache:
        """The hypercolumn model's frozen features of every training photo and view, cached once (features.py) and from
        now on the training set: its size said (and refused over max_gb) before the first photo; a stop while filling
        saves what is done, and the same command goes on from there."""
        backbone = weights.tensor_digest(dict(G.backbone.named_buffers()))[:16]  # the features depend on these weights
        key = {"dataset": self.config["dataset"], "photos": len(self.train_ds), "photos_digest": features.photos_digest(self.train_ds),
               "image_size": self.config["image_size"],
               "seed": self.config["seed"], "views": views, "positions": positions, "backbone": backbone}
        size = len(self.train_ds) * views * features.row_bytes(positions)
        if size > max_gb * 2**30:
            self.fail(f"the feature cache would take {size / 2**30:.2f} GB ({len(self.train_ds)} photos x {views} views x "
                      f"{positions} positions), over --cache_gb={max_gb:g}: lower --cache_views or --cache_positions")
        try:
            cache = features.FeatureCache(folder, len(self.train_ds), views, positions, key, self.accelerator.process_index,
                                          self.accelerator.num_processes)
            self.accelerator.wait_for_everyone()  # the main process made the files
            cache.open()
        except features.CacheError as e:
            self.fail(str(e))
        missing = int((~cache.filled()).sum())
        if self.is_main:
            print(f"{self.script}: the backbone's features of {len(self.train_ds)} photos x {views} views: {size / 2**30:.2f} GB "
                  f"in {folder}" + (f" ({missing} rows to compute)" if missing else " (all cached)"), file=sys.stderr)
        if missing:
            G.eval()
            # training draws what it would have drawn; a cache that cannot be written is one line
            with torch.random.fork_rng(devices=range(torch.cuda.device_count())), refusals(self.script):
                features.fill(cache, G, self.train_ds, self.config["seed"], batch_size, num_workers, self.device,
                              self.accelerator.autocast, self._note_bad, lambda: self._stop is not None, self.is_main,
                              _ignore_stop_signals)
            G.train()
            stop = torch.tensor(float(self._stop or 0), device=self.device)
            stop = int((self.accelerator.reduce(stop, "max") if self.accelerator.num_processes > 1 else stop).item())
            if stop:
                done = int(cache.filled().sum())
                self.fail(f"stopped by {signal.Signals(stop).name} while caching features: {done} of {len(cache.filled())} "
                          "rows are cached; the same command goes on from there", 128 + stop)
            self.accelerator.wait_for_everyone()
        self.train_ds = cache
        return cache

    def loaders(self, val_ds, batch_size: int, num_workers: int, sample_images: int) -> tuple:
        """Prepared training and validation loaders; the first good validation photos become the TensorBoard samples."""
        self._order = torch.Generator()  # reseeded every epoch: the data order is a function of (seed, epoch)
        kw = dict(num_workers=num_workers, pin_memory=torch.cuda.is_available(), worker_init_fn=_ignore_stop_signals)
        # each loader's own generator also seeds its workers: a resume, which starts its epoch's loader afresh, leaves the
        # global generator (the model's dropout) as a run that never stopped left it
        train = torch.utils.data.DataLoader(self.train_ds, batch_size, sampler=torch.utils.data.RandomSampler(self.train_ds, generator=self._order),
                                            drop_last=True, generator=self._order, **kw)
        val = torch.utils.data.DataLoader(val_ds, batch_size, generator=torch.Generator().manual_seed(0), **kw)
        self.train_loader, self.val_loader = self.accelerator.prepare(train, val)
        good = []
        for i in range(len(val_ds)):
            if len(good) == sample_images:
                break
            rgb, _, bad = val_ds[i]
            good += [rgb] if not bad else []
            self._note_bad(bad)
        self.samples = torch.stack(good).to(self.device) if good else None
        return self.train_loader, self.val_loader

    def _note_bad(self, bad) -> None:
        """Remember and name (once) every photo a batch had to skip."""
        for line in [bad] if isinstance(bad, str) else bad:
            for name in filter(None, line.split("\n")):
                if name not in self.bad_images:
                    self.bad_images[name] = None
                    if self.is_main:
                        tqdm.write(f"{self.script}: skipped {name}", file=sys.stderr)  # above the progress bar

    # ------------------------------------------------------------------------- checkpoints

    def resume_state(self) -> dict:
        """out_dir/ckpt.pt, with the position set from it; the RNG is restored when the loop starts."""
        with refusals(self.script):
            state = weights.load_checkpoint(self.out / "ckpt.pt")
        for key in RESUME_FIXED:
            saved = state.get("config", {}).get(key, self.config.get(key))
            if key in self.config and saved != self.config[key]:
                self.fail(f"--{key}={self.config[key]!r} but the run in {self.out} was trained with {saved!r}: a resume keeps "
                          f"it (drop the option), or start a new run in another --out_dir")
        self.step, self.epoch, self.batch_in_epoch = state["step"], state["epoch"], state["batch_in_epoch"]
        self.bad_images = dict.fromkeys(state.get("bad_images", []))
        self._resume_rng = state["rng"]
        if self.accelerator.scaler is not None and state.get("scaler"):
            self.accelerator.scaler.load_state_dict(state["scaler"])
        return state

    def save(self) -> None:
        """Write out_dir/ckpt.pt (main process only, atomically) at the current position."""
        if self.is_main:
            scaler = self.accelerator.scaler
            weights.save_checkpoint({**self._state(), "step": self.step, "epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch,
                                    "rng": weights.rng_state(), "config": self.config, "bad_images": list(self.bad_images),
                                    "scaler": scaler.state_dict() if scaler is not None else {}}, self.out / "ckpt.pt")
        self._last_save = time.monotonic()
        self.accelerator.wait_for_everyone()

    # ------------------------------------------------------------------------- the loop

    def batches(self, epochs: int, max_steps: int, validate: Callable[[], None], state: Callable[[], dict]) -> Iterator[torch.Tensor]:
        """Training batches (uint8 RGB on the device) from the saved position on; between steps: logs, validation,
        checkpoints (timer, epoch ends, signals) and the stops. max_steps, when set, overrides epochs."""
        self._state = state
        c = self.config
        if (max_steps and self.step >= max_steps) or (not max_steps and self.epoch >= epochs):
            if self.is_main:
                print(f"{self.script}: {self.out / 'ckpt.pt'} is already at step {self.step} (epoch {self.epoch}): nothing to "
                      "train; raise --max_steps or --epochs to go on", file=sys.stderr)
            return
        if self._resume_rng is not None:
            weights.set_rng_state(self._resume_rng)
        total = max_steps or epochs * len(self.train_loader)
        self.bar = tqdm(total=total, initial=self.step, disable=not self.is_main, unit="step", file=sys.stderr)
        tick, tick_step = time.perf_counter(), self.step
        while max_steps or self.epoch < epochs:
            self.train_ds.epoch = self.epoch
            self._order.manual_seed(c["seed"] + self.epoch)
            skip = self.batch_in_epoch
            loader = self.accelerator.skip_first_batches(self.train_loader, skip) if skip else self.train_loader
            for rgb, _, bad in loader:
                self.batch_in_epoch += 1
                self._note_bad(bad)
                yield rgb
                self.step += 1
                self.bar.update(1)
                if self.step % c["log_every"] == 0:
                    rate = (self.step - tick_step) * c["batch_size"] * self.accelerator.num_processes / (time.perf_counter() - tick)
                    tick, tick_step = time.perf_counter(), self.step
                    self._log(rate)
                if c["val_every_steps"] and self.step % c["val_every_steps"] == 0:
                    validate()
                if max_steps and self.step >= max_steps:
                    validate()
                    self.save()
                    return
                self._between_steps()
            self.epoch, self.batch_in_epoch = self.epoch + 1, 0
            validate()
            if self.epoch % c["save_every_epochs"] == 0 or self.epoch == epochs:
                self.save()

    def record(self, finite: torch.Tensor, logs: dict[str, torch.Tensor | float]) -> None:
        """The step's outcome (losses as device tensors, read at log steps only: a step makes no host sync)."""
        self._nonfinite_run = (self._nonfinite_run + 1) * (~finite)
        self._logs = logs

    def _log(self, rate: float) -> None:
        """Losses, learning rates and speed to TensorBoard and the progress bar (one host sync)."""
        if not self.is_main or not self._logs:
            return
        tensors = {k: v for k, v in self._logs.items() if isinstance(v, torch.Tensor)}
        values = self._logs | dict(zip(tensors, torch.stack([v.detach().float() for v in tensors.values()]).tolist()))
        for k, v in values.items():
            self.writer.add_scalar(k, v, self.step)
        self.writer.add_scalar("perf/images_per_second", rate, self.step)
        self.writer.add_scalar("data/bad_images", len(self.bad_images), self.step)
        self.bar.set_postfix({k.split("/")[-1]: f"{values[k]:.3g}" for k in SHOWN if k in values} | {"img_s": _rate(rate)})

    def _between_steps(self) -> None:
        """The stops and the timed checkpoint, decided by every process together at log steps (alone: every step)."""
        c, alone = self.config, self.accelerator.num_processes == 1
        due = time.monotonic() - self._last_save > 60 * c["save_every_minutes"]
        if not (self.step % c["log_every"] == 0 or (alone and (self._stop or due or len(self.bad_images) > c["max_bad_images"]))):
            return
        flags = torch.tensor([float(self._stop or 0), float(due and self.is_main), float(len(self.bad_images))], device=self.device)
        flags = torch.cat([flags, self._nonfinite_run.float()[None]])
        if not alone:
            flags = self.accelerator.reduce(flags, "max")
        stop, due, n_bad, nonfinite = (int(v) for v in flags.tolist())
        if nonfinite >= c["max_bad_steps"]:
            self.fail(f"{nonfinite} steps in a row had a NaN/Inf loss and were skipped; stopped. The last good checkpoint is "
                      f"{self.out / 'ckpt.pt'} -- try a lower lr or --mixed_precision=bf16 instead of fp16")
        if n_bad > c["max_bad_images"]:
            self.save()
            listing = self.out / "bad_images.txt"
            if self.is_main:
                listing.write_text("".join(f"{name}\n" for name in self.bad_images))
            self.fail(f"{n_bad} photos could not be decoded (over --max_bad_images={c['max_bad_images']}); they are listed in "
                      f"{listing}. Saved {self.out / 'ckpt.pt'} at step {self.step}")
        if stop:
            self.save()
            self.fail(f"stopped by {signal.Signals(stop).name} at step {self.step}; saved {self.out / 'ckpt.pt'} "
                      "(continue with --resume=True)", 128 + stop)
        if due:
            self.save()

    def validate(self, G: nn.Module) -> None:
        """Validation metrics of G (photos that fail to decode left out) and the sample grid, in TensorBoard."""
        was_training = G.training
        G.eval()

        def batches():
            for rgb, _, bad in self.val_loader:
                self._note_bad(bad)
                yield rgb, torch.tensor([not b for b in bad], device=self.device)

        with torch.random.fork_rng(devices=range(torch.cuda.device_count())):  # a resume after a validation draws alike
            metrics = losses.mean_metrics(G, batches(), self.accelerator.gather_for_metrics)
        if self.is_main:
            for k, v in metrics.items():
                self.writer.add_scalar(f"val/{k}", v, self.step)
            if self.samples is not None:
                with torch.no_grad():
                    L, ab = data.uint8_to_lab(self.samples)
                    self.writer.add_image("samples/gray|prediction|truth", data.colorization_grid(L, [G(L)], ab), self.step)
        G.train(was_training)

    def close(self) -> None:
        """Give SIGTERM/SIGINT back their previous handlers and close the logs."""
        give_back_signals()
        if getattr(self, "bar", None) is not None:
            self.bar.close()
        if self.__dict__.get("writer") is not None:  # made, and on this process
            self.writer.close()

    def finish(self, *modules: nn.Module) -> None:
        """Check that every process holds the same weights, close, and say where the checkpoint is."""
        prints = self.accelerator.gather(models.fingerprint(*modules).to(self.device)[None])
        if not torch.all(prints == prints[0]):
            self.fail(f"the {self.accelerator.num_processes} processes ended with different weights: {prints.tolist()}")
        self.close()
        skipped = f"; {len(self.bad_images)} photo(s) skipped (named above)" if self.bad_images else ""
        if self.is_main:
            print(f"{self.script}: {self.step} steps; saved {self.out / 'ckpt.pt'}; weights identical on {len(prints)} "
                  f"process(es){skipped}", file=sys.stderr)


# ----------------------------------------------------------------------------- optimisation


def adam(params, lr: float, betas: tuple[float, float]) -> torch.optim.Adam:
    """Fused Adam: one kernel per step, and it can skip a step on the device (see skip_unless)."""
    return torch.optim.Adam(params, lr, betas=betas, fused=True)


def skip_unless(opt: torch.optim.Optimizer, finite: torch.Tensor) -> None:
    """Make opt's next step a no-op on the device where finite is False: no host sync, as GradScaler does."""
    getattr(opt, "optimizer", opt).found_inf = (~finite).float()  # fused Adam reads found_inf (and keeps its step count)


def ema_decay_at(step: int, decay: float) -> float:
    """The EMA's decay, ramped up over the first steps so that a short run's EMA is not its starting point."""
    return min(decay, (1 + step) / (10 + step))


def gan_step(G: nn.Module, D: nn.Module, D_for_G: nn.Module, opt_G, opt_D, L: torch.Tensor, ab: torch.Tensor,
             hints: torch.Tensor | None = None, *,
             gan_mode: str, lambda_l1: float, lambda_perceptual: float, vgg: nn.Module | None,
             ema: tuple[nn.Module, nn.Module, float] | None = None, autocast=contextlib.nullcontext,
             backward: Callable[[torch.Tensor], None] = torch.Tensor.backward) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """train_gan.py's step: one D update (BCE-style real/fake, halved), one G update (GAN + lambda_l1 L1 + lambda_perceptual
    VGG) -- G given hints when a SIGGRAPH17 model trains (D sees L and ab as always) -- then ema = (G_ema, G's own
    module, decay) when given. D_for_G is D's own module (not its DDP wrapper): the G step needs no gradient of D's weights,
    so none is computed or all-reduced. A non-finite loss skips both updates on the device. Returns (finite, losses)."""
    weight = data.has_chroma(ab).float()  # Zhang et al.: no reconstruction loss on gray photos
    with autocast():
        fake = G(L, hints)
        logits_real, logits_fake = D(torch.cat([L, L]), torch.cat([ab, fake.detach()])).chunk(2)  # one forward for both
        loss_D_real = losses.gan_loss(logits_real, True, gan_mode)
        loss_D_fake = losses.gan_loss(logits_fake, False, gan_mode)
        loss_D = 0.5 * (loss_D_real + loss_D_fake)
    finite_D = torch.isfinite(loss_D)
    opt_D.zero_grad(set_to_none=True)
    backward(loss_D)
    skip_unless(opt_D, finite_D)
    opt_D.step()
    D_for_G.requires_grad_(False)  # the graph is built at forward time; gradients still flow through D to fake
    with autocast():
        loss_G_GAN = losses.gan_loss(D_for_G(L, fake), True, gan_mode, generator=True)
    D_for_G.requires_grad_(True)
    with autocast():
        loss_G_L1 = losses.l1_ab(fake.float(), ab, weight)
        loss_G_perc = torch.zeros((), device=L.device)
        if vgg is not None and lambda_perceptual:
            rgb_fake, rgb_real = data.lab_to_rgb(torch.cat([L, fake], 1)), data.lab_to_rgb(torch.cat([L, ab], 1))
            loss_G_perc = losses.weighted_mean(losses.perceptual(vgg, rgb_fake, rgb_real).float(), weight)
        loss_G = loss_G_GAN + lambda_l1 * loss_G_L1 + lambda_perceptual * loss_G_perc
    finite = finite_D & torch.isfinite(loss_G)
    opt_G.zero_grad(set_to_none=True)
    backward(loss_G)
    skip_unless(opt_G, finite)
    opt_G.step()
    if ema is not None:
        models.ema_update(*ema, finite)
    return finite, {"loss/D_real": loss_D_real, "loss/D_fake": loss_D_fake, "loss/D": loss_D, "loss/G_GAN": loss_G_GAN,
                    "loss/G_L1": loss_G_L1, "loss/G_perceptual": loss_G_perc, "loss/G": loss_G}
