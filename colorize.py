"""Colorize photos and videos at full resolution: python colorize.py IN [IN ...] OUT [--ckpt=SPEC]

  python colorize.py in.jpg out.png             one photo (the output format from its name)
  python colorize.py film.mp4 film-color.mp4    one video, sound kept (see video.py)
  python colorize.py archive/ colored/          a folder tree, mirrored; --skip_existing=True resumes it
  python colorize.py in.jpg out.png --ckpt=siggraph17 --hints=hints.json    colour where you say (or --hints=layer.png)

A SIGGRAPH17 model takes hints: --hints for one photo (JSON points or a painted RGBA layer, see hints.py); in a folder
job, photo.hints.json beside photo.jpg.

The model sees a 256x256 copy; its ab is upsampled onto the photo's own full-resolution L. Outputs are written
under a temp name and renamed; an existing output is never replaced unless --overwrite=True. Under
`accelerate launch` (or torchrun) the files are shared among the processes, each writing its own.
"""

import gc
import os
import shlex
import signal
import sys

gc.disable()  # importing torch makes ~180,000 objects that live until exit: collecting them is wasted time
import torch  # noqa: E402
from tqdm import tqdm  # noqa: E402

import configurator  # noqa: E402
import data  # noqa: E402
import hints as hint_files  # noqa: E402
import media  # noqa: E402
import models  # noqa: E402
import runtime as runtimes  # noqa: E402
import video  # noqa: E402

gc.freeze()  # and later collections skip them
gc.enable()

# -----------------------------------------------------------------------------
ckpt = "eccv16"  # model: eccv16 or siggraph17 (official weights, downloaded once), .pth/.safetensors, ckpt.pt, folder, hf:OWNER/NAME
hints = ""  # SIGGRAPH17 models: hints for one photo, a .json of points or a painted RGBA .png (folders: NAME.hints.json)
size = 256  # the model's input size (the release uses 256)
temperature = 1.0  # annealed-mean temperature in (0, 1]: 1 is the release's mean, 0.38 the paper's (more saturated)
device = "auto"  # auto, cpu, cuda, cuda:N or mps
runtime = "torch"  # torch (the exact path) or openvino (CPU; pip install openvino, and nncf for int8)
precision = "fp32"  # fp32 (exact), bf16 (the CPU's bf16 units) or int8 (openvino, NNCF-calibrated): see the README's costs
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
if overwrite and skip_existing:
    fail("--overwrite=True and --skip_existing=True contradict each other")
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
existing = [dst for _, dst in jobs if dst.exists()]
if existing and not overwrite:
    if not skip_existing:
        fail(f"{existing[0]}{f' and {len(existing) - 1} more outputs already exist' if len(existing) > 1 else ' already exists'}: "
             "--skip_existing=True does the rest, --overwrite=True replaces them")
    done = set(existing)
    jobs = [(src, dst) for src, dst in jobs if dst not in done]
    print(f"colorize.py: {len(existing)} outputs exist, {len(jobs)} to do", file=sys.stderr)
for note in notes:
    print(f"colorize.py: {note}", file=sys.stderr)
hints_for = {}  # photo -> its hints, each file read and checked before the weights load
try:
    if hints:
        if len(paths) != 2 or os.path.isdir(paths[0]):
            fail(f"--hints={hints}: hints are for one photo (in a folder job, put NAME.hints.json beside each photo)")
        if paths[0].lower().endswith(tuple(video.VIDEO_SUFFIXES)):
            fail(f"--hints={hints}: hints for videos are not supported yet (a photo only)")
        if ckpt == "eccv16":
            fail(f"--hints={hints}: eccv16 has no hint input; use --ckpt=siggraph17 or a model trained with --arch=siggraph17")
        hints_for = {src: hint_files.read(hints) for src, _ in jobs}  # none when --skip_existing found it done
    else:
        hints_for = {src: hint_files.read(hint_files.sidecar(src)) for src, _ in jobs if hint_files.sidecar(src).is_file()}
    for src, h in hints_for.items():
        hint_files.check(h, *hint_files.displayed_size(src))
except hint_files.HintError as e:
    fail(str(e))
if len(jobs) == 1 and jobs[0][0].suffix.lower() in video.VIDEO_SUFFIXES:
    try:  # one video: what its header tells is checked before the weights load
        video.check(jobs[0][0], max_video_pixels)
    except video.VideoError as e:
        fail(str(e))
device = pick_device("cpu" if runtime == "openvino" else device)
try:
    G = models.load_generator(ckpt, device)
except models.ModelError as e:
    fail(str(e))
photos = [(src, dst) for src, dst in jobs if src.suffix.lower() not in video.VIDEO_SUFFIXES]
videos = [(src, dst) for src, dst in jobs if src.suffix.lower() in video.VIDEO_SUFFIXES]
try:  # int8 calibrates on --calibration, or on the photos this job colorizes
    G = runtimes.prepare(G, runtime, precision, size, runtimes.calibration_photos(calibration) if calibration else
                         sorted(src for src, _ in photos), calibration_images, spec=ckpt)
except runtimes.RuntimeChoiceError as e:
    fail(str(e))
if hints_for and not G.takes_hints:
    if hints:
        fail(f"--hints={hints}: {ckpt} is an ECCV16 model, which has no hint input; use --ckpt=siggraph17 or a model "
             "trained with --arch=siggraph17")
    print(f"colorize.py: {len(hints_for)} {hint_files.SIDECAR} files ignored: {ckpt} is an ECCV16 model (no hint input)",
          file=sys.stderr)
    hints_for = {}

failed = []


def stop(signum: int, frame) -> None:
    """SIGTERM as Ctrl-C: the job stops the same way (the photos being written finish, nothing is half-written)."""
    raise KeyboardInterrupt(signum)


previous = signal.signal(signal.SIGTERM, stop)
try:
    threads = runtimes.share_cores(runtime, workers)  # for the photos; a video paints in one thread, with torch's
    with tqdm(total=len(photos), disable=len(photos) < 2, unit="img", dynamic_ncols=True) as bar:
        for src, dst, error in media.colorize_files(G, photos, size, temperature, batch_size, workers, max_pixels,
                                                          hints_for):
            if error:
                failed.append(error)
                if len(jobs) > 1:  # one file's error is the closing line below
                    bar.write(f"colorize.py: skipped {error}", file=sys.stderr)
            bar.update()
    torch.set_num_threads(threads)
    for src, dst in videos:
        try:
            video.colorize_video(G, src, dst, size=size, temperature=temperature, temporal=temporal, batch_size=batch_size,
                                 crf=crf, codec=codec, max_pixels=max_video_pixels)
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
    signal.signal(signal.SIGTERM, previous)
if failed:
    fail(failed[0] if len(jobs) == 1 else f"{len(failed)} of {len(jobs)} files failed (named above); the rest are written")
if __name__ == "__main__":
    sys.stdout.flush(), sys.stderr.flush()
    os._exit(0)  # every output is written and renamed: skip 0.3 s of tearing down torch's modules
