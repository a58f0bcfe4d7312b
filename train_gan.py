"""Stage 2: adversarial fine-tuning of the stage-1 colorizer with a 70x70 PatchGAN (any architecture; the hypercolumn
model's head alone learns, its VGG16 frozen).

    python train_gan.py --init=runs/finetune/ckpt.pt                          # one GPU or the CPU
    accelerate launch --multi_gpu train_gan.py --init=runs/finetune/ckpt.pt   # several GPUs or nodes

Per batch (training.gan_step): one D step (real [L, ab] = 1, detached fake = 0, halved), then one G step:
L_G = L_GAN + lambda_l1 * L1(ab) + lambda_perceptual * VGG relu4_3 distance (on RGB made from Lab), then the
EMA of G. SIGTERM or Ctrl-C: the step finishes, ckpt.pt is written at that position; --resume=True goes on.
"""

import copy

import torch

import configurator
import hints as hint_files
import models
import training
from data import DEFAULT_DATA, uint8_to_lab

SCRIPT = "train_gan.py"
# -----------------------------------------------------------------------------
dataset = DEFAULT_DATA  # HF dataset OWNER/NAME, local HF dataset / parquet, or an image folder
image_size = 256  # training resolution (a multiple of 8)
batch_size = 16  # per process
num_workers = training.default_workers()  # DataLoader workers per process (up to 4, no more than the CPUs)
epochs = 50
max_steps = 0  # stop after this many steps (0 = run the epochs)
out_dir = "runs/gan"  # ckpt.pt and TensorBoard logs go here
init = "runs/finetune/ckpt.pt"  # generator: a stage-1 ckpt.pt, release weights, eccv16, siggraph17 or scratch
hint_p_stop = 1 / 8  # a SIGGRAPH17 generator trains with simulated hints: geometric, P(none) = this (see train_finetune.py)
resume = False  # continue from out_dir/ckpt.pt exactly where it stopped
overwrite = False  # start afresh in an out_dir that holds a run (its checkpoint and logs are replaced)
seed = 1337
mixed_precision = "no"  # no, fp16 or bf16
save_every_epochs = 5  # checkpoint at these epoch ends
save_every_minutes = 20.0  # and on this timer, so a kill -9 loses at most this much
lr_g = 2e-4
lr_d = 1e-4
beta1 = 0.5
beta2 = 0.999
lambda_l1 = 10.0
lambda_perceptual = 10.0  # 0 (or --vgg_weights=none) turns the perceptual term off
gan_mode = "vanilla"  # vanilla (BCE), lsgan or hinge
vgg_weights = "imagenet"  # perceptual loss: imagenet (VGG19: torchvision's download; VGG16: from pip), random, none, or a file
perceptual_net = "vgg19"  # the perceptual loss's network, at relu4_3: vgg19 (the seeds') or vgg16 (its ImageNet weights come with pip)
ema_decay = 0.999  # EMA of G used by evaluate and colorize (0 = off); ramps up as (1 + step) / (10 + step)
val_images = 0  # validate on the first N validation images (0 = all)
val_every_steps = 0  # also validate every N steps (0 = at each epoch's end only)
sample_images = 8  # validation images shown in TensorBoard
log_every = 20  # steps between loss logs (and, with several processes, between stop checks)
max_bad_steps = 10  # stop after this many consecutive steps with a NaN or Inf loss
max_bad_images = 100  # stop (with a checkpoint and a list) once more photos than this failed to decode
compile = False  # torch.compile G and D
channels_last = False  # channels_last memory format for the convolutions
# -----------------------------------------------------------------------------
config, _ = configurator.configure(globals())
training.check_config(SCRIPT, config)
run = training.Run(SCRIPT, config)
train_ds, val_ds = run.datasets(dataset, image_size, batch_size, val_images)
state = run.resume_state() if resume else None
G = training.generator(SCRIPT, init, "auto", state)
with training.refusals(SCRIPT):
    use_vgg = lambda_perceptual > 0 and vgg_weights != "none"
    relu4_3 = models.RELU4_3 if perceptual_net == "vgg19" else models.VGG16_RELU4_3
    vgg = models.VGGFeatures(vgg_weights, relu4_3, perceptual_net).to(run.device) if use_vgg else None
if G.takes_hints:  # SIGGRAPH17's class head has no part in the GAN's losses (and DDP refuses parameters without gradients)
    G.model_class.requires_grad_(False)
D = models.PatchDiscriminator()
G_ema = copy.deepcopy(G).eval().requires_grad_(False) if ema_decay else None
hint_rng = training.hint_generator(seed, run.accelerator.process_index, state)
if state is not None:
    D.load_state_dict(state["discriminator"])
    if G_ema is not None:
        G_ema.load_state_dict(state.get("generator_ema", state["generator"]))
if channels_last:
    G, D = G.to(memory_format=torch.channels_last), D.to(memory_format=torch.channels_last)
opt_G = training.adam([p for p in G.parameters() if p.requires_grad], lr_g, (beta1, beta2))
opt_D = training.adam(D.parameters(), lr_d, (beta1, beta2))
if state is not None:
    opt_G.load_state_dict(state["opt_G"])
    opt_D.load_state_dict(state["opt_D"])
    for opt, rate in ((opt_G, lr_g), (opt_D, lr_d)):  # a resume takes the rates as given
        for group in opt.param_groups:
            group["lr"] = rate
run.loaders(val_ds, batch_size, num_workers, sample_images)
G, D, opt_G, opt_D = run.accelerator.prepare(G, D, opt_G, opt_D)
if G_ema is not None:
    G_ema.to(run.device)
G_own, D_own = run.accelerator.unwrap_model(G), run.accelerator.unwrap_model(D)
G_fwd, D_fwd, D_for_G = (torch.compile(G), torch.compile(D), torch.compile(D_own)) if compile else (G, D, D_own)
if run.is_main and state is None:
    run.writer.add_text("config", "\n".join(f"    {k} = {v!r}" for k, v in config.items()))


def state_dict() -> dict:
    """What ckpt.pt holds besides the position: G in release keys first, then what resume needs."""
    parts = {"generator": G_own.state_dict(), "discriminator": D_own.state_dict(), "opt_G": opt_G.state_dict(), "opt_D": opt_D.state_dict(),
             "hint_rng": hint_rng.get_state()}
    return parts | ({"generator_ema": G_ema.state_dict()} if G_ema is not None else {})


def validate() -> None:
    """The generator that gets used: the EMA one when there is one."""
    run.validate(G_ema if G_ema is not None else G)


with training.refusals(SCRIPT):  # 16 undecodable photos in a row: the data is broken, not one file
    for rgb in run.batches(epochs, max_steps, validate, state_dict):
        L, ab = uint8_to_lab(rgb)
        given = hint_files.simulate(ab, hint_rng, hint_p_stop) if G_own.takes_hints else None  # SIGGRAPH17: hints from the truth
        ema = (G_ema, G_own, training.ema_decay_at(run.step, ema_decay)) if G_ema is not None else None
        finite, logs = training.gan_step(G_fwd, D_fwd, D_for_G, opt_G, opt_D, L, ab, given, gan_mode=gan_mode, lambda_l1=lambda_l1,
                                         lambda_perceptual=lambda_perceptual, vgg=vgg, ema=ema,
                                         autocast=run.accelerator.autocast, backward=run.accelerator.backward)
        run.record(finite, logs | {"lr/G": opt_G.param_groups[0]["lr"], "lr/D": opt_D.param_groups[0]["lr"]})
run.finish(G, D)
