"""The thin gRPC layer: protobuf <-> plain values (converters), one error mapping, the servicer."""
