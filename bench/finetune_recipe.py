"""The tutorial's fine-tuning recipe against ours, on the same data, epochs and head.

Data: scikit-learn's digits (1797 real 8x8 images, upscaled to 32x32 RGB PNG), one stratified
80/20 train/validation split from the seed, shared by both. Base: VGG16 at 32x32 with random weights
(seed 0; the same weights in both, built the same way as ``python -m exporter vgg16 --weights random``).

- recipe: the tutorial's Keras model, ``frozen VGG16 -> GlobalAveragePooling2D -> Dense(256, relu) ->
  Dense(n, softmax)``, ``model.fit`` on the decoded images for ``--epochs`` epochs: the frozen base
  runs on every batch of every epoch. Timed: ``model.fit``.
- ours: what a fine-tuning job does (:mod:`server.finetune.trainer`): the base's features once per
  image through the exported model's ``features`` signature, then the head on the cached features
  for the same epochs (early stopping off), with our defaults: Normalization adapted on the training
  features and Dropout(0.2). Timed: feature extraction + ``fit``.
- ours, recipe head: the same cached features with exactly the recipe's head (no Normalization, no
  Dropout), to show that the cache alone changes the time, not the accuracy.

Prints wall times, the ratio and validation accuracies; writes bench/results/finetune_recipe-*.json.
Usage: python -m bench.finetune_recipe [--epochs 10] [--seed 0]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

BENCH_DIR = Path(__file__).resolve().parent
MODELS_DIR = BENCH_DIR / "models" / "finetune"
RESULTS_DIR = BENCH_DIR / "results"
INPUT_SIZE = 32
VALIDATION_FRACTION = 0.2


def exported_base(seed: int) -> Path:
    """VGG16 at 32x32, random weights, features only: exported once under bench/models/finetune/."""
    from exporter.export import ExportSpec, export_model
    from graphs.progress import Progress
    from storage.local import existing_versions

    root = MODELS_DIR / f"seed{seed}"
    versions = existing_versions(root / "vgg16")
    if versions:
        return root / "vgg16" / str(versions[-1])
    spec = ExportSpec(
        name="vgg16", weights="random", input_size=INPUT_SIZE, seed=seed, include_top=False, output_dir=root
    )
    return export_model(spec, Progress("bench-export")).path


def write_results(results: dict) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"finetune_recipe-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(results, indent=2) + "\n")
    return path


def digit_pngs() -> tuple[list[bytes], np.ndarray]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = []
    for pixels in digits.images:
        gray = Image.fromarray((pixels * (255.0 / 16.0)).round().astype(np.uint8))
        buffer = io.BytesIO()
        gray.resize((INPUT_SIZE, INPUT_SIZE), Image.BILINEAR).convert("RGB").save(buffer, format="PNG")
        images.append(buffer.getvalue())
    return images, digits.target.astype(np.int64)


def run_recipe(images: list[bytes], class_ids, train, val, epochs: int, seed: int) -> dict:
    """The tutorial: a Keras model with the frozen base inside, fit on the images."""
    import keras

    pixels = np.stack([np.asarray(Image.open(io.BytesIO(data)).convert("RGB")) for data in images]).astype(
        "float32"
    )
    num_classes = int(class_ids.max()) + 1
    onehot = np.eye(num_classes, dtype="float32")[class_ids]
    keras.utils.set_random_seed(seed)  # as the exporter does before building the base: the same weights
    base = keras.applications.VGG16(include_top=False, weights=None, input_shape=(INPUT_SIZE, INPUT_SIZE, 3))
    base.trainable = False
    inputs = keras.Input((INPUT_SIZE, INPUT_SIZE, 3))
    x = keras.applications.vgg16.preprocess_input(inputs)
    x = base(x, training=False)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dense(256, activation="relu")(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax")(x)
    model = keras.Model(inputs, outputs)
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3), loss="categorical_crossentropy", metrics=["accuracy"]
    )
    started = time.monotonic()
    history = model.fit(
        pixels[train],
        onehot[train],
        validation_data=(pixels[val], onehot[val]),
        epochs=epochs,
        batch_size=32,
        verbose=0,
    )
    seconds = time.monotonic() - started
    return {"seconds": seconds, "val_accuracy": float(history.history["val_accuracy"][-1])}


def run_ours(images, class_ids, train, val, epochs: int, seed: int, base_path: str) -> list[dict]:
    """A fine-tuning job's recipe: extract once, train the head on cached features."""
    from server.finetune import trainer
    from server.finetune.hyperparameters import Hyperparameters

    num_classes = int(class_ids.max()) + 1
    labels = [str(c) for c in range(num_classes)]
    onehot = np.eye(num_classes, dtype=np.float32)[class_ids]
    base = trainer.FrozenBase(base_path, INPUT_SIZE)
    base.features(images[:2])  # load and trace outside the timing, as model building is for the recipe
    started = time.monotonic()
    features = trainer.extract_features(base, lambda i: images[i], len(images), lambda done, elapsed: None)
    extract_seconds = time.monotonic() - started
    results = []
    for name, normalize, dropout in (("ours", True, 0.2), ("ours, recipe head", False, 0.0)):
        hp = Hyperparameters(epochs=epochs, seed=seed, dropout=dropout)
        head = trainer.build_head(features[train], num_classes, hp, normalize=normalize)
        training = trainer.train_head(
            head,
            trainer.cached_batches(features[train], onehot[train], hp),
            features[val],
            onehot[val],
            hp,
            None,
            lambda metrics, seconds: None,
            early_stopping=False,
        )
        accuracy = trainer.evaluate(head, features[val], class_ids[val], labels).accuracy
        results.append(
            {
                "name": name,
                "seconds": extract_seconds + training.seconds,
                "extract_seconds": extract_seconds,
                "train_seconds": training.seconds,
                "val_accuracy": accuracy,
            }
        )
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.finetune_recipe", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    from server.finetune.trainer import stratified_split

    base_path = exported_base(args.seed)
    images, class_ids = digit_pngs()
    train, val = stratified_split(class_ids, VALIDATION_FRACTION, args.seed)
    print(
        f"digits: {len(train)} training, {len(val)} validation images, {args.epochs} epochs, VGG16 32x32 "
        "random"
    )
    recipe = run_recipe(images, class_ids, train, val, args.epochs, args.seed)
    ours = run_ours(images, class_ids, train, val, args.epochs, args.seed, str(base_path))

    print(f"{'':<20}{'wall time':>12}{'speed-up':>10}{'val accuracy':>14}")
    print(f"{'recipe (fit)':<20}{recipe['seconds']:>10.1f} s{1.0:>9.1f}x{recipe['val_accuracy']:>14.4f}")
    for result in ours:
        ratio = recipe["seconds"] / result["seconds"]
        result["speedup"] = ratio
        result["accuracy_points_vs_recipe"] = 100 * (result["val_accuracy"] - recipe["val_accuracy"])
        print(
            f"{result['name']:<20}{result['seconds']:>10.1f} s{ratio:>9.1f}x{result['val_accuracy']:>14.4f}"
        )
    print(
        f"ours = {ours[0]['extract_seconds']:.1f} s feature extraction (once) + "
        f"{ours[0]['train_seconds']:.1f} s "
        f"training; target: >= 5x faster, accuracy within 1 point"
    )
    path = write_results(
        {
            "epochs": args.epochs,
            "seed": args.seed,
            "train_images": int(len(train)),
            "validation_images": int(len(val)),
            "recipe": recipe,
            "ours": ours,
            "machine": {
                "cpus": os.cpu_count(),
                "python": platform.python_version(),
                "system": platform.platform(),
            },
        },
    )
    print(f"results: {path}")


if __name__ == "__main__":
    main()
