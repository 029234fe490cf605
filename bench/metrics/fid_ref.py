"""FID reference statistics of image folders: ``python -m bench.metrics.fid_ref --images DIR --out F.npz``.

Streams the PNG/JPEG files under DIR (recursively, in sorted order) through pytorch-fid's
Inception in batches and accumulates the sums of the features and of their outer products in
float64 (bench.metrics.frechet.MomentAccumulator, as the benchmark's own FID does), so memory stays flat
however many images there are. Writes ``mu`` (mean) and ``sigma`` (unbiased covariance), the
keys of EDM's and pytorch-fid's ``.npz`` files.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from bench.errors import UserError
from bench.metrics.frechet import MomentAccumulator
from bench.metrics.inception import load_inception, uint8_features

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def image_files(folder: Path) -> list[Path]:
    """The PNG/JPEG files under ``folder``, sorted; bad folders are the user's error."""
    if not folder.is_dir():
        raise UserError(f"not a folder: {folder}")
    files = sorted(
        p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
    )
    if not files:
        raise UserError(f"no .png/.jpg images under {folder}")
    return files


def _read(path: Path, crop: int | None = None) -> np.ndarray:
    try:
        with Image.open(path) as img:
            rgb = img.convert("RGB")
            return np.asarray(center_crop(rgb, crop) if crop else rgb, dtype=np.uint8)
    except (OSError, UnidentifiedImageError) as err:
        raise UserError(f"cannot read image {path}: {err}") from None


def center_crop(image: Image.Image, size: int) -> Image.Image:
    """The largest centred square of ``image``, resized to ``size`` x ``size`` (bicubic): how
    photos of any shape (e.g. COCO val2014) become the square images a model generates."""
    width, height = image.size
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    square = image.crop((left, top, left + side, top + side))
    return square.resize((size, size), Image.Resampling.BICUBIC)


def _batches(files: Sequence[Path], batch_size: int,
             crop: int | None = None) -> Iterator[torch.Tensor]:
    """Stacks of 8-bit images ``[B, 3, H, W]``; every image must have the first one's size
    (``crop``: each is first centre-cropped and resized to crop x crop)."""
    size = None
    for start in range(0, len(files), batch_size):
        arrays = []
        for path in files[start : start + batch_size]:
            array = _read(path, crop)
            size = size or array.shape
            if array.shape != size:
                height, width = array.shape[:2]
                raise UserError(f"{path} is {width}x{height}, other images are {size[1]}x{size[0]}")
            arrays.append(array)
        yield torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)


def folder_stats(
    model: torch.nn.Module, folder: Path | str, batch_size: int = 64, crop: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(mu, sigma) of the Inception pool features of every image under ``folder``."""
    return files_stats(model, image_files(Path(folder)), batch_size, crop)


def files_stats(
    model: torch.nn.Module, files: Sequence[Path], batch_size: int = 64, crop: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(mu, sigma) of the Inception pool features of the images ``files``."""
    moments = None
    with tqdm(total=len(files), unit="img", desc="inception", disable=None) as bar:
        for pixels in _batches(files, batch_size, crop):
            features = uint8_features(model, pixels)
            if moments is None:
                # Centring at the first batch's mean keeps the float64 sums free of cancellation.
                moments = MomentAccumulator(
                    features.shape[1], shift=features.mean(dim=0), device=features.device
                )
            moments.update(features)
            bar.update(len(pixels))
    if float(moments.count) < 2:
        raise UserError(f"a covariance needs at least 2 images, got {float(moments.count):.0f}")
    mu, sigma = moments.mean_cov()
    return mu.numpy(), sigma.numpy()


def save_stats(path: Path | str, mu: np.ndarray, sigma: np.ndarray) -> None:
    """Write ``mu`` and ``sigma`` to ``path`` atomically (a temporary file, then a rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, mu=mu, sigma=sigma)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.metrics.fid_ref", description="FID reference statistics of an image folder."
    )
    parser.add_argument(
        "--images",
        required=True,
        type=Path,
        help="folder of PNG/JPEG images (searched recursively)",
    )
    parser.add_argument(
        "--out", required=True, type=Path, help="the .npz file to write (keys mu, sigma)"
    )
    parser.add_argument(
        "--batch-size", type=int, default=64, help="images per Inception batch (default 64)"
    )
    parser.add_argument(
        "--center-crop",
        type=int,
        metavar="SIZE",
        help="centre-crop each image to its largest square and resize it to SIZE x SIZE "
        "(bicubic) first, e.g. 512 for MS-COCO photos against Stable Diffusion's images",
    )
    parser.add_argument(
        "--device", default="cuda" if torch.cuda.is_available() else "cpu", help="torch device"
    )
    parser.add_argument(
        "--inception-weights",
        type=Path,
        default=None,
        help="pytorch-fid FID Inception state dict "
        "(default: the torch hub cache file, downloaded if missing)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.batch_size < 1:
            raise UserError(f"--batch-size must be positive, got {args.batch_size}")
        if args.center_crop is not None and args.center_crop < 1:
            raise UserError(f"--center-crop must be positive, got {args.center_crop}")
        device = _device(args.device)
        files = image_files(args.images)  # check the input before loading the network
        model = load_inception(args.inception_weights, device=device)
        mu, sigma = files_stats(model, files, args.batch_size, args.center_crop)
        save_stats(args.out, mu, sigma)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {args.out} ({len(files)} images)")
    return 0


def _device(name: str) -> torch.device:
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"unknown device {name!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda requested but no CUDA device is available")
    return device


if __name__ == "__main__":
    sys.exit(main())
