"""AsyncModelClient fine-tunes like ModelClient: the same methods, as coroutines and async iterators."""

from __future__ import annotations

import asyncio
from contextlib import aclosing

import pytest

from client import (
    AsyncFineTuneJob,
    AsyncModelClient,
    FineTuneCancelled,
    Hyperparameters,
    JobEvent,
    JobPhase,
    JobState,
    NotFound,
)
from tests.client.conftest import JOB_TIMEOUT_S, NAMES, PER_CLASS


def run(coroutine, timeout: float = JOB_TIMEOUT_S):
    return asyncio.run(asyncio.wait_for(coroutine, timeout))


def test_async_upload_fine_tune_wait_and_classify(tuning_server, named_digits, digits):
    async def scenario():
        async with AsyncModelClient(tuning_server.address, timeout=60) as client:
            dataset = await client.upload_dataset(named_digits, name="async digits")
            job = await client.fine_tune(
                dataset,
                output_model="digits_async",
                hyperparameters=Hyperparameters(epochs=2),
                request_id="aio-1",
            )
            again = await client.fine_tune(
                dataset, output_model="digits_async", hyperparameters={"epochs": 2}, request_id="aio-1"
            )
            events: list[JobEvent] = []
            final = await job.wait(timeout=JOB_TIMEOUT_S, progress=events.append)
            watched = [event async for event in client.watch_job(job.job_id)]
            resumed = [event async for event in job.events(after_event_id=3)]
            async with aclosing(client.watch_job(job.job_id)) as stream:  # stopping early cancels the stream
                first = await anext(stream)
            listed = await client.list_jobs(states=[JobState.SUCCEEDED])
            got = await client.get_job(job.job_id)
            result = await client.classify(digits.test_images[:10], "digits_async", top_k=2)
            return dataset, job, again, final, events, watched, resumed, first, listed, got, result

    dataset, job, again, final, events, watched, resumed, first, listed, got, result = run(scenario())
    assert dataset.name == "async digits" and dataset.images_per_class == {
        n: PER_CLASS for n in NAMES.values()
    }
    assert isinstance(job, AsyncFineTuneJob) and again.job_id == job.job_id
    assert final.state is JobState.SUCCEEDED, final.error
    assert job.state is JobState.SUCCEEDED and job.status == final == got
    assert (final.output_model, final.output_version, final.hyperparameters.epochs) == ("digits_async", 1, 2)
    assert final.artifacts == [
        f"digits_async/1/{name}" for name in ("metrics.json", "training_curve.png", "confusion_matrix.png")
    ]
    assert events == watched and events[-1].state is JobState.SUCCEEDED
    assert JobPhase.TRAINING in {e.phase for e in events} and any(e.epoch for e in events)
    assert resumed == [e for e in events if e.event_id > 3] and first == events[0]
    assert final in listed
    assert (result.model, result.version) == ("digits_async", 1)
    assert {p.label for predictions in result for p in predictions} <= set(NAMES.values())


def test_async_cancel_and_errors(tuning_server, dataset):
    async def scenario():
        async with AsyncModelClient(tuning_server.address, timeout=60) as client:
            job = await client.fine_tune(
                dataset,
                output_model="async_cancelled",
                hyperparameters={"epochs": 1000, "early_stopping_patience": 1000},
            )
            queued_state = job.state
            cancelled = await job.cancel()
            with pytest.raises(FineTuneCancelled) as caught:
                await job.wait(progress=False)
            refreshed = await job.refresh()
            with pytest.raises(NotFound, match="unknown fine-tuning job 'ft-none'"):
                await client.cancel_job("ft-none")
            with pytest.raises(NotFound, match="unknown fine-tuning job 'ft-none'"):
                async for _event in client.watch_job("ft-none"):
                    pass
            return queued_state, cancelled, caught.value, refreshed

    queued_state, cancelled, failure, refreshed = run(scenario())
    assert queued_state is JobState.QUEUED
    assert cancelled.state is JobState.CANCELLED and refreshed == cancelled == failure.job
    assert f"fine-tuning job {cancelled.job_id} CANCELLED" in str(failure)
