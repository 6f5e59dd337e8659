"""Image files to RGB pixels, exactly as transformers loads them for Gemma's processors.

transformers 5.25 turns an image file into the processor's input in two steps, both Pillow:

1. ``image_utils.load_image(path)``: ``PIL.Image.open``, ``ImageOps.exif_transpose`` (a phone photo
   stored sideways with an EXIF Orientation tag comes out upright), then ``.convert("RGB")``. That
   conversion *drops* an alpha channel (the colour under a transparent pixel is kept as stored);
   grayscale is repeated into three channels; a palette is looked up; 16-bit grayscale ("I;16") is
   clipped to 0..255 by Pillow, not scaled; CMYK goes through Pillow's naive conversion.
2. The processor's ``convert_to_rgb`` (``do_convert_rgb`` is true for Gemma 3 and Gemma 4): an image
   that still says it has transparency (``"transparency"`` in its info: Pillow carries a palette or
   grayscale image's transparent colour over into the RGB image) is composited onto white.

:func:`load_image` does the same calls in the same order, so its pixels are those transformers feeds
its processor (``tests/test_vision_goldens.py`` checks each case against transformers' own code).
Only the first frame of an animation is read, as Pillow (and so transformers) does.

It is bounded, since an image file is untrusted input: a regular file of at most
:data:`MAX_IMAGE_BYTES`, one of the common raster formats (never EPS, which Pillow decodes by running
Ghostscript), at most :data:`MAX_PIXELS` pixels and :data:`MAX_SIDE` a side (checked from the header,
before any pixel is decoded: a decompression bomb is refused, not inflated); a truncated or corrupt
file is an InputError naming it, never a half-decoded image. Pillow is imported here only, lazily.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np

from release.errors import InputError

MAX_IMAGE_BYTES = 64 << 20  # a photo is a few MB; a 64 MB PNG is already ~100 MP
MAX_PIXELS = 1 << 26  # 67 MP (Pillow warns past 89 MP): 200 MB as uint8 RGB, more in the processor's float32
MAX_SIDE = 1 << 15  # as gemma_ref.vision.MAX_IMAGE_SIDE
# What Pillow may decode: the raster formats people save photos and screenshots in.
FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF", "PPM")  # JPEG includes MPO (phone photos)


def pillow_version() -> str:
    """The installed Pillow's version (goldens record it: resizing is Pillow's)."""
    import PIL

    return PIL.__version__


def load_image(path: str | os.PathLike) -> np.ndarray:
    """An image file as RGB pixels, uint8 [H, W, 3], as transformers' load_image + the processor's RGB conversion give them.

    InputError naming the file when it is missing, not a regular file, too large, not an image of a
    known format, truncated or corrupt.
    """
    from release.files import read_regular_bytes

    p = Path(path)
    data = read_regular_bytes(p, MAX_IMAGE_BYTES, "image")  # a FIFO or device is refused, never opened
    try:
        from PIL import Image, ImageOps, UnidentifiedImageError
    except ImportError:  # a declared dependency; only a broken install lacks it
        raise InputError("reading images needs Pillow", p, hint="pip install pillow") from None
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)  # a bomb is an error here, not a warning
        try:
            img = Image.open(io.BytesIO(data), formats=FORMATS)
        except UnidentifiedImageError:
            raise InputError(f"not an image Pillow reads as {', '.join(FORMATS)}", p) from None
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise InputError(f"declares more pixels than Pillow's limit ({Image.MAX_IMAGE_PIXELS}); refused as a "
                             "decompression bomb", p) from None
        except Exception as e:  # noqa: BLE001 - a malformed header raises whatever its parser hits
            raise InputError(f"not a readable image ({_reason(e)})", p) from None
        w, h = img.size
        if w < 1 or h < 1:
            raise InputError(f"image is {w}x{h} pixels: empty", p)
        if w * h > MAX_PIXELS or max(w, h) > MAX_SIDE:
            raise InputError(f"image is {w}x{h} pixels: more than {MAX_PIXELS} pixels or {MAX_SIDE} a side", p)
        try:
            img.load()  # decode now: a truncated file fails here (LOAD_TRUNCATED_IMAGES stays False)
            img = ImageOps.exif_transpose(img)  # 1. transformers' load_image: EXIF orientation applied,
            img = img.convert("RGB")  # then RGB (alpha dropped, palette looked up, grayscale repeated)
            if "A" in img.getbands() or img.info.get("transparency") is not None:
                # 2. the processor's convert_to_rgb: a transparent colour still on record goes onto white
                img = img.convert("RGBA")
                img = Image.alpha_composite(Image.new("RGBA", img.size, (255, 255, 255, 255)), img).convert("RGB")
            pixels = np.array(img, dtype=np.uint8)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise InputError("decompression bomb: refused", p) from None
        except Exception as e:  # noqa: BLE001 - truncated data, bad EXIF, a decoder error: all bad input
            raise InputError(f"image data is truncated or corrupt ({_reason(e)})", p) from None
    if pixels.ndim != 3 or pixels.shape[2] != 3 or pixels.shape[:2] not in ((h, w), (w, h)):
        raise InputError(f"decoded to {list(pixels.shape)}, not RGB pixels", p)
    return np.ascontiguousarray(pixels)


def _reason(e: Exception) -> str:
    """Pillow's message, short and one line (the CLI escapes control characters when printing)."""
    text = " ".join(str(e).split()) or type(e).__name__
    return text[:200]


def save_png(pixels: np.ndarray, path: str | os.PathLike) -> None:
    """uint8 [H, W, 3] pixels as a lossless PNG (tests and fixtures; written atomically)."""
    from PIL import Image

    from release.files import atomic_path

    with atomic_path(path, "image") as tmp:
        Image.fromarray(np.ascontiguousarray(pixels, dtype=np.uint8)).save(tmp, format="PNG")
