"""docs/protocols.md, "Calling it": its code runs as written and every door gives the same top-5."""

from __future__ import annotations

import re

import pytest

from tests.conftest import CLASSIFIER, REPO_ROOT
from tests.servers import InProcessServer, test_settings

pytest.importorskip("tritonclient.grpc", reason="tritonclient[grpc,http] is in the test extra")


def calling_it_block() -> str:
    text = (REPO_ROOT / "docs" / "protocols.md").read_text()
    section = text.split("## Calling it", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.DOTALL).group(1)


@pytest.fixture(scope="module")
def server(model_root):
    running = InProcessServer(test_settings(model_root, rest_port=0)).start()
    yield running
    running.stop()


def test_calling_it_gives_the_same_answer_through_every_door(server, photos, tmp_path, capsys):
    image = tmp_path / "chelsea.png"
    image.write_bytes(photos["chelsea.png"])
    names = {
        "GRPC": server.address,
        "REST": f"http://127.0.0.1:{server.server.rest.port}",
        "MODEL": CLASSIFIER,
        "IMAGE": str(image),
    }
    exec(compile(calling_it_block(), "docs/protocols.md", "exec"), names)  # the block asserts equality itself
    lines = capsys.readouterr().out.splitlines()
    assert [line[:16].strip() for line in lines] == [
        "imageserve gRPC",
        "TF Serving gRPC",
        "TF Serving REST",
        "V2 gRPC",
        "V2 REST",
    ]
    assert len({line[16:].strip() for line in lines}) == 1
    print("\n".join(lines))
