"""Colorize photos and videos at full resolution: python colorize.py IN [IN ...] OUT [--ckpt=SPEC]

  python colorize.py in.jpg out.png             one photo (the output format from its name)
  python colorize.py film.mp4 film-color.mp4    one video, sound kept (see video.py)
  python colorize.py archive/ colored/          a folder tree, mirrored; --skip_existing=True resumes it
  python colorize.py in.jpg out.png --ckpt=siggraph17 --hints=hints.json    colour where you say (or --hints=layer.png)
  python colorize.py film.mp4 --keyframes=keys/       each scene's first frame as a PNG, to colour by hand
  python colorize.py film.mp4 out.mp4 --ckpt=siggraph17 --keyframes=keys/   each scene follows its coloured keyframe

A SIGGRAPH17 model takes hints: --hints for one photo (JSON points or a painted RGBA layer, see hints.py); in a folder
job, photo.hints.json beside photo.jpg. --reference=ref.jpg (or "reference" in a hint file) colours photos like a
colour photo: matched and given as hints to a SIGGRAPH17 model, transferred globally for an ECCV16 model (reference.py).

The model sees a 256x256 copy; its ab is upsampled onto the photo's own full-resolution L. Outputs are written
under a temp name and renamed; an existing output is never replaced unless --overwrite=True. Under
`accelerate launch` (or torchrun) the files are shared among the processes, each writing its own.
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
import hints as hint_files  # noqa: E402
import losses  # noqa: E402
import media  # noqa: E402
import models  # noqa: E402
import reference as references  # noqa: E402
import runtime as runtimes  # noqa: E402
import video  # noqa: E402

gc.freeze()  # and later collections skip them
gc.enable()

# -----------------------------------------------------------------------------
ckpt = "eccv16"  # model: eccv16 or siggraph17 (official weights, downloaded once), .pth/.safetensors, ckpt.pt, folder, hf:OWNER/NAME
hints = ""  # SIGGRAPH17 models: hints for one photo, a .json of points or a painted RGBA .png (folders: NAME.hints.json)
reference = ""  # a colour photo whose colours the photos take (SIGGRAPH17: matched, as hints; ECCV16: a global transfer)
reference_threshold = references.THRESHOLD  # a cell of the photo whose match confidence reaches this becomes a hint
reference_top_k = references.TOP_K  # and the k most confident cells always do (0: only the threshold decides)
reference_temperature = references.TEMPERATURE  # softmax temperature of the matching (lower: each cell takes one match)
reference_layers = ",".join(references.DEFAULT_LAYERS)  # VGG19 layers matched: some of relu3_2, relu4_2, relu5_2
vgg_weights = "imagenet"  # the matching's VGG19: imagenet (torchvision's, downloaded once, hash-checked), random or a file
keyframes = ""  # a video: a folder for its scenes' first frames (written there when it has none; coloured ones are followed)
size = 256  # the model's input size (the release uses 256)
temperature = 1.0  # annealed-mean temperature in (0, 1]: 1 is the release's mean, 0.38 the paper's (more saturated)
device = "auto"  # auto, cpu, cuda, cuda:N or mps
runtime = "auto"  # auto (the fastest here, said in one line), torch (the exact path) or openvino (CPU; pip install openvino)
precision = "auto"  # auto, fp32 (exact), bf16 (the CPU's bf16 units) or int8 (openvino, NNCF-calibrated): the README's Speed
calibration = ""  # int8: a folder of photos to calibrate on ('' = the job's own photos); cached per model, so once
calibration_images = runtimes.CALIBRATION_IMAGES  # int8: how many photos calibrate
fallback = False  # bf16 on a CPU without bf16 units: run fp32 (with a note) instead of refusing
batch_size = 4  # photos (or video frames) per model call
workers = 2  # threads that decode and encode while the model runs (0: one stage after another)
overwrite = False  # replace outputs that exist
skip_existing = False  # leave outputs that exist and do the rest (resumes an interrupted folder job)
format = ""  # folders: png, jpg, webp or tiff for every photo ('' = the input's format where writable, else png)
temporal = 0.6  # video: strength of the temporal filter on colour in [0, 1) (0 = each frame on its own)
crf = 18  # video: H.264/VP9 quality (lower is better and bigger; 18 looks lossless on most film)
codec = ""  # video: libx264, libvpx-vp9, ffv1... ('' = from the output's suffix: .mp4 H.264, .mkv FFV1, .webm VP9)
max_pixels = data.MAX_PIXELS  # refuse larger images (decompression bombs)
max_video_pixels = video.MAX_PIXELS  # refuse videos with larger frames (8K is 33 MP; memory grows with the frame)
# -----------------------------------------------------------------------------
config, paths = configurator.configure(globals(), positional=True)
if keyframes and len(paths) == 1:  # colorize.py film.mp4 --keyframes=DIR: the scenes' first frames, nothing else
    try:
        if not paths[0].lower().endswith(tuple(video.VIDEO_SUFFIXES)):
            raise video.VideoError(f"{paths[0]}: --keyframes writes a video's scenes' first frames (give a video)")
        if os.path.isdir(keyframes) and any(Path(keyframes).glob("*.png")):
            raise video.VideoError(f"--keyframes={keyframes}: already holds PNGs (give a new folder; nothing is replaced)")
        written = video.dump_keyframes(Path(paths[0]), Path(keyframes).expanduser(), max_pixels=max_video_pixels)
    except (video.VideoError, OSError) as e:
        print(f"colorize.py: {e}", file=sys.stderr)
        sys.exit(1)
    print(f"colorize.py: {len(written)} scenes: their first frames are in {keyframes}; colour any of them (the app, an "
          f"editor), then: python colorize.py {paths[0]} OUT.mp4 --ckpt=siggraph17 --keyframes={keyframes}", file=sys.stderr)
    sys.exit(0)


def fail(message: str) -> None:
    print(f"colorize.py: {message}", file=sys.stderr)
    sys.exit(1)


def pick_device(name: str) -> torch.device:
    """The device to run on; one line when it does not exist here."""
    local = int(os.environ.get("LOCAL_RANK", 0))
    if name == "auto":
        return torch.device(f"cuda:{local % torch.cuda.device_count()}" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        fail(f"--device={name}: not a device (auto, cpu, cuda, cuda:N or mps)")
    if dev.type == "cuda" and (not torch.cuda.is_available() or (dev.index or 0) >= torch.cuda.device_count()):
        fail(f"--device={name}: torch sees {torch.cuda.device_count()} CUDA GPUs here")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        fail(f"--device={name}: no Apple GPU (MPS) here")
    return dev


# every option and the plan are checked before weights load
if not 0 < temperature <= 1:
    fail(f"--temperature={temperature}: must be in (0, 1] (1 = the release's mean; lower is more saturated)")
if size < 8 or size % 8:
    fail(f"--size={size}: must be a positive multiple of 8")
if batch_size < 1 or workers < 0:
    fail("--batch_size must be at least 1 and --workers at least 0")
if format and format not in media.FORMATS:
    fail(f"--format={format}: use one of {', '.join(media.FORMATS)}")
if not 0 <= temporal < 1:
    fail(f"--temporal={temporal}: must be in [0, 1)")
if reference_temperature <= 0 or reference_top_k < 0 or not reference_threshold <= 1:
    fail("--reference_temperature must be positive, --reference_top_k at least 0 and --reference_threshold at most 1")
if set(reference_layers.split(",")) - set(references.LAYERS):
    fail(f"--reference_layers={reference_layers}: use some of {','.join(references.LAYERS)}")
if vgg_weights not in ("imagenet", "random") and not os.path.isfile(vgg_weights):
    fail(f"--vgg_weights={vgg_weights}: use imagenet, random or a VGG19 weights file")
if overwrite and skip_existing:
    fail("--overwrite=True and --skip_existing=True contradict each other")
runtime, precision, chosen = runtimes.choose(runtime, precision, device, temperature)
try:
    precision = runtimes.check(runtime, precision, fallback, device, temperature)
except runtimes.RuntimeChoiceError as e:
    fail(str(e))
if calibration and not os.path.isdir(calibration):
    fail(f"--calibration={calibration}: not a folder of photos")
try:
    jobs, notes = media.plan(paths, format)
except media.PlanError as e:
    fail(str(e))
rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
jobs = jobs[rank::world]  # each process its own files (checked below): none written twice, on one machine or several
planned = jobs  # this process's whole share, counted when a stop says how far the job got
existing = [dst for _, dst in jobs if dst.exists() and not (skip_existing and dst.is_file() and dst.stat().st_size == 0)]
if existing and not overwrite:
    if not skip_existing:
        fail(f"{existing[0]}{f' and {len(existing) - 1} more outputs already exist' if len(existing) > 1 else ' already exists'}: "
             "--skip_existing=True does the rest, --overwrite=True replaces them")
    done = set(existing)
    jobs = [(src, dst) for src, dst in jobs if dst not in done]
    print(f"colorize.py: {len(existing)} outputs exist, {len(jobs)} to do", file=sys.stderr)
for note in notes:
    print(f"colorize.py: {note}", file=sys.stderr)
for folder in sorted({dst.parent for _, dst in jobs}):  # an unwritable output folder is found now, not after the work
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not (folder.is_dir() and os.access(folder, os.W_OK | os.X_OK)):
        fail(f"{folder}: cannot write {'there' if folder.is_dir() else 'under it (not a folder)'}: nothing was done")
film = len(planned) == 1 and planned[0][0].suffix.lower() in video.VIDEO_SUFFIXES  # one video (keyframes, if any)
if film:
    try:  # what its header tells is checked before the weights load
        video.check(planned[0][0], max_video_pixels)
    except video.VideoError as e:
        fail(str(e))
failed = []  # one line for each file that could not be done; the job goes on with the others
refused = set()  # photos whose sidecar cannot be used
hints_for = {}  # photo -> its hints, each file read and checked before the weights load
given = Path(reference).expanduser() if reference else None
guide = references.Guide(None, reference_threshold, reference_top_k, size, max_pixels)  # each reference read once
due = {}  # the film's frame index -> its keyframe, all checked before the weights load


def with_reference(h: hint_files.Hints) -> hint_files.Hints:
    """h with the command line's reference over its own, that reference read and checked (ReferenceError)."""
    h = dataclasses.replace(h, reference=given or h.reference)
    if h.reference:
        guide.photo(h.reference)
    return h


try:
    if (reference or keyframes) and not film and any(src.suffix.lower() in video.VIDEO_SUFFIXES for src, _ in jobs):
        fail("a reference or keyframes for videos in a folder job: give each video on its own (colorize.py film.mp4 "
             "out.mp4 --reference=... or --keyframes=...)")
    if keyframes and not film:
        fail(f"--keyframes={keyframes}: keyframes are a video's (colorize.py film.mp4 out.mp4 --keyframes=DIR)")
    if film and (hints or reference or keyframes):
        found = ()
        if hints:
            found = hint_files.read(hints).keyframes
            if not found:
                fail(f"--hints={hints}: a video's hint file lists keyframes: {{\"keyframes\": [{{\"time\": 12.5, "
                     "\"reference\": \"still.jpg\", \"points\": [...]}, ...]}")
        if given:  # --reference alone: a keyframe at the first frame
            found += (hint_files.Keyframe(0, None, hint_files.Hints("--reference", reference=given)),)
        if keyframes:
            if not os.path.isdir(keyframes):
                fail(f"--keyframes={keyframes}: no such folder (colorize.py {paths[0]} --keyframes={keyframes} writes it)")
            from_folder, gray = video.keyframes_from(Path(keyframes).expanduser())
            if not from_folder:
                fail(f"--keyframes={keyframes}: no coloured keyframe there ({len(gray)} still gray): colour some first")
            if gray:
                print(f"colorize.py: {len(gray)} keyframes in {keyframes} are still gray: those scenes are coloured as "
                      "without keyframes", file=sys.stderr)
            found += from_folder
        try:
            due = video.keyframe_frames(planned[0][0], found)
        except video.VideoError as e:
            fail(str(e))
        for k in found:
            if k.hints.reference:
                guide.photo(k.hints.reference)
    elif hints:
        if len(paths) != 2 or os.path.isdir(paths[0]):
            fail(f"--hints={hints}: hints are for one photo (in a folder job, put NAME.hints.json beside each photo)")
        if ckpt == "eccv16" and not reference:
            fail(f"--hints={hints}: eccv16 has no hint input; use --ckpt=siggraph17 or a model trained with --arch=siggraph17")
        hints_for = {src: hint_files.read(hints) for src, _ in jobs}  # none when --skip_existing found it done
        for src, h in hints_for.items():
            hint_files.check(h, *hint_files.displayed_size(src), size)
            hints_for[src] = with_reference(h)
    elif given:
        guide.photo(given)
except (hint_files.HintError, references.ReferenceError) as e:
    fail(str(e))
if not hints and not film:  # sidecars: a broken one skips its photo, named and counted, as an unreadable photo does
    for src, dst in list(jobs):
        try:
            if os.path.lexists(hint_files.sidecar(src)):
                hints_for[src] = hint_files.read(hint_files.sidecar(src))
                hint_files.check(hints_for[src], *hint_files.displayed_size(src), size)
            if given or src in hints_for:
                hints_for[src] = with_reference(hints_for.get(src, hint_files.Hints("--reference")))
        except (hint_files.HintError, references.ReferenceError) as e:
            hints_for.pop(src, None)
            failed.append(str(e))
            refused.add(src)
            if len(jobs) > 1:  # one file's error is the closing line below
                print(f"colorize.py: skipped {src}: {e}", file=sys.stderr)
if precision == "int8" and (hints_for or due):
    fail("--precision=int8 loses hints (the hint squares' ab error reaches 28, the README's Speed): use --precision=bf16 "
         "or fp32 with hints or a reference")
if failed and len(jobs) == 1:
    fail(failed[0])
device = pick_device("cpu" if runtime == "openvino" else device)
if chosen:
    print(chosen.replace("colorgan:", "colorize.py:"), file=sys.stderr)


stopping = []  # the signal that stopped the job: checked after each file too, in case library code swallowed the raise


def stop(signum: int, frame) -> None:
    """SIGTERM as Ctrl-C: the job stops the same way (the photos being written finish, nothing is half-written)."""
    stopping.append(signum)
    raise KeyboardInterrupt(signum)


previous = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGINT)}
photos = [(src, dst) for src, dst in jobs if src.suffix.lower() not in video.VIDEO_SUFFIXES and src not in refused]
videos = [(src, dst) for src, dst in jobs if src.suffix.lower() in video.VIDEO_SUFFIXES]
try:
    try:
        G = models.load_generator(ckpt, device)
        # int8 calibrates on --calibration, or on all the photos of the job (done or not: one model for the whole archive)
        G = runtimes.prepare(G, runtime, precision, size, runtimes.calibration_photos(calibration) if calibration else
                             sorted(src for src, _ in planned if src.suffix.lower() not in video.VIDEO_SUFFIXES),
                             calibration_images, spec=ckpt)
    except (models.ModelError, runtimes.RuntimeChoiceError) as e:
        fail(str(e))
    except KeyboardInterrupt as e:
        signum = e.args[0] if e.args else signal.SIGINT
        print(f"\ncolorize.py: stopped by {signal.Signals(signum).name} while preparing the model: nothing written",
              file=sys.stderr)
        sys.exit(128 + signum)
    pointed = [src for src, h in hints_for.items() if h.points or h.layer is not None]
    if pointed and not G.takes_hints:
        if hints:
            fail(f"--hints={hints}: {ckpt} is an ECCV16 model, which has no hint input; use --ckpt=siggraph17 or a model "
                 "trained with --arch=siggraph17")
        print(f"colorize.py: the points of {len(pointed)} {hint_files.SIDECAR} files ignored: {ckpt} is an ECCV16 model "
              "(no hint input)", file=sys.stderr)
    matched = any(h.reference for h in hints_for.values())
    if matched and not G.takes_hints:
        print(f"colorize.py: {ckpt} is an ECCV16 model (no hint input): the reference's colours are transferred globally "
              "(ab histograms matched), not placed where the content matches; a SIGGRAPH17 model places them",
              file=sys.stderr)
        hints_for = {src: hint_files.Hints(h.source, reference=h.reference) for src, h in hints_for.items() if h.reference}
    elif not G.takes_hints:
        hints_for = {}
    if due and not G.takes_hints:
        fail(f"{ckpt} is an ECCV16 model, which has no hint input: keyframes need --ckpt=siggraph17 or a model trained "
             "with --arch=siggraph17")
    if (matched or due) and G.takes_hints:
        try:
            guide.matcher = references.Matcher(vgg_weights, tuple(reference_layers.split(",")), reference_temperature).to(device)
        except (losses.VGGError, references.ReferenceError) as e:
            fail(str(e))
    threads = runtimes.share_cores(runtime, workers)  # for the photos; a video paints in one thread, with torch's
    with tqdm(total=len(photos), disable=len(photos) < 2, unit="img", dynamic_ncols=True) as bar:
        for src, dst, error in media.colorize_files(G, photos, size, temperature, batch_size, workers, max_pixels,
                                                    hints_for, guide):
            if error:
                failed.append(error)
                if len(jobs) > 1:  # one file's error is the closing line below
                    bar.write(f"colorize.py: skipped {error}", file=sys.stderr)
            bar.update()
            if stopping:
                raise KeyboardInterrupt(stopping[0])
    torch.set_num_threads(threads)
    for src, dst in videos:
        if stopping:
            raise KeyboardInterrupt(stopping[0])
        try:
            video.colorize_video(G, src, dst, size=size, temperature=temperature, temporal=temporal, batch_size=batch_size,
                                 crf=crf, codec=codec, max_pixels=max_video_pixels,
                                 follow=video.Follow(due, guide) if due else None)
        except video.VideoError as e:
            failed.append(str(e))
            if len(jobs) > 1:  # one file's error is the closing line below
                print(f"colorize.py: skipped {e}", file=sys.stderr)
except KeyboardInterrupt as e:
    signum = e.args[0] if e.args else signal.SIGINT
    written = sum(dst.exists() for _, dst in planned)
    again = [a for a in sys.argv if not a.startswith(("--skip_existing", "--overwrite"))] + ["--skip_existing=True"]
    print(f"\ncolorize.py: stopped by {signal.Signals(signum).name}: {written} of {len(planned)} outputs written, none half-written; "
          f"to do the rest: python {shlex.join(again)}", file=sys.stderr)
    sys.exit(128 + signum)
finally:
    for s, handler in previous.items():
        signal.signal(s, handler)
if failed:
    fail(failed[0] if len(jobs) == 1 else f"{len(failed)} of {len(jobs)} files failed (named above); "
         f"{'none' if len(failed) == len(jobs) else 'the other ' + str(len(jobs) - len(failed))} written")
if __name__ == "__main__":
    sys.stdout.flush(), sys.stderr.flush()
    os._exit(0)  # every output is written and renamed: skip 0.3 s of tearing down torch's modules
