"""Stage 2: adversarial fine-tuning of the stage-1 colorizer with a 70x70 PatchGAN.

    accelerate launch train_gan.py --init=runs/finetune/ckpt.pt

Per batch: one D step (real [L, ab] = 1, detached fake = 0, halved), then one G step:
L_G = L_GAN + lambda_l1 * L1(ab) + lambda_perceptual * VGG19 relu4_3 distance (on RGB made from Lab).
Runs unchanged on a CPU, one GPU, or many GPUs and nodes through Accelerate.
"""

import copy
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
from data import DEFAULT_DATA, DataError, ImageError, colorization_grid, has_chroma, lab_to_rgb, make_dataset, uint8_to_lab

# -----------------------------------------------------------------------------
data = DEFAULT_DATA  # HF dataset name, local HF dataset / parquet, or an image folder
image_size = 256  # training resolution
batch_size = 16  # per process
num_workers = 4  # DataLoader workers per process
epochs = 50
max_steps = 0  # stop after this many optimizer steps (0 = run the epochs)
out_dir = "runs/gan"  # ckpt.pt and TensorBoard logs go here
init = "runs/finetune/ckpt.pt"  # generator: a stage-1 ckpt.pt, release weights, eccv16 or scratch
resume = False  # continue from out_dir/ckpt.pt exactly where it stopped
seed = 1337
mixed_precision = "no"  # no, fp16 or bf16
save_every_epochs = 5
lr_g = 2e-4
lr_d = 1e-4
beta1 = 0.5
beta2 = 0.999
lambda_l1 = 10.0
lambda_perceptual = 10.0
gan_mode = "vanilla"  # vanilla (BCE), lsgan or hinge
vgg_weights = "imagenet"  # perceptual loss: imagenet (torchvision download), random, or a vgg19 .pth
ema = 0.999  # EMA decay of G, used by evaluate and colorize (0 = off)
val_images = 0  # validate on the first N validation images (0 = all)
val_every_steps = 0  # also validate every N steps (0 = at each epoch's end only)
sample_images = 8  # validation images shown in TensorBoard
log_every = 20  # steps between loss logs
max_bad_steps = 10  # stop after this many consecutive steps with a NaN or Inf loss
compile = False  # torch.compile G and D
channels_last = False  # channels_last memory format for the convolutions
# -----------------------------------------------------------------------------
config, _ = configurator.configure(globals())
accelerator = Accelerator(mixed_precision=mixed_precision)
out = Path(out_dir)
is_main = accelerator.is_main_process


def fail(message: str) -> None:
    if is_main:
        print(f"train_gan.py: {message}", file=sys.stderr)
    sys.exit(1)


set_seed(seed)  # the same on every process: identical initial weights
try:
    train_ds = make_dataset(data, "train", image_size, train=True, seed=seed)
    val_ds = make_dataset(data, "validation", image_size, train=False)
    G = models.load_generator("scratch" if resume else init).train()
    vgg = losses.VGGFeatures(vgg_weights).to(accelerator.device) if lambda_perceptual else None
    state = models.load_checkpoint(out / "ckpt.pt") if resume else None
except (DataError, models.ModelError, losses.VGGError) as e:
    fail(str(e))
if val_images:
    val_ds = torch.utils.data.Subset(val_ds, range(min(val_images, len(val_ds))))
D = models.PatchDiscriminator()
G_ema = copy.deepcopy(G).eval().requires_grad_(False) if ema else None
opt_G = torch.optim.Adam(G.parameters(), lr_g, betas=(beta1, beta2))
opt_D = torch.optim.Adam(D.parameters(), lr_d, betas=(beta1, beta2))
step, start_epoch, start_batch = 0, 0, 0
if state is not None:
    G.load_state_dict(state["generator"])
    D.load_state_dict(state["discriminator"])
    if G_ema is not None:
        G_ema.load_state_dict(state.get("generator_ema", state["generator"]))
    opt_G.load_state_dict(state["opt_G"])
    opt_D.load_state_dict(state["opt_D"])
    step, start_epoch, start_batch = state["step"], state["epoch"], state["batch_in_epoch"]
    models.set_rng_state(state["rng"])
if channels_last:
    G, D = G.to(memory_format=torch.channels_last), D.to(memory_format=torch.channels_last)

order = torch.Generator()  # reseeded every epoch: the data order is a function of (seed, epoch)
train_loader = torch.utils.data.DataLoader(train_ds, batch_size, sampler=torch.utils.data.RandomSampler(train_ds, generator=order),
                                           num_workers=num_workers, drop_last=True, pin_memory=torch.cuda.is_available())
val_loader = torch.utils.data.DataLoader(val_ds, batch_size, num_workers=num_workers, pin_memory=torch.cuda.is_available())
G, D, opt_G, opt_D, train_loader, val_loader = accelerator.prepare(G, D, opt_G, opt_D, train_loader, val_loader)
if state is not None and accelerator.scaler is not None and state.get("scaler"):
    accelerator.scaler.load_state_dict(state["scaler"])
if G_ema is not None:
    G_ema.to(accelerator.device)
G_fwd, D_fwd = (torch.compile(G), torch.compile(D)) if compile else (G, D)
writer = SummaryWriter(str(out)) if is_main else None
if is_main and state is None:
    writer.add_text("config", "\n".join(f"    {k} = {v!r}" for k, v in config.items()))
samples = torch.stack([val_ds[i][0] for i in range(min(sample_images, len(val_ds)))]).to(accelerator.device)


def checkpoint(epoch: int, batch_in_epoch: int) -> None:
    """Write out/ckpt.pt (main process only) with everything an exact resume needs."""
    if is_main:
        ckpt = {"generator": accelerator.unwrap_model(G).state_dict(), "discriminator": accelerator.unwrap_model(D).state_dict(),
                "opt_G": opt_G.state_dict(), "opt_D": opt_D.state_dict(), "step": step, "epoch": epoch,
                "batch_in_epoch": batch_in_epoch, "rng": models.rng_state(), "config": config,
                "scaler": accelerator.scaler.state_dict() if accelerator.scaler is not None else {}}
        if G_ema is not None:
            ckpt["generator_ema"] = G_ema.state_dict()
        models.save_checkpoint(ckpt, out / "ckpt.pt")
    accelerator.wait_for_everyone()


def validate() -> None:
    """Validation metrics of the generator that gets used (the EMA one when there is one) and sample images."""
    G_val = G_ema if G_ema is not None else G
    G_val.eval()
    metrics = losses.mean_metrics(G_val, val_loader, accelerator.gather_for_metrics)
    if is_main:
        for k, v in metrics.items():
            writer.add_scalar(f"val/{k}", v, step)
        with torch.no_grad():
            L, ab = uint8_to_lab(samples)
            writer.add_image("samples/gray|prediction|truth", colorization_grid(L, [G_val(L)], ab), step)
    if G_ema is None:
        G.train()


def any_rank(flag: bool) -> bool:
    """True on every process when flag is True on any: skipping a step must be unanimous under DDP."""
    return accelerator.reduce(torch.tensor(float(flag), device=accelerator.device), "sum").item() > 0


out.mkdir(parents=True, exist_ok=True)
bad_steps, epoch, batch_in_epoch = 0, start_epoch, start_batch
done = False
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
            weight = has_chroma(ab).float()  # Zhang et al.: no reconstruction loss on gray photos
            with accelerator.autocast():
                fake = G_fwd(L)
                # D step: real and detached fake in one forward (spectral norm keeps them independent)
                logits_real, logits_fake = D_fwd(torch.cat([L, L]), torch.cat([ab, fake.detach()])).chunk(2)
                loss_D_real = losses.gan_loss(logits_real, True, gan_mode)
                loss_D_fake = losses.gan_loss(logits_fake, False, gan_mode)
                loss_D = 0.5 * (loss_D_real + loss_D_fake)
            if any_rank(not torch.isfinite(loss_D)):
                bad_steps += 1
            else:
                opt_D.zero_grad(set_to_none=True)
                accelerator.backward(loss_D)
                opt_D.step()
                # G step against the updated D
                with accelerator.autocast():
                    loss_G_GAN = losses.gan_loss(D_fwd(L, fake), True, gan_mode, generator=True)
                    loss_G_L1 = losses.l1_ab(fake.float(), ab, weight)
                    loss_G_perc = torch.zeros((), device=L.device)
                    if vgg is not None:
                        rgb_fake, rgb_real = lab_to_rgb(torch.cat([L, fake], 1)), lab_to_rgb(torch.cat([L, ab], 1))
                        loss_G_perc = losses.weighted_mean(losses.perceptual(vgg, rgb_fake, rgb_real).float(), weight)
                    loss_G = loss_G_GAN + lambda_l1 * loss_G_L1 + lambda_perceptual * loss_G_perc
                if any_rank(not torch.isfinite(loss_G)):
                    bad_steps += 1
                else:
                    opt_G.zero_grad(set_to_none=True)
                    accelerator.backward(loss_G)
                    opt_G.step()
                    if G_ema is not None:
                        models.ema_update(G_ema, accelerator.unwrap_model(G), ema)
                    step, bad_steps = step + 1, 0
                    bar.update(1)
            if bad_steps:
                if is_main:
                    print(f"train_gan.py: non-finite loss at step {step}, skipped ({bad_steps} in a row)", file=sys.stderr)
                if bad_steps >= max_bad_steps:
                    fail(f"{bad_steps} steps in a row had a NaN/Inf loss; stopped. The last good checkpoint is {out / 'ckpt.pt'}"
                         " -- try a lower lr or --mixed_precision=bf16 instead of fp16")
                continue
            if is_main and step % log_every == 0:
                ips = log_every * batch_size * accelerator.num_processes / (time.time() - tick)
                tick = time.time()
                logs = {"loss/D_real": loss_D_real, "loss/D_fake": loss_D_fake, "loss/D": loss_D, "loss/G_GAN": loss_G_GAN,
                        "loss/G_L1": loss_G_L1, "loss/G_perceptual": loss_G_perc, "loss/G": loss_G}
                for k, v in logs.items():
                    writer.add_scalar(k, v.item(), step)
                writer.add_scalar("lr/G", opt_G.param_groups[0]["lr"], step)
                writer.add_scalar("lr/D", opt_D.param_groups[0]["lr"], step)
                writer.add_scalar("perf/images_per_second", ips, step)
                bar.set_postfix(D=f"{loss_D.item():.3f}", G=f"{loss_G.item():.3f}", L1=f"{loss_G_L1.item():.2f}", img_s=f"{ips:.0f}")
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
prints = accelerator.gather(models.fingerprint(G, D).to(accelerator.device)[None])
if not torch.all(prints == prints[0]):
    fail(f"the {accelerator.num_processes} processes ended with different weights: {prints.tolist()}")
if is_main:
    writer.close()
    print(f"train_gan.py: {step} steps; saved {out / 'ckpt.pt'}; weights identical on {len(prints)} process(es)", file=sys.stderr)
