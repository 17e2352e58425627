# syntax=docker/dockerfile:1
# txingest. Build: `make image` (needs a Docker engine with BuildKit).
# Stage 1 gathers wheels: the runtime lock's, hash-checked, and txingest's own.
# Stage 2 installs only those (no compilers, no pip cache) on a slim base.
FROM python:3.11-slim AS wheels

WORKDIR /src
COPY requirements.lock ./
RUN pip wheel --no-cache-dir --disable-pip-version-check --require-hashes \
        --wheel-dir /wheels -r requirements.lock
COPY pyproject.toml README.md ./
COPY app ./app
RUN pip wheel --no-cache-dir --disable-pip-version-check --no-deps --wheel-dir /wheels/app .

FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 HTTP_PORT=8080
COPY requirements.lock /tmp/requirements.lock
# The wheels are mounted, not copied, so they take no layer in the image.
RUN --mount=type=bind,from=wheels,source=/wheels,target=/wheels \
    pip install --no-cache-dir --disable-pip-version-check --no-index --find-links /wheels \
        --require-hashes -r /tmp/requirements.lock \
    && pip install --no-cache-dir --disable-pip-version-check --no-index --no-deps \
        /wheels/app/txingest-*.whl \
    && rm /tmp/requirements.lock \
    && useradd --system --uid 10001 --no-create-home txingest
USER 10001

EXPOSE 8080
# The port comes from HTTP_PORT, as the service reads it (an override at run time counts).
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('HTTP_PORT', '8080'), timeout=4)"]
# Exec form: the txingest console script's python is PID 1 and receives SIGTERM itself.
ENTRYPOINT ["txingest"]
