"""Both clients (and both job handles) offer the same methods, written once; the client's modules
import each other without a cycle. No server: signatures and imports only."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

from client import AsyncFineTuneJob, AsyncModelClient, FineTuneJob, JobStatus, ModelClient

CLIENT_DIR = Path(__file__).resolve().parents[2] / "client"
CALLS = [
    "classify",
    "extract_features",
    "list_models",
    "model_status",
    "server_info",
    "upload_dataset",
    "fine_tune",
    "get_job",
    "list_jobs",
    "cancel_job",
    "wait_job",
    "watch_job",
]
STREAMS = {"watch_job", "events"}


def public_methods(obj: object) -> set[str]:
    names = [name for name in dir(type(obj)) if not name.startswith("_")]
    return {name for name in names if not isinstance(inspect.getattr_static(obj, name), (property, type))}


def test_both_clients_have_the_same_calls_with_the_same_signatures():
    blocking, asynchronous = ModelClient("localhost:1"), AsyncModelClient("localhost:1")
    assert set(CALLS) <= public_methods(blocking)
    assert public_methods(blocking) - {"close"} == public_methods(asynchronous) - {"close"}
    for name in CALLS:
        sync_method, async_method = getattr(blocking, name), getattr(asynchronous, name)
        assert inspect.signature(sync_method) == inspect.signature(async_method).replace(
            return_annotation=inspect.signature(sync_method).return_annotation
        ), name
        assert not inspect.iscoroutinefunction(sync_method), name
        assert inspect.iscoroutinefunction(async_method) is (name not in STREAMS), name
        assert sync_method.__doc__ and sync_method.__doc__ == async_method.__doc__, name
    assert inspect.signature(blocking.classify).return_annotation == "ClassifyResult"
    assert inspect.signature(blocking.fine_tune).return_annotation == "FineTuneJob"
    assert inspect.signature(asynchronous.fine_tune).return_annotation == "AsyncFineTuneJob"
    assert "self" not in inspect.signature(blocking.classify).parameters


def test_both_job_handles_have_the_same_methods():
    status = JobStatus.__new__(JobStatus)  # a handle's methods are only looked at here, not called
    blocking = FineTuneJob(ModelClient("localhost:1"), status)
    asynchronous = AsyncFineTuneJob(AsyncModelClient("localhost:1"), status)
    assert public_methods(blocking) == public_methods(asynchronous) == {"refresh", "wait", "cancel", "events"}
    for name in public_methods(blocking):
        assert inspect.iscoroutinefunction(getattr(asynchronous, name)) is (name not in STREAMS), name


def test_a_method_on_the_class_takes_the_client_first():
    client = ModelClient("localhost:1")
    client.close()
    with pytest.raises(RuntimeError, match="is closed"):
        list(ModelClient.watch_job(client, "ft-1"))


def client_imports(path: Path) -> set[str]:
    """The client modules ``path`` imports, also under ``if TYPE_CHECKING:``."""
    imported = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "client":
                imported |= {f"client.{alias.name}" for alias in node.names}
            elif node.module.startswith("client."):
                imported.add(node.module)
        elif isinstance(node, ast.Import):
            imported |= {alias.name for alias in node.names if alias.name.startswith("client.")}
    return imported


def test_the_client_modules_import_each_other_without_a_cycle():
    modules = {f"client.{p.stem}": p for p in CLIENT_DIR.glob("*.py") if p.stem != "__init__"}
    graph = {name: client_imports(path) & modules.keys() for name, path in modules.items()}
    done: set[str] = set()

    def visit(name: str, path: tuple[str, ...]) -> None:
        assert name not in path, f"import cycle: {' -> '.join((*path[path.index(name) :], name))}"
        if name in done:
            return
        for imported in graph[name]:
            visit(imported, (*path, name))
        done.add(name)

    for name in graph:
        visit(name, ())
