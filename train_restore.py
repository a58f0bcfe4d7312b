"""Train restore.py's damage finder on synthetic damage of clean photos: python train_restore.py --dataset=FOLDER

    python train_restore.py --dataset=~/photos --max_steps=3000        # a few minutes a thousand steps on 2 CPU cores
    python restore.py old.jpg fixed.png --detector=runs/restore/detector.safetensors

Each step damages its photos afresh (damage.py: scratches, crack networks, dust, grain, fading; the draw a function of
seed, step and place in the batch, so a resume draws what a run that never stopped would have) and the finder
(restoration.Detector) learns the mask by binary cross-entropy. Validation damages the validation photos the same way
every time and logs the mask's precision, recall and F1 at --threshold. At the end out_dir/detector.safetensors is
written (what restore.py's --detector takes; assets/restore/ holds the shipped one). SIGTERM or Ctrl-C: the step
finishes, ckpt.pt is written; --resume=True goes on.
"""

import numpy as np
import torch
import torch.nn.functional as F

import configurator
import damage
import restoration
import training
import weights

SCRIPT = "train_restore.py"
# -----------------------------------------------------------------------------
dataset = "photos"  # an image folder (or HF dataset) of clean photos: the damage is drawn on them
image_size = 128  # training crops (a multiple of 8)
zoom = 2.0  # each crop covers 1 to this many photo pixels a side per crop pixel: near the photos' own scale, where a print's lines are
batch_size = 16
num_workers = training.default_workers()
epochs = 20
max_steps = 0  # stop after this many steps (0 = run the epochs)
out_dir = "runs/restore"  # ckpt.pt, detector.safetensors and TensorBoard logs
resume = False  # continue from out_dir/ckpt.pt exactly where it stopped
overwrite = False  # start afresh in an out_dir that holds a run
seed = 1337
mixed_precision = "no"  # no, fp16 or bf16
save_every_epochs = 1
save_every_minutes = 10.0
lr = 3e-3
positive_weight = 2.0  # the damage pixels' weight in the loss (they are a few percent of a photo)
threshold = restoration.THRESHOLD  # validation's mask threshold
val_images = 64  # validate on the first N validation photos (0 = all)
val_every_steps = 500
log_every = 20
max_bad_steps = 10
max_bad_images = 100
# -----------------------------------------------------------------------------
config, _ = configurator.configure(globals())
training.check_config(SCRIPT, config)
if zoom < 1:
    training.fail(SCRIPT, f"--zoom={zoom}: must be 1 or more (1: crops at the photos' own scale)")
if not 0 < threshold < 1:
    training.fail(SCRIPT, f"--threshold={threshold}: must be in (0, 1)")
run = training.Run(SCRIPT, config)
train_ds, val_ds = run.datasets(dataset, image_size, batch_size, val_images)
train_ds.zoom = (1.0, zoom)
state = run.resume_state() if resume else None
net = restoration.Detector()
if state is not None:
    net.load_state_dict(state["detector"])
opt = training.adam(net.parameters(), lr, (0.9, 0.999))
if state is not None:
    opt.load_state_dict(state["opt"])
    for group in opt.param_groups:  # a resume takes --lr as given (to settle a run at a lower rate)
        group["lr"] = lr
train_loader, _ = run.loaders(val_ds, batch_size, num_workers, 0)
net, opt = run.accelerator.prepare(net, opt)
own = run.accelerator.unwrap_model(net)


def damaged_batch(rgb: torch.Tensor, key: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 RGB (N,3,S,S) -> damaged gray (N,1,S,S) and its mask, the damage drawn from (seed, *key, i)."""
    gray = restoration.luma(rgb.cpu()).numpy()
    drawn = [damage.damage(g, np.random.default_rng((seed, *key, i))) for i, g in enumerate(gray)]
    return (torch.from_numpy(np.stack([d.gray for d in drawn]))[:, None].to(run.device),
            torch.from_numpy(np.stack([d.mask for d in drawn]))[:, None].float().to(run.device))


@torch.no_grad()
def validate() -> None:
    """Precision, recall and F1 of the mask on the validation photos, damaged the same way every time."""
    net.eval()
    counts = torch.zeros(3)  # true positives, predicted, actual
    for n, (rgb, _, bad) in enumerate(run.val_loader):
        gray, mask = damaged_batch(rgb, (2**31, n))  # a key no training step has
        found = (torch.sigmoid(net(gray)) >= threshold).float()
        counts += torch.stack([(found * mask).sum(), found.sum(), mask.sum()]).cpu()
    net.train()
    counts = run.accelerator.reduce(counts.to(run.device), "sum").cpu() if run.accelerator.num_processes > 1 else counts
    precision, recall = (counts[0] / counts[1].clamp_min(1)).item(), (counts[0] / counts[2].clamp_min(1)).item()
    if run.is_main:
        for k, v in {"precision": precision, "recall": recall, "F1": 2 * precision * recall / max(precision + recall, 1e-9)}.items():
            run.writer.add_scalar(f"val/{k}", v, run.step)


def state_dict() -> dict:
    return {"detector": own.state_dict(), "opt": opt.state_dict()}


with training.refusals(SCRIPT):
    for rgb in run.batches(epochs, max_steps, validate, state_dict):
        gray, mask = damaged_batch(rgb, (run.step,))
        with run.accelerator.autocast():
            logits = net(gray)
        train_loss = F.binary_cross_entropy_with_logits(logits.float(), mask, pos_weight=torch.tensor(positive_weight))
        finite = torch.isfinite(train_loss)
        opt.zero_grad(set_to_none=True)
        run.accelerator.backward(train_loss)
        training.skip_unless(opt, finite)
        opt.step()
        run.record(finite, {"loss/train": train_loss, "lr/G": opt.param_groups[0]["lr"]})
if run.is_main:
    from safetensors.torch import save

    plain = {k: v.contiguous() for k, v in own.state_dict().items()}  # safetensors takes no channels_last tensors
    weights.write_atomic(run.out / "detector.safetensors", lambda f: f.write(save(plain)))
run.finish(net)
