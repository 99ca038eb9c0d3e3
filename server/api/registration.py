"""Where servicers meet gRPC: every RPC a servicer implements is registered through the one call wrapper.

:func:`generic_handler` is the only way the server registers its services (:mod:`server.app`), so
every method of every servicer gets :func:`server.api.errors.grpc_method` (status mapping, request
ids, metrics, tracing) and a deserializer that turns malformed messages into INVALID_ARGUMENT,
without a decorator on each method that a new method could forget.
"""

from __future__ import annotations

import functools

import grpc
from google.protobuf import message_factory
from google.protobuf.descriptor import ServiceDescriptor

from server.api.errors import grpc_method, safe_deserializer

_HANDLER_FACTORIES = {  # (client streaming, server streaming) -> gRPC's handler factory
    (False, False): grpc.unary_unary_rpc_method_handler,
    (False, True): grpc.unary_stream_rpc_method_handler,
    (True, False): grpc.stream_unary_rpc_method_handler,
    (True, True): grpc.stream_stream_rpc_method_handler,
}


def generic_handler(servicer: object, service: ServiceDescriptor) -> grpc.GenericRpcHandler:
    """Method handlers for every RPC of ``service`` that ``servicer`` implements, each wrapped in
    :func:`grpc_method`. RPCs the servicer lacks are answered UNIMPLEMENTED by gRPC."""
    handlers = {}
    for method in service.methods:
        implementation = getattr(type(servicer), method.name, None)
        if implementation is None:
            continue
        request_cls = message_factory.GetMessageClass(method.input_type)
        response_cls = message_factory.GetMessageClass(method.output_type)
        handlers[method.name] = _HANDLER_FACTORIES[(method.client_streaming, method.server_streaming)](
            functools.partial(grpc_method(implementation), servicer),
            request_deserializer=safe_deserializer(request_cls.FromString),
            response_serializer=response_cls.SerializeToString,
        )
    return grpc.method_handlers_generic_handler(service.full_name, handlers)
