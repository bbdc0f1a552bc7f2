"""Which files are inputs, and what each output is called: discovery, extensions, output planning."""

from __future__ import annotations

import glob
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import StableSRError

__all__ = ["IMAGE_EXTENSIONS", "OUTPUT_CHOICES", "OUTPUT_EXTENSIONS", "Job", "collect_inputs", "final_target",
           "not_images", "output_path", "path_key", "plan_jobs", "resolve_extension"]

#: File extensions picked up when a directory is given to :func:`collect_inputs`.
IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp"})

#: Output extension -> Pillow format name.
OUTPUT_EXTENSIONS = {
    "png": "PNG",
    "jpg": "JPEG",
    "jpeg": "JPEG",
    "webp": "WEBP",
    "tif": "TIFF",
    "tiff": "TIFF",
    "bmp": "BMP",
}
#: What an output format may be asked as: an extension, or ``same`` (the input's).
OUTPUT_CHOICES = (*OUTPUT_EXTENSIONS, "same")

ALPHA_FORMATS = frozenset({"PNG", "WEBP", "TIFF"})
# Extension used for "same" when the source format has no writer here (GIF, PPM, ...).
_FORMAT_EXTENSIONS = {
    "PNG": "png",
    "JPEG": "jpg",
    "JPG": "jpg",
    "MPO": "jpg",
    "WEBP": "webp",
    "TIFF": "tif",
    "TIF": "tif",
    "BMP": "bmp",
}


def resolve_extension(requested: str, source_format: str, has_alpha: bool) -> str:
    """Pick the output extension (no dot).

    ``requested`` is an extension (``"png"``, ``"jpg"``, ``"webp"``, ``"tif"``, ...) or ``"same"``,
    which means the source's: ``source_format`` is the input's extension with its dot (``".JPG"``)
    or its Pillow format name (``"JPEG"``); sources with no writer here (GIF, ...) give ``"png"``. When the
    chosen format cannot hold alpha (JPEG, BMP) and the image has alpha, the answer is ``"png"``.

    Example:
        >>> resolve_extension("same", ".jpg", has_alpha=False), resolve_extension("jpg", "PNG", has_alpha=True)
        ('jpg', 'png')
    """
    wanted = requested.strip().lower().lstrip(".")
    if wanted == "same":
        source = source_format.strip()
        if source.startswith(".") and source[1:].lower() in OUTPUT_EXTENSIONS:
            wanted = source[1:].lower()  # an extension: keep the user's spelling (.jpeg stays jpeg)
        else:
            wanted = _FORMAT_EXTENSIONS.get(source.upper(), "png")
    if wanted not in OUTPUT_EXTENSIONS:
        raise StableSRError(
            f"unsupported output format {requested!r}; use same or one of {', '.join(sorted(OUTPUT_EXTENSIONS))}"
        )
    if has_alpha and OUTPUT_EXTENSIONS[wanted] not in ALPHA_FORMATS:
        return "png"
    return wanted


def output_path(input_path: Path, out_dir: Path, *, suffix: str = "", ext: str = "png") -> Path:
    """``out_dir / f"{stem}{suffix}.{ext}"``.

    Example:
        >>> output_path(Path("in/cat.jpg"), Path("out"), suffix="_x4", ext="png")
        PosixPath('out/cat_x4.png')
    """
    return Path(out_dir) / f"{Path(input_path).stem}{suffix}.{ext.lstrip('.')}"


def collect_inputs(specs: Sequence[str]) -> tuple[list[Path], list[str]]:
    """Expand files, directories and glob patterns into input paths.

    A directory gives its image files (by extension, case-insensitive; not recursive; hidden files
    skipped), sorted. A glob gives its matching files, sorted. A plain file is taken as is (reading
    it reports whether it is an image). Paths are deduplicated, keeping the first occurrence. The
    second result lists one message per spec that matched nothing.

    Example:
        >>> collect_inputs(["photos", "extra/*.png", "missing.png"])  # doctest: +SKIP
        ([PosixPath('photos/a.jpg'), PosixPath('extra/b.png')], ['missing.png: no such file or directory'])
    """
    found: list[Path] = []
    errors: list[str] = []
    for spec in specs:
        matches, problem = _expand(spec)
        found.extend(matches)
        if problem:
            errors.append(f"{spec}: {problem}")
    seen: set[str] = set()
    unique: list[Path] = []
    for path in found:
        key = os.path.normcase(os.path.realpath(path))  # "a.png" and "./a.png" are the same input
        if key not in seen:
            seen.add(key)
            unique.append(path)
    return unique, errors


def not_images(specs: Sequence[str]) -> list[Path]:
    """The files of the folders in ``specs`` that :func:`collect_inputs` leaves out (not image extensions).

    Hidden files (``.DS_Store``, our own temporary files) are not listed.

    Example:
        >>> [p.name for p in not_images(["photos"])]  # doctest: +SKIP
        ['animated.gif', 'notes.txt']
    """
    out: list[Path] = []
    for spec in specs:
        path = Path(os.path.expanduser(spec))
        if path.is_dir():
            out.extend(sorted(e for e in path.iterdir() if not e.name.startswith(".")
                              and e.suffix.lower() not in IMAGE_EXTENSIONS and e.is_file()))
    return out


def _expand(spec: str) -> tuple[list[Path], str | None]:
    """Paths for one spec, and a problem description when it matched nothing."""
    path = Path(os.path.expanduser(spec))
    if path.is_dir():
        images = sorted(
            entry
            for entry in path.iterdir()
            if not entry.name.startswith(".") and entry.suffix.lower() in IMAGE_EXTENSIONS and entry.is_file()
        )
        return images, None if images else "no image files in this directory"
    if path.exists():  # checked before globbing so names like "shot[1].png" work literally
        return [path], None
    if glob.has_magic(spec):
        matches = sorted(Path(m) for m in glob.glob(os.path.expanduser(spec), recursive=True) if os.path.isfile(m))
        return matches, None if matches else "no matching files"
    return [], "no such file or directory"


# --------------------------------------------------------------------------------------------- planning


@dataclass
class Job:
    """One input and where its result goes; ``problem`` is set when it must not be processed."""

    source: Path
    target: Path
    problem: str | None = None


def plan_jobs(sources: Sequence[Path], out_dir: Path, *, suffix: str, ext: str) -> list[Job]:
    """Output paths for ``sources``: ``stem + suffix + .ext``. Inputs sharing a stem but not an extension
    keep their source extension in the name (``image.bmp`` -> ``image_bmp.png``); inputs whose output
    would still overwrite an input or another input's output get a ``problem`` (the first keeps its output).

    The extension is planned as if no input had transparency; :func:`final_target` corrects the
    rare case where it matters (``--ext jpg`` for an RGBA PNG gives a PNG).

    Example:
        >>> jobs = plan_jobs([Path("a/x.png"), Path("b/x.jpg"), Path("c/x.png")], Path("out"), suffix="", ext="png")
        >>> [(j.target.name, j.problem is None) for j in jobs]
        [('x_png.png', True), ('x_jpg.png', True), ('x_png.png', False)]
    """
    inputs = {path_key(s, real=True) for s in sources}
    plain = {src: _target(src, out_dir, suffix, ext, tagged=False) for src in sources}
    # Inputs sharing a stem but not an extension (image.bmp + image.tiff, rgb.png + rgb.jpg) would write
    # the same file: each of them then keeps its source extension in the name (image_bmp.png, image_tiff.png).
    exts: dict[str, set[str]] = {}
    for src, target in plain.items():
        exts.setdefault(path_key(target).casefold(), set()).add(src.suffix.lower())
    owner: dict[str, Path] = {}
    jobs = []
    for src in sources:
        target = plain[src]
        if len(exts[path_key(target).casefold()]) > 1:
            target = _target(src, out_dir, suffix, ext, tagged=True)
        # Names differing only in case clash too: they would on macOS and Windows file systems.
        key = path_key(target).casefold()
        problem = None
        if path_key(target, real=True) in inputs:
            problem = f"output {target} would overwrite an input image; choose another -o, --suffix or --ext"
        elif key in owner:
            problem = (f"output {target} would overwrite the result of {owner[key]} (same file name); "
                       "rename one of them or process them in separate runs")
        else:
            owner[key] = src
        jobs.append(Job(src, target, problem))
    return jobs


def _target(src: Path, out_dir: Path, suffix: str, ext: str, *, tagged: bool, has_alpha: bool = False) -> Path:
    """``stem[_srcext]suffix.ext`` in ``out_dir``."""
    tag = "_" + src.suffix.lower().lstrip(".") if tagged and src.suffix else ""
    return output_path(src.with_name(src.stem + tag + src.suffix), out_dir, suffix=suffix,
                       ext=resolve_extension(ext, src.suffix, has_alpha=has_alpha))


def path_key(path: Path, *, real: bool = False) -> str:
    """A comparable form of ``path``: absolute (or with links resolved), normalised as the platform compares."""
    return os.path.normcase(os.path.realpath(path) if real else os.path.abspath(path))


def final_target(job: Job, has_alpha: bool, ext: str, suffix: str) -> Path:
    """The output path now that we know whether the image has alpha (JPEG/BMP cannot hold it)."""
    if not has_alpha:
        return job.target
    tagged = job.target.stem != f"{job.source.stem}{suffix}"  # the name carries its source extension
    return _target(job.source, job.target.parent, suffix, ext, tagged=tagged, has_alpha=True)
