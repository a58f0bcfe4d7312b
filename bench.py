"""Measure colorgan's speed beside the common baselines: python bench.py [--device=cpu|cuda] [--quick] [--sections=data,train,eval,infer]

1. data: training loader images/s (decode, augment, Lab on the device) vs per-image PIL + skimage.rgb2lab
2. train: GAN step images/s (G, D, VGG perceptual) across precision, channels_last, torch.compile; MFU on CUDA
3. eval: batched metrics images/s vs per-image scikit-image; FID features, LPIPS and the Frechet distance
4. inference: colorize.py on a 12-megapixel photo vs the release pipeline (whole processes, alternating)
5. folder: colorize.py's pipelined folder job (media.colorize_files) vs a one-at-a-time loop, and each stage's cost
6. video: a 640x360 clip through video.render vs a one-frame-at-a-time loop over the photo path; a stopped render
   resumed (the work redone)
7. runtime: each --runtime/--precision beside torch fp32: model latency at 256 (ECCV16, SIGGRAPH17, the hypercolumn
   model) and what each costs in colour (ab error, PSNR, colourfulness) on held-out photos
8. jobs: the folder and video jobs' throughput under each runtime and precision
9. size: the model at 224 and 192 instead of 256: latency and colour (the lever where no precision is faster)
10. reference: a reference photo's matching per photo beside the SIGGRAPH17 forward, and its once-per-job side
11. keyframes: clips panned over photos coloured from their true first frame: PSNR by frame, CDC, vs without it
12. samples: N sampled colourings beside one colorization
13. restore: restore.py on a damaged 12 MP photo beside colorize.py's colorization of it (whole processes), and each
    step's seconds

Every figure is for this CPU's class (printed first, and in the JSON): AVX2, AVX-512 VNNI, AVX512-BF16 or AMX differ
by 2-4x in what each runtime and precision gains. ONEDNN_MAX_CPU_ISA=AVX2 caps torch's and OpenVINO's kernels to an
older class on a newer CPU (runtimes.cpu_class then names the capped class).
"""

import atexit
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import configurator
import data
import hints as hint_files
import losses
import media
import metrics
import models
import reference as references
import runtime as runtimes
import training
import video
from data import ImageDataset, lab_to_rgb, load_image, uint8_to_lab

# -----------------------------------------------------------------------------
device = "auto"  # auto, cpu or cuda
quick = False  # small sizes and few repeats (CPU: a few minutes)
out = "bench.json"  # results file
photos = "../shared/data/imagenet-sample/images"  # JPEGs for the data, eval and inference benchmarks
weights = ""  # ECCV16 weights for inference ('' = random weights: the same compute)
siggraph_weights = ""  # SIGGRAPH17 weights for the runtime section ('' = random weights)
hypercolumn_weights = "colorgan"  # the hypercolumn model for the runtime, size and samples sections (colorgan: shipped)
calibration_images = runtimes.CALIBRATION_IMAGES  # runtime: int8 calibration photos (taken after the held-out ones)
reference_weights = "imagenet"  # reference, keyframes: the matching's VGG16 (imagenet: from pip; random: the same compute)
keyframe_frames = 120  # keyframes: the clips' length (ColorMNet asks about 100+ frames; 24 is a quick look)
num_workers = 2  # DataLoader workers for the data benchmark
sections = "data,train,eval,infer,folder,video,runtime,jobs,size,reference,keyframes,samples,restore"  # which benchmarks to run
# -----------------------------------------------------------------------------
config, _ = configurator.configure(globals())
device = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
on_cuda = device == "cuda"
cap = os.environ.get("ONEDNN_MAX_CPU_ISA", "")  # a CPU class emulated on a larger one: every kernel capped to it
results: dict = {"device": torch.cuda.get_device_name() if on_cuda else f"cpu ({os.cpu_count()} cores)", "torch": torch.__version__,
                 "cpu": runtimes.cpu_name(), "cpu_class": runtimes.cpu_class() + (f" (ONEDNN_MAX_CPU_ISA={cap})" if cap else ""),
                 "quick": quick}
print(f"bench.py: {results['device']}, {results['cpu']}, CPU class {results['cpu_class']}, torch {torch.__version__}", flush=True)


def sync() -> None:
    if on_cuda:
        torch.cuda.synchronize()


def median_time(fn, repeats: int, warmup: int = 1) -> float:
    """Median wall time of fn() after warm-up."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        sync()
        t = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def report(section: str, name: str, value: float, unit: str) -> None:
    results.setdefault(section, {})[name] = round(float(value), 3)
    print(f"{section:>9}  {name:<44} {value:10.2f} {unit}", flush=True)


files = sorted(p for p in Path(photos).iterdir() if p.suffix.lower() in (".jpg", ".jpeg")) if Path(photos).is_dir() else []
tmp = Path(tempfile.mkdtemp(prefix="colorgan-bench-"))
atexit.register(shutil.rmtree, tmp, ignore_errors=True)  # ~200 MB of outputs and clips: gone however the run ends
if not files:  # a fresh clone has no ../shared: synthetic JPEGs of the same size
    print(f"bench.py: no JPEGs in --photos={photos}; using 64 synthetic 341x256 photos (figures are not comparable to the "
          "README's)", file=sys.stderr)
    rng = np.random.default_rng(0)
    for i in range(64):
        y, x = np.mgrid[0:256, 0:341] / 256
        img = np.stack([np.sin(5 * x + i), np.cos(4 * y + i), np.sin(3 * (x + y))], -1) * 100 + 128 + rng.normal(0, 20, (256, 341, 3))
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(tmp / f"{i}.jpg", quality=90)
    files = sorted(tmp.glob("*.jpg"))
n_data = 256 if quick else 1024

# ----------------------------------------------------------------------------- 1. data


def skimage_item(path) -> torch.Tensor:
    """The common per-image path: PIL resize, then scikit-image's float64 Lab."""
    from skimage import color

    img = Image.open(path).convert("RGB").resize((256, 256), Image.BICUBIC)
    return torch.from_numpy(color.rgb2lab(np.asarray(img))).permute(2, 0, 1).float()


class SkimageDataset(torch.utils.data.Dataset):
    def __len__(self):
        return n_data

    def __getitem__(self, i):
        return skimage_item(files[i % len(files)])


def loader_rate(dataset, to_lab: bool) -> float:
    loader = torch.utils.data.DataLoader(dataset, 16, num_workers=num_workers, persistent_workers=num_workers > 0)

    def run():
        for batch in loader:
            batch = batch[0] if isinstance(batch, list) else batch
            if to_lab:
                uint8_to_lab(batch.to(device))
        sync()

    return n_data / median_time(run, 1 if quick else 3)  # the warm-up pass starts the workers


def bench_data() -> None:
    """1. data: the training loader vs the per-image scikit-image path."""
    ours = ImageDataset([(str(files[i % len(files)]), 0) for i in range(n_data)], [], 256, train=True)
    report("data", "colorgan loader (decode+augment+Lab on device)", loader_rate(ours, True), "img/s")
    report("data", "per-image PIL + skimage.rgb2lab", loader_rate(SkimageDataset(), False), "img/s")
    # what one CPU core spends per image; with a GPU doing the Lab step, this is what bounds the loader
    report("data", "worker ms/img, colorgan (decode+augment)", 1000 * median_time(lambda: [ours[i] for i in range(64)], 3) / 64, "ms")
    report("data", "worker ms/img, PIL + skimage.rgb2lab", 1000 * median_time(lambda: [skimage_item(files[i]) for i in range(64)], 3) / 64, "ms")
    lab_batch = torch.randint(0, 256, (16, 3, 256, 256), dtype=torch.uint8, device=device)
    report("data", f"Lab on {device} ms/img (batched uint8_to_lab)", 1000 * median_time(lambda: uint8_to_lab(lab_batch), 5) / 16, "ms")


# ----------------------------------------------------------------------------- 2. training step


def bench_train() -> None:
    """2. training: the GAN step across precision, memory format and torch.compile."""
    size, batch = (128, 4) if quick and not on_cuda else (256, 16)
    G, D = models.ECCV16Generator().to(device).train(), models.PatchDiscriminator().to(device)
    vgg = models.VGGFeatures("random").to(device)
    opt_G = training.adam(G.parameters(), 2e-4, (0.5, 0.999))
    opt_D = training.adam(D.parameters(), 1e-4, (0.5, 0.999))
    G_ema = models.ECCV16Generator().to(device).eval().requires_grad_(False)

    def autocast(dtype):
        """Mixed precision in dtype; None is plain fp32."""
        return torch.autocast(device if on_cuda else "cpu", dtype=dtype or torch.float32, enabled=dtype is not None)

    def gan_step(rgb: torch.Tensor, Gm, Dm, dtype) -> None:
        """train_gan.py's step (training.gan_step with its defaults) on a uint8 batch, Lab included."""
        L, ab = uint8_to_lab(rgb)
        training.gan_step(Gm, Dm, Dm, opt_G, opt_D, L, ab, gan_mode="vanilla", lambda_l1=10.0, lambda_perceptual=10.0, vgg=vgg,
                          ema=(G_ema, G, 0.999), autocast=lambda: autocast(dtype))

    def model_work(L: torch.Tensor, ab: torch.Tensor, Gm, Dm, dtype) -> None:
        """The step's model work alone (G, D twice, VGG twice, forward and backward) on the same tensors; no Lab,
        losses or optimiser: step time minus this is the share spent outside the models."""
        with autocast(dtype):
            fake = Gm(L)
            Dm(torch.cat([L, L]), torch.cat([ab, fake.detach()])).float().sum().backward()
            with torch.no_grad():
                vgg(torch.cat([L, ab], 1))
            (Dm(L, fake).float().sum() + vgg(torch.cat([L, fake], 1)).float().sum()).backward()

    rgb = torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8, device=device)
    L_bench, ab_bench = uint8_to_lab(rgb)
    variants = [("fp32", None, False, False)]
    if on_cuda:
        variants += [("bf16", torch.bfloat16, False, False), ("bf16 channels_last", torch.bfloat16, True, False),
                     ("bf16 channels_last compile", torch.bfloat16, True, True)]
    elif not quick:
        variants += [("bf16", torch.bfloat16, False, False), ("fp32 channels_last", None, True, False)]
    for name, dtype, cl, comp in variants:
        fmt = torch.channels_last if cl else torch.contiguous_format
        G.to(memory_format=fmt), D.to(memory_format=fmt)
        Gm, Dm = (torch.compile(G), torch.compile(D)) if comp else (G, D)
        t = median_time(lambda: gan_step(rgb, Gm, Dm, dtype), 2 if quick else 5, warmup=2 if comp else 1)
        report("train", f"GAN step {size}px batch {batch} {name}", batch / t, "img/s")
        if on_cuda:  # on a CPU the models are all of it, and the difference is noise
            t_models = median_time(lambda: model_work(L_bench, ab_bench, Gm, Dm, dtype), 5, warmup=2 if comp else 1)
            report("train", f"  share of the step outside the models, {name}", max(0.0, 1 - t_models / t), "")
    if on_cuda:  # the largest power-of-two batch that fits, bf16 channels_last
        biggest = batch
        while biggest < 1024:
            try:
                gan_step(torch.randint(0, 256, (2 * biggest, 3, size, size), dtype=torch.uint8, device=device), G, D, torch.bfloat16)
                biggest *= 2
            except torch.OutOfMemoryError:
                break
        opt_G.zero_grad(set_to_none=True), opt_D.zero_grad(set_to_none=True), torch.cuda.empty_cache()
        rgb_big = torch.randint(0, 256, (biggest, 3, size, size), dtype=torch.uint8, device=device)
        t = median_time(lambda: gan_step(rgb_big, G, D, torch.bfloat16), 5)
        report("train", f"GAN step {size}px batch {biggest} (largest) bf16 channels_last", biggest / t, "img/s")
        del rgb_big
        G.to(memory_format=torch.contiguous_format), D.to(memory_format=torch.contiguous_format)

        from torch.utils.flop_counter import FlopCounterMode

        with FlopCounterMode(display=False) as counter:
            gan_step(rgb, G, D, torch.bfloat16)
        t = median_time(lambda: gan_step(rgb, G, D, torch.bfloat16), 5)
        peak = 989e12 if "H100" in results["device"] else float("nan")  # dense bf16 peak of an H100 SXM
        report("train", "model TFLOP/s (bf16)", counter.get_total_flops() / t / 1e12, "TFLOP/s")
        report("train", "MFU vs dense bf16 peak", counter.get_total_flops() / t / peak, "")


# ----------------------------------------------------------------------------- 3. evaluation metrics


def bench_eval() -> None:
    """3. evaluation: batched metrics vs per-image scikit-image."""
    from skimage import color
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    n_eval = 32 if quick else 128
    gt = torch.stack([torch.from_numpy(np.array(load_image(files[i % len(files)]).resize((256, 256), Image.BICUBIC))).permute(2, 0, 1)
                      for i in range(n_eval)]).to(device)
    L, ab = uint8_to_lab(gt)
    pred_ab = ab * 0.5

    def batched_metrics():
        for i in range(0, n_eval, 32):
            losses.image_metrics(L[i:i + 32], ab[i:i + 32], pred_ab[i:i + 32])

    def skimage_metrics():
        for i in range(n_eval):
            truth = gt[i].permute(1, 2, 0).cpu().numpy() / 255
            lab = color.rgb2lab(truth)
            lab[..., 1:] *= 0.5
            pred = color.lab2rgb(lab)
            peak_signal_noise_ratio(truth, pred, data_range=1)
            structural_similarity(truth, pred, channel_axis=-1, data_range=1.0)

    with torch.no_grad():
        report("eval", "batched torch metrics", n_eval / median_time(batched_metrics, 3), "img/s")
    report("eval", "per-image scikit-image", n_eval / median_time(skimage_metrics, 1 if quick else 3), "img/s")

    # the learned metrics evaluate.py adds, with seeded random weights (the same compute as the downloaded ones)
    rgb_true, rgb_pred = (lab_to_rgb(torch.cat([L, x], 1)) for x in (ab, pred_ab))
    nets = metrics.fid_networks("both", "random", device)
    stats = metrics.fid_statistics(nets, 1, device)
    lpips_net = metrics.lpips_network("alex", "random", device)

    def fid_features():
        for i in range(0, n_eval, 32):
            metrics.update_fid(nets, stats, rgb_true[i:i + 32], [rgb_pred[i:i + 32]])

    def lpips_all():
        for i in range(0, n_eval, 32):
            metrics.lpips(lpips_net, rgb_pred[i:i + 32], rgb_true[i:i + 32])

    report("eval", "FID features: both Inceptions, truth + 1 model", n_eval / median_time(fid_features, 1), "img/s")
    report("eval", "LPIPS (alex)", n_eval / median_time(lpips_all, 3), "img/s")
    def frechet():
        metrics.compute_fid({"fid": stats["fid"]})

    report("eval", "Frechet distance, 2048-d, one model", median_time(frechet, 1, warmup=0), "s")  # once: torchmetrics caches it


# ----------------------------------------------------------------------------- 4. inference on 12 MP

RELEASE = """
import sys, numpy as np, torch, torch.nn.functional as F
from PIL import Image
from skimage import color
sys.path.insert(0, sys.argv[4])
import models
import training
G = models.ECCV16Generator(); G.load_state_dict(models._release_state(torch.load(sys.argv[3], weights_only=True))); G.eval()
img = np.asarray(Image.open(sys.argv[1]).convert("RGB"))
small = np.asarray(Image.fromarray(img).resize((256, 256), Image.BICUBIC))
L_orig = torch.Tensor(color.rgb2lab(img)[:, :, 0])[None, None]
L_small = torch.Tensor(color.rgb2lab(small)[:, :, 0])[None, None]
with torch.no_grad():
    ab = F.interpolate(G(L_small), size=img.shape[:2], mode="bilinear")
out = color.lab2rgb(torch.cat([L_orig, ab], 1)[0].permute(1, 2, 0).numpy())
Image.fromarray((out * 255).round().astype(np.uint8)).save(sys.argv[2])
"""


def whole_process(cmd: list[str]) -> tuple[float, float]:
    """Wall seconds and peak resident MiB of one process (its own VmHWM: wait4's maxrss counts the forking parent)."""
    t = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak = 0.0
    while p.poll() is None:
        try:
            status = Path(f"/proc/{p.pid}/status").read_text()
            peak = max(peak, int(status.split("VmHWM:")[1].split()[0]) / 1024)
        except (OSError, IndexError):
            pass
        time.sleep(0.02)
    if p.returncode:
        raise SystemExit(f"bench.py: {' '.join(cmd[:3])} failed: {p.stderr.read().decode()[-500:]}")
    return time.perf_counter() - t, peak


def bench_infer() -> None:
    """4. inference: colorize.py vs the release pipeline on a 12 MP photo, whole processes."""
    big = tmp / "twelve_mp.jpg"
    base = load_image(files[0]).resize((4000, 3000), Image.BICUBIC)
    base.save(big, quality=90)
    release_weights = weights or str(tmp / "random-release.pth")
    if not weights:
        torch.save(models.ECCV16Generator().state_dict(), release_weights)
    root = str(Path(__file__).resolve().parent)
    ours_cmd = [sys.executable, f"{root}/colorize.py", str(big), str(tmp / "ours.png"), f"--ckpt={release_weights}", f"--device={device}",
                "--overwrite=True", "--runtime=torch", "--precision=fp32"]  # the exact path, as the release computes
    release_cmd = [sys.executable, "-c", RELEASE, str(big), str(tmp / "release.png"), release_weights, root]
    runs = {"ours": [], "release": []}
    for _ in range(2 if quick else 5):  # alternate, so drift hits both alike
        runs["ours"].append(whole_process(ours_cmd))
        runs["release"].append(whole_process(release_cmd))
    for name, label in (("ours", "colorize.py"), ("release", "release pipeline (skimage float64)")):
        report("infer", f"{label} 12 MP seconds", statistics.median(r[0] for r in runs[name]), "s")
        report("infer", f"{label} 12 MP peak RSS", statistics.median(r[1] for r in runs[name]), "MiB")
    speedup = statistics.median(r[0] for r in runs["release"]) / statistics.median(r[0] for r in runs["ours"])
    report("infer", "speed-up of colorize.py (release / ours)", speedup, "x")
    memory = statistics.median(r[1] for r in runs["ours"]) / statistics.median(r[1] for r in runs["release"])
    report("infer", "peak RSS of colorize.py / release", memory, "x")
    diff = np.abs(np.asarray(Image.open(tmp / "ours.png"), dtype=int) - np.asarray(Image.open(tmp / "release.png"), dtype=int))
    report("infer", "pixel difference mean", diff.mean(), "levels")
    report("infer", "pixel difference 99.9th percentile", np.percentile(diff, 99.9), "levels")
    report("infer", "pixel difference max", diff.max(), "levels")


def folder_photos(n: int) -> list[Path]:
    """n JPEGs of 1 to 12 MP (the photos upscaled), as an archive holds."""
    d = tmp / "folder"
    d.mkdir(exist_ok=True)
    paths = []
    for i in range(n):
        mp = 1 + 11 * i / max(1, n - 1)
        w = int((mp * 1e6 * 4 / 3) ** 0.5)
        load_image(files[i % len(files)]).resize((w, w * 3 // 4), Image.BICUBIC).save(d / f"{i}.jpg", quality=90)
        paths.append(d / f"{i}.jpg")
    return paths


def bench_folder() -> None:
    """5. a folder of photos: the pipelined job vs the one-at-a-time loop, the same pixels; each stage's CPU seconds."""
    G = models.load_generator(weights or "scratch", device)
    paths = folder_photos(16 if quick else 64)
    megapixels = sum(Image.open(p).width * Image.open(p).height for p in paths) / 1e6

    def serial(out_dir: Path) -> None:
        out_dir.mkdir(exist_ok=True)
        for p in paths:
            img = load_image(p, keep_alpha=True)
            media.save(models.colorize(G, img), out_dir / p.name, media.metadata(img))

    def pipelined(out_dir: Path, workers: int) -> None:
        for _, _, error in media.colorize_files(G, [(p, out_dir / p.name) for p in paths], workers=workers):
            assert error is None, error

    rates = {}
    for name, fn in (("one at a time", lambda: serial(tmp / "serial")), ("pipeline, 1 worker", lambda: pipelined(tmp / "w1", 1)),
                     ("pipeline, 2 workers", lambda: pipelined(tmp / "w2", 2))):
        sync()
        t = time.perf_counter()
        fn()
        sync()
        rates[name] = len(paths) / (time.perf_counter() - t)
        report("folder", f"{name}: photos/s ({megapixels / len(paths):.1f} MP mean)", rates[name], "photos/s")
    report("folder", "pipeline (2 workers) / one at a time", rates["pipeline, 2 workers"] / rates["one at a time"], "x")
    same = all(np.array_equal(np.asarray(Image.open(tmp / "serial" / p.name)), np.asarray(Image.open(tmp / "w2" / p.name)))
               for p in paths)
    report("folder", "outputs identical to the loop's (1 = yes)", same, "")
    stages = {"decode": [], "resize": [], "model": [], "full-resolution colour": [], "encode": []}
    for p in paths[:: max(1, len(paths) // 8)]:
        t = [time.process_time()]
        img = load_image(p)
        t.append(time.process_time())
        small = models.small_copy(img)
        t.append(time.process_time())
        ab = models.predict_ab(G, small[None])[0]
        sync()
        t.append(time.process_time())
        out_img = models.paint(img, ab)
        t.append(time.process_time())
        media.save(out_img, tmp / "stage.jpg", media.metadata(img))
        t.append(time.process_time())
        for k, name in enumerate(stages):
            stages[name].append(t[k + 1] - t[k])
    for name, seconds in stages.items():
        report("folder", f"CPU seconds per photo: {name}", statistics.mean(seconds), "s")


def make_clip(frames: int) -> Path:
    """A 640x360 H.264 clip: two still scenes with film grain, a cut half way."""
    import av

    clip = tmp / f"clip{frames}.mp4"
    scenes = [np.asarray(load_image(f).resize((640, 360), Image.BICUBIC)).astype(float) for f in files[:2]]
    rng = np.random.default_rng(0)
    with av.open(str(clip), "w") as c:
        s = c.add_stream("libx264", rate=24)
        s.width, s.height, s.pix_fmt = 640, 360, "yuv420p"
        for i in range(frames):
            img = np.clip(scenes[i >= frames // 2] + rng.normal(0, 4, scenes[0].shape), 0, 255).astype(np.uint8)
            c.mux(s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
        c.mux(s.encode())
    return clip


def bench_video() -> None:
    """6. a 640x360 clip: video.render (threads, scene-aligned batches, filter, pieces joined) vs a frame-at-a-time loop
    over the photo path; and a render stopped half way, then resumed: the frames colorized again."""
    import av

    G = models.load_generator(weights or "scratch", device)
    frames = 24 if quick else 96
    clip = make_clip(frames)

    def loop() -> None:  # the photo path, one frame at a time, into an encoder
        with av.open(str(clip)) as inp, av.open(str(tmp / "loop.mp4"), "w") as out:
            s = out.add_stream("libx264", rate=24, options={"crf": "18"})
            s.width, s.height, s.pix_fmt = 640, 360, "yuv420p"
            for f in inp.decode(video=0):
                rgb = models.colorize(G, f.to_image())
                out.mux(s.encode(av.VideoFrame.from_ndarray(np.asarray(rgb), format="rgb24")))
            out.mux(s.encode())

    rates = {}
    for name, fn in (("one frame at a time", loop), ("render", lambda: video.render(G, clip, tmp / "ours.mp4", progress=False))):
        t = time.perf_counter()
        fn()
        rates[name] = frames / (time.perf_counter() - t)
        report("video", f"{name}: frames/s (640x360)", rates[name], "frames/s")
    report("video", "render / one frame at a time", rates["render"] / rates["one frame at a time"], "x")
    video.render(G, clip, tmp / "raw.mp4", temporal=0, progress=False)
    filtered, raw = video.read_frames(tmp / "ours.mp4")[0], video.read_frames(tmp / "raw.mp4")[0]
    half = frames // 2
    for name, out_frames in (("frame by frame", raw), ("filter on (default)", filtered)):
        still = [video.flicker(part, still=2.0) for part in (out_frames[:half], out_frames[half:])]
        report("video", f"flicker |ab_t - ab_t-1|, {name}", statistics.mean(s[0] for s in still), "Lab")
        report("video", f"flicker where the gray input is still, {name}", statistics.mean(s[1] for s in still), "Lab")
    for name, k in (("first frame", 0), ("first frame after the cut", half)):
        report("video", f"{name}: filter on vs frame by frame", np.abs(filtered[k].astype(int) - raw[k].astype(int)).mean(), "levels")
    # a render stopped by a crash a few frames into its second scene, then the same command: the frames colorized again
    stopped, colorized = tmp / "stopped.mp4", []
    predict = models.predict_ab

    def crash_at(G_, small, *a, **k):
        colorized.append(len(small))
        if sum(colorized) > half + 4:
            raise KeyboardInterrupt
        return predict(G_, small, *a, **k)

    models.predict_ab = crash_at
    try:
        video.render(G, clip, stopped, progress=False)
    except KeyboardInterrupt:
        pass
    models.predict_ab = predict
    done_before = sum(colorized)
    again = video.render(G, clip, stopped, progress=False)
    report("video", f"resumed after a stop {done_before - half} frames into scene 2 of 2: frames colorized again", again, "frames")
    report("video", "resumed render vs uninterrupted: largest pixel difference",
           max(np.abs(a.astype(int) - b.astype(int)).max() for a, b in zip(video.read_frames(stopped)[0], filtered)), "levels")


COMBOS = [("torch", "fp32"), ("torch", "bf16"), ("openvino", "fp32"), ("openvino", "bf16"), ("openvino", "int8")]


def MODELS() -> list[tuple[str, str]]:
    """(architecture, weights) of the three models the runtime and size sections time in the same run."""
    return [("eccv16", weights), ("siggraph17", siggraph_weights), ("hypercolumn", hypercolumn_weights)]


def held_out_split() -> tuple[list[Path], list[Path]]:
    """--photos as the training scripts split a folder without a validation split: (every 20th, the rest), so that a
    model trained here with --dataset=--photos is measured on photos it never saw, and int8 calibrates on others."""
    held = [f for i, f in enumerate(files) if i % data.HELD_OUT_EVERY == data.HELD_OUT_EVERY - 1]
    return held, [f for f in files if f not in held]


def bench_runtime() -> None:
    """7. each runtime and precision beside torch fp32 (the exact path), in one run: latency and colour cost."""
    os.environ["COLORGAN_CACHE"] = str(tmp / "cache")  # a fresh cache: first starts are first starts
    held_out, rest = held_out_split()
    held_out, calib = held_out[:48], rest[:calibration_images]
    truth = torch.stack([models.small_copy(load_image(p)) for p in held_out])
    L, ab = uint8_to_lab(truth)
    rgb_true = lab_to_rgb(torch.cat([L, ab], 1))
    given = hint_files.sweep(ab, 10, list(range(len(held_out))))
    for arch, spec in MODELS():
        G = models.load_generator(spec or "scratch", arch=arch)
        with torch.no_grad():
            exact = {n: G(L, given if n else None) for n in ((0, 10) if G.takes_hints else (0,))}
        base, speed = {}, {}
        for rt, precision in COMBOS:
            if runtimes.check(rt, precision, fallback=True) != precision:
                continue
            name = f"{arch} {rt} {precision}"
            t = time.perf_counter()
            g = runtimes.prepare(G, rt, precision, 256, calib, calibration_images)
            report("runtime", f"{name}: first start (convert, calibrate, compile)", time.perf_counter() - t, "s")
            t = time.perf_counter()
            g = runtimes.prepare(G, rt, precision, 256, calib, calibration_images)
            report("runtime", f"{name}: next start (from the cache)", time.perf_counter() - t, "s")
            with torch.no_grad():
                ms = 1000 * median_time(lambda: g(L[:1], given[:1] if G.takes_hints else None), 8, warmup=2)
                base.setdefault("ms", ms)
                speed[rt, precision] = ms
                report("runtime", f"{name}: 256x256 batch 1", ms, "ms")
                report("runtime", f"{name}: speed-up vs torch fp32", base["ms"] / ms, "x")
                for n, ref in exact.items():
                    pred = torch.cat([g(L[i:i + 8], given[i:i + 8] if n else None) for i in range(0, len(L), 8)])
                    err = (pred - ref).abs().flatten()
                    rgb = lab_to_rgb(torch.cat([L, pred], 1))
                    psnr = losses.psnr(rgb, rgb_true).mean().item()
                    dcf = abs(losses.colorfulness(rgb).mean().item() - losses.colorfulness(rgb_true).mean().item())
                    base.setdefault(n, (psnr, dcf))
                    tag = f"{name}{f', {n} hints' if G.takes_hints else ''}"
                    report("runtime", f"{tag}: ab error vs fp32, mean", err.mean(), "Lab")
                    report("runtime", f"{tag}: ab error vs fp32, 99.9th pct", err.quantile(0.999), "Lab")
                    report("runtime", f"{tag}: PSNR change vs fp32", psnr - base[n][0], "dB")
                    report("runtime", f"{tag}: delta-CF change vs fp32", dcf - base[n][1], "")
        chosen = runtimes.choose("auto", "auto")[:2]  # what colorize.py and the app run here without a flag
        report("runtime", f"{arch} auto = {' '.join(chosen)}: speed-up vs torch fp32", base["ms"] / speed[chosen], "x")


def bench_size() -> None:
    """9. the model at 224 or 192 instead of 256 (torch fp32, batch 1; the lever on a CPU with no faster precision):
    latency, and the colour against 256's and against the truth on held-out photos (ab upsampled as colorize.py does)."""
    held_out = held_out_split()[0][:48]
    truth = torch.stack([models.small_copy(load_image(p)) for p in held_out])
    L, ab = uint8_to_lab(truth)
    rgb_true = lab_to_rgb(torch.cat([L, ab], 1))
    for arch, spec in MODELS():
        G = models.load_generator(spec or "scratch", arch=arch)
        full = None
        for size in (256, 224, 192):
            small = torch.nn.functional.interpolate(truth.float(), size=(size, size), mode="bilinear", antialias=True,
                                                    align_corners=False).round().clamp(0, 255).to(torch.uint8)
            L_small = data.uint8_to_l(small)
            with torch.no_grad():
                ms = 1000 * median_time(lambda: G(L_small[:1]), 8, warmup=2)
                pred = torch.cat([G(L_small[i:i + 8]) for i in range(0, len(L), 8)])
            pred = torch.nn.functional.interpolate(pred, size=(256, 256), mode="bilinear", align_corners=False)
            rgb = lab_to_rgb(torch.cat([L, pred], 1))
            full = full if full is not None else (ms, pred, losses.psnr(rgb, rgb_true).mean().item(),
                                                 losses.colorfulness(rgb).mean().item())
            name = f"{arch} torch fp32 at {size}x{size}"
            report("size", f"{name}: batch 1", ms, "ms")
            report("size", f"{name}: speed-up vs 256", full[0] / ms, "x")
            report("size", f"{name}: ab error vs 256's, mean", (pred - full[1]).abs().mean(), "Lab")
            report("size", f"{name}: PSNR change vs 256", losses.psnr(rgb, rgb_true).mean().item() - full[2], "dB")
            report("size", f"{name}: colourfulness change vs 256", losses.colorfulness(rgb).mean().item() - full[3], "")


def bench_reference() -> None:
    """10. a reference photo's cost per photo at 256 (VGG16 features, the warp, the hint rule) beside the SIGGRAPH17
    forward it serves, and the reference's own side, paid once per job; then how well the matching finds content:
    held-out photos matched against their own self-reference (evaluate.py's: mirrored, cropped, shifted), the warped
    ab against the truth where the confidence reaches the threshold, ImageNet VGG16 beside random weights."""
    G = models.load_generator(siggraph_weights or "scratch", arch="siggraph17")
    matcher = references.Matcher(reference_weights)
    photo = load_image(files[0])
    L = data.uint8_to_l(models.small_copy(photo)[None])
    ref = references.load(files[1])
    with torch.no_grad():
        model = 1000 * median_time(lambda: G(L, torch.zeros(1, 3, 256, 256)), 5, warmup=1)
        once = 1000 * median_time(lambda: matcher.features(ref.L), 5, warmup=1)
        ref.features = matcher.features(ref.L)
        per_photo = 1000 * median_time(lambda: references.points(matcher, ref, L, *photo.size), 5, warmup=1)
    report("reference", "SIGGRAPH17 forward, 256x256 batch 1", model, "ms")
    report("reference", "matching per photo (features, warp, hint rule)", per_photo, "ms")
    report("reference", "matching per photo / forward", per_photo / model, "x")
    report("reference", "the reference's features, once per job", once, "ms")
    held_out = held_out_split()[0][:16 if quick else 48]
    for source in ("imagenet", "random"):
        m = references.Matcher(source)
        errors, coverage = [], []
        for i, p in enumerate(held_out):
            truth = models.small_copy(load_image(p))
            Lp, ab = uint8_to_lab(truth[None])
            own = references.Reference("self", *uint8_to_lab(references.self_reference(truth, i)[None]))
            with torch.no_grad():
                warped, conf = m.warp(m.features(Lp), m.features(own.L), own.ab)
            sure = conf[0] >= references.THRESHOLD
            coverage.append(sure.float().mean().item())
            if sure.any():
                errors.append((warped[0] - torch.nn.functional.avg_pool2d(ab, references.GRID)[0]).norm(dim=0)[sure].median().item())
        report("reference", f"{source} VGG16: self-reference warp error where confident, median", statistics.mean(errors), "Lab")
        report("reference", f"{source} VGG16: share of positions confident", statistics.mean(coverage), "")


def panning_clip(photo: Path, frames: int, size: int = 256) -> Path:
    """A colour clip made from one photo: a window of 70% of its height panning across it and zooming in by a tenth,
    as a slow camera move (H.264, crf 12, 24 fps)."""
    import av

    img = load_image(photo)
    clip = tmp / f"pan-{photo.stem}-{frames}.mp4"
    with av.open(str(clip), "w") as c:
        s = c.add_stream("libx264", rate=24)
        s.width, s.height, s.pix_fmt, s.options = size, size, "yuv420p", {"crf": "12"}
        for i in range(frames):
            f = i / max(1, frames - 1)
            side = img.height * 0.7 * (1 - 0.1 * f)
            x, y = f * (img.width - side), (img.height - side) / 2
            frame = img.resize((size, size), Image.BICUBIC, box=(x, y, x + side, y + side))
            c.mux(s.encode(av.VideoFrame.from_ndarray(np.asarray(frame), format="rgb24")))
        c.mux(s.encode())
    return clip


def cdc(frames: list[np.ndarray], d: int) -> float:
    """Colour distribution consistency (ColorMNet's evaluation): the mean Jensen-Shannon divergence of each RGB channel's
    256-bin histogram between frames t and t + d."""
    from scipy.spatial.distance import jensenshannon

    hist = [[np.bincount(f[..., c].ravel(), minlength=256) / f[..., c].size for c in range(3)] for f in frames]
    return float(np.mean([jensenshannon(a[c], b[c], base=2) ** 2 for a, b in zip(hist, hist[d:]) for c in range(3)]))


def bench_keyframes() -> None:
    """11. a film coloured from its first frame (ColorMNet's protocol): colour clips panned over held-out photos, their
    true first frame the keyframe's reference; PSNR by frame index and CDC, beside each frame on its own and the
    temporal filter alone (SIGGRAPH17, --siggraph_weights; the matching's VGG16 from --reference_weights); clips of
    --keyframe_frames frames, at 128x128 with --quick."""
    import keyframes as keyframe_files

    G = models.load_generator(siggraph_weights or "scratch", arch="siggraph17")
    n, size = keyframe_frames, 128 if quick else 256
    runs = {"each frame on its own": {}, "temporal filter (default)": {}, "keyframe + filter": {}}
    for photo in held_out_split()[0][:1 if quick else 3]:
        clip = panning_clip(photo, n, size)
        truth = video.read_frames(clip)[0]
        key = tmp / "key.png"
        Image.fromarray(truth[0]).save(key)
        guide = references.Guide(references.Matcher(reference_weights), size=size)
        for name, out in runs.items():
            follow = keyframe_files.Follow((hint_files.Keyframe(0, None, hint_files.Hints("bench", reference=key)),), guide) \
                if name.startswith("keyframe") else None
            t = time.perf_counter()
            video.render(G, clip, tmp / "out.mp4", size=size, temporal=0 if name.startswith("each") else 0.6, progress=False,
                         follow=follow)
            out.setdefault("s", []).append(time.perf_counter() - t)
            got = video.read_frames(tmp / "out.mp4")[0]
            psnr = [losses.psnr(torch.from_numpy(a).permute(2, 0, 1)[None].float() / 255,
                                torch.from_numpy(b).permute(2, 0, 1)[None].float() / 255).item() for a, b in zip(got, truth)]
            out.setdefault("psnr", []).append(psnr)
            for d in (1, 2, 4):
                out.setdefault(f"cdc{d}", []).append(cdc(got, d))
    for name, out in runs.items():
        psnr = np.mean(out["psnr"], 0)
        for i in sorted({1, n // 4, n // 2, 3 * n // 4, n - 1}):
            report("keyframes", f"{name}: PSNR at frame {i}", psnr[i], "dB")
        report("keyframes", f"{name}: PSNR, mean of {n} frames", psnr.mean(), "dB")
        for d in (1, 2, 4):
            report("keyframes", f"{name}: CDC x 1000, d={d}", 1000 * np.mean(out[f"cdc{d}"]), "")
        report("keyframes", f"{name}: frames/s", n / np.mean(out["s"]), "frames/s")


def bench_jobs() -> None:
    """8. the jobs under each runtime and precision (ECCV16, --weights): a folder of 1-12 MP photos, a clip."""
    os.environ["COLORGAN_CACHE"] = str(tmp / "cache")
    calib = held_out_split()[1][:calibration_images]
    G = models.load_generator(weights or "scratch")
    paths = folder_photos(16)
    clip = make_clip(24 if quick else 96)
    rates = {}
    for rt, precision in COMBOS:
        if runtimes.check(rt, precision, fallback=True) != precision:
            continue
        g = runtimes.prepare(G, rt, precision, 256, calib, calibration_images)
        threads = runtimes.share_cores(rt, 2)  # as colorize.py does (2 workers)
        out_dir = tmp / f"rt-{rt}-{precision}"
        t = time.perf_counter()
        written = sum(error is None for _, error in media.colorize_files(g, [media.Job(p, out_dir / p.name) for p in paths]))
        folder_rate = written / (time.perf_counter() - t)
        torch.set_num_threads(threads)  # as colorize.py does: a video paints in one thread, with torch's
        t = time.perf_counter()
        video.render(g, clip, tmp / f"rt-{rt}-{precision}.mp4", progress=False)
        video_rate = (24 if quick else 96) / (time.perf_counter() - t)
        rates.setdefault("base", (folder_rate, video_rate))
        report("jobs", f"folder {rt} {precision}: photos/s (16 of 1-12 MP)", folder_rate, "photos/s")
        report("jobs", f"folder {rt} {precision}: vs torch fp32", folder_rate / rates["base"][0], "x")
        report("jobs", f"video {rt} {precision}: frames/s (640x360)", video_rate, "frames/s")
        report("jobs", f"video {rt} {precision}: vs torch fp32", video_rate / rates["base"][1], "x")


def bench_samples() -> None:
    """12. N sampled colourings of a 6.9 MP photo beside one colorization (the hypercolumn model, torch): the model once,
    each sample a softmax of its noisy logits and a full-resolution painting."""
    import sampling

    G = models.load_generator(hypercolumn_weights or "scratch", arch="hypercolumn")
    photo = load_image(folder_photos(16)[8])
    small = models.small_copy(photo)[None]
    with torch.no_grad():
        one = median_time(lambda: models.paint(photo, models.predict_ab(G, small)[0]), 3, warmup=1)
        for n in (4, 8):
            t = median_time(lambda: [models.paint(photo, ab) for ab in sampling.sample_ab(G, small, n, 0)[0]], 3, warmup=1)
            report("samples", f"{n} samples of a {photo.width * photo.height / 1e6:.1f} MP photo / one colorization", t / one, "x")
        forward = median_time(lambda: models.predict_ab(G, small), 3, warmup=1)
        draw = median_time(lambda: sampling.sample_ab(G, small, 8, 0), 3, warmup=1) - forward
    report("samples", "one colorization (model and painting)", one, "s")
    report("samples", "drawing 8 samples beyond the forward (at 256)", draw, "s")


def bench_restore() -> None:
    """13. restore.py on a damaged 12 MP photo (scratches, cracks, dust, grain, fading: every step runs) beside
    colorize.py's colorization of the same photo, whole processes alternating; then each step in this process."""
    import damage
    import restoration

    big = tmp / "old_twelve_mp.png"
    clean = restoration.gray_of(load_image(files[0]).resize((4000, 3000), Image.BICUBIC))
    hurt = damage.damage(clean, np.random.default_rng(0), scratches=(4, 4), cracks=(2, 2), specks=1.0, grain=(6 / 255, 6 / 255), fading=1.0)
    Image.fromarray((hurt.gray * 255).round().astype(np.uint8)).save(big)
    root = str(Path(__file__).resolve().parent)
    cmds = {"restore": [sys.executable, f"{root}/restore.py", str(big), str(tmp / "restored.png"), "--overwrite=True"],
            "colorize": [sys.executable, f"{root}/colorize.py", str(big), str(tmp / "coloured.png"), "--overwrite=True"]}
    runs = {name: [] for name in cmds}
    for _ in range(1 if quick else 3):
        for name, cmd in cmds.items():
            runs[name].append(whole_process(cmd))
    for name, label in (("restore", "restore.py"), ("colorize", "colorize.py (colorgan)")):
        report("restore", f"{label} 12 MP seconds", statistics.median(r[0] for r in runs[name]), "s")
        report("restore", f"{label} 12 MP peak RSS", statistics.median(r[1] for r in runs[name]), "MiB")
    ratio = statistics.median(r[0] for r in runs["restore"]) / statistics.median(r[0] for r in runs["colorize"])
    report("restore", "restore.py / colorize.py time (the issue asks <= 1.5)", ratio, "x")
    net = restoration.load_detector()
    gray = hurt.gray
    t = time.perf_counter()
    mask = restoration.find_damage(gray, net)
    report("restore", "finding damage (searched at 4 MP)", time.perf_counter() - t, "s")
    t = time.perf_counter()
    filled = restoration.fill(gray, mask)
    report("restore", f"filling {mask.mean():.2%} of the pixels", time.perf_counter() - t, "s")
    sigma = restoration.noise_sigma(filled)
    t = time.perf_counter()
    restoration.denoise(filled, sigma)
    report("restore", "removing grain", time.perf_counter() - t, "s")


SECTIONS = {"data": bench_data, "train": bench_train, "eval": bench_eval, "infer": bench_infer, "folder": bench_folder,
            "video": bench_video, "runtime": bench_runtime, "jobs": bench_jobs, "size": bench_size,
            "reference": bench_reference, "keyframes": bench_keyframes, "samples": bench_samples,
            "restore": bench_restore}
for name in sections.split(","):
    if name not in SECTIONS:
        sys.exit(f"bench.py: unknown section {name!r} (use some of {','.join(SECTIONS)})")
    SECTIONS[name]()
Path(out).write_text(json.dumps(results, indent=1))
print(f"wrote {out}")
