"""The training scripts, run as a user runs them: tiny images, a few steps, on the CPU."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import losses
import models
from conftest import synthetic_rgb

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--image_size=32", "--batch_size=4", "--num_workers=0", "--log_every=1"]
GAN = ["--vgg_weights=random"]


def run(script: str, *args: str, launcher: list[str] | None = None, check: bool = True) -> subprocess.CompletedProcess:
    """Run a script of the project the way a user does; fail with its output when it fails."""
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", **({"OMP_NUM_THREADS": "1"} if launcher else {})}
    cmd = (launcher or [sys.executable]) + [str(ROOT / script), *args]
    p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    if check:
        assert p.returncode == 0, p.stderr[-3000:]
    return p


@pytest.fixture
def split_photos(tmp_path):
    """train/ (8 synthetic photos) and validation/ (4)."""
    for split, n in (("train", 8), ("validation", 4)):
        (tmp_path / "ds" / split).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(synthetic_rgb(i + 100 * (split == "validation"), 40, 48)).save(tmp_path / "ds" / split / f"{i}.png")
    return tmp_path / "ds"


def test_stage1_overfits_one_batch(tmp_path):
    # four flat colours: every crop and flip is the same batch, so only fitting can lower the loss
    colours = [(200, 40, 40), (40, 160, 60), (50, 70, 200), (230, 200, 40)]
    for split in ("train", "validation"):
        (tmp_path / "flat" / split).mkdir(parents=True)
        for i, c in enumerate(colours):
            Image.new("RGB", (32, 32), c).save(tmp_path / "flat" / split / f"{i}.png")
    torch.manual_seed(0)
    run("train_finetune.py", f"--data={tmp_path / 'flat'}", "--init=scratch", "--max_steps=120", "--lr=1e-4",
        f"--out_dir={tmp_path / 'run'}", *TINY)
    rgb = torch.stack([torch.tensor(c, dtype=torch.uint8).view(3, 1, 1).expand(3, 32, 32) for c in colours])
    batch = [(rgb, None)]
    torch.manual_seed(1337)  # the script's seed: the same scratch weights it started from
    before = losses.mean_metrics(models.load_generator("scratch"), batch)["l1_ab"]
    after = losses.mean_metrics(models.load_generator(str(tmp_path / "run" / "ckpt.pt")), batch)["l1_ab"]
    assert after < 0.3 * before, (before, after)


def test_stage1_classification_loss_and_its_cached_prior(split_photos, tmp_path):
    out = tmp_path / "cls"
    run("train_finetune.py", f"--data={split_photos}", "--init=scratch", "--loss=classification", "--max_steps=2", f"--out_dir={out}", *TINY)
    prior = np.load(out / "ab_prior.npy")
    assert prior.shape == (313,) and abs(prior.sum() - 1) < 1e-5
    assert models.load_checkpoint(out / "ckpt.pt")["step"] == 2


def test_gan_resume_is_identical_to_never_stopping(split_photos, tmp_path):
    run("train_finetune.py", f"--data={split_photos}", "--init=scratch", "--max_steps=1", f"--out_dir={tmp_path / 's1'}", *TINY)
    init = f"--init={tmp_path / 's1' / 'ckpt.pt'}"
    common = [f"--data={split_photos}", init, *TINY]
    run("train_gan.py", *common, *GAN, "--max_steps=5", f"--out_dir={tmp_path / 'straight'}")
    run("train_gan.py", *common, *GAN, "--max_steps=3", f"--out_dir={tmp_path / 'stopped'}")  # 2 batches an epoch: stops mid-epoch
    mid = models.load_checkpoint(tmp_path / "stopped" / "ckpt.pt")
    assert (mid["step"], mid["epoch"], mid["batch_in_epoch"]) == (3, 1, 1)
    run("train_gan.py", *common, *GAN, "--max_steps=5", "--resume=True", f"--out_dir={tmp_path / 'stopped'}")
    a, b = (models.load_checkpoint(tmp_path / d / "ckpt.pt") for d in ("straight", "stopped"))
    assert a["step"] == b["step"] == 5
    for part in ("generator", "generator_ema", "discriminator"):
        for k in a[part]:
            assert torch.equal(a[part][k], b[part][k]), (part, k)
    assert torch.equal(a["opt_G"]["state"][0]["exp_avg"], b["opt_G"]["state"][0]["exp_avg"])


def test_gan_logs_losses_and_images_and_stops_on_nan(split_photos, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "gan"
    run("train_gan.py", f"--data={split_photos}", "--init=scratch", "--max_steps=2", f"--out_dir={out}", *TINY, *GAN)
    events = EventAccumulator(str(out))
    events.Reload()
    for tag in ("loss/D_real", "loss/D_fake", "loss/D", "loss/G_GAN", "loss/G_L1", "loss/G_perceptual", "loss/G", "val/l1_ab", "val/psnr", "val/auc"):
        assert len(events.Scalars(tag)) >= 1, tag
    assert events.Tags()["images"]
    ckpt = models.load_checkpoint(out / "ckpt.pt")
    assert ckpt["step"] == 2 and ckpt["config"]["image_size"] == 32

    p = run("train_gan.py", f"--data={split_photos}", "--resume=True", "--max_steps=9", "--lambda_l1=nan", "--max_bad_steps=3",
            f"--out_dir={out}", *TINY, *GAN, check=False)
    assert p.returncode == 1 and "NaN/Inf" in p.stderr and "Traceback" not in p.stderr
    assert models.load_checkpoint(out / "ckpt.pt")["step"] == 2  # the last good checkpoint is intact


def test_two_cpu_processes_through_accelerate_stay_in_sync(split_photos, tmp_path):
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes=2", "--num_machines=1",
                "--mixed_precision=no", "--dynamo_backend=no"]
    p = run("train_gan.py", f"--data={split_photos}", "--init=scratch", "--max_steps=2", f"--out_dir={tmp_path / 'ddp'}", *TINY, *GAN,
            launcher=launcher)
    assert "weights identical on 2 process(es)" in p.stderr
    assert models.load_checkpoint(tmp_path / "ddp" / "ckpt.pt")["step"] == 2


def test_user_errors_are_one_line(tmp_path):
    p = run("train_gan.py", f"--data={tmp_path / 'nowhere'}", "--init=scratch", *TINY, *GAN, check=False)
    assert p.returncode == 1 and "no such file" in p.stderr and "Traceback" not in p.stderr
    p = run("train_finetune.py", "--bogus=1", check=False)
    assert p.returncode != 0 and "unknown option --bogus" in p.stderr
    assert "--lambda_perceptual" in run("train_gan.py", "--help").stdout


def test_ctrl_c_saves_a_checkpoint_to_resume_from(split_photos, tmp_path):
    import signal
    import time

    out = tmp_path / "interrupted"
    cmd = [sys.executable, str(ROOT / "train_gan.py"), f"--data={split_photos}", "--init=scratch", "--max_steps=1000",
           f"--out_dir={out}", *TINY, *GAN]
    p = subprocess.Popen(cmd, cwd=ROOT, stderr=subprocess.PIPE, text=True, env={**os.environ, "ACCELERATE_USE_CPU": "1"})
    seen, deadline = "", time.time() + 300
    while "2/1000" not in seen and time.time() < deadline:  # wait until steps are being taken
        seen += p.stderr.read(1)
    p.send_signal(signal.SIGINT)
    rest = p.communicate(timeout=120)[1]
    assert p.returncode == 1 and "interrupted at step" in rest and "Traceback" not in rest, rest[-2000:]
    ckpt = models.load_checkpoint(out / "ckpt.pt")
    assert ckpt["step"] >= 2 and ckpt["batch_in_epoch"] == (ckpt["step"] - 2 * ckpt["epoch"])
