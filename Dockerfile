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
# Exec form: python is PID 1 and receives SIGTERM itself.
ENTRYPOINT ["python", "-m", "app"]
