# txingest: python -m app. Build: `make image` (needs a Docker engine).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /srv
COPY requirements.lock pyproject.toml README.md ./
RUN pip install --no-cache-dir --disable-pip-version-check -r requirements.lock
COPY app ./app
RUN pip install --no-cache-dir --no-deps . \
    && useradd --system --uid 10001 --no-create-home txingest
USER 10001

EXPOSE 8080
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=4)"]
# Exec form: python is PID 1 and receives SIGTERM itself.
ENTRYPOINT ["python", "-m", "app"]
