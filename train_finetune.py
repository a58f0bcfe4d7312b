"""Stage 1: supervised fine-tuning of a colorizer: the pretrained ECCV16 (or SIGGRAPH17), or colorgan's own.

    python train_finetune.py                                   # MSE on ab (the seeds), one GPU or the CPU
    python train_finetune.py --loss=classification             # Zhang's class-rebalanced 313-bin loss
    python train_finetune.py --init=siggraph17 --loss=huber    # the user-guided model, with simulated hints
    python train_finetune.py --init=colorgan --dataset=~/my_photos --cache_views=2 --mixed_precision=bf16 \
        --max_steps=600                                        # your photos, on a laptop's CPU (minutes)
    accelerate launch --multi_gpu train_finetune.py            # several GPUs or nodes

The hypercolumn model (--init=colorgan, or --init=scratch --arch=hypercolumn) trains its head alone: its frozen VGG16's
features of each photo and augmented view are computed once into a cache (features.py: --cache_views,
--cache_positions, --cache_gb), and the head trains on them with the 313-bin cross-entropy, unweighted; Zhang's
rebalancing moves into its decoding (--rebalance).

A SIGGRAPH17 generator trains with hints drawn from each photo's own colours (hint_files.simulate: a geometric number of
squares, mean 7, one photo in eight with none) and its 529-class head (the app's colour suggestions) learns beside it
by cross-entropy, on a detached trunk as in the release.

Its out_dir/ckpt.pt is train_gan.py's --init. SIGTERM or Ctrl-C: the step finishes, ckpt.pt is written at that
position; --resume=True goes on.
"""

import sys
from pathlib import Path

import numpy as np
import torch

import configurator
import hints as hint_files
import losses
import models
import training
from data import DEFAULT_DATA, has_chroma, uint8_to_lab

SCRIPT = "train_finetune.py"
# -----------------------------------------------------------------------------
dataset = DEFAULT_DATA  # HF dataset OWNER/NAME, local HF dataset / parquet, or an image folder
image_size = 256  # training resolution (a multiple of 8)
batch_size = 16  # per process
num_workers = training.default_workers()  # DataLoader workers per process (up to 4, no more than the CPUs)
epochs = 3
max_steps = 0  # stop after this many steps (0 = run the epochs)
out_dir = "runs/finetune"  # ckpt.pt, the ab prior and TensorBoard logs go here
init = "eccv16"  # generator: eccv16 or siggraph17 (official weights), colorgan (the shipped model), scratch, weights, a ckpt.pt
arch = "auto"  # eccv16, siggraph17 or hypercolumn: what --init=scratch builds and what --init must be (auto: init's own; scratch: eccv16)
resume = False  # continue from out_dir/ckpt.pt exactly where it stopped
overwrite = False  # start afresh in an out_dir that holds a run (its checkpoint and logs are replaced)
seed = 1337
mixed_precision = "no"  # no, fp16 or bf16
save_every_epochs = 1  # checkpoint at these epoch ends
save_every_minutes = 20.0  # and on this timer, so a kill -9 loses at most this much
loss = "auto"  # mse on ab, huber (smooth L1 on ab/110, the SIGGRAPH17 port's) or classification (Zhang's 313 bins); auto: the hypercolumn model's classification, else mse
rebalance = 0.35  # hypercolumn: strength of Zhang's rebalancing in its decoding, 0 (its calibrated mean: muted) to 1 (vivid)
cache_views = 1  # hypercolumn: augmented views of each photo whose features are cached (epoch e trains on view e % views)
cache_positions = 64  # hypercolumn: positions of each view whose features are cached (Larsson et al.'s sampled training)
cache_dir = ""  # hypercolumn: the cache's folder ('' = out_dir/features); a run of the same photos and sizes reuses it
cache_gb = 50.0  # hypercolumn: refuse a cache larger than this
lambda_class = 1.0  # SIGGRAPH17: weight of its 529-class head's cross-entropy (the app's suggestions; 0 = off)
hint_p_stop = 1 / 8  # SIGGRAPH17: simulated hints per photo are geometric, P(none) = this (mean 1/p - 1)
hint_centres = "gaussian"  # SIGGRAPH17: hint centres around the photo's centre (sigma a quarter of the side) or uniform
prior_images = 10000  # training images that estimate the ab prior for --loss=classification
lr = 1e-4
beta1 = 0.9
beta2 = 0.999
val_images = 0  # validate on the first N validation images (0 = all)
val_every_steps = 0  # also validate every N steps (0 = at each epoch's end only)
sample_images = 8  # validation images shown in TensorBoard
log_every = 20  # steps between loss logs (and, with several processes, between stop checks)
max_bad_steps = 10  # stop after this many consecutive steps with a NaN or Inf loss
max_bad_images = 100  # stop (with a checkpoint and a list) once more photos than this failed to decode
compile = False  # torch.compile G
channels_last = False  # channels_last memory format for the convolutions
# -----------------------------------------------------------------------------
config, _ = configurator.configure(globals())
training.check_config(SCRIPT, config)
run = training.Run(SCRIPT, config)
train_ds, val_ds = run.datasets(dataset, image_size, batch_size, val_images)
state = run.resume_state() if resume else None
G = training.generator(SCRIPT, init, arch, state)
hypercolumn = G.arch == "hypercolumn"
loss = ("classification" if hypercolumn else "mse") if loss == "auto" else loss
if G.takes_hints and loss == "classification":
    run.fail("--loss=classification is a 313-bin loss; a SIGGRAPH17 model trains with mse or huber (and its class head with "
             "--lambda_class)")
if hypercolumn and loss != "classification":
    run.fail(f"--loss={loss}: the hypercolumn model's head predicts the 313 bins: it trains with --loss=classification")
if hypercolumn and cache_positions > (image_size // 4) ** 2:
    run.fail(f"--cache_positions={cache_positions}: a {image_size}x{image_size} photo has {(image_size // 4) ** 2} positions")
if loss == "classification":
    G.model_out.requires_grad_(False)  # it holds the bin centres; DDP also refuses parameters without gradients
if hypercolumn:  # from now on the training set is the backbone's features, computed once
    with training.refusals(SCRIPT):
        train_ds = run.cache_features(G, Path(cache_dir or run.out / "features"), cache_views, cache_positions, cache_gb,
                                      batch_size, num_workers)
if channels_last:
    G = G.to(memory_format=torch.channels_last)
opt = training.adam([p for p in G.parameters() if p.requires_grad], lr, (beta1, beta2))
if state is not None:
    opt.load_state_dict(state["opt"])
    for group in opt.param_groups:  # a resume takes --lr as given (to settle a run at a lower rate, say)
        group["lr"] = lr
train_loader, _ = run.loaders(val_ds, batch_size, num_workers, sample_images)

hint_rng = training.hint_generator(seed, run.accelerator.process_index, state)
if loss == "classification":
    from tqdm import tqdm

    bins = models.ab_bins().float()
    prior_path = run.out / "ab_prior.npy"

    def prior_batches():
        """ab of prior_images random training photos (the hypercolumn model: of every cached position)."""
        if hypercolumn:
            return (torch.from_numpy(train_ds.arrays["ab"][i:i + 4096].astype(np.float32)).permute(0, 2, 1)[..., None]
                    for i in range(0, len(train_ds.arrays["ab"]), 4096))
        pick = torch.randperm(len(train_ds), generator=torch.Generator().manual_seed(seed))[:prior_images].tolist()
        prior_loader = torch.utils.data.DataLoader(torch.utils.data.Subset(train_ds, pick), batch_size, num_workers=num_workers)
        return (uint8_to_lab(rgb.to(run.device))[1] for rgb, _, _ in tqdm(prior_loader, desc="ab prior", file=sys.stderr))

    if run.is_main:  # the main process computes and caches it; after the barrier every process reads the cache
        losses.load_or_compute_prior(prior_path, prior_batches, bins)
    run.accelerator.wait_for_everyone()
    class_weights = losses.rebalance_weights(losses.load_or_compute_prior(prior_path, prior_batches, bins))
    if hypercolumn:  # the head learns calibrated probabilities (no weights in its loss); its decoding rebalances them
        G.rebalance.copy_(rebalance * class_weights.log())
        class_weights = None
    else:
        class_weights = class_weights.to(run.device)
    bins = bins.to(run.device)
G, opt = run.accelerator.prepare(G, opt)
G_own = run.accelerator.unwrap_model(G)
G_fwd = torch.compile(G) if compile else G
if run.is_main and state is None:
    run.writer.add_text("config", "\n".join(f"    {k} = {v!r}" for k, v in config.items()))


def state_dict() -> dict:
    """What ckpt.pt holds besides the position: G in release keys, then what resume needs."""
    return {"generator": G_own.state_dict(), "opt": opt.state_dict(), "hint_rng": hint_rng.get_state()}


regression = losses.huber_ab if loss == "huber" else losses.mse_ab
with training.refusals(SCRIPT):  # 16 undecodable photos in a row: the data is broken, not one file
    for batch in run.batches(epochs, max_steps, lambda: run.validate(G), state_dict):
        with run.accelerator.autocast():
            if hypercolumn:  # cached features at sampled positions: the head alone
                logits = G_fwd(cached=(batch["columns"].float(), batch["scene"].float()))
                train_loss = losses.classification_loss(logits, batch["ab"].float(), bins, None, batch["colour"].float())
            else:
                L, ab = uint8_to_lab(batch)
                weight = has_chroma(ab).float()  # Zhang et al.: gray photos teach nothing about colour
                if G_own.takes_hints:  # hints drawn from the truth
                    given = hint_files.simulate(ab, hint_rng, hint_p_stop, gaussian=hint_centres == "gaussian")
                    pred, class_logits = G_fwd(L, given, logits=True)
                    train_loss = regression(pred.float(), ab, weight) + lambda_class * losses.ab_class_loss(class_logits, ab, weight)
                elif loss == "classification":
                    train_loss = losses.classification_loss(G_fwd(L, logits=True), ab, bins, class_weights, weight)
                else:
                    train_loss = regression(G_fwd(L).float(), ab, weight)
        finite = torch.isfinite(train_loss)
        opt.zero_grad(set_to_none=True)
        run.accelerator.backward(train_loss)
        training.skip_unless(opt, finite)  # a NaN/Inf loss skips the update on the device
        opt.step()
        run.record(finite, {"loss/train": train_loss, "lr/G": opt.param_groups[0]["lr"]})
run.finish(G)
