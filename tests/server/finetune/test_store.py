"""The job store's contract, on both backends: claims never overlap, leases expire and are taken
over once, cancel requests reach the runner, events keep their order, writes are announced."""

from __future__ import annotations

import datetime as dt
import threading
import time

import pytest

from server.finetune.hyperparameters import Hyperparameters
from server.finetune.jobs import Dataset, Job, JobPhase, JobState
from server.finetune.store import JobStore
from server.finetune.store_postgres import PostgresJobStore, redact
from server.finetune.store_sqlite import SQLiteJobStore

DATASET = Dataset("ds-1", "digits", 20, {"0": 10, "1": 10}, 1.0, dt.datetime.fromtimestamp(1.0, dt.UTC))


@pytest.fixture(params=["sqlite", "postgresql"])
def open_store(request, tmp_path):
    """Opens connections to one store (each call: a new connection, as another replica would)."""
    opened: list[JobStore] = []

    def connect() -> JobStore:
        if request.param == "sqlite":
            store = SQLiteJobStore(tmp_path / "finetune.sqlite3")
        else:
            store = PostgresJobStore(request.getfixturevalue("postgres_url"))
        opened.append(store)
        return store

    yield connect
    for store in opened:
        store.close()


def add_jobs(store: JobStore, count: int) -> list[str]:
    if store.get_dataset(DATASET.dataset_id) is None:
        store.add_dataset(DATASET, "upload", "")
    ids = []
    for n in range(count):
        job_id = f"ft-{time.monotonic_ns()}-{n}"
        job = Job(job_id, JobState.QUEUED, JobPhase.UNSPECIFIED, "vgg16", 1, "out", Hyperparameters(),
                  DATASET, created_at=time.time())  # fmt: skip
        store.add_job(job, "/models/vgg16/1", "fingerprint")
        ids.append(job_id)
    return ids


def test_two_claimers_never_get_the_same_job(open_store):
    first, second = open_store(), open_store()
    queued = add_jobs(first, 40)
    claimed: dict[str, list[str]] = {"a": [], "b": []}

    def claim(store: JobStore, owner: str) -> None:
        while (job := store.claim_next(owner, 30.0)) is not None:
            claimed[owner].append(job.job_id)

    threads = [threading.Thread(target=claim, args=(s, o)) for s, o in ((first, "a"), (second, "b"))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    everything = claimed["a"] + claimed["b"]
    assert sorted(everything) == sorted(queued), "every job claimed exactly once"
    assert claimed["a"] == sorted(claimed["a"], key=queued.index), "oldest first"
    running = first.list_jobs([JobState.RUNNING], limit=100)
    assert {job.job_id for job in running} == set(queued)
    for owner, ids in claimed.items():
        assert all(first.job_owner(job_id) == owner for job_id in ids)


def test_a_claim_skips_a_job_another_server_has_locked(postgres_url):
    import psycopg

    store = PostgresJobStore(postgres_url)
    try:
        oldest, newer = add_jobs(store, 2)
        with psycopg.connect(postgres_url) as other:  # another replica, mid-claim of the oldest job
            other.execute("SELECT seq FROM jobs WHERE job_id = %s FOR UPDATE", (oldest,))
            started = time.monotonic()
            job = store.claim_next("b", 30.0)
            assert job is not None and job.job_id == newer
            assert time.monotonic() - started < 2.0, "the claim waited for the other transaction"
        assert store.claim_next("b", 30.0).job_id == oldest  # released: now it can be claimed
    finally:
        store.close()


def test_an_expired_lease_is_taken_over_once(open_store):
    first, second = open_store(), open_store()
    (job_id,) = add_jobs(first, 1)
    first.claim_next("replica-a", 1.0)
    assert first.renew_leases("replica-a", 1.0).held == {job_id}
    assert second.orphaned_jobs("replica-b", including_own=False) == []
    time.sleep(1.2)  # the lease is on the database's clock; nothing to poll on this side
    orphans = second.orphaned_jobs("replica-b", including_own=False)
    assert [(job.job_id, owner) for job, owner in orphans] == [(job_id, "replica-a")]
    assert second.take_over(job_id, "replica-b", "replica-a", 30.0)
    assert not first.take_over(job_id, "replica-c", "replica-a", 30.0), "taken over twice"
    assert first.renew_leases("replica-a", 1.0).held == set(), "the old runner still holds it"
    assert second.job_owner(job_id) == "replica-b"
    # A restarted embedded server recovers its own jobs at once, lease or not.
    assert [job.job_id for job, _ in second.orphaned_jobs("replica-b", including_own=True)] == [job_id]


def test_a_cancel_request_reaches_the_runners_heartbeat(open_store):
    runner, other = open_store(), open_store()
    queued_id, running_id = add_jobs(runner, 2)
    runner.claim_next("replica-a", 30.0)
    assert not other.request_cancel(running_id), "a QUEUED job is cancelled directly, not requested"
    assert other.request_cancel(queued_id)
    assert runner.renew_leases("replica-a", 30.0).cancel_requested == {queued_id}


def test_a_state_condition_keeps_a_claimed_job_from_being_cancelled_as_queued(open_store):
    store = open_store()
    (job_id,) = add_jobs(store, 1)
    store.claim_next("replica-a", 30.0)
    assert store.update_job(job_id, only_if=[JobState.QUEUED], state=JobState.CANCELLED) is None
    assert store.get_job(job_id).state is JobState.RUNNING


def test_events_from_two_servers_keep_one_gapless_order(open_store):
    first, second = open_store(), open_store()
    (job_id,) = add_jobs(first, 1)

    def append(store: JobStore, who: str) -> None:
        for n in range(25):
            store.append_event(job_id, JobState.RUNNING, JobPhase.TRAINING, f"{who} {n}")

    threads = [threading.Thread(target=append, args=(s, w)) for s, w in ((first, "a"), (second, "b"))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    events = second.events_after(job_id, 0)
    assert [e.event_id for e in events] == list(range(1, 51))
    for who in "ab":
        assert [e.message for e in events if e.message.startswith(who)] == [f"{who} {n}" for n in range(25)]
    assert [e.event_id for e in first.events_after(job_id, 48)] == [49, 50]


def test_writes_are_announced_to_other_servers(postgres_url):
    listener, writer = PostgresJobStore(postgres_url), PostgresJobStore(postgres_url)
    heard: list[tuple[str, str]] = []
    arrived = threading.Event()

    def hear(kind: str, job_id: str) -> None:
        heard.append((kind, job_id))
        if kind == "cancel":
            arrived.set()

    try:
        listener.listen(hear)
        time.sleep(0.5)  # LISTEN runs on the listener's own connection; give it a moment to start
        (job_id,) = add_jobs(writer, 1)
        writer.append_event(job_id, JobState.QUEUED, JobPhase.UNSPECIFIED, "queued")
        writer.claim_next("replica-a", 30.0)
        writer.request_cancel(job_id)
        assert arrived.wait(10), f"no cancel notice; heard {heard}"
        assert heard == [("queued", job_id), ("event", job_id), ("cancel", job_id)]
    finally:
        listener.close()
        writer.close()


def test_the_url_is_logged_without_its_password():
    assert (
        redact("postgresql://jobs:s3cret@db.internal:5433/imageserve")
        == "postgresql://db.internal:5433/imageserve"
    )
    with pytest.raises(
        ConnectionError, match="cannot reach the fine-tuning job store postgresql://127.0.0.1:1/x"
    ):
        PostgresJobStore("postgresql://u:s3cret@127.0.0.1:1/x")


def test_a_file_written_before_leases_opens_and_its_running_job_is_recovered(tmp_path):
    import sqlite3

    from server.finetune.store_rows import schema

    old = [line for line in schema(real="REAL", seq="INTEGER PRIMARY KEY AUTOINCREMENT").splitlines()
           if not line.strip().startswith(("owner", "lease_expires_at", "cancel_requested"))]  # fmt: skip
    old_ddl = "\n".join(old).replace("worker_pid INTEGER,", "worker_pid INTEGER")
    path = tmp_path / "finetune.sqlite3"
    with sqlite3.connect(path) as db:
        db.executescript(old_ddl)
    store = SQLiteJobStore(path)
    try:
        (job_id,) = add_jobs(store, 1)
        store.update_job(job_id, state=JobState.RUNNING)  # what a server that died left, without an owner
        assert [(job.job_id, owner) for job, owner in store.orphaned_jobs("local", including_own=True)] == [
            (job_id, None)
        ]
        assert store.take_over(job_id, "local", None, 30.0)
    finally:
        store.close()


def test_a_stopping_runner_requeues_its_job_for_another_server(open_store):
    runner, other = open_store(), open_store()
    kept, cancelled = add_jobs(runner, 2)
    runner.claim_next("replica-a", 30.0)
    runner.claim_next("replica-a", 30.0)
    other.request_cancel(cancelled)
    assert not other.requeue(kept, "replica-b", "not mine"), "only the runner requeues"
    assert not runner.requeue(cancelled, "replica-a", "cancel asked"), "a cancel request wins"
    assert runner.requeue(kept, "replica-a", "replica-a stopped; the job is queued again")
    assert runner.get_job(kept).state is JobState.QUEUED and runner.job_owner(kept) is None
    (event,) = other.events_after(kept, 0)
    assert (event.state, event.message) == (JobState.QUEUED, "replica-a stopped; the job is queued again")
    assert other.claim_next("replica-b", 30.0).job_id == kept


def test_a_job_whose_replica_died_runs_again_up_to_the_limit_and_publishes_once(open_store, tmp_path):
    """end_orphan on a survivor: queued again while attempts remain, then FAILED; a job that had
    published before its replica died is SUCCEEDED with that version (never published twice)."""
    import asyncio

    from server.finetune.journal import Journal
    from server.finetune.runner import end_orphan

    async def main() -> None:
        journal = Journal()
        journal.store = open_store()
        (job_id,) = add_jobs(journal.store, 1)
        for attempt in (1, 2, 3):
            dead = f"replica-{attempt}"
            assert journal.store.claim_next(dead, 0.05).job_id == job_id
            time.sleep(0.1)  # its lease expires
            ((job, owner),) = journal.store.orphaned_jobs("survivor", including_own=False)
            assert owner == dead and journal.store.take_over(job_id, "survivor", dead, 30.0)
            end_orphan(job, owner, "survivor", journal, tmp_path, 3, published=None)
            state = journal.store.get_job(job_id).state
            assert state == (JobState.QUEUED if attempt < 3 else JobState.FAILED), attempt
        messages = [event.message for event in journal.store.events_after(job_id, 0)]
        assert [m for m in messages if "running the job again" in m] == [
            "replica replica-1 stopped (its lease expired) with nothing published; running the job again: "
            "attempt 2 of 3",
            "replica replica-2 stopped (its lease expired) with nothing published; running the job again: "
            "attempt 3 of 3",
        ]
        assert journal.store.get_job(job_id).error == (
            "interrupted: replica replica-3 stopped (its lease expired), on attempt 3 of 3; "
            "nothing was published"
        )
        # A job that published just before its replica died: SUCCEEDED with that version.
        (other_id,) = add_jobs(journal.store, 1)
        journal.store.claim_next("replica-x", 0.05)
        time.sleep(0.1)
        ((job, owner),) = journal.store.orphaned_jobs("survivor", including_own=False)
        journal.store.take_over(other_id, "survivor", owner, 30.0)
        end_orphan(job, owner, "survivor", journal, tmp_path, 3, published=7)
        finished = journal.store.get_job(other_id)
        assert (finished.state, finished.output_version) == (JobState.SUCCEEDED, 7)

    asyncio.run(main())
