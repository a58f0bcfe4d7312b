"""Repair old prints before colour: python restore.py IN [IN ...] OUT

  python restore.py old.jpg fixed.png                     scratches, cracks and dust filled; grain and fading when found
  python restore.py old.jpg fixed.png --save_mask=True    and fixed-mask.png: the filled pixels in white
  python restore.py scans/ fixed/                         a folder tree, mirrored; --skip_existing=True resumes it
  python restore.py old.jpg fixed.png --keep_tone=True    the print's tone (sepia, yellowing) put back on the result
  python colorize.py old.jpg out.jpg --restore=True       restored, then coloured (the same steps and options)

The output is the restored gray picture (8 bits; the tone removed unless --keep_tone=True: the colour comes from the
model). A PNG output records what was done and the print's tone (CIELAB a, b) in its text. Outputs are written under a
temp name and renamed; an existing one is never replaced unless --overwrite=True. The steps are restoration.py's.
"""

import os
import signal
import sys

import numpy as np
from PIL import Image
from tqdm import tqdm

import configurator
import data
import media
import restoration

# -----------------------------------------------------------------------------
detector = str(restoration.DETECTOR)  # the damage finder's weights (train_restore.py writes them; shipped: assets/restore/)
scratches = True  # find and fill scratches, cracks and dust
threshold = restoration.THRESHOLD  # a pixel is damage where the finder's probability reaches this (lower finds more)
grain = "auto"  # remove grain: auto (when the photo has more than a clean photo's), on or off
levels = restoration.LEVELS  # stretch the black and white points: auto (when the print looks faded), on or off (low-key photos look faded too)
keep_tone = False  # put the print's tone back on the restored gray (RGB output)
save_mask = False  # also write NAME-mask.png beside each output: the filled pixels in white
format = ""  # folders: png, jpg, webp or tiff for every photo ('' = the input's format where writable, else png)
overwrite = False  # replace outputs that exist
skip_existing = False  # leave outputs that exist and do the rest (resumes an interrupted folder job)
max_pixels = data.MAX_PIXELS  # refuse larger images (decompression bombs)
# -----------------------------------------------------------------------------
config, paths = configurator.configure(globals(), positional=True)


def fail(message: str, code: int = 1) -> None:
    print(f"restore.py: {message}", file=sys.stderr)
    sys.exit(code)


def stop(signum: int, frame) -> None:
    """SIGTERM as Ctrl-C: the photo being written finishes (outputs are renamed into place whole)."""
    raise KeyboardInterrupt(signum)


def outputs(job: media.Job) -> list:
    """What a photo's job writes: the restored photo, and with --save_mask its mask (NAME-mask.png) beside it."""
    return [job.dst] + ([job.dst.with_name(f"{job.dst.stem}-mask.png")] if save_mask else [])


# every option checked before anything heavy loads
for key in ("grain", "levels"):
    if config[key] not in ("auto", "on", "off"):
        fail(f"--{key}={config[key]}: use auto, on or off")
if not 0 < threshold < 1:
    fail(f"--threshold={threshold}: must be in (0, 1) (lower finds more damage)")
if format and format not in media.FORMATS:
    fail(f"--format={format}: use one of {', '.join(media.FORMATS)}")
if overwrite and skip_existing:
    fail("--overwrite=True and --skip_existing=True contradict each other")
try:
    planned, notes = media.plan(paths, format, script="restore.py")
except media.PlanError as e:
    fail(str(e))
films = [job for job in planned if job.src.suffix.lower() in data.VIDEO_SUFFIXES]
for job in films:
    print(f"restore.py: skipped {job.src}: restore.py repairs photos (a film's frames: not yet)", file=sys.stderr)
jobs = [job for job in planned if job not in films]
for note in notes:
    print(f"restore.py: {note}", file=sys.stderr)
if skip_existing:  # a job stopped between its photo and its mask is done again
    jobs = [job for job in jobs if not all(p.is_file() and p.stat().st_size for p in outputs(job))]
else:
    there = [p for job in jobs for p in outputs(job) if p.exists()]
    if there and not overwrite:
        fail(f"{there[0]}{f' and {len(there) - 1} more outputs already exist' if len(there) > 1 else ' already exists'}: "
             "--skip_existing=True does the rest, --overwrite=True replaces them")
if len(films) == len(planned):
    fail("no photos to restore")
if not jobs:
    print("restore.py: every output exists: nothing to do", file=sys.stderr)
    sys.exit(0)
unreadable = data.unreadable([job.src for job in jobs], max_pixels)  # named before the finder loads
if unreadable and len(jobs) == 1:
    fail(next(iter(unreadable.values())))
for error in unreadable.values():
    print(f"restore.py: skipped {error}", file=sys.stderr)

try:
    net = restoration.load_detector(detector) if scratches else None
except restoration.RestoreError as e:
    fail(str(e))
print(f"restore.py: {'finding damage with ' + detector if scratches else 'no damage finding (--scratches=False)'}; grain "
      f"{grain}, levels {levels}", file=sys.stderr)

previous = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGINT)}
done, failed = 0, list(unreadable.values())
todo = [job for job in jobs if job.src not in unreadable]
try:
    for job in tqdm(todo, disable=len(todo) < 2, unit="img", dynamic_ncols=True):
        try:
            img = data.load_image(job.src, max_pixels=max_pixels)
        except data.ImageError as e:
            failed.append(str(e))
            tqdm.write(f"restore.py: skipped {e}", file=sys.stderr)
            continue
        fixed = restoration.restore(restoration.gray_of(img), net, scratches, grain, levels, threshold)
        toned = restoration.tone(img)
        meta = media.metadata(img)
        meta["text"] |= {"colorgan-restore": "; ".join(fixed.steps), "colorgan-tone": f"a={toned[0]:.1f} b={toned[1]:.1f}"}
        try:
            media.save(restoration.as_image(fixed.gray, toned if keep_tone else (0.0, 0.0)), job.dst, meta)
            if save_mask:
                media.save(Image.fromarray(np.where(fixed.mask, 255, 0).astype(np.uint8), "L"), outputs(job)[1])
        except (OSError, ValueError) as e:
            failed.append(f"{job.dst}: cannot write ({e})")
            tqdm.write(f"restore.py: {failed[-1]}", file=sys.stderr)
            continue
        done += 1
        if len(todo) == 1:
            print(f"restore.py: {job.dst}: {'; '.join(fixed.steps)}", file=sys.stderr)
except KeyboardInterrupt as e:
    name = signal.Signals(e.args[0] if e.args else signal.SIGINT).name
    fail(f"stopped by {name}: {done} of {len(todo)} photos restored, none half-written; --skip_existing=True does the rest",
         128 + signal.Signals(e.args[0] if e.args else signal.SIGINT))
finally:
    for s, handler in previous.items():
        signal.signal(s, handler)
if failed:
    fail(failed[0] if len(jobs) == 1 else f"{len(failed)} of {len(jobs)} photos failed (named above); {done} restored")
