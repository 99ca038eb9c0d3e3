"""Try fine-tuning on real data: scikit-learn's handwritten digits as an image directory, and a score.

    python examples/digits.py write digits/           # digits/train/<0..9>/*.png, digits/test/<0..9>/*.png
    python -m client fine-tune digits/train --base vgg16 --output digits
    python examples/digits.py score digits/test --model digits

The 1,797 8x8 digits are upscaled to 32x32 RGB PNGs; 300 of them (stratified, fixed seed) are held
out in ``test/`` and never uploaded. ``score`` classifies them through the server and prints the
held-out accuracy. Needs scikit-learn for ``write`` (``pip install scikit-learn``).
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

TEST_IMAGES = 300


def digit_png(pixels) -> bytes:
    """An 8x8 digit (values 0..16) upscaled to a 32x32 RGB PNG."""
    import numpy as np
    from PIL import Image

    gray = Image.fromarray((np.asarray(pixels) * (255.0 / 16.0)).round().astype(np.uint8))
    buffer = io.BytesIO()
    gray.resize((32, 32), Image.BILINEAR).convert("RGB").save(buffer, format="PNG")
    return buffer.getvalue()


def write(directory: Path) -> None:
    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
    except ImportError:
        sys.exit("examples/digits.py write needs scikit-learn: pip install scikit-learn")
    digits = load_digits()
    indices = list(range(len(digits.target)))
    train, test = train_test_split(indices, test_size=TEST_IMAGES, stratify=digits.target, random_state=0)
    for split, members in (("train", train), ("test", test)):
        for n in members:
            target = directory / split / str(digits.target[n]) / f"{n:04d}.png"
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(digit_png(digits.images[n]))
        print(f"{len(members)} images in {directory / split}")


def score(directory: Path, model: str, address: str) -> None:
    from client import ModelClient

    files = sorted(directory.glob("*/*.png"))
    if not files:
        sys.exit(f"no <label>/*.png images under {directory}")
    with ModelClient(address, timeout=300) as client:
        result = client.classify([str(f) for f in files], model=model, top_k=1)
    correct = sum(predictions[0].label == f.parent.name for predictions, f in zip(result, files))
    print(f"{model} v{result.version}: held-out accuracy {correct / len(files):.4f} ({correct}/{len(files)})")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    write_cmd = commands.add_parser("write", help="write the digits as train/ and test/ image directories")
    write_cmd.add_argument("directory", type=Path)
    score_cmd = commands.add_parser("score", help="classify a <label>/*.png directory and print the accuracy")
    score_cmd.add_argument("directory", type=Path)
    score_cmd.add_argument("--model", default="digits")
    score_cmd.add_argument("--address", default="localhost:8500")
    args = parser.parse_args(argv)
    if args.command == "write":
        write(args.directory)
    else:
        score(args.directory, args.model, args.address)


if __name__ == "__main__":
    main()
