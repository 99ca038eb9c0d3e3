"""Dataset intake: uploads and data-root directories become datasets (files in the state directory,
a row in the job store). Nothing is kept of an upload that fails or is abandoned.

With a shared job store, a dataset uploaded through one replica may be trained on by another: every
replica must reach the same ``<state_dir>/datasets`` (a shared volume), unless the model root is a
bucket, where datasets are copied too (:mod:`storage.datasets`).
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from server.errors import NotFound, Unavailable
from server.finetune.datasets import (
    DIRECTORY,
    INDEX_FILE,
    UPLOAD,
    UploadWriter,
    check_counts,
    index_path,
    new_id,
    save_directory_index,
    scan_data_dir,
    summarize,
)
from server.finetune.jobs import Dataset, UploadedImage, UploadInfo
from server.finetune.store import JobStore
from server.settings import ServerSettings
from storage import datasets as shared_datasets
from storage.errors import StorageError
from storage.roots import is_url

log = logging.getLogger("server.finetune.manager")


class DatasetIntake:
    """Uploads, directory snapshots and the lookup of stored datasets."""

    def __init__(self, settings: ServerSettings) -> None:
        self.settings = settings
        self.datasets_dir = Path(settings.state_dir) / "datasets"

    def remove_unfinished_uploads(self, min_age_s: float = 0.0) -> None:
        """Uploads do not survive their server; ``min_age_s`` spares those another replica is receiving."""
        for unfinished in [*self.datasets_dir.glob(".upload-*"), *self.datasets_dir.glob(".fetch-*")]:
            try:
                age = time.time() - unfinished.stat().st_mtime
            except FileNotFoundError:
                continue
            if age >= min_age_s:
                shutil.rmtree(unfinished, ignore_errors=True)
                log.info("removed the unfinished upload %s", unfinished.name)

    def index_path(self, dataset_id: str) -> Path:
        return index_path(self.datasets_dir, dataset_id)

    async def upload(self, store: JobStore, items: AsyncIterator[UploadedImage | UploadInfo]) -> Dataset:
        """Store an upload as a dataset; nothing is kept if any image or limit is refused."""
        writer = UploadWriter(
            self.datasets_dir,
            self.settings.max_upload_bytes,
            self.settings.max_upload_images,
            self.settings.max_image_pixels,
        )
        # NOTE: one thread per upload runs its file work in order, so that when the call is cancelled
        # (the client went away) the clean-up runs after the write in progress, not beside it.
        files = ThreadPoolExecutor(max_workers=1, thread_name_prefix="upload")
        loop = asyncio.get_running_loop()
        try:
            async for item in items:
                if isinstance(item, UploadInfo):
                    writer.set_name(item.name)
                else:
                    await loop.run_in_executor(files, writer.add, item)
            summary = await loop.run_in_executor(files, writer.finish)
            await loop.run_in_executor(files, self._share, writer.final_dir, summary.dataset_id)
        except BaseException:
            await asyncio.shield(loop.run_in_executor(files, writer.abort))
            raise
        finally:
            files.shutdown(wait=False)
        store.add_dataset(summary, UPLOAD, source="")
        log.info(
            "dataset %s uploaded: %d images, %d classes",
            summary.dataset_id,
            summary.num_images,
            len(summary.images_per_class),
        )
        return summary

    async def from_directory(self, store: JobStore, data_dir: str, min_per_class: int) -> Dataset:
        """A snapshot of a data-root directory's file list, checked and stored as a dataset."""
        entries, skipped = await asyncio.to_thread(
            scan_data_dir, self.settings.data_root, data_dir, self.settings.max_upload_images
        )
        summary = summarize(new_id("ds"), data_dir, entries)
        check_counts(summary.images_per_class, min_per_class)
        await asyncio.to_thread(
            save_directory_index, self.datasets_dir, summary.dataset_id, data_dir, entries, skipped
        )
        try:
            await asyncio.to_thread(self._share, self.datasets_dir / summary.dataset_id, summary.dataset_id)
        except BaseException:
            shutil.rmtree(self.datasets_dir / summary.dataset_id, ignore_errors=True)
            raise
        store.add_dataset(summary, DIRECTORY, source=data_dir)
        return summary

    async def uploaded(self, store: JobStore, dataset_id: str, min_per_class: int) -> Dataset:
        """A stored upload, checked for training with ``min_per_class``. (Whether another replica put
        it in the bucket is asked in a thread: an object-store call never blocks the event loop.)"""
        dataset = store.get_dataset(dataset_id)
        if dataset is None or not (
            self.index_path(dataset_id).is_file() or await asyncio.to_thread(self._shared, dataset_id)
        ):
            raise NotFound(f"unknown dataset {dataset_id!r}; upload one with UploadDataset first")
        check_counts(dataset.images_per_class, min_per_class)
        return dataset

    def _share(self, local_dir: Path, dataset_id: str) -> None:
        """With a bucket model root, a finished dataset is uploaded beside the models, for other replicas."""
        if is_url(self.settings.model_root):
            try:
                shared_datasets.publish(self.settings.model_root, local_dir, dataset_id)
            except StorageError as exc:
                raise Unavailable(str(exc)) from None

    def _shared(self, dataset_id: str) -> bool:
        return is_url(self.settings.model_root) and shared_datasets.published(
            self.settings.model_root, dataset_id
        )

    def ensure_local(self, dataset_id: str) -> bool:
        """Copy the dataset from the bucket model root if this replica's state_dir lacks it; True if copied.
        Raises OSError or ValueError when it cannot (the job then fails with the reason)."""
        if not is_url(self.settings.model_root):
            return False
        return shared_datasets.fetch(self.settings.model_root, self.datasets_dir, dataset_id, INDEX_FILE)
