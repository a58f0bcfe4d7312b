"""What guides each file's colour in a colorize.py job, read and checked before the weights load: --hints (JSON points,
a painted layer, or a film's keyframes), photo.hints.json sidecars, --reference, a film's --keyframes folder; and how
a model takes them (takes_reference: one decision, which every route asks).

A model with a hint input (SIGGRAPH17) takes points and layers, and a reference's colours as hint points matched where
the content matches; a model without one (ECCV16, the hypercolumn model) refuses points (sidecars' are ignored with a
line) and takes a reference globally (its ab histogram); a film's keyframes need a hint input.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path

import data
import hints
import keyframes
import models
import reference


class GuidanceError(ValueError):
    """Guidance that cannot be used; the message is one line."""


def takes_reference(arch_or_model) -> str:
    """How a model takes a reference photo: "hints" (a hint input: the reference's colours matched where the content
    matches, given as hint points) or "transfer" (none: its prediction's ab matched to the reference's, globally)."""
    model = models.ARCHS.get(arch_or_model) if isinstance(arch_or_model, str) else arch_or_model  # gray: no class, no hints
    takes_hints = getattr(model, "takes_hints", False)
    return "hints" if takes_hints else "transfer"


def check_options(threshold: float, top_k: int, temperature: float, layers: str, weights: str) -> None:
    """The reference matching's options (colorize.py's, evaluate.py's, the app's), in one line when one is off."""
    if not temperature > 0 or not top_k >= 0 or not threshold <= 1:  # written so that nan fails
        raise GuidanceError("--reference_temperature must be positive, --reference_top_k at least 0 and "
                            "--reference_threshold at most 1")
    if not layers or set(layers.split(",")) - set(reference.LAYERS):
        raise GuidanceError(f"--reference_layers={layers}: use some of {','.join(reference.LAYERS)}")
    if weights not in ("imagenet", "random") and not os.path.isfile(weights):
        raise GuidanceError(f"--reference_weights={weights}: use imagenet, random or a VGG16 weights file")


@dataclass
class Plan:
    """A job's guidance: each photo's hints (a reference among them), a film's keyframes and every-scene reference, the
    references read once (guide), and the photos skipped for a broken sidecar (their errors)."""
    guide: reference.Guide
    hints_for: dict[Path, hints.Hints] = field(default_factory=dict)
    film_keyframes: tuple[hints.Keyframe, ...] = ()
    every_scene: hints.Hints | None = None
    failed: list[tuple[Path, str]] = field(default_factory=list)  # (photo, why) for each photo skipped
    refused: set[Path] = field(default_factory=set)
    notes: list[str] = field(default_factory=list)

    @property
    def guided(self) -> bool:
        """Whether anything guides the colour (int8 loses hints: colorize.py refuses it then)."""
        return bool(self.hints_for or self.film_keyframes or self.every_scene)

    @property
    def matched(self) -> bool:
        """Whether anything is matched (a hint model needs the matcher's VGG16 then): a reference photo, or a film's
        keyframes (the frames after one take its colour where their content matches)."""
        return any(h.reference for h in self.hints_for.values()) or bool(self.film_keyframes) or self.every_scene is not None


def plan(jobs: list[tuple[Path, Path]], outputs: list[Path], film: dict | None, hints_file: str, reference_file: str,
         keyframes_dir: str, spec: str, size: int, max_pixels: int) -> Plan:
    """Every file's guidance for this job, read and checked (jobs: this process's (input, output) pairs to do; outputs:
    every output of the job, which no reference may be; film: video.check's header when the job is one film; spec: the
    model, whose architecture is read from its weights' keys only once a file's guidance is known to be sound)."""
    given = Path(reference_file).expanduser() if reference_file else None
    guide = reference.Guide(None, size=size, max_pixels=max_pixels)
    out = Plan(guide)
    archs: list[str] = []

    def arch() -> str:
        if not archs:
            archs.append(models.arch_of(spec))
        return archs[0]

    def no_hint_input() -> str:
        return f"{spec} is {models.ARCH_NAMES[arch()]}, which has no hint input"
    videos = [src for src, _ in jobs if src.suffix.lower() in data.VIDEO_SUFFIXES]
    resolved_outputs = {p.resolve() for p in outputs}

    def transfer_note(plan: Plan) -> None:
        if plan.matched and takes_reference(arch()) == "transfer":
            plan.notes.append(f"{no_hint_input()}: the reference's colours are transferred globally (ab histograms matched), "
                              "not placed where the content matches (a SIGGRAPH17 model places them)")

    def read_reference(path: Path) -> None:
        if path.resolve() in resolved_outputs:
            raise GuidanceError(f"reference {path}: it is one of this job's outputs, which would replace it (choose "
                                "another output or reference)")
        try:
            guide.photo(path)
        except reference.ReferenceError as e:
            raise GuidanceError(str(e)) from None

    def with_reference(h: hints.Hints, where: str) -> hints.Hints:
        h = dataclasses.replace(h, reference=given or h.reference)
        if (h.points or h.layer is not None) and takes_reference(arch()) != "hints":
            if where == "--hints":
                raise GuidanceError(f"--hints={hints_file}: {no_hint_input()}; use --ckpt=siggraph17 or a model trained with "
                                    "--arch=siggraph17")
            out.notes.append(f"the points of {h.source} are ignored: {no_hint_input()}")
            h = hints.Hints(h.source, reference=h.reference)
        if h.reference:
            read_reference(h.reference)
        return h

    if (given or keyframes_dir) and videos and film is None:
        raise GuidanceError("a reference or keyframes for videos in a folder job: give each video on its own (colorize.py "
                            "film.mp4 out.mp4 --reference=... or --keyframes=...)")
    if keyframes_dir and film is None:
        raise GuidanceError(f"--keyframes={keyframes_dir}: keyframes are a film's (colorize.py film.mp4 out.mp4 --keyframes=DIR)")
    read = hints.read(hints_file) if hints_file else None
    if film is not None:
        if read is not None and not read.keyframes:
            raise GuidanceError(f"--hints={hints_file}: a film's hint file lists keyframes: {{\"keyframes\": [{{\"time\": 12.5, "
                                "\"reference\": \"still.jpg\", \"points\": [...]}, ...]}")
        found = read.keyframes if read is not None else ()
        if keyframes_dir:
            folder = Path(keyframes_dir).expanduser()
            if not folder.is_dir():
                raise GuidanceError(f"--keyframes={keyframes_dir}: no such folder (colorize.py FILM --keyframes={keyframes_dir} "
                                    "writes it)")
            from_folder, skipped = keyframes.handed_back(folder)
            if skipped:
                out.notes.append(f"{len(skipped)} pictures in {keyframes_dir} are no keyframe: "
                                 + "; ".join(f"{p.name}: {why}" for p, why in skipped))
            if not from_folder:
                raise GuidanceError(f"--keyframes={keyframes_dir}: no coloured keyframe there ({len(skipped)} pictures skipped: "
                                    f"{skipped[0][1] if skipped else 'none'}): colour some first")
            found += from_folder
        try:
            keyframes.check(found, jobs[0][0] if jobs else Path(""), film)
        except keyframes.KeyframeError as e:
            raise GuidanceError(str(e)) from None
        for k in found:
            if k.hints.reference:
                read_reference(k.hints.reference)
        if given:
            read_reference(given)
        if (read is not None or keyframes_dir) and takes_reference(arch()) != "hints":
            raise GuidanceError(f"{no_hint_input()}: keyframes need --ckpt=siggraph17 or a model trained with --arch=siggraph17")
        out.film_keyframes = found
        if given:
            if takes_reference(arch()) == "hints":
                out.every_scene = hints.Hints("--reference", reference=given)
            else:  # a film colours like the reference, globally
                out.hints_for = {src: hints.Hints("--reference", reference=given) for src in videos}
                transfer_note(out)
        return out
    if read is not None:
        if read.keyframes:
            raise GuidanceError(f"--hints={hints_file}: lists keyframes, which are a film's: give a video")
        if len(jobs) > 1 or len(outputs) > 1:
            raise GuidanceError(f"--hints={hints_file}: hints are for one photo (in a folder job, put NAME.hints.json beside "
                                "each photo)")
        for src, _ in jobs:  # none when --skip_existing found it done
            try:
                hints.check(read, *hints.displayed_size(src), size)
            except hints.HintError as e:
                raise GuidanceError(str(e)) from None
            out.hints_for[src] = with_reference(read, "--hints")
        transfer_note(out)
        return out
    if given:
        read_reference(given)
    for src, _ in jobs:  # sidecars: a broken one skips its photo, named and counted, as an unreadable photo does
        if src.suffix.lower() in data.VIDEO_SUFFIXES:
            continue
        try:
            if os.path.lexists(hints.sidecar(src)):
                h = hints.read(hints.sidecar(src))
                hints.check(h, *hints.displayed_size(src), size)
                out.hints_for[src] = with_reference(h, "sidecar")
            elif given:
                out.hints_for[src] = hints.Hints("--reference", reference=given)
        except (hints.HintError, GuidanceError) as e:
            out.failed.append((src, str(e)))
            out.refused.add(src)
    transfer_note(out)
    return out
