"""``python -m server.healthcheck``: exit 0 if the server's gRPC health service says SERVING.

For container health checks (docker-compose, Kubernetes exec probes): no extra binary needed.
"""

from __future__ import annotations

import argparse
import os
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def _channel(args: argparse.Namespace) -> grpc.Channel:
    if not args.ca_cert:
        return grpc.insecure_channel(args.address)

    def read(path: str | None) -> bytes | None:
        return open(path, "rb").read() if path else None

    credentials = grpc.ssl_channel_credentials(
        read(args.ca_cert), read(args.client_key), read(args.client_cert)
    )
    return grpc.secure_channel(args.address, credentials)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m server.healthcheck", description=__doc__.splitlines()[0])
    parser.add_argument("--address", default=f"localhost:{os.environ.get('IMAGESERVE_PORT', '8500')}")
    parser.add_argument(
        "--service", default="", help="health service name ('' = the whole server, model/<name>)"
    )
    parser.add_argument("--timeout", type=float, default=5.0)
    parser.add_argument("--ca-cert", help="PEM CA of the server's certificate: connect with TLS")
    parser.add_argument("--client-cert", help="PEM client certificate, for a server that requires mutual TLS")
    parser.add_argument("--client-key", help="PEM key of --client-cert")
    args = parser.parse_args(argv)
    try:
        with _channel(args) as channel:
            response = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=args.service), timeout=args.timeout
            )
    except grpc.RpcError as exc:
        print(f"unhealthy: {exc.code().name}: {exc.details()}", file=sys.stderr)
        return 1
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
    print(status)
    return 0 if response.status == health_pb2.HealthCheckResponse.SERVING else 1


if __name__ == "__main__":
    sys.exit(main())
