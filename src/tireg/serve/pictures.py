"""Pictures the gallery shows: previews and their thumbnails, always found by catalogue id.

Why by id: a URL never carries a path, so no ``../`` or absolute path can reach a file. The only
files served are those the catalogue recorded as pictures (a preview's location: beside the
embedding, or under ``TIREG_HOME/previews``; a validation run's grid); a remote preview that
was never downloaded is not fetched at run time, it is simply absent.

Why thumbnails are cached: a gallery page shows 100 cards, and decoding 100 full-size PNGs per
page would take seconds. Each picture is scaled once with Pillow into
``TIREG_HOME/cache/thumbs``, keyed by the picture's path, size and mtime, so an edited picture
gets a new thumbnail and the cache can be deleted at any time.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

from PIL import Image, UnidentifiedImageError
from sqlalchemy.orm import Session

from tireg import config
from tireg.db.schema import PreviewRow, ValidationRow
from tireg.files import atomic_write_bytes

#: what a thumbnail fits in (pixels); cards show it at half that for sharp high-DPI screens
THUMB_SIZE = (384, 384)
#: picture types served as they are; anything else recorded as a preview is not served
MEDIA_TYPES = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".webp": "image/webp",
    ".gif": "image/gif",
}


def local_picture(location: str | None) -> Path | None:
    """The file a recorded picture location names, if it is a local picture that exists."""
    if not location or "://" in location:
        return None
    path = Path(location)
    if not path.is_absolute() or path.suffix.lower() not in MEDIA_TYPES or not path.is_file():
        return None
    return path


def preview_file(session: Session, preview_id: int) -> Path | None:
    """The local file of preview ``preview_id``, or ``None`` (unknown id, a URL, gone)."""
    row = session.get(PreviewRow, preview_id)
    return local_picture(row.location if row is not None else None)


def grid_file(session: Session, run_id: int) -> Path | None:
    """The grid PNG of validation run ``run_id``, or ``None`` (unknown run, grid deleted)."""
    row = session.get(ValidationRow, run_id)
    return local_picture(row.grid_path if row is not None else None)


def thumbnail(picture: Path) -> Path | None:
    """A JPEG thumbnail of ``picture``, made on first use and kept in the cache; ``None`` when
    Pillow cannot read the picture."""
    stat = picture.stat()
    key = hashlib.sha256(
        f"{picture.resolve()}\0{stat.st_size}\0{stat.st_mtime_ns}\0{THUMB_SIZE}".encode()
    ).hexdigest()
    cached = config.cache_dir() / "thumbs" / key[:2] / f"{key}.jpg"
    if cached.is_file():
        return cached
    try:
        with Image.open(picture) as image:
            image.thumbnail(THUMB_SIZE)
            flat = Image.new("RGB", image.size, "white")
            rgba = image.convert("RGBA")
            flat.paste(rgba, mask=rgba.getchannel("A"))
    except (OSError, UnidentifiedImageError, Image.DecompressionBombError):
        return None
    buffer = io.BytesIO()
    flat.save(buffer, "JPEG", quality=85)
    cached.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(cached, buffer.getvalue())
    return cached
