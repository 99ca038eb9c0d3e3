# imageserve: the exporter, the server and the client in one image.
#   docker build -t imageserve .
#   docker run -p 8500:8500 -p 8510:8510 -v $PWD/models:/models imageserve
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TF_CPP_MIN_LOG_LEVEL=3 \
    IMAGESERVE_MODEL_ROOT=/models \
    IMAGESERVE_STATE_DIR=/state \
    IMAGESERVE_PORT=8500 \
    IMAGESERVE_METRICS_PORT=8510

RUN groupadd --system --gid 10001 imageserve \
    && useradd --system --uid 10001 --gid imageserve --create-home --home-dir /home/imageserve imageserve

WORKDIR /app
# The locked dependencies first (their own layer: a code change does not reinstall TensorFlow), the
# same hash-pinned releases that scripts/serve installs: requirements/serve.txt (server, s3, postgresql).
COPY requirements/serve.txt requirements/serve.txt
RUN pip install --require-hashes --no-deps -r requirements/serve.txt
COPY pyproject.toml README.md ./
COPY protos/ protos/
COPY model_format/ model_format/
COPY api_types/ api_types/
COPY storage/ storage/
COPY graphs/ graphs/
COPY exporter/ exporter/
COPY server/ server/
COPY client/ client/
# The project alone, built with the locked setuptools.
RUN pip install --no-deps --no-build-isolation ./ \
    && mkdir -p /models /state \
    && chown imageserve:imageserve /models /state

USER 10001:10001
EXPOSE 8500 8510
VOLUME ["/models", "/state"]
HEALTHCHECK --interval=15s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-m", "server.healthcheck"]
CMD ["python", "-m", "server"]
