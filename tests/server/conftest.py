"""Server tests use the shared fixture chain of tests/conftest.py: exported models -> model_root ->
server (in-process, free port) -> channel -> stub."""
