# One image for every fakewatch service; docker-compose.yml picks the command.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    FAKEWATCH_DATA_DIR=/data TF_CPP_MIN_LOG_LEVEL=2
RUN apt-get update && apt-get install -y --no-install-recommends curl libgomp1 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY pyproject.toml README.md ./
COPY core core
COPY backend backend
COPY worker worker
COPY models models
COPY admin admin
COPY fakewatch fakewatch
# With [train]: the same image runs the training worker (serving alone would need only `pip install .`).
RUN pip install ".[train]"
RUN useradd --create-home fakewatch && mkdir -p /data && chown fakewatch /data
USER fakewatch
VOLUME ["/data"]
EXPOSE 8000 8501
CMD ["fakewatch", "--help"]
