# The diachiso service image (production-shaped; see docker-compose.yml).
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY geo ./geo
COPY service ./service
COPY migrations ./migrations
RUN pip install . && useradd --system --uid 10001 diachiso
USER diachiso

ENV DIACHISO_HOST=0.0.0.0 DIACHISO_PORT=8000 DIACHISO_ENVIRONMENT=production
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --retries=5 \
  CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz')"
CMD ["sh", "-c", "diachiso migrate && exec diachiso serve --workers ${DIACHISO_WORKERS:-2}"]
