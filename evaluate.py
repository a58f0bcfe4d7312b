"""Evaluate colorizers side by side: python evaluate.py --ckpt=colorgan --ckpt=eccv16 --ckpt=runs/gan/ckpt.pt

Every model sees the same images in the same run; `accelerate launch evaluate.py ...` shares them among processes
and gathers every metric (the numbers of one process). Protocol (also written into --out): each image -> uint8 RGB
-> PIL bicubic resize to image_size (--resize=stretch, or center_crop: the central square) -> ground truth in [0,1];
L, ab from rgb_to_lab; prediction = lab_to_rgb(L, model(L)) clipped to [0,1]. Per image, then averaged: l1_ab,
mse_ab (Lab units), auc (share of pixels with ab error <= t, t = 0..150, area / 150), psnr (RGB, data range 1;
identical images count 100 dB), ssim (skimage's defaults), perceptual (L1 of VGG relu4_3 features), lpips,
colorfulness (Hasler & Suesstrunk) and colorfulness_ddcolor (DDColor's form, with |rg| and |yb|); over the set:
delta_cf (and delta_cf_ddcolor) = |mean colorfulness of predictions - of ground truths|,
fid (the standard TF-Inception FID) and fid_paired_tv (DDColor's: torchvision's Inception), both of the predictions
against the ground truths of the same images. See metrics.PROTOCOL.

--hints=0,1,2,5,10 evaluates each SIGGRAPH17 model at each number of hints (the paper's sweep): n 6x6 squares per image
at the evaluation size, centres drawn around the image centre (sigma a quarter of the side) from the image's index,
each the ground truth's mean ab over it -- the same points for every model in every run. An ECCV16 model has no hint
input: it gets one column, marked so.

--samples=8 adds a column per model of 8 coherent samples of its colour distribution (sampling.py, --seed): best-of-8
psnr_best and l1_ab_best against the truth, lpips_diversity (mean LPIPS between a photo's samples), speckle (ab total
variation, beside the deterministic output's speckle_mean), FID over every sample against the truths.
"""

import json
import sys
from pathlib import Path

import torch
from PIL import Image, ImageDraw
from tqdm import tqdm

import configurator
import guidance
import hints as hint_files
import losses
import media
import metrics
import models
import reference as references
import runtime as runtimes
import sampling
import training
from data import (DEFAULT_DATA, IMAGE_SUFFIXES, DataError, colorization_grid, lab_to_rgb, load_image, make_dataset, to_pil,
                  uint8_to_lab)

# -----------------------------------------------------------------------------
ckpt = ["colorgan"]  # models to compare, one column each (repeat --ckpt=...): colorgan, eccv16, a ckpt.pt, a folder, hf:OWNER/NAME
dataset = DEFAULT_DATA  # HF dataset OWNER/NAME, local HF dataset / parquet, or an image folder
split = "validation"  # dataset split (folders: the train/ or validation/ subfolder when there is one, else all of it)
max_images = 0  # evaluate the first N images only (0 = all)
image_size = 256  # evaluation resolution
resize = "stretch"  # stretch (the seeds' and DDColor's ImageNet protocol) or center_crop (central square, then resize)
batch_size = 32
num_workers = training.default_workers()  # DataLoader workers decoding images (up to 4, no more than the CPUs)
temperature = 1.0  # annealed-mean temperature for every model (1 = the model's mean)
vgg_weights = "imagenet"  # perceptual metric: imagenet, random, none, or a weights file of perceptual_net
perceptual_net = "vgg16"  # perceptual metric's network: vgg16 (its ImageNet weights come with pip) or vgg19 (a 548 MB download)
fid = "auto"  # auto (standard, and tv where its weights can be had), standard (TF-Inception, as pytorch-fid / clean-fid: its
# weights come with pip), tv (DDColor's torchvision Inception: a download), both, or none
fid_weights = "default"  # default (pip's or the publisher's), random (seeded, offline smoke tests) or a file (one flavour)
lpips_weights = "default"  # default (ImageNet backbone), random (seeded), none (no LPIPS) or a torchvision backbone file
lpips_net = "alex"  # LPIPS backbone: alex (LPIPS's own default) or vgg (CT2's)
device = "auto"  # auto, cpu or cuda
runtime = "torch"  # torch (exact), openvino (CPU) or auto (colorize.py's default): each one's colour cost vs torch fp32
precision = "fp32"  # fp32, bf16 or int8 (openvino; needs --calibration: photos other than the evaluated ones)
calibration = ""  # int8: a folder of photos to calibrate on
calibration_images = runtimes.CALIBRATION_IMAGES
out = ""  # write the results as JSON here
grid = ""  # write a comparison figure (gray | each model | the last one's samples, with --samples | ground truth) here
grid_images = 6  # rows of the figure
save_outputs = ""  # write every prediction (and ground truth) as PNG under this new folder, one subfolder per model
per_class = False  # also report every per-image metric per class
hints = ""  # SIGGRAPH17 models: numbers of simulated hints to sweep, e.g. 0,1,2,5,10,20,50,100 ('' = none)
reference = ""  # self (each image's own truth, mirrored, cropped, shifted) or FOLDER (same file names): no/global/local columns
reference_threshold = references.THRESHOLD  # the reference matching's knobs, as colorize.py's
reference_top_k = references.TOP_K
reference_temperature = references.TEMPERATURE
reference_layers = ",".join(references.DEFAULT_LAYERS)
reference_weights = "imagenet"  # the matching's VGG16: imagenet, random or a file
samples = 0  # also a column per model of this many sampled colourings: best-of-N, diversity (sampling.py)
seed = 0  # the samples' seed
# -----------------------------------------------------------------------------
config, _ = configurator.configure(globals())
PER_IMAGE = ["l1_ab", "mse_ab", "auc", "psnr", "ssim", "perceptual", "lpips", "colorfulness", "colorfulness_ddcolor",
             "psnr_best", "l1_ab_best", "lpips_diversity", "speckle", "speckle_mean"]
METRICS = PER_IMAGE + ["delta_cf", "delta_cf_ddcolor"] + metrics.FID_FLAVOURS["both"] + ["reference_colour"]


def fail(message: str) -> None:
    print(f"evaluate.py: {message}", file=sys.stderr)
    sys.exit(1)


def summarize(per_image: dict[str, torch.Tensor], mask: torch.Tensor) -> dict:
    """Mean of each per-image metric over the images in mask, plus delta_cf and the image count."""
    row = {k: per_image[k][mask].double().mean().item() for k in PER_IMAGE if k in per_image}
    for cf in ("colorfulness", "colorfulness_ddcolor"):
        row[cf.replace("colorfulness", "delta_cf")] = abs(row[cf] - per_image[f"{cf}_true"][mask].double().mean().item())
    if "reference_colour" in per_image:  # --reference: the ab-histogram intersection of output and reference
        row["reference_colour"] = per_image["reference_colour"][mask].double().mean().item()
    return {"n_images": int(mask.sum()), **row}


def figure(grid: torch.Tensor, labels: list[str]) -> Image.Image:
    """The colorization grid (3,H,W) under a header naming its columns."""
    head, cell = 24, grid.shape[-1] // len(labels)
    body = to_pil(grid)
    fig = Image.new("RGB", (body.width, body.height + head), "white")
    fig.paste(body, (0, head))
    draw = ImageDraw.Draw(fig)
    for j, label in enumerate(labels):
        draw.text((j * cell + 4, 6), label[-40:], fill="black")
    return fig


# every refusal before anything heavy loads: the choices, sizes and vgg_weights as the training scripts check them
training.check_config("evaluate.py", config)
if not 0 < temperature <= 1:
    fail(f"--temperature must be in (0, 1], not {temperature}")
if device == "cuda" and not torch.cuda.is_available():
    fail("--device=cuda but no CUDA GPU is visible (use --device=cpu)")
try:
    if fid != "none":
        metrics.check_weights("fid_weights", fid_weights)
    if lpips_weights != "none":
        metrics.check_weights("lpips_weights", lpips_weights)
except metrics.MetricError as e:
    fail(str(e))
if fid == "both" and fid_weights not in ("default", "random"):
    fail("--fid_weights=PATH fits one network: use it with --fid=standard or --fid=tv")
if fid == "auto" and fid_weights not in ("default", "random"):
    fid = "standard"
    print(f"evaluate.py: --fid_weights={fid_weights} is taken as the standard FID network's; DDColor's FID is left out "
          "(--fid=tv for it)", file=sys.stderr)
if save_outputs and Path(save_outputs).exists() and any(Path(save_outputs).iterdir()):
    fail(f"--save_outputs={save_outputs}: the folder exists and is not empty (give a new one: nothing is overwritten)")
try:
    counts = sorted({int(n) for n in hints.split(",")}) if hints else []
except ValueError:
    counts = [-1]
if any(n < 0 for n in counts):
    fail(f"--hints={hints}: a comma-separated list of hint counts, e.g. 0,1,2,5,10")
most = (image_size // hint_files.SWEEP_SIZE) ** 2  # as many squares as tile the image: more is no sweep
if counts and counts[-1] > most:
    fail(f"--hints={hints}: at most {most} hints ({hint_files.SWEEP_SIZE}x{hint_files.SWEEP_SIZE} squares tiling a "
         f"{image_size}x{image_size} image)")
if reference and counts:
    fail("--reference and --hints: one at a time (each adds its own columns)")
if reference and reference != "self" and not Path(reference).is_dir():
    fail(f"--reference={reference}: use self or a folder of references named as the evaluated photos")
if samples < 0 or (samples == 1):
    fail(f"--samples={samples}: 0 (none) or at least 2 (best-of-N and the diversity between them)")
if not 0 <= seed <= sampling.MAX_SEED:
    fail(f"--seed={seed}: must be from 0 to {sampling.MAX_SEED}")
sampled = [j for j, spec in enumerate(ckpt) if spec != "gray"] if samples else []  # gray (ab = 0) has no distribution
if samples and not sampled:
    fail("--samples: the gray model (ab = 0) has no colour distribution to sample; add a colorizer (--ckpt=colorgan)")
if samples and len(sampled) < len(ckpt):
    print("evaluate.py: --samples: no samples column for gray (ab = 0 has no colour distribution)", file=sys.stderr)
runtime, precision, chosen = runtimes.choose(runtime, precision, device, temperature, samples)
if chosen:
    print(chosen.replace("colorgan:", "evaluate.py:"), file=sys.stderr)
try:
    guidance.check_options(reference_threshold, reference_top_k, reference_temperature, reference_layers, reference_weights)
    precision = runtimes.check(runtime, precision, device=device, temperature=temperature, samples=samples)
except (guidance.GuidanceError, runtimes.RuntimeChoiceError) as e:
    fail(str(e))
if precision == "int8" and not (calibration and Path(calibration).is_dir()):
    fail("--precision=int8 needs --calibration=FOLDER: photos other than the evaluated ones, so the cost is not flattered")
model_labels = models.spec_labels(ckpt)

from accelerate import Accelerator  # heavy: after the refusals
from accelerate.utils import gather_object

accelerator = Accelerator(cpu=device == "cpu" or runtime == "openvino")  # OpenVINO runs on the CPU
device, rank, world = accelerator.device, accelerator.process_index, accelerator.num_processes
try:
    images = make_dataset(dataset, split, image_size, train=False, resize=resize)
except DataError as e:
    fail(str(e))
n_total = min(max_images, len(images)) if max_images else len(images)
reference_for = {}  # --reference=FOLDER: image index -> its reference file, each read and checked before any model loads
if reference and reference != "self":
    if not (images.items and isinstance(images.items[0], tuple)):
        fail(f"--reference={reference}: pairing by file name needs a folder dataset (--reference=self works on any)")
    by_stem = {}
    for f in sorted(Path(reference).rglob("*")):
        if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file():
            by_stem.setdefault(f.relative_to(reference).with_suffix(""), f)
    for i, item in enumerate(images.items[:n_total]):
        key = Path(item[0]).relative_to(dataset).with_suffix("")
        if key not in by_stem:
            fail(f"--reference={reference}: no reference named {key} (as {item[0]}) there")
        try:
            references.load(by_stem[key], image_size)
        except references.ReferenceError as e:
            fail(str(e))
        reference_for[i] = by_stem[key]
try:
    generators = [models.load_generator(spec, device) for spec in ckpt]
    for label, spec, G in zip(model_labels, ckpt, generators):
        print(f"evaluate.py: {label} is {models.describe(spec, G)}", file=sys.stderr)
    calib = runtimes.calibration_photos(calibration)
    generators = [runtimes.prepare(G, runtime, precision, image_size, calib, calibration_images, spec=spec)
                  for spec, G in zip(ckpt, generators)]
    vgg = None if vgg_weights == "none" else models.VGGFeatures(
        vgg_weights, models.RELU4_3 if perceptual_net == "vgg19" else models.VGG16_RELU4_3, perceptual_net).to(device)
    takes_hints = any(guidance.takes_reference(G) == "hints" for G in generators)
    matcher = references.Matcher(reference_weights, tuple(reference_layers.split(",")),
                                 reference_temperature).to(device) if reference and takes_hints else None
    fid_nets = metrics.fid_networks("standard" if fid == "auto" else fid, fid_weights, device)
    if fid == "auto":
        try:
            fid_nets.update(metrics.fid_networks("tv", fid_weights, device))
        except metrics.MetricError as e:
            print(f"evaluate.py: DDColor's FID (fid_paired_tv) left out: {e}", file=sys.stderr)
    lpips_net_ = None if lpips_weights == "none" else metrics.lpips_network(lpips_net, lpips_weights, device)
except (models.ModelError, metrics.MetricError, runtimes.RuntimeChoiceError, references.ReferenceError) as e:
    fail(str(e))
# one column per (model, hint count, reference use); a model without a hint input gets one column whatever the counts,
# and a reference globally (its ab histogram), not locally
# (and with --samples, one of its samples beside each model's own)
columns = [(j, n, r, False) for j, G in enumerate(generators) for n in (counts if counts and G.takes_hints else [None])
           for r in ((["none", "global"] + (["local"] if G.takes_hints else [])) if reference else [None])]
columns += [(j, None, None, True) for j in sampled]
spec_of = [ckpt[c[0]] for c in columns]
labels = [model_labels[j] + ("" if n is None else f"@{n}") + ("" if r is None else f"@ref:{r}") + (f"@samples:{samples}" if s else "")
          for j, n, r, s in columns]
for j, G in enumerate(generators):
    if counts and not G.takes_hints:
        print(f"evaluate.py: {ckpt[j]} has no hint input (ECCV16): one column, without hints", file=sys.stderr)
fid_stats = metrics.fid_statistics(fid_nets, len(columns), device)
mine = list(range(rank, n_total, world))  # this process's images; every metric is gathered below
loader = torch.utils.data.DataLoader(torch.utils.data.Subset(images, mine), batch_size, num_workers=num_workers,
                                     pin_memory=device.type == "cuda")
names: dict[int, Path] = {}
if save_outputs:  # an input's path below --dataset (HF data: its index), as .png, made distinct as colorize.py does
    files = [(Path(item[0]), Path(item[0]).relative_to(dataset).with_suffix(".png")) for item in images.items[:n_total]] \
        if images.items and isinstance(images.items[0], tuple) else []
    names = {i: dst for i, (_, dst) in enumerate(media.distinct(files)[0])} if files else {i: Path(f"{i:06d}.png") for i in mine}
out_dirs = [Path(save_outputs) / name.replace("/", "_") for name in ["ground_truth", *labels]]

results = [{} for _ in columns]  # per column: metric -> list of (N,) tensors
indices, classes_seen, skipped, position = [], [], [], 0
with torch.no_grad():
    for rgb, label, bad in tqdm(loader, unit="batch", desc="evaluate", file=sys.stderr, disable=not accelerator.is_main_process):
        for name in filter(None, bad):  # a photo that cannot be decoded is named and left out of every metric
            tqdm.write(f"evaluate.py: skipped {name}", file=sys.stderr)
        keep = torch.tensor([not b for b in bad])
        index = torch.tensor(mine[position:position + len(bad)])[keep]
        position += len(bad)
        skipped += [b for b in bad if b]
        if not keep.any():
            continue
        rgb = rgb[keep].to(device, non_blocking=True)
        L, ab = uint8_to_lab(rgb)
        indices.append(index)
        classes_seen.append(label[keep])
        truth, preds = rgb.float() / 255, []
        lab_truth = lab_to_rgb(torch.cat([L, ab], 1))  # the metrics' ground truth (through Lab), once for every model
        if reference:  # each image's reference at the evaluation size
            ref_rgb = torch.stack([references.self_reference(rgb[i].cpu(), i_) if reference == "self" else
                                   models.small_copy(load_image(reference_for[i_]), image_size) for i, i_ in enumerate(index.tolist())])
            refs = [references.Reference(str(i_), *uint8_to_lab(ref_rgb[i:i + 1])) for i, i_ in enumerate(index.tolist())]
        extra = {}  # column -> the samples after the first, for its FID
        for c, ((j, n, r, sampled), acc) in enumerate(zip(columns, results)):
            if sampled:  # --samples: best-of-N, diversity and speckle of N colourings from one forward
                drawn = sampling.sample_ab(generators[j], rgb, samples, seed)
                rgbs = [lab_to_rgb(torch.cat([L, drawn[:, k]], 1)) for k in range(samples)]
                per = [losses.image_metrics(L, ab, drawn[:, k], vgg, rgb_pred=rgbs[k], rgb_true=lab_truth) for k in range(samples)]
                m = {key: torch.stack([p[key] for p in per]).mean(0) for key in per[0]}
                m["psnr_best"] = torch.stack([p["psnr"] for p in per]).amax(0)
                m["l1_ab_best"] = torch.stack([p["l1_ab"] for p in per]).amin(0)
                m["speckle"] = torch.stack([sampling.speckle(drawn[:, k]) for k in range(samples)]).mean(0)
                m["speckle_mean"] = sampling.speckle(generators[j](L, temperature=temperature).float())
                if lpips_net_ is not None:
                    pairs = [(a, b) for a in range(samples) for b in range(a + 1, samples)]
                    m["lpips_diversity"] = torch.stack([metrics.lpips(lpips_net_, rgbs[a], rgbs[b]) for a, b in pairs]).mean(0)
                    m["lpips"] = torch.stack([metrics.lpips(lpips_net_, x, truth) for x in rgbs]).mean(0)
                for k, v in m.items():
                    acc.setdefault(k, []).append(v.cpu())
                preds.append(rgbs[0])
                extra[c] = rgbs[1:]
                continue
            given = hint_files.sweep(ab, n, index.tolist()) if n else None
            if r == "local":
                given = torch.stack([hint_files.place(hint_files.Hints("", references.points(
                    matcher, refs[i], L[i:i + 1].cpu(), image_size, image_size, reference_threshold, reference_top_k)),
                    image_size, image_size, image_size) for i in range(len(L))]).to(device)
            pred_ab = generators[j](L, given, temperature=temperature).float()
            if r == "global":
                pred_ab = torch.cat([references.transfer(pred_ab[i:i + 1], refs[i]) for i in range(len(L))])
            preds.append(lab_to_rgb(torch.cat([L, pred_ab.float()], 1)))
            for k, v in losses.image_metrics(L, ab, pred_ab, vgg, rgb_pred=preds[-1], rgb_true=lab_truth).items():
                acc.setdefault(k, []).append(v.cpu())
            if reference:
                acc.setdefault("reference_colour", []).append(
                    references.histogram_intersection(pred_ab.cpu(), torch.cat([x.ab for x in refs])))
            if lpips_net_ is not None:
                acc.setdefault("lpips", []).append(metrics.lpips(lpips_net_, preds[-1], truth).cpu())
        metrics.update_fid(fid_nets, fid_stats, truth, preds, index)
        for c, rgbs in extra.items():
            for x in rgbs:
                metrics.update_fid(fid_nets, {name: [per_column[c]] for name, per_column in fid_stats.items()}, None, [x])
        for j, i in enumerate(index.tolist()):
            for folder, image in zip(out_dirs if save_outputs else [], [truth, *preds]):
                media.save(to_pil(image[j]), folder / names[i])  # 8-bit PNG, written atomically

# gather: every process's per-image rows, put back in dataset order
mine_rows = {"index": torch.cat(indices) if indices else torch.zeros(0, dtype=torch.long),
             "label": torch.cat(classes_seen) if classes_seen else torch.zeros(0, dtype=torch.long),
             "skipped": skipped, "models": [{k: torch.cat(v) for k, v in acc.items()} for acc in results]}
everyone = gather_object([mine_rows])
order = torch.cat([r["index"] for r in everyone]).argsort()
skipped = [name for r in everyone for name in r["skipped"]]
n_used = len(order)


def joined(m: int) -> dict[str, torch.Tensor]:
    """Model m's per-image metrics from every process that had images, in dataset order."""
    parts = [r["models"][m] for r in everyone if r["models"][m]]
    return {k: torch.cat([p[k] for p in parts])[order] for k in parts[0]}


per_image = [joined(m) for m in range(len(columns))] if n_used else []
fids = metrics.compute_fid({k: v for k, v in fid_stats.items() if n_used >= metrics.HALVES_FROM or not k.endswith(metrics.HALVES)},
                           accelerator.is_main_process) if n_used >= 2 else {}  # every process takes part
halves = {k.removesuffix(metrics.HALVES): fids.pop(k) for k in list(fids) if k.endswith(metrics.HALVES)}
if not accelerator.is_main_process:
    sys.exit(0)
if not n_used:
    fail(f"{dataset}: none of the {n_total} images could be decoded")

classes_used = torch.cat([r["label"] for r in everyone])[order]
everything = torch.ones_like(classes_used, dtype=torch.bool)
rows = [{"ckpt": spec, "label": name, **({"hints": n} if counts else {}), **({"reference": r} if reference else {}),
         **summarize(m, everything), **{k: v[c] for k, v in fids.items()},
         **{f"{k}{metrics.HALVES}": v[2 * c:2 * c + 2] for k, v in halves.items()}}
        for c, (spec, name, m, (_, n, r, _)) in enumerate(zip(spec_of, labels, per_image, columns))]
classes = images.classes
if per_class:
    for row, m in zip(rows, per_image):
        row["per_class"] = {(classes[c] if 0 <= c < len(classes) else str(c)) or "(root)": summarize(m, classes_used == c)
                            for c in classes_used.unique().tolist()}
if fids:
    spread = "; ".join(f"{k} of {label}: {v[2 * c]:.2f} and {v[2 * c + 1]:.2f}" for k, v in halves.items()
                       for c, label in enumerate(labels))
    print(f"evaluate.py: FID over {n_used} images; " + (f"over the even and the odd half ({spread}): the halves' difference "
          "is how far the figure moves with the images it is taken over" if halves else
          f"too few to be split in halves (from {metrics.HALVES_FROM})")
          + (f"; biased upward below {metrics.FID_UNBIASED_FROM:,} images (the features' dimension): compare only FIDs over "
             "the same images" if n_used < metrics.FID_UNBIASED_FROM else ""), file=sys.stderr)

split_read = f"[{images.split}]" if images.split else f"[all of it: no '{split}' split]"
width = max(12, *map(len, labels))
print(f"\n{n_used} images, {dataset} {split_read}, {image_size}x{image_size} ({resize})"
      + (f"; {len(skipped)} skipped" if skipped else "") + (f"; {world} processes" if world > 1 else ""))
print(f"{'metric':<20}" + "".join(f"{name[-width:]:>{width + 2}}" for name in labels))
for k in ["n_images"] + METRICS:
    if any(r.get(k) is not None for r in rows):
        print(f"{k:<20}" + "".join(f"{'-' if r.get(k) is None else format(r[k], '.4f' if k != 'n_images' else 'd'):>{width + 2}}"
                                   for r in rows))
if out:
    protocol = {"dataset": dataset, "split": images.split, "n_images": n_used, "skipped": skipped, "processes": world,
                "image_size": image_size, "resize": f"PIL bicubic, {'stretched' if resize == 'stretch' else 'central square'} ({resize})",
                "temperature": temperature, "runtime": f"{runtime} {precision}", **({"hints": {"counts": counts, "method": f"n {hint_files.SWEEP_SIZE}x{hint_files.SWEEP_SIZE} "
                "squares at image_size, centres ~ N(centre, side/4) from the image's index, each the ground truth's mean ab"}}
                                                 if counts else {}),
                **({"reference": {"source": reference if reference != "self" else f"self: each image's own truth, {references.SELF_TRANSFORM}",
                                  "local": f"SIGGRAPH17 hints from VGG16 {reference_layers} matching (temperature {reference_temperature}), one per "
                                           f"{references.CELL}px cell at 256 where confidence >= {reference_threshold} or among the top {reference_top_k}",
                                  "global": "the prediction's ab matched to the reference's ab histogram (skimage match_histograms)",
                                  "reference_colour": "intersection of the 32x32-bin ab histograms (-110..110) of output and reference"}}
                   if reference else {}),
                "auc_thresholds": "0..150 step 1", "psnr_identical_db": 100.0,
                "ssim": "skimage defaults (7x7 uniform, sample covariance), channel mean, data_range 1",
                "perceptual": None if vgg_weights == "none" else f"L1 of {perceptual_net.upper()} relu4_3 features ({vgg_weights})",
                **({"samples": {"n": samples, "seed": seed, "method": sampling.METHOD, "psnr_best": "max over a photo's samples",
                                "l1_ab_best": "min over a photo's samples", "lpips_diversity": "mean LPIPS over pairs of a photo's samples",
                                "speckle": "mean |ab difference| of neighbouring pixels, of the samples; speckle_mean: of the deterministic output",
                                "fid": "every sample against the ground truths"}} if samples else {}),
                "lpips": None if lpips_net_ is None else {"backbone": lpips_net, "weights": lpips_weights, "method": metrics.PROTOCOL["lpips"]},
                **{k: {"weights": fid_weights, "method": metrics.PROTOCOL[k], "n_images": n_used,
                       "halves": f"from {metrics.HALVES_FROM} images, each model's FID over the even images and over the odd "
                                 "ones (n/2 each): the spread a "
                                 "FID over this many images carries (FID grows as the images get fewer)"} for k in fids},
                "colorfulness": "Hasler & Suesstrunk 2003 on 0-255 RGB: rg = R - G, yb = (R + G)/2 - B (signed, as published)",
                "colorfulness_ddcolor": "DDColor's colorfulness.py: the same with |R - G| and |(R + G)/2 - B| (set beside "
                                        "DDColor's CF and delta-CF)"}
    Path(out).write_text(json.dumps({"models": rows, "protocol": protocol}, indent=1))
if grid:
    shown = []  # the first grid_images images that decode, the same however many processes ran
    for i in range(n_total):
        if len(shown) == grid_images:
            break
        rgb, _, bad = images[i]
        shown += [] if bad else [rgb]
    L, ab = uint8_to_lab(torch.stack(shown).to(device))
    with torch.no_grad():
        preds = [G(L, temperature=temperature) for G in generators]
    names = ["gray input", *model_labels]
    if samples:  # the last sampled model's first samples beside its own colouring
        drawn = sampling.sample_ab(generators[sampled[-1]], torch.stack(shown).to(device), min(samples, 4), seed)
        preds += list(drawn.unbind(1))
        names += [f"{model_labels[sampled[-1]]} sample {k + 1}" for k in range(drawn.shape[1])]
    figure(colorization_grid(L, preds, ab), [*names, "ground truth"]).save(grid)
if save_outputs:
    print(f"evaluate.py: {n_used} predictions per model and the ground truths in {save_outputs}/"
          f"{{{','.join(d.name for d in out_dirs)}}}", file=sys.stderr)
