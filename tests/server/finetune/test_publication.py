"""What a job makes of its published version's load, on its own (the end-to-end cases are in
test_bases.py): a slow load is not cancelled by the job's wait, and is not moved aside."""

from __future__ import annotations

import asyncio

from server.errors import NotFound
from server.finetune.publication import load_published, policy_note
from server.settings import ModelConfig, ServerSettings


class SlowRepository:
    """A repository whose reconcile outlasts the job's wait."""

    def __init__(self, root) -> None:
        self.settings = ServerSettings(model_root=root)
        self.finished = False

    async def reconcile(self) -> None:
        await asyncio.sleep(0.5)
        self.finished = True

    def view(self, name):
        raise NotFound(f"unknown model {name!r}")


def test_a_load_slower_than_the_wait_goes_on_and_the_version_stays(tmp_path):
    async def scenario():
        repository = SlowRepository(tmp_path)
        outcome = await load_published(repository, "digits", 1, timeout_s=0.05)
        await asyncio.sleep(1.0)
        return outcome, repository.finished

    outcome, finished = asyncio.run(scenario())
    assert outcome.failed and not outcome.broken and not outcome.served
    assert "not loaded within 0 s (the load goes on" in outcome.error
    assert finished  # the reconcile was not cancelled by the timeout


def test_policy_notes_say_how_to_serve_the_version():
    specific = policy_note(ModelConfig(version_policy="specific", versions=(1,)), "pinned", 2, [1])
    assert specific == (
        "not served: model 'pinned' has version_policy 'specific' with versions [1] (serving v1); "
        "add 2 to versions in [models.pinned] of the server's config file to serve it"
    )
    latest = policy_note(ModelConfig(latest=1), "digits", 2, [3])
    assert "version_policy 'latest' with latest = 1 and newer versions exist (serving v3)" in latest
