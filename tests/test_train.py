"""The training scripts as a user runs them (tiny images, a few steps, on the CPU), in this process where a
separate one is not the point (the `script` fixture in conftest.py runs the file as `python train_gan.py` would)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import losses
import models
import weights
import training
from conftest import synthetic_rgb

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--image_size=32", "--batch_size=4", "--num_workers=0", "--log_every=1"]
GAN = ["--vgg_weights=random"]


def ok(result: tuple[int, str]) -> str:
    code, err = result
    assert code == 0, err[-3000:]
    return err


@pytest.fixture
def split_photos(tmp_path):
    """train/ (8 synthetic photos) and validation/ (4)."""
    for split, n in (("train", 8), ("validation", 4)):
        (tmp_path / "ds" / split).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(synthetic_rgb(i + 100 * (split == "validation"), 40, 48)).save(tmp_path / "ds" / split / f"{i}.png")
    return tmp_path / "ds"


def same_checkpoints(a: dict, b: dict, parts: tuple[str, ...]) -> None:
    for part in parts:
        assert a[part].keys() == b[part].keys()
        for k in a[part]:
            assert torch.equal(a[part][k], b[part][k]), (part, k)


def test_stage1_overfits_one_batch(script, tmp_path):
    # four flat colours: every crop and flip is the same batch, so only fitting can lower the loss
    colours = [(200, 40, 40), (40, 160, 60), (50, 70, 200), (230, 200, 40)]
    for split in ("train", "validation"):
        (tmp_path / "flat" / split).mkdir(parents=True)
        for i, c in enumerate(colours):
            Image.new("RGB", (16, 16), c).save(tmp_path / "flat" / split / f"{i}.png")
    ok(script("train_finetune.py", f"--dataset={tmp_path / 'flat'}", "--init=scratch", "--max_steps=30", "--save_every_epochs=1000",
              f"--out_dir={tmp_path / 'run'}", "--log_every=10", "--image_size=16", "--val_images=1", *TINY[1:-1]))
    rgb = torch.stack([torch.tensor(c, dtype=torch.uint8).view(3, 1, 1).expand(3, 16, 16) for c in colours])
    batch = [(rgb, None)]
    torch.manual_seed(1337)  # the script's seed: the same scratch weights it started from
    # in training mode (batch statistics, as the steps saw it): 30 steps move BatchNorm's running means too little
    before = losses.mean_metrics(models.load_generator("scratch").train(), batch)["l1_ab"]
    after = losses.mean_metrics(models.load_generator(str(tmp_path / "run" / "ckpt.pt")).train(), batch)["l1_ab"]
    assert after < 0.75 * before, (before, after)  # 46 -> 30 here


def test_stage1_classification_loss_and_its_cached_prior(script, split_photos, tmp_path):
    out = tmp_path / "cls"
    ok(script("train_finetune.py", f"--dataset={split_photos}", "--init=scratch", "--loss=classification", "--max_steps=2",
              f"--out_dir={out}", *TINY))
    prior = np.load(out / "ab_prior.npy")
    assert prior.shape == (313,) and abs(prior.sum() - 1) < 1e-5
    assert weights.load_checkpoint(out / "ckpt.pt")["step"] == 2


def test_stage1_resume_is_identical_to_never_stopping(script, split_photos, tmp_path, release_weights, other_weights):
    common = [f"--dataset={split_photos}", *TINY, "--image_size=16", "--val_images=1"]  # the last --image_size wins
    # the resumed leg names another init: a resume that ignored ckpt.pt would start from it (or from scratch) and differ
    ok(script("train_finetune.py", *common, f"--init={release_weights}", "--max_steps=3", f"--out_dir={tmp_path / 'straight'}"))
    ok(script("train_finetune.py", *common, f"--init={release_weights}", "--max_steps=1", f"--out_dir={tmp_path / 'stopped'}"))
    ok(script("train_finetune.py", *common, f"--init={other_weights}", "--max_steps=3", "--resume=True", f"--out_dir={tmp_path / 'stopped'}"))
    a, b = (weights.load_checkpoint(tmp_path / d / "ckpt.pt") for d in ("straight", "stopped"))
    assert a["step"] == b["step"] == 3
    same_checkpoints(a, b, ("generator",))
    assert torch.equal(a["opt"]["state"][0]["exp_avg"], b["opt"]["state"][0]["exp_avg"])


def test_sigterm_saves_at_that_step_and_resume_is_identical(script, split_photos, tmp_path, monkeypatch, release_weights, other_weights):
    common = [f"--dataset={split_photos}", *TINY, *GAN]
    ok(script("train_gan.py", *common, f"--init={release_weights}", "--max_steps=5", f"--out_dir={tmp_path / 'straight'}"))
    record = training.Run.record

    def record_then_sigterm(self, finite, logs):  # the scheduler's SIGTERM arrives during step 3
        record(self, finite, logs)
        if self.step == 2:
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(training.Run, "record", record_then_sigterm)
    code, err = script("train_gan.py", *common, f"--init={release_weights}", "--max_steps=5", f"--out_dir={tmp_path / 'stopped'}")
    assert code == 128 + signal.SIGTERM and "stopped by SIGTERM at step 3" in err and "--resume=True" in err, err
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # the run gave the handler back
    mid = weights.load_checkpoint(tmp_path / "stopped" / "ckpt.pt")
    assert (mid["step"], mid["epoch"], mid["batch_in_epoch"]) == (3, 1, 1)  # 2 batches an epoch
    monkeypatch.setattr(training.Run, "record", record)
    ok(script("train_gan.py", *common, f"--init={other_weights}", "--max_steps=5", "--resume=True", f"--out_dir={tmp_path / 'stopped'}"))
    a, b = (weights.load_checkpoint(tmp_path / d / "ckpt.pt") for d in ("straight", "stopped"))
    assert a["step"] == b["step"] == 5
    same_checkpoints(a, b, ("generator", "generator_ema", "discriminator"))
    assert torch.equal(a["opt_G"]["state"][0]["exp_avg"], b["opt_G"]["state"][0]["exp_avg"])


def test_gan_logs_losses_and_images_and_stops_on_nan(script, split_photos, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "gan"
    ok(script("train_gan.py", f"--dataset={split_photos}", "--init=scratch", "--max_steps=2", f"--out_dir={out}", *TINY, *GAN))
    events = EventAccumulator(str(out))
    events.Reload()
    for tag in ("loss/D_real", "loss/D_fake", "loss/D", "loss/G_GAN", "loss/G_L1", "loss/G_perceptual", "loss/G", "lr/G",
                "data/bad_images", "perf/images_per_second", "val/l1_ab", "val/psnr", "val/auc"):
        assert len(events.Scalars(tag)) >= 1, tag
    assert events.Tags()["images"]
    ckpt = weights.load_checkpoint(out / "ckpt.pt")
    assert ckpt["step"] == 2 and ckpt["config"]["image_size"] == 32 and "DEFAULT_DATA" not in ckpt["config"]
    # the EMA warms up: after two steps it has moved half-way or more, not 0.1% of the way
    g, ema = ckpt["generator"], ckpt["generator_ema"]  # the start was random: compare the EMA to G instead
    assert not torch.equal(g["model1.0.weight"], ema["model1.0.weight"])

    code, err = script("train_gan.py", f"--dataset={split_photos}", "--resume=True", "--max_steps=9", "--lambda_l1=1e39",
                       "--max_bad_steps=3", f"--out_dir={out}", *TINY, *GAN)
    assert code == 1 and "3 steps in a row had a NaN/Inf loss" in err and "Traceback" not in err, err
    assert weights.load_checkpoint(out / "ckpt.pt")["step"] == 2  # the last good checkpoint is intact


def test_ema_warm_up_leaves_the_start_after_a_short_run(script, split_photos, tmp_path, release_weights):
    ok(script("train_gan.py", f"--dataset={split_photos}", f"--init={release_weights}", "--max_steps=3", f"--out_dir={tmp_path / 'e'}",
              *TINY, *GAN))
    start, ckpt = weights.load_checkpoint(release_weights), weights.load_checkpoint(tmp_path / "e" / "ckpt.pt")
    key = "model8.6.weight"
    moved_g = (ckpt["generator"][key] - start[key]).norm()
    moved_ema = (ckpt["generator_ema"][key] - start[key]).norm()
    assert moved_ema > 0.3 * moved_g  # with a fixed 0.999 it would be ~0.003 of it
    assert training.ema_decay_at(0, 0.999) == pytest.approx(0.1) and training.ema_decay_at(10**6, 0.999) == 0.999


def test_bad_photos_are_skipped_named_and_counted(script, split_photos, tmp_path):
    jpeg = split_photos / "train" / "good.jpg"
    Image.fromarray(synthetic_rgb(7, 40, 48)).save(jpeg)
    raw = jpeg.read_bytes()
    (split_photos / "train" / "truncated.jpg").write_bytes(raw[: len(raw) // 3])
    (split_photos / "train" / "empty.jpg").write_bytes(b"")
    (split_photos / "validation" / "0blank.jpg").write_bytes(b"")  # first in validation: also a sample candidate
    err = ok(script("train_gan.py", f"--dataset={split_photos}", "--init=scratch", "--max_steps=6", f"--out_dir={tmp_path / 'b'}",
                    *TINY, *GAN))
    for name in ("truncated.jpg", "empty.jpg", "0blank.jpg"):
        assert sum(name in line and "skipped" in line for line in err.splitlines()) == 1, err  # named once
    assert "3 photo(s) skipped" in err and weights.load_checkpoint(tmp_path / "b" / "ckpt.pt")["step"] == 6

    code, err = script("train_gan.py", f"--dataset={split_photos}", "--init=scratch", "--max_steps=6", "--max_bad_images=1",
                       f"--out_dir={tmp_path / 'c'}", *TINY, *GAN)
    assert code == 1 and "over --max_bad_images=1" in err.splitlines()[-1], err
    listed = (tmp_path / "c" / "bad_images.txt").read_text()
    assert "0blank.jpg" in listed and (tmp_path / "c" / "ckpt.pt").exists()


def test_ignored_bad_photo_in_validation_leaves_the_metrics_unchanged(split_photos):
    import data

    ds = data.make_dataset(str(split_photos), "validation", 32, train=False)
    G = models.load_generator("scratch")
    clean = losses.mean_metrics(G, [(torch.stack([ds[i][0] for i in range(4)]), None)])
    (split_photos / "validation" / "2bad.png").write_bytes(b"junk")
    ds = data.make_dataset(str(split_photos), "validation", 32, train=False)
    rgb, label, bad = ds[[Path(p).name for p, _ in ds.items].index("2bad.png")]
    assert label == -1 and "2bad.png" in bad and rgb.sum() == 0
    items = [ds[i] for i in range(5)]
    ok_mask = torch.tensor([not b for _, _, b in items])
    with_bad = losses.mean_metrics(G, [(torch.stack([x for x, _, _ in items]), ok_mask)])
    assert with_bad == pytest.approx(clean)


def test_flat_folder_holds_out_validation_photos(script, tmp_path):
    import data

    (tmp_path / "flat").mkdir()
    for i in range(40):
        Image.fromarray(synthetic_rgb(i, 24, 24)).save(tmp_path / "flat" / f"{i:02d}.png")
    train, val, note = data.train_val_datasets(str(tmp_path / "flat"), 16)
    names = lambda ds: {Path(p).name for p, _ in ds.items}
    assert len(train) == 38 and len(val) == 2 and not names(train) & names(val) and "held out" in note
    assert names(val) == {"19.png", "39.png"}  # deterministic


@pytest.mark.parametrize("args, message", [
    (["--gan_mode=nope"], "--gan_mode must be vanilla, lsgan or hinge, not 'nope'"),
    (["--image_size=100"], "--image_size must be a multiple of 8"),
    (["--batch_size=0"], "--batch_size must be positive"),
    (["--mixed_precision=fp8"], "--mixed_precision must be no, fp16 or bf16"),
    (["--ema_decay=1"], "--ema_decay must be in [0, 1)"),
    (["--vgg_weights=vgg.pth"], "--vgg_weights must be imagenet, random, none or a vgg19 .pth file"),
    (["--resume=True"], "does not exist"),
    (["--DEFAULT_DATA=x"], "unknown option --DEFAULT_DATA"),
    (["--dataset=photoz"], "photoz: no such file or folder"),
    (["--dataset=runs/photoz"], "no such file or folder"),  # looks like OWNER/NAME, but runs/ is a local folder
])
def test_user_errors_are_one_line_before_anything_loads(script, tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    monkeypatch.setattr(models, "load_generator", lambda *a, **k: pytest.fail("weights were loaded"))
    code, err = script("train_gan.py", "--init=scratch", f"--out_dir={tmp_path / 'o'}", *args)
    assert code != 0 and message in err and len(err.strip().splitlines()) == 1, err


def test_too_few_photos_bad_config_file_and_help(script, tmp_path):
    (tmp_path / "three" / "train").mkdir(parents=True)
    for i in range(3):
        Image.fromarray(synthetic_rgb(i, 24, 24)).save(tmp_path / "three" / "train" / f"{i}.png")
    code, err = script("train_gan.py", f"--dataset={tmp_path / 'three'}", "--init=scratch", f"--out_dir={tmp_path / 'o'}",
                       "--batch_size=4", *GAN)
    assert code == 1 and "fewer than one batch" in err.strip().splitlines()[-1], err
    assert not (tmp_path / "o").exists()  # refused at start: no out_dir, no TensorBoard log
    cfg = tmp_path / "run.cfg"
    cfg.write_text("batch_size = 4  # comment\ngan_mode = 'nope'\n")
    code, err = script("train_gan.py", f"--config={cfg}")
    assert code == 1 and "--gan_mode must be" in err
    cfg.write_text("batch_size 4\n")
    code, err = script("train_gan.py", f"--config={cfg}")
    assert "line 1: expected key = value" in str(code) + err
    code, _ = script("train_gan.py", "--help")
    assert code == 0


def test_the_g_step_computes_no_gradient_for_d_and_a_nan_skips_every_update():
    torch.manual_seed(0)
    G, D = models.ECCV16Generator().train(), models.PatchDiscriminator()
    opt_G, opt_D = training.adam(G.parameters(), 1e-4, (0.5, 0.999)), training.adam(D.parameters(), 1e-4, (0.5, 0.999))
    G_ema = models.ECCV16Generator().eval()
    G_ema.load_state_dict(G.state_dict())
    import data

    L, ab = data.uint8_to_lab(torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8))
    grads = []
    for p in D.parameters():
        p.register_hook(lambda g: grads.append(1))
    kw = dict(gan_mode="vanilla", lambda_l1=10.0, lambda_perceptual=0.0, vgg=None, ema=(G_ema, G, 0.5))
    finite, logs = training.gan_step(G, D, D, opt_G, opt_D, L, ab, **kw)
    assert bool(finite) and len(grads) == len(list(D.parameters()))  # once each: the D step's backward only
    before = [t.clone() for t in (*G.parameters(), *G_ema.parameters())]
    steps = opt_G.state[next(G.parameters())]["step"].clone()
    finite, logs = training.gan_step(G, D, D, opt_G, opt_D, L, ab, **(kw | {"lambda_l1": float("nan")}))
    assert not bool(finite) and torch.isnan(logs["loss/G"])
    after = [*G.parameters(), *G_ema.parameters()]  # D's own loss was finite: its update went ahead
    assert all(torch.equal(a, b) for a, b in zip(before, after))
    assert torch.equal(opt_G.state[next(G.parameters())]["step"], steps)


def test_two_cpu_processes_through_accelerate_stay_in_sync(split_photos, tmp_path):
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes=2", "--num_machines=1",
                "--mixed_precision=no", "--dynamo_backend=no"]
    cmd = launcher + [str(ROOT / "train_gan.py"), f"--dataset={split_photos}", "--init=scratch", "--max_steps=2",
                      f"--out_dir={tmp_path / 'ddp'}", *TINY, "--vgg_weights=none"]  # no torchvision import: 2 s a process
    p = subprocess.run(cmd, cwd=ROOT, env={**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"}, capture_output=True,
                       text=True, timeout=600)
    assert p.returncode == 0 and "weights identical on 2 process(es)" in p.stderr, p.stderr[-3000:]
    assert weights.load_checkpoint(tmp_path / "ddp" / "ckpt.pt")["step"] == 2


def test_a_real_sigterm_with_loader_workers_saves_and_exits(split_photos, tmp_path):
    import time

    out = tmp_path / "killed"
    cmd = [sys.executable, str(ROOT / "train_gan.py"), f"--dataset={split_photos}", "--init=scratch", "--max_steps=1000",
           f"--out_dir={out}", *TINY[:2], "--num_workers=1", "--log_every=1", "--vgg_weights=none"]
    p = subprocess.Popen(cmd, cwd=ROOT, stderr=subprocess.PIPE, text=True, env={**os.environ, "ACCELERATE_USE_CPU": "1"})
    seen, deadline = "", time.time() + 300
    while "2/1000" not in seen and time.time() < deadline:  # wait until steps are being taken
        seen += p.stderr.read(1)
    p.send_signal(signal.SIGTERM)
    rest = p.communicate(timeout=120)[1]
    assert p.returncode == 128 + signal.SIGTERM and "stopped by SIGTERM" in rest and "Traceback" not in rest, rest[-2000:]
    ckpt = weights.load_checkpoint(out / "ckpt.pt")
    assert ckpt["step"] >= 2 and ckpt["batch_in_epoch"] == ckpt["step"] - 2 * ckpt["epoch"]


def test_sigint_saves_and_a_second_signal_stops_at_once(script, split_photos, tmp_path, monkeypatch):
    common = [f"--dataset={split_photos}", "--init=scratch", *TINY, "--image_size=16", "--max_steps=5"]
    record = training.Run.record

    def record_then_signal(times):
        def patched(self, finite, logs):
            record(self, finite, logs)
            if self.step == 2:
                for _ in range(times):
                    os.kill(os.getpid(), signal.SIGINT)
        return patched

    monkeypatch.setattr(training.Run, "record", record_then_signal(1))  # Ctrl-C once: finish the step, save, say how to go on
    code, err = script("train_finetune.py", *common, f"--out_dir={tmp_path / 'once'}")
    assert code == 128 + signal.SIGINT and "stopped by SIGINT at step 3" in err and "--resume=True" in err, err
    assert weights.load_checkpoint(tmp_path / "once" / "ckpt.pt")["step"] == 3
    monkeypatch.setattr(training.Run, "record", record_then_signal(2))  # twice: the previous handler, at once, no save
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # Python's own (an xdist worker ignores SIGINT)
    try:
        with pytest.raises(KeyboardInterrupt):
            script("train_finetune.py", *common, f"--out_dir={tmp_path / 'twice'}")
    finally:
        signal.signal(signal.SIGINT, previous)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    assert weights.load_checkpoint(tmp_path / "twice" / "ckpt.pt")["step"] == 2  # the epoch end's, not one at the signal


def test_save_every_minutes_writes_checkpoints_between_epochs(script, split_photos, tmp_path, monkeypatch):
    saved = []
    save = weights.save_checkpoint
    monkeypatch.setattr(weights, "save_checkpoint", lambda ckpt, path: (saved.append(ckpt["step"]), save(ckpt, path)))
    common = [f"--dataset={split_photos}", "--init=scratch", *TINY, "--image_size=16", "--max_steps=3", "--save_every_epochs=1000"]
    ok(script("train_finetune.py", *common, f"--out_dir={tmp_path / 'timer'}", "--save_every_minutes=1e-9"))
    assert saved == [1, 2, 3]  # due at every step (no epoch end saves: --save_every_epochs=1000); 3 is max_steps' own


def test_a_finished_run_is_never_replaced_or_extended_without_asking(script, split_photos, tmp_path):
    common = [f"--dataset={split_photos}", "--init=scratch", *TINY, "--image_size=16", f"--out_dir={tmp_path / 'run'}"]
    ok(script("train_finetune.py", *common, "--max_steps=2"))
    before = (tmp_path / "run" / "ckpt.pt").read_bytes()
    code, err = script("train_finetune.py", *common, "--max_steps=1")
    assert code == 1 and "holds a run: --resume=True continues it, --overwrite=True starts afresh" in err, err
    code, err = script("train_finetune.py", *common, "--max_steps=2", "--resume=True", "--image_size=24")
    assert code == 1 and "--image_size=24 but the run in" in err and "trained with 16" in err, err
    err = ok(script("train_finetune.py", *common, "--max_steps=2", "--resume=True"))  # finished: max_steps is the total
    assert "already at step 2" in err and "nothing to train" in err, err
    assert (tmp_path / "run" / "ckpt.pt").read_bytes() == before
    ok(script("train_finetune.py", *common, "--max_steps=1", "--overwrite=True"))
    assert weights.load_checkpoint(tmp_path / "run" / "ckpt.pt")["step"] == 1
    assert len(list((tmp_path / "run").glob("events.out.tfevents.*"))) == 1  # the old run's log went with it


def test_a_tilde_in_a_path_option_is_the_home_folder(monkeypatch, tmp_path):
    import configurator

    monkeypatch.setenv("HOME", str(tmp_path))
    namespace = {"dataset": "x", "ckpt": [], "out_dir": "runs/a"}
    configurator.configure(namespace, ["--dataset=~/my-photos", "--ckpt=~/a.pt", "--ckpt=b.pt"])
    assert namespace["dataset"] == str(tmp_path / "my-photos") and namespace["ckpt"] == [str(tmp_path / "a.pt"), "b.pt"]


def test_siggraph17_trains_on_hints_from_the_truth_and_resumes_exactly(script, split_photos, tmp_path, monkeypatch, siggraph_weights):
    import hints

    seen = []
    simulate = hints.simulate

    def recorded(ab, g, *args, **kw):  # what the step hands the model: hints drawn from the batch's own colours
        out = simulate(ab, g, *args, **kw)
        seen.append((ab.clone(), out))
        return out

    monkeypatch.setattr(hints, "simulate", recorded)
    common = [f"--dataset={split_photos}", *TINY, "--val_images=1", "--loss=huber"]
    ok(script("train_finetune.py", *common, "--arch=siggraph17", "--init=scratch", "--max_steps=3", f"--out_dir={tmp_path / 'straight'}"))
    assert len(seen) == 3
    for ab, given in seen:
        m = given[:, 2:].bool()
        assert m.any() and torch.allclose(given[:, :2][m.expand(-1, 2, -1, -1)].abs().max(), given[:, :2].abs().max())
        assert (given[:, :2].abs().amax((1, 2, 3)) <= ab.abs().amax((1, 2, 3)) + 1e-4).all()  # means of the truth
    ok(script("train_finetune.py", *common, "--arch=siggraph17", "--init=scratch", "--max_steps=1", f"--out_dir={tmp_path / 'stopped'}"))
    # the resumed leg names other weights: a resume that ignored ckpt.pt would differ
    ok(script("train_finetune.py", *common, f"--init={siggraph_weights}", "--max_steps=3", "--resume=True", f"--out_dir={tmp_path / 'stopped'}"))
    a, b = (weights.load_checkpoint(tmp_path / d / "ckpt.pt") for d in ("straight", "stopped"))
    assert models.state_arch(a["generator"]) == "siggraph17" and a["step"] == b["step"] == 3
    same_checkpoints(a, b, ("generator",))
    code, err = script("train_finetune.py", *common, "--arch=eccv16", f"--init={siggraph_weights}", f"--out_dir={tmp_path / 'x'}")
    assert code == 1 and "is a siggraph17 model, not eccv16" in err


def test_the_gan_stage_trains_a_siggraph17_generator_with_hints(script, split_photos, tmp_path, monkeypatch, siggraph_weights):
    calls = []
    forward = models.SIGGRAPH17Generator.forward

    def spy(self, L, hints=None, *args, **kw):  # what G is given, in training and validation alike
        calls.append(None if hints is None else hints[:, 2].sum().item())
        return forward(self, L, hints, *args, **kw)

    monkeypatch.setattr(models.SIGGRAPH17Generator, "forward", spy)
    ok(script("train_gan.py", f"--dataset={split_photos}", *TINY, *GAN, f"--init={siggraph_weights}", "--max_steps=3",
              "--val_images=1", "--sample_images=0", f"--out_dir={tmp_path / 'gan'}"))
    given = [c for c in calls if c is not None]
    assert len(given) >= 3 and any(c > 0 for c in given)  # each step's G saw simulated hints
    ckpt = weights.load_checkpoint(tmp_path / "gan" / "ckpt.pt")
    assert models.state_arch(ckpt["generator_ema"]) == "siggraph17" and "hint_rng" in ckpt


def test_tinted_photos_refuses_a_folder_without_enough_photos(script, tmp_path):
    code, err = script(".ci/tinted_photos.py", str(tmp_path / "missing"), str(tmp_path / "out"))
    assert code == 1 and "0 photos, not more than --held_out=64" in err and not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------- the hypercolumn model: its head from a feature cache

HYPER = ["--init=scratch", "--arch=hypercolumn", "--image_size=32", "--batch_size=4", "--num_workers=0", "--log_every=1",
         "--cache_positions=16", "--cache_views=2", "--lr=1e-3"]


def test_the_hypercolumn_head_trains_from_its_cache_resumes_exactly_and_saves_only_the_head(script, split_photos, tmp_path):
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    err = ok(script("train_finetune.py", f"--dataset={split_photos}", *HYPER, "--max_steps=6", f"--out_dir={straight}"))
    assert "the backbone's features of 8 photos x 2 views" in err and "(16 rows to compute)" in err, err
    ckpt = weights.load_checkpoint(straight / "ckpt.pt")
    assert not any(k.startswith("backbone.") for k in ckpt["generator"]) and "project.weight" in ckpt["generator"]
    assert ckpt["config"]["loss"] == "auto" and ckpt["generator"]["rebalance"].abs().max() > 0  # the data's rebalancing
    start = models.HypercolumnGenerator("random").state_dict()
    assert not torch.equal(start["head.4.weight"], ckpt["generator"]["head.4.weight"])  # the head learned
    # a second run of the same photos finds every row cached; stopped at step 3 and resumed, it ends where one run does
    err = ok(script("train_finetune.py", f"--dataset={split_photos}", *HYPER, "--max_steps=3", f"--out_dir={stopped}",
                    f"--cache_dir={straight / 'features'}"))
    assert "(all cached)" in err, err
    ok(script("train_finetune.py", f"--dataset={split_photos}", *HYPER, "--max_steps=6", f"--out_dir={stopped}",
              f"--cache_dir={straight / 'features'}", "--resume=True"))
    same_checkpoints(weights.load_checkpoint(straight / "ckpt.pt"), weights.load_checkpoint(stopped / "ckpt.pt"), ("generator",))
    G = models.load_generator(str(straight / "ckpt.pt"))  # what colorize.py and the app load: a ready model
    assert G.arch == "hypercolumn" and G(torch.full((1, 1, 32, 32), 50.0)).shape == (1, 2, 32, 32)


def test_a_stop_while_caching_keeps_the_rows_done_and_the_same_command_goes_on(script, split_photos, tmp_path, monkeypatch):
    import features

    calls = []
    features_of = models.HypercolumnGenerator.features

    def counted(self, L):
        calls.append(len(L))
        if len(calls) == 2 and stop_now:
            os.kill(os.getpid(), signal.SIGTERM)
        return features_of(self, L)

    monkeypatch.setattr(models.HypercolumnGenerator, "features", counted)
    stop_now = True
    code, err = script("train_finetune.py", f"--dataset={split_photos}", *HYPER, "--max_steps=2", f"--out_dir={tmp_path / 'run'}")
    assert code == 128 + signal.SIGTERM and "while caching features: 8 of 16 rows are cached; the same command goes on" in err, err
    assert not (tmp_path / "run" / "ckpt.pt").exists()
    calls.clear()
    stop_now = False
    err = ok(script("train_finetune.py", f"--dataset={split_photos}", *HYPER, "--max_steps=2", f"--out_dir={tmp_path / 'run'}"))
    assert "(8 rows to compute)" in err and sum(calls[:2]) == 8, (err, calls)  # only the missing rows (then validation's)
    key = __import__("json").loads((tmp_path / "run" / "features" / "manifest.json").read_text())["key"]
    assert features.FeatureCache(tmp_path / "run" / "features", 8, 2, 16, key).filled().all()


def test_a_cache_over_its_bound_is_one_line_before_any_photo(script, split_photos, tmp_path):
    code, err = script("train_finetune.py", f"--dataset={split_photos}", *HYPER, "--max_steps=2", f"--out_dir={tmp_path / 'run'}",
                       "--cache_gb=0.0001")
    assert code == 1 and "the feature cache would take 0.00 GB (8 photos x 2 views x 16 positions), over --cache_gb=0.0001" in err, err
    assert not (tmp_path / "run" / "features").exists()
    code, err = script("train_finetune.py", f"--dataset={split_photos}", *HYPER, "--max_steps=2", f"--out_dir={tmp_path / 'b'}",
                       "--loss=mse")
    assert code == 1 and "trains with --loss=classification" in err, err


def test_cache_dir_never_clears_the_users_folder_nor_the_dataset(script, split_photos, tmp_path):
    before = sorted(p.relative_to(split_photos) for p in split_photos.rglob("*"))
    for folder in (split_photos, split_photos / "train"):
        code, err = script("train_finetune.py", f"--dataset={split_photos}", *HYPER, "--max_steps=2",
                           f"--out_dir={tmp_path / 'run'}", f"--cache_dir={folder}")
        assert code == 1 and "files that are not a colorgan feature cache" in err and "Traceback" not in err, err
    assert sorted(p.relative_to(split_photos) for p in split_photos.rglob("*")) == before


def test_a_stale_cache_is_made_anew_when_a_photo_is_swapped(script, split_photos, tmp_path):
    run = [f"--dataset={split_photos}", *HYPER, "--max_steps=1", f"--out_dir={tmp_path / 'run'}"]
    ok(script("train_finetune.py", *run))
    photo = sorted((split_photos / "train").rglob("*.png"))[0]
    Image.open(sorted((split_photos / "train").rglob("*.png"))[1]).save(photo)  # another photo under its name
    err = ok(script("train_finetune.py", *run, "--overwrite=True"))
    assert "made from other photos" in err and "(16 rows to compute)" in err, err


def test_the_gan_stage_fine_tunes_the_hypercolumn_head_alone(script, split_photos, tmp_path, hypercolumn_weights):
    ok(script("train_gan.py", f"--dataset={split_photos}", f"--init={hypercolumn_weights}", *TINY, *GAN, "--max_steps=2",
              f"--out_dir={tmp_path / 'gan'}", "--perceptual_net=vgg16"))
    ckpt = weights.load_checkpoint(tmp_path / "gan" / "ckpt.pt")
    start = weights.load_checkpoint(hypercolumn_weights)
    assert set(ckpt["generator"]) == set(start)  # the head's keys alone: the frozen VGG16 is not saved
    assert not torch.equal(ckpt["generator"]["head.4.weight"], start["head.4.weight"])
    assert torch.equal(ckpt["generator"]["model_out.weight"], start["model_out.weight"])  # the bin centres stay


def test_a_resume_takes_the_learning_rate_it_is_given(script, split_photos, tmp_path):
    common = [f"--dataset={split_photos}", "--init=scratch", *TINY, f"--out_dir={tmp_path / 'run'}"]
    ok(script("train_finetune.py", *common, "--max_steps=2"))
    ok(script("train_finetune.py", *common, "--max_steps=3", "--resume=True", "--lr=3e-5"))
    assert weights.load_checkpoint(tmp_path / "run" / "ckpt.pt")["opt"]["param_groups"][0]["lr"] == 3e-5


def test_a_cached_row_is_the_models_features_and_the_truth_at_its_positions(split_photos, tmp_path):
    import contextlib

    import torch.nn.functional as F

    import data
    import features

    G = models.HypercolumnGenerator("random").eval()
    photos = data.make_dataset(str(split_photos), "train", 32, train=True, seed=5)
    cache = features.FeatureCache(tmp_path / "cache", len(photos), 2, 8, {"test": 1})
    features.fill(cache, G, photos, 5, 4, 0, torch.device("cpu"), contextlib.nullcontext, lambda bad: None,
                  lambda: False, show=False)
    for row in (0, 5, 11):  # photo row // 2 at view row % 2: its augmentation for that epoch
        photos.epoch = row % 2
        rgb, _, _ = photos[row // 2]
        L, ab = data.uint8_to_lab(rgb[None])
        with torch.no_grad():
            columns, scene = G.features(L)
        where = features.sample_positions(5, row % 2, row // 2, (8, 8), 8)
        assert torch.allclose(torch.from_numpy(cache.arrays["columns"][row].astype("float32")),
                              columns.flatten(2)[0][:, where].T, rtol=1e-2, atol=1e-2 * columns.abs().max())
        assert torch.allclose(torch.from_numpy(cache.arrays["ab"][row].astype("float32")),
                              F.avg_pool2d(ab, 4).flatten(2)[0][:, where].T, atol=0.05)
        assert torch.allclose(torch.from_numpy(cache.arrays["scene"][row].astype("float32")), scene[0], rtol=1e-2, atol=1e-3)
