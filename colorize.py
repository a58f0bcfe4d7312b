"""Colorize photos and films at full resolution: python colorize.py IN [IN ...] OUT [--ckpt=SPEC]

  python colorize.py in.jpg out.png             one photo (the output format from its name)
  python colorize.py in.jpg out.png --samples=8 and 8 other plausible colourings beside it (out-sample1.png ...)
  python colorize.py film.mp4 film-color.mp4    one film, sound kept; a stopped render goes on from its last scene
  python colorize.py archive/ colored/          a folder tree, mirrored; --skip_existing=True resumes it
  python colorize.py in.jpg out.png --ckpt=siggraph17 --hints=hints.json    colour where you say (or --hints=layer.png)
  python colorize.py gray.jpg out.jpg --reference=ref.jpg                   colour it like that photo
  python colorize.py old.jpg out.jpg --restore=True  scratches, dust, grain and fading repaired first (restore.py)
  python colorize.py film.mp4 --keyframes=keys/       each scene's first frame as a PNG, to colour by hand
  python colorize.py film.mp4 out.mp4 --ckpt=siggraph17 --keyframes=keys/   each scene follows its coloured keyframe

The model sees a size x size copy; its ab is painted onto the photo's own full-resolution L. Outputs are written under
a temp name and renamed; an existing output is never replaced unless --overwrite=True. Under `accelerate launch` (or
torchrun) the processes share a folder's files, or a film's scenes. What guides the colour is guidance.py's; the
photos' pipeline media.py's; films video.py's and keyframes.py's; samples sampling.py's; repairs restoration.py's.
"""

import dataclasses
import gc
import os
from pathlib import Path
import shlex
import signal
import sys

gc.disable()  # importing torch makes ~180,000 objects that live until exit: collecting them is wasted time
import torch  # noqa: E402
from tqdm import tqdm  # noqa: E402

import configurator  # noqa: E402
import data  # noqa: E402
import guidance  # noqa: E402
import hints as hint_files  # noqa: E402
import keyframes as keyframe_files  # noqa: E402
import media  # noqa: E402
import models  # noqa: E402
import reference as references  # noqa: E402
import restoration  # noqa: E402
import runtime as runtimes  # noqa: E402
import sampling  # noqa: E402
import video  # noqa: E402

gc.freeze()  # and later collections skip them
gc.enable()

# -----------------------------------------------------------------------------
ckpt = "colorgan"  # model: colorgan (shipped), eccv16 or siggraph17 (official weights, downloaded once), a file, folder, hf:OWNER/NAME
hints = ""  # SIGGRAPH17 models: one photo's hints (.json points or a painted RGBA .png), or a film's keyframes (.json)
reference = ""  # a colour photo whose colours the photos (a film's scenes) take: as hints, or globally (guidance.py)
reference_threshold = references.THRESHOLD  # a cell of the photo whose match confidence reaches this becomes a hint
reference_top_k = references.TOP_K  # and the k most confident cells always do (0: only the threshold decides)
reference_temperature = references.TEMPERATURE  # softmax temperature of the matching (lower: each cell takes one match)
reference_layers = ",".join(references.DEFAULT_LAYERS)  # VGG16 layers matched: some of relu3_2, relu4_2, relu5_2
reference_weights = "imagenet"  # the matching's VGG16: imagenet (from pip or torchvision, weights.py), random or a file
keyframes = ""  # a film: a folder for its scenes' first frames (written when given no output; coloured ones are followed)
samples = 0  # photos: also write this many sampled colourings beside each output (NAME-sample1.png ...; sampling.py)
seed = 0  # the samples' seed (0 to 2**32 - 1): the same seed, photo and batch give the same pixels (sampling.py)
restore = False  # repair scratches, cracks, dust, grain and fading before colour (restore.py's defaults)
vividness = 1.0  # chroma gain on the model's colour: 0 is gray, below 1 muted, above 1 more vivid (the app's slider)
size = 256  # the model's input size (the release uses 256)
temperature = 1.0  # annealed-mean temperature in (0, 1]: 1 is the model's mean, 0.38 Zhang et al.'s (more saturated)
device = "auto"  # auto, cpu, cuda, cuda:N or mps
runtime = "auto"  # auto (the fastest here, said in one line), torch (the exact path) or openvino (CPU)
precision = "auto"  # auto, fp32 (exact), bf16 (the CPU's bf16 units) or int8 (openvino, NNCF-calibrated): docs/speed.md
calibration = ""  # int8: a folder of photos to calibrate on ('' = the job's own photos); cached per model, so once
calibration_images = runtimes.CALIBRATION_IMAGES  # int8: how many photos calibrate
fallback = False  # bf16 on a CPU without bf16 units: run fp32 (with a note) instead of refusing
batch_size = 4  # photos (or film frames) per model call
workers = 2  # threads that decode and encode while the model runs (0: one stage after another)
overwrite = False  # replace outputs that exist
skip_existing = False  # leave outputs that exist and do the rest (resumes an interrupted folder job)
format = ""  # folders: png, jpg, webp or tiff for every photo ('' = the input's format where writable, else png)
temporal = 0.6  # films: strength of the temporal filter on colour in [0, 1) (0 = each frame on its own)
crf = 18  # films: H.264/VP9 quality (lower is better and bigger; 18 looks lossless on most film)
codec = ""  # films: libx264, libvpx-vp9, ffv1... ('' = from the output's suffix: .mp4 H.264, .mkv FFV1, .webm VP9)
max_pixels = data.MAX_PIXELS  # refuse larger images (decompression bombs)
max_video_pixels = video.MAX_PIXELS  # refuse films with larger frames (8K is 33 MP; memory grows with the frame)
# -----------------------------------------------------------------------------
config, paths = configurator.configure(globals(), positional=True)
previous = {}  # the signal handlers this job replaced, given back when it ends


def give_back_signals() -> None:
    """Put back the handlers this job replaced (run in-process, as in the tests, the caller keeps its own)."""
    for s, handler in previous.items():
        signal.signal(s, handler)


def fail(message: str, code: int = 1) -> None:
    print(f"colorize.py: {message}", file=sys.stderr)
    give_back_signals()
    sys.exit(code)


def stopped_by(e: KeyboardInterrupt) -> signal.Signals:
    """The signal a stop came from (Ctrl-C when it carries none)."""
    return signal.Signals(e.args[0] if e.args else signal.SIGINT)


def stop(signum: int, frame) -> None:
    """SIGTERM as Ctrl-C: the job stops the same way (the photos being written finish, nothing is half-written)."""
    stopping.append(signum)
    raise KeyboardInterrupt(signum)


stopping = []  # the signal that stopped the job: checked after each file too, in case library code swallowed the raise
previous.update({s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGINT)})

# a film's keyframes dumped (colorize.py film.mp4 --keyframes=DIR), and nothing else
if keyframes and len(paths) == 1:
    film, folder = Path(paths[0]), Path(keyframes)
    try:
        if film.suffix.lower() not in data.VIDEO_SUFFIXES:
            raise keyframe_files.KeyframeError(f"{film}: --keyframes writes a film's scenes' first frames (give a video)")
        scenes, written = keyframe_files.dump(film, folder, max_pixels=max_video_pixels)
    except (keyframe_files.KeyframeError, video.VideoError, OSError) as e:
        fail(str(e))
    except KeyboardInterrupt as e:
        done = len(keyframe_files._pictures(folder))
        fail(f"stopped by {stopped_by(e).name}: {done} scenes' first frames are in {folder}, none half-written; the same "
             "command writes the rest", 128 + stopped_by(e))
    print(f"colorize.py: {scenes} scenes ({written} new pictures): their first frames are in {folder}; colour any of them "
          f"(the app, an editor), then: python colorize.py {film} OUT.mp4 --ckpt=siggraph17 --keyframes={folder}", file=sys.stderr)
    give_back_signals()
    sys.exit(0)

# every option checked before anything heavy loads
if not 0 < temperature <= 1:
    fail(f"--temperature={temperature}: must be in (0, 1] (1 = the model's mean; lower is more saturated)")
if size < 8 or size % 8:
    fail(f"--size={size}: must be a positive multiple of 8")
if batch_size < 1:
    fail(f"--batch_size={batch_size}: must be at least 1")
if workers < 0 or samples < 0:
    fail(f"--{'workers' if workers < 0 else 'samples'}={min(workers, samples)}: must be at least 0")
if not 0 <= vividness <= models.MAX_VIVIDNESS:
    fail(f"--vividness={vividness:g}: must be from 0 (gray) to {models.MAX_VIVIDNESS:g} (1 is the model's own colour)")
if not 0 <= seed <= sampling.MAX_SEED:
    fail(f"--seed={seed}: must be from 0 to {sampling.MAX_SEED}")
if samples and ckpt == "gray":
    fail("--samples: the gray model (ab = 0) has no colour distribution to sample")
if format and format not in media.FORMATS:
    fail(f"--format={format}: use one of {', '.join(media.FORMATS)}")
if not 0 <= temporal < 1:
    fail(f"--temporal={temporal}: must be in [0, 1)")
if overwrite and skip_existing:
    fail("--overwrite=True and --skip_existing=True contradict each other")
try:
    guidance.check_options(reference_threshold, reference_top_k, reference_temperature, reference_layers, reference_weights)
    runtime, precision, chosen = runtimes.choose(runtime, precision, device, temperature, samples)
    precision = runtimes.check(runtime, precision, fallback, device, temperature, samples)
except (guidance.GuidanceError, runtimes.RuntimeChoiceError) as e:
    fail(str(e))
if calibration and not os.path.isdir(calibration):
    fail(f"--calibration={calibration}: not a folder of photos")

# the job: each input's outputs (this process's share under accelerate launch: a folder's files, or a film's scenes)
try:
    planned, notes = media.plan(paths, format, samples)
except media.PlanError as e:
    fail(str(e))
rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
film = None
if len(planned) == 1 and planned[0].src.suffix.lower() in data.VIDEO_SUFFIXES:  # one film: its header checked now
    if samples:
        fail("--samples: samples are for photos (a film's frames would each take other colours)")
    try:
        film = video.check(planned[0].src, max_video_pixels)
    except video.VideoError as e:
        fail(str(e))
share = (rank, world) if film else (0, 1)
mine = planned if film else planned[rank::world]  # a folder's files, each written by one process
if skip_existing:
    done = [job for job in mine if job.exists(redo_empty=True)]
    if done:
        print(f"colorize.py: {len(done)} outputs exist, {len(mine) - len(done)} to do", file=sys.stderr)
    jobs = [job for job in mine if job not in done]
else:
    there = [path for job in mine for path in job.outputs if path.exists()]
    if there and not overwrite:
        fail(f"{there[0]}{f' and {len(there) - 1} more outputs already exist' if len(there) > 1 else ' already exists'}: "
             "--skip_existing=True does the rest, --overwrite=True replaces them")
    jobs = [dataclasses.replace(job, replace=True) for job in mine] if overwrite else mine
for note in notes:
    print(f"colorize.py: {note}", file=sys.stderr)
if not jobs:
    print("colorize.py: every output exists: nothing to do", file=sys.stderr)
    give_back_signals()
    sys.exit(0)
try:
    media.check_writable(jobs)
except media.PlanError as e:
    fail(str(e))
# each photo's header read now: a file that is no photo is named before any weights load
unreadable = data.unreadable([job.src for job in jobs], max_pixels)
if unreadable and len(jobs) == 1:
    fail(next(iter(unreadable.values())))
for error in unreadable.values():
    print(f"colorize.py: skipped {error}", file=sys.stderr)

# what guides the colour: hints, sidecars, references, keyframes, read and checked
try:
    plan = guidance.plan([(j.src, j.dst) for j in jobs], [o for j in planned for o in j.outputs], film, hints,
                         reference, keyframes, ckpt, size, max_pixels)
except (models.ModelError, guidance.GuidanceError, hint_files.HintError) as e:
    fail(str(e))
for note in plan.notes:
    print(f"colorize.py: {note}", file=sys.stderr)
for src, error in plan.failed:
    if len(jobs) > 1:  # one file's error is the closing line below
        print(f"colorize.py: skipped {src}: {error}", file=sys.stderr)
if plan.failed and len(jobs) == 1:
    fail(plan.failed[0][1])
if precision == "int8" and plan.guided:
    fail("--precision=int8 loses hints (the hint squares' ab error reaches 28: docs/speed.md): use --precision=bf16 or "
         "fp32 with hints or a reference")
try:
    device = runtimes.pick_device("cpu" if runtime == "openvino" else device)
except runtimes.RuntimeChoiceError as e:
    fail(str(e))

# the model, said in one line
try:
    G = models.load_generator(ckpt, device)
    print(f"colorize.py: colorizing with {models.describe(ckpt, G)}", file=sys.stderr)
    repair = None
    if restore:
        damage_finder = restoration.load_detector()
        repair = lambda img: restoration.restore_image(img, damage_finder)[0]  # noqa: E731
        print(f"colorize.py: repairing first (restore.py's steps) with the damage finder {restoration.DETECTOR.name}",
              file=sys.stderr)
    if chosen:
        print(chosen.replace("colorgan:", "colorize.py:"), file=sys.stderr)
    # int8 calibrates on --calibration, or on all the photos of the job (done or not: one model for the whole archive)
    photos_of_job = sorted(j.src for j in planned if j.src.suffix.lower() not in data.VIDEO_SUFFIXES)
    G = runtimes.prepare(G, runtime, precision, size, runtimes.calibration_photos(calibration) if calibration else
                        photos_of_job, calibration_images, spec=ckpt)
    if plan.matched and G.takes_hints:
        plan.guide.matcher = references.Matcher(reference_weights, tuple(reference_layers.split(",")),
                                               reference_temperature).to(device)
        plan.guide.threshold, plan.guide.top_k = reference_threshold, reference_top_k
except (models.ModelError, runtimes.RuntimeChoiceError, references.ReferenceError, restoration.RestoreError) as e:
    fail(str(e))
except KeyboardInterrupt as e:
    fail(f"stopped by {stopped_by(e).name} while preparing the model: nothing written", 128 + stopped_by(e))

# the work: photos in a pipeline, then films scene by scene; a stop says how far the job got
skipped = plan.refused | unreadable.keys()
photos = [j for j in jobs if j.src.suffix.lower() not in data.VIDEO_SUFFIXES and j.src not in skipped]
films = [j for j in jobs if j.src.suffix.lower() in data.VIDEO_SUFFIXES]
failed = [error for _, error in plan.failed] + list(unreadable.values())
try:
    threads = runtimes.share_cores(runtime, workers)  # for the photos; a film paints in one thread, with torch's
    with tqdm(total=len(photos), disable=len(photos) < 2, unit="img", dynamic_ncols=True) as bar:
        for job, error in media.colorize_files(G, photos, size, temperature, batch_size, workers, max_pixels, plan.hints_for,
                                               plan.guide, vividness, samples, seed,
                                               repair):
            if error:
                failed.append(error)
                if len(jobs) > 1:  # one file's error is the closing line below
                    bar.write(f"colorize.py: skipped {error}", file=sys.stderr)
            bar.update()
            if stopping:
                raise KeyboardInterrupt(stopping[0])
    torch.set_num_threads(threads)
    for job in films:
        if stopping:
            raise KeyboardInterrupt(stopping[0])
        follow = keyframe_files.Follow(plan.film_keyframes, plan.guide, plan.every_scene) if film and G.takes_hints and \
            (plan.film_keyframes or plan.every_scene) else None
        if job.src in plan.hints_for:  # a model without a hint input: every frame takes the reference globally
            follow = references.Transfer(plan.guide.photo(plan.hints_for[job.src].reference), reference)
        try:
            video.render(G, job.src, job.dst, size=size, temperature=temperature, temporal=temporal, batch_size=batch_size,
                         crf=crf, codec=codec, max_pixels=max_video_pixels, follow=follow, share=share,
                         settings={"model": ckpt, "weights": float(models.fingerprint(getattr(G, "source", G))),
                                   "runtime": f"{runtime} {precision}", "vividness": vividness}, restore=repair)
        except video.VideoError as e:
            failed.append(str(e))
            if len(jobs) > 1:  # one file's error is the closing line below
                print(f"colorize.py: skipped {e}", file=sys.stderr)
except KeyboardInterrupt as e:
    written = sum(job.exists() for job in mine)
    again = [a for a in sys.argv if not a.startswith(("--skip_existing", "--overwrite"))] + ["--skip_existing=True"]
    kept = f" ({video.parts_folder(films[0].dst).name} keeps the finished scenes)" if film else ""
    print(f"\ncolorize.py: stopped by {stopped_by(e).name}: {written} of {len(mine)} outputs written, none half-written{kept}; "
          f"to do the rest: python {shlex.join(again)}", file=sys.stderr)
    sys.exit(128 + stopped_by(e))
finally:
    give_back_signals()
if failed:
    fail(failed[0] if len(jobs) == 1 else f"{len(failed)} of {len(jobs)} files failed (named above); "
         f"{'none' if len(failed) == len(jobs) else 'the other ' + str(len(jobs) - len(failed))} written")
if __name__ == "__main__":
    sys.stdout.flush(), sys.stderr.flush()
    os._exit(0)  # every output is written and renamed: skip 0.3 s of tearing down torch's modules
