"""A client method written once for :class:`~client.ModelClient` and :class:`~client.AsyncModelClient`.

A method's body only makes the operation (:mod:`client.operations`) that does the call; the
decorator turns it into a method of each client: a blocking one that runs the operation, or a
coroutine that awaits it::

    class ClientCalls(ClientBase):
        @call
        def list_models(self, *, timeout: float | None = None) -> Operation[list[ModelStatus]]:
            return self._operations.list_models(timeout)

    client.list_models()                # ModelClient: list[ModelStatus]
    await async_client.list_models()    # AsyncModelClient: the same, awaited

The signature, defaults and docstring are the body's: one place for each. Type checkers see the
result of each kind through the overloads of ``__get__`` on :class:`SyncAPI` and :class:`AsyncAPI`.
"""

from __future__ import annotations

import functools
import inspect
import re
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from dataclasses import dataclass
from typing import Any, Concatenate, Generic, ParamSpec, Self, TypeVar, overload

from client.operations import Operation

__all__ = ["SyncAPI", "AsyncAPI", "Plan", "call", "stream", "streaming"]

P = ParamSpec("P")
T = TypeVar("T")


@dataclass(frozen=True)
class Plan(Generic[T]):
    """An operation and how to run it."""

    operation: Operation[T]
    #: Whether the operation's own steps read files or encode pixels: the async client runs its steps
    #: in a worker thread, off the event loop (for steps that do neither, the hop costs more).
    offload: bool = True


class SyncAPI:
    """Has blocking methods: a client, or a job handle of one. ``_runner`` runs the operations."""

    @property
    def _runner(self) -> Any:
        return self


class AsyncAPI:
    """Has coroutine methods: an asyncio client, or a job handle of one."""

    @property
    def _runner(self) -> Any:
        return self


def _plan(made: Operation[T] | Plan[T]) -> Plan[T]:
    return made if isinstance(made, Plan) else Plan(made)


class _Method:
    """What both kinds of method share: the body, its signature (without ``self``), calls on the class."""

    def __init__(self, make: Callable[..., Any]) -> None:
        functools.update_wrapper(self, make)
        self.make = make
        parameters = list(inspect.signature(make).parameters.values())[1:]
        self._signature = inspect.Signature(parameters)
        # The body returns an operation (``Operation[X]`` or ``Plan[X]``); the method returns X.
        annotation = str(make.__annotations__.get("return", ""))
        self._value = re.sub(r"^(?:Operation|Plan)\[(.*)\]$", r"\1", annotation)

    def __call__(self, instance: Any, *args: Any, **kwargs: Any) -> Any:
        """Called on the class, e.g. ``ModelClient.classify(client, images)``."""
        bound: Callable[..., Any] = self.__get__(instance, type(instance))  # type: ignore[attr-defined]
        return bound(*args, **kwargs)

    def _returns(self, instance: Any) -> str:
        """The return annotation the bound method shows (``help``, ``inspect.signature``)."""
        return self._value

    def _bound(self, method: Callable[..., Any], instance: Any) -> Callable[..., Any]:
        functools.update_wrapper(method, self.make)
        method.__signature__ = self._signature.replace(return_annotation=self._returns(instance))  # type: ignore[attr-defined]
        return method


class call(_Method, Generic[P, T]):
    """A method that runs one operation to its value (``ModelClient``) or awaits it (``AsyncModelClient``)."""

    def __init__(self, make: Callable[Concatenate[Any, P], Operation[T] | Plan[T]]) -> None:
        super().__init__(make)

    @overload
    def __get__(self, instance: None, owner: type) -> Self: ...
    @overload
    def __get__(self, instance: SyncAPI, owner: type) -> Callable[P, T]: ...
    @overload
    def __get__(self, instance: AsyncAPI, owner: type) -> Callable[P, Coroutine[Any, Any, T]]: ...
    def __get__(self, instance: Any, owner: type | None = None) -> Any:
        if instance is None:
            return self
        make, runner = self.make, instance._runner
        if isinstance(instance, AsyncAPI):

            async def awaited(*args: Any, **kwargs: Any) -> T:
                return await runner._run(_plan(make(instance, *args, **kwargs)))

            return self._bound(awaited, instance)

        def blocking(*args: Any, **kwargs: Any) -> T:
            return runner._run(_plan(make(instance, *args, **kwargs)))

        return self._bound(blocking, instance)


class stream(_Method, Generic[P, T]):
    """A method whose operation emits items: an iterator (``ModelClient``) or an async iterator
    (``AsyncModelClient``) of them. The operation is made (its arguments checked) at the call."""

    def __init__(self, make: Callable[Concatenate[Any, P], Operation[Any]], item: type[T]) -> None:
        super().__init__(make)
        self.item = item

    @overload
    def __get__(self, instance: None, owner: type) -> Self: ...
    @overload
    def __get__(self, instance: SyncAPI, owner: type) -> Callable[P, Iterator[T]]: ...
    @overload
    def __get__(self, instance: AsyncAPI, owner: type) -> Callable[P, AsyncIterator[T]]: ...
    def __get__(self, instance: Any, owner: type | None = None) -> Any:
        if instance is None:
            return self
        make, runner = self.make, instance._runner

        def iterated(*args: Any, **kwargs: Any) -> Any:
            return runner._iterate(make(instance, *args, **kwargs))

        return self._bound(iterated, instance)

    def _returns(self, instance: Any) -> str:
        kind = "AsyncIterator" if isinstance(instance, AsyncAPI) else "Iterator"
        return f"{kind}[{self.item.__name__}]"


def streaming(item: type[T]) -> Callable[[Callable[Concatenate[Any, P], Operation[Any]]], stream[P, T]]:
    """``@streaming(JobEvent)``: a :class:`stream` method whose items are ``JobEvent``."""
    return lambda make: stream(make, item)
