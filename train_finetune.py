"""Stage 1: supervised fine-tuning of the pretrained ECCV16 colorizer.

    accelerate launch train_finetune.py                      # MSE on ab (the seeds)
    accelerate launch train_finetune.py --loss=classification  # Zhang's class-rebalanced 313-bin loss

Its out_dir/ckpt.pt is train_gan.py's --init. Runs unchanged on a CPU, one GPU, or many GPUs and nodes.
"""

import sys
import time
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

import configurator
import losses
import models
from data import DEFAULT_DATA, DataError, ImageError, colorization_grid, has_chroma, make_dataset, uint8_to_lab

# -----------------------------------------------------------------------------
data = DEFAULT_DATA  # HF dataset name, local HF dataset / parquet, or an image folder
image_size = 256  # training resolution
batch_size = 16  # per process
num_workers = 4  # DataLoader workers per process
epochs = 3
max_steps = 0  # stop after this many optimizer steps (0 = run the epochs)
out_dir = "runs/finetune"  # ckpt.pt, the ab prior and TensorBoard logs go here
init = "eccv16"  # generator: eccv16 (official weights), scratch, release weights or a ckpt.pt
resume = False  # continue from out_dir/ckpt.pt exactly where it stopped
seed = 1337
mixed_precision = "no"  # no, fp16 or bf16
save_every_epochs = 5
loss = "mse"  # mse on ab, or classification (Zhang et al.'s class-rebalanced 313-bin cross-entropy)
prior_images = 10000  # training images that estimate the ab prior for --loss=classification
lr = 1e-4
beta1 = 0.9
beta2 = 0.999
val_images = 0  # validate on the first N validation images (0 = all)
val_every_steps = 0  # also validate every N steps (0 = at each epoch's end only)
sample_images = 8  # validation images shown in TensorBoard
log_every = 20  # steps between loss logs
max_bad_steps = 10  # stop after this many consecutive steps with a NaN or Inf loss
compile = False  # torch.compile G
channels_last = False  # channels_last memory format for the convolutions
# -----------------------------------------------------------------------------
config, _ = configurator.configure(globals())
accelerator = Accelerator(mixed_precision=mixed_precision)
out = Path(out_dir)
is_main = accelerator.is_main_process


def fail(message: str) -> None:
    if is_main:
        print(f"train_finetune.py: {message}", file=sys.stderr)
    sys.exit(1)


if loss not in ("mse", "classification"):
    fail(f"--loss must be mse or classification, not {loss!r}")
set_seed(seed)
try:
    train_ds = make_dataset(data, "train", image_size, train=True, seed=seed)
    val_ds = make_dataset(data, "validation", image_size, train=False)
    G = models.load_generator("scratch" if resume else init).train()
    state = models.load_checkpoint(out / "ckpt.pt") if resume else None
except (DataError, models.ModelError) as e:
    fail(str(e))
if val_images:
    val_ds = torch.utils.data.Subset(val_ds, range(min(val_images, len(val_ds))))
opt = torch.optim.Adam(G.parameters(), lr, betas=(beta1, beta2))
step, start_epoch, start_batch = 0, 0, 0
if state is not None:
    G.load_state_dict(state["generator"])
    opt.load_state_dict(state["opt"])
    step, start_epoch, start_batch = state["step"], state["epoch"], state["batch_in_epoch"]
    models.set_rng_state(state["rng"])
if loss == "classification":
    G.model_out.requires_grad_(False)  # it holds the bin centres; DDP also refuses parameters without gradients
if channels_last:
    G = G.to(memory_format=torch.channels_last)

order = torch.Generator()  # reseeded every epoch: the data order is a function of (seed, epoch)
train_loader = torch.utils.data.DataLoader(train_ds, batch_size, sampler=torch.utils.data.RandomSampler(train_ds, generator=order),
                                           num_workers=num_workers, drop_last=True, pin_memory=torch.cuda.is_available())
val_loader = torch.utils.data.DataLoader(val_ds, batch_size, num_workers=num_workers, pin_memory=torch.cuda.is_available())
G, opt, train_loader, val_loader = accelerator.prepare(G, opt, train_loader, val_loader)
if state is not None and accelerator.scaler is not None and state.get("scaler"):
    accelerator.scaler.load_state_dict(state["scaler"])
G_fwd = torch.compile(G) if compile else G
out.mkdir(parents=True, exist_ok=True)
writer = SummaryWriter(str(out)) if is_main else None
if is_main and state is None:
    writer.add_text("config", "\n".join(f"    {k} = {v!r}" for k, v in config.items()))
samples = torch.stack([val_ds[i][0] for i in range(min(sample_images, len(val_ds)))]).to(accelerator.device)

if loss == "classification":
    bins = models.ab_bins().float()
    prior_path = out / "ab_prior.npy"

    def prior_batches():
        """ab of prior_images random training photos."""
        pick = torch.randperm(len(train_ds), generator=torch.Generator().manual_seed(seed))[:prior_images].tolist()
        prior_loader = torch.utils.data.DataLoader(torch.utils.data.Subset(train_ds, pick), batch_size, num_workers=num_workers)
        return (uint8_to_lab(rgb.to(accelerator.device))[1] for rgb, _ in tqdm(prior_loader, desc="ab prior", file=sys.stderr))

    if is_main:  # the main process computes and caches it; after the barrier every process reads the cache
        losses.load_or_compute_prior(prior_path, prior_batches, bins)
    accelerator.wait_for_everyone()
    class_weights = losses.rebalance_weights(losses.load_or_compute_prior(prior_path, prior_batches, bins)).to(accelerator.device)
    bins = bins.to(accelerator.device)


def checkpoint(epoch: int, batch_in_epoch: int) -> None:
    """Write out/ckpt.pt (main process only) with everything an exact resume needs."""
    if is_main:
        models.save_checkpoint({"generator": accelerator.unwrap_model(G).state_dict(), "opt": opt.state_dict(), "step": step,
                                "epoch": epoch, "batch_in_epoch": batch_in_epoch, "rng": models.rng_state(), "config": config,
                                "scaler": accelerator.scaler.state_dict() if accelerator.scaler is not None else {}},
                               out / "ckpt.pt")
    accelerator.wait_for_everyone()


def validate() -> None:
    """Validation metrics and sample images in TensorBoard."""
    G.eval()
    metrics = losses.mean_metrics(G, val_loader, accelerator.gather_for_metrics)
    if is_main:
        for k, v in metrics.items():
            writer.add_scalar(f"val/{k}", v, step)
        with torch.no_grad():
            L, ab = uint8_to_lab(samples)
            writer.add_image("samples/gray|prediction|truth", colorization_grid(L, [G(L)], ab), step)
    G.train()


def any_rank(flag: bool) -> bool:
    """True on every process when flag is True on any: skipping a step must be unanimous under DDP."""
    return accelerator.reduce(torch.tensor(float(flag), device=accelerator.device), "sum").item() > 0


bad_steps, epoch, batch_in_epoch, done = 0, start_epoch, start_batch, False
bar = tqdm(total=max_steps or epochs * len(train_loader), initial=step, disable=not is_main, unit="step", file=sys.stderr)
try:
    for epoch in range(start_epoch, epochs if not max_steps else sys.maxsize):  # max_steps overrides epochs
        train_ds.epoch = epoch
        order.manual_seed(seed + epoch)
        batches = accelerator.skip_first_batches(train_loader, batch_in_epoch) if batch_in_epoch else train_loader
        tick = time.time()
        for rgb, _ in batches:
            batch_in_epoch += 1
            L, ab = uint8_to_lab(rgb)
            weight = has_chroma(ab).float()  # Zhang et al.: gray photos teach nothing about colour
            with accelerator.autocast():
                if loss == "mse":
                    train_loss = losses.mse_ab(G_fwd(L).float(), ab, weight)
                else:
                    logits = G_fwd(L, logits=True)
                    train_loss = losses.classification_loss(logits, ab, bins, class_weights, weight)
            if any_rank(not torch.isfinite(train_loss)):
                bad_steps += 1
                if is_main:
                    print(f"train_finetune.py: non-finite loss at step {step}, skipped ({bad_steps} in a row)", file=sys.stderr)
                if bad_steps >= max_bad_steps:
                    fail(f"{bad_steps} steps in a row had a NaN/Inf loss; stopped. The last good checkpoint is {out / 'ckpt.pt'}"
                         " -- try a lower lr or --mixed_precision=bf16 instead of fp16")
                continue
            opt.zero_grad(set_to_none=True)
            accelerator.backward(train_loss)
            opt.step()
            step, bad_steps = step + 1, 0
            bar.update(1)
            if is_main and step % log_every == 0:
                ips = log_every * batch_size * accelerator.num_processes / (time.time() - tick)
                tick = time.time()
                writer.add_scalar("loss/train", train_loss.item(), step)
                writer.add_scalar("lr/G", opt.param_groups[0]["lr"], step)
                writer.add_scalar("perf/images_per_second", ips, step)
                bar.set_postfix(loss=f"{train_loss.item():.4f}", img_s=f"{ips:.0f}")
            if val_every_steps and step % val_every_steps == 0:
                validate()
            if max_steps and step >= max_steps:
                done = True
                break
        else:  # the epoch ran to its end
            epoch, batch_in_epoch = epoch + 1, 0
            validate()
            if epoch % save_every_epochs == 0 or epoch == epochs:
                checkpoint(epoch, 0)
        if done:
            validate()
            checkpoint(epoch, batch_in_epoch)
            break
except KeyboardInterrupt:
    checkpoint(epoch, batch_in_epoch)
    fail(f"interrupted at step {step}; saved {out / 'ckpt.pt'} (continue with --resume=True)")
except ImageError as e:
    fail(str(e).strip().splitlines()[-1])
bar.close()
prints = accelerator.gather(models.fingerprint(G).to(accelerator.device)[None])
if not torch.all(prints == prints[0]):
    fail(f"the {accelerator.num_processes} processes ended with different weights: {prints.tolist()}")
if is_main:
    writer.close()
    print(f"train_finetune.py: {step} steps; saved {out / 'ckpt.pt'}; weights identical on {len(prints)} process(es)", file=sys.stderr)
