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
COPY pyproject.toml README.md ./
COPY protos/ protos/
COPY exporter/ exporter/
COPY server/ server/
COPY client/ client/
# The server extra (TensorFlow) and s3 (a model root in a bucket); "./[server,s3]", not ".[server,s3]",
# which hadolint reads as an unpinned package.
RUN pip install "./[server,s3]" \
    && mkdir -p /models /state \
    && chown imageserve:imageserve /models /state

USER 10001:10001
EXPOSE 8500 8510
VOLUME ["/models", "/state"]
HEALTHCHECK --interval=15s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-m", "server.healthcheck"]
CMD ["python", "-m", "server"]
