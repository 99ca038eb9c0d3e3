"""The exporter's verification catches a version whose assets are not its own, on every export path.

The fault it must catch (a fine-tuned version of a base with its head): the base SavedModel, tracked
inside the new module, brought its own ``labels.txt``; TensorFlow saved the new labels as
``labels.txt_1`` and the server then refused the version (1000 labels for 10 classes).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import tensorflow as tf

from graphs.errors import VerificationFailed
from graphs.progress import Progress
from graphs.publish import check_assets, save_and_publish
from graphs.signatures import LABELS_ASSET, ServingModule, describe_signatures
from model_format.labels import format_labels

QUIET = Progress("test", stream=None)


def head_on(base_path: Path, tmp_path: Path, labels: list[str], track_whole_base: bool):
    """A module classifying into ``labels`` on the base's ``embed``, as fine-tuning composes one."""
    base = tf.saved_model.load(str(base_path))
    width = int(base.embed.concrete_functions[0].structured_outputs.shape[-1])
    size = int(base.embed.concrete_functions[0].structured_input_signature[0][0].shape[1])
    kernel = tf.Variable(tf.random.stateless_normal([width, len(labels)], seed=[1, 2]))

    def classify(pixels):
        return tf.nn.softmax(tf.matmul(base.embed(pixels), kernel))

    labels_path = tmp_path / LABELS_ASSET
    labels_path.write_text(format_labels(labels), encoding="utf-8")
    from server.finetune.trainer import embed_variables

    tracked = base if track_whole_base else embed_variables(base.embed)
    module = ServingModule(size, classify, base.embed, str(labels_path), {"base": tracked, "kernel": kernel})
    signatures = module.signature_map
    manifest = {
        "name": "composed",
        "input_size": size,
        "num_classes": len(labels),
        "feature_dim": width,
        "labels_file": f"assets/{LABELS_ASSET}",
        "signatures": describe_signatures(sorted(signatures), len(labels), width),
    }
    return module, signatures, manifest


def test_a_tracked_base_with_its_own_labels_is_refused(classifier_export, tmp_path):
    module, signatures, manifest = head_on(
        classifier_export.path, tmp_path, ["a", "b"], track_whole_base=True
    )
    with pytest.raises(VerificationFailed, match="assets 'labels.txt' and 'labels.txt_1' collide"):
        save_and_publish(module, signatures, tmp_path / "models" / "composed", None, manifest, QUIET)
    assert list((tmp_path / "models" / "composed").iterdir()) == []  # nothing published


def test_the_base_variables_alone_make_a_version_with_only_its_labels(classifier_export, tmp_path):
    module, signatures, manifest = head_on(
        classifier_export.path, tmp_path, ["a", "b"], track_whole_base=False
    )
    published = save_and_publish(module, signatures, tmp_path / "models" / "composed", None, manifest, QUIET)
    assert sorted(p.name for p in (published.path / "assets").iterdir()) == ["labels.txt"]
    assert (published.path / "assets" / "labels.txt").read_text() == "a\nb\n"


@pytest.fixture(scope="module")
def reloaded(classifier_export):
    """The published classifier, loaded from where it is (the export's own reload points at staging)."""
    return classifier_export.path, tf.saved_model.load(str(classifier_export.path))


def test_labels_count_must_match_the_classifier(reloaded):
    """A labels file of the wrong length (here the exported 1000 ImageNet labels against a manifest
    that says 10 classes) is refused after the reload."""
    path, loaded = reloaded
    manifest = {**json.loads((path / "manifest.json").read_text()), "num_classes": 10}
    shapes = {"classify/probabilities": [2, 1000]}
    with pytest.raises(
        VerificationFailed, match="1000 labels in 'assets/labels.txt', but the manifest says 10"
    ):
        check_assets(path, manifest, loaded, shapes, None)


def test_the_labels_file_must_be_the_one_written(reloaded, tmp_path):
    path, loaded = reloaded
    other = tmp_path / "labels.txt"
    other.write_text(format_labels(["cat"] * 1000), encoding="utf-8")
    manifest = json.loads((path / "manifest.json").read_text())
    shapes = {"classify/probabilities": [2, 1000]}
    with pytest.raises(VerificationFailed, match="is not the labels file the module was given"):
        check_assets(path, manifest, loaded, shapes, other)
    check_assets(path, manifest, loaded, shapes, None)  # as exported: fine
