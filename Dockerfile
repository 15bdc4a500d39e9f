# One image for every tierflow process: `docker run IMAGE ingest|grader|notifier|migrate`.
# Configuration comes only from the container's TIERFLOW_* environment (docs/configuration.md).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TIERFLOW_HOST=0.0.0.0

WORKDIR /src
COPY pyproject.toml README.md ./
COPY shared ./shared
COPY services ./services
# A regular (not editable) install, so the source tree can go; without the `local` extra
# (the embedded PostgreSQL and broker of `tierflow up`), which production does not run.
RUN pip install . \
    && cd / && rm -rf /src \
    && groupadd --system --gid 10001 tierflow \
    && useradd --system --uid 10001 --gid 10001 --create-home --home-dir /home/tierflow tierflow

# Numeric, so a runtime can tell it is not root without reading /etc/passwd
# (Kubernetes' runAsNonRoot).
USER 10001:10001
WORKDIR /home/tierflow
EXPOSE 8080 8081 8082
ENTRYPOINT ["tierflow"]
CMD ["--help"]
