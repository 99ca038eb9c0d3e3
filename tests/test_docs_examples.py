"""Every Python example of the README and docs/ runs as written against what ``bash scripts/serve``
serves: the models ``efficientnet_lite0``, ``mobilenet_v2_keras`` and ``vgg16`` on localhost:8500
(REST on 8501 where an example uses it), the example photos, and a user's own ``photos/`` directory
of labelled images (two classes) with a ``rose.jpg`` beside it.

Here the first two are the fake backend's networks (their numbers are the fake's) and ``vgg16`` is a
small real network (32x32), so that the fine-tuning examples really train and publish; the addresses
are the test server's. A block preceded by ``<!-- not run: <why> -->`` needs what a test machine has
not (certificates, a cluster's DNS); its reason names the test that covers what it shows.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import FAKE_FEATURES, REPO_ROOT, write_fake_classifier
from tests.servers import InProcessServer, copy_version, test_settings

PAGES = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(
    r"(?:<!-- not run: (?P<why>[^>]*) -->\n)?```python\n(?P<code>.*?)^```", re.MULTILINE | re.DOTALL
)
#: The classes of the user's photos/ directory (digits 0 and 1 standing in for flowers).
CLASSES = {"roses": "0", "tulips": "1"}
PER_CLASS = 20


@dataclass(frozen=True)
class Example:
    page: str
    number: int
    code: str
    not_run: str | None

    @property
    def name(self) -> str:
        return f"{self.page}#{self.number}"


def examples() -> list[Example]:
    found = []
    for page in PAGES:
        for number, match in enumerate(BLOCK.finditer(page.read_text()), start=1):
            found.append(Example(str(page.relative_to(REPO_ROOT)), number, match["code"], match["why"]))
    return found


RUN = [example for example in examples() if example.not_run is None]


def param(example: Example):
    """A fine-tuning example trains for 30 epochs (~30 s): the slow tier's."""
    marks = [pytest.mark.slow] if "fine_tune(" in example.code else []
    return pytest.param(example, id=example.name, marks=marks)


@pytest.fixture(scope="module")
def server(tmp_path_factory, features_export):
    root = tmp_path_factory.mktemp("served")
    write_fake_classifier(root, name="efficientnet_lite0", input_size=224)
    write_fake_classifier(root, name="mobilenet_v2_keras", input_size=224, seed=2)
    copy_version(features_export.path, root, "vgg16", 1)  # a real base to fine-tune (headless, 32x32)
    assert FAKE_FEATURES["feature_dim"] == 512  # the same width as the examples' comments say
    running = InProcessServer(test_settings(root, rest_port=0)).start()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    """The directory a user runs the examples from: the repository's example photos and README, and
    their own photos/ (two classes) and rose.jpg."""
    from tests.server.finetune.helpers import load_digit_images

    directory = tmp_path_factory.mktemp("workspace")
    (directory / "examples").mkdir()
    shutil.copytree(REPO_ROOT / "examples" / "images", directory / "examples" / "images")
    shutil.copy(REPO_ROOT / "README.md", directory / "README.md")
    images, labels = load_digit_images().subset(PER_CLASS, classes=tuple(CLASSES.values()))
    for n, (image, label) in enumerate(zip(images, labels, strict=True)):
        folder = directory / "photos" / next(name for name, digit in CLASSES.items() if digit == label)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{n}.png").write_bytes(image)
    (directory / "rose.jpg").write_bytes(next((directory / "photos" / "roses").iterdir()).read_bytes())
    return directory


@pytest.mark.parametrize("example", [param(example) for example in RUN])
def test_the_example_runs_as_written(example, server, workspace, monkeypatch, capsys):
    code = example.code.replace("localhost:8500", server.address).replace(
        "http://localhost:8501", server.rest_address
    )
    monkeypatch.chdir(workspace)
    monkeypatch.delenv("IMAGESERVE_TOKEN", raising=False)
    exec(compile(code, example.name, "exec"), {"__name__": "__example__"})
    if "Calling it" in code or "answers[" in code:  # docs/protocols.md: one image through every door
        doors = [line[:16].strip() for line in capsys.readouterr().out.splitlines()]
        assert doors == ["imageserve gRPC", "TF Serving gRPC", "TF Serving REST", "V2 gRPC", "V2 REST"]


def test_every_example_runs_or_names_the_test_that_covers_it():
    assert len(RUN) >= 8
    for example in examples():
        if example.not_run is not None:
            assert re.search(r"tests/\S+\.py", example.not_run), f"{example.name}: {example.not_run}"
