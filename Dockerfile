# One image for every Plankton service (scheduler, worker, api); see compose.yaml.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY plankton ./plankton
COPY scheduler ./scheduler
COPY workers ./workers
COPY examples ./examples
RUN pip install --no-cache-dir -e .
ENV PYTHONUNBUFFERED=1
ENTRYPOINT []
