# The dashboard as a public (shared-link) server: see docs/SECURITY.md.
# Not built in the development environment (no Docker daemon there).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    UTKFACE_MODE=public \
    UTKFACE_APP_DIR=/data/app \
    UTKFACE_RUNS_DIR=/data/runs \
    HOME=/home/app

RUN useradd --create-home --uid 10001 app \
    && mkdir -p /data && chown app:app /data

WORKDIR /app
COPY requirements.txt .
RUN pip install -r requirements.txt
COPY --chown=root:root . .

USER app
VOLUME ["/data"]
EXPOSE 8501

HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD python -c "import urllib.request, sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8501/_stcore/health', timeout=4).status != 200)"

# The same options as `make serve-public`.
CMD ["python", "-m", "streamlit", "run", "streamlit_app.py", \
     "--server.port", "8501", "--server.address", "0.0.0.0", \
     "--server.headless", "true", "--server.enableXsrfProtection", "true", "--server.enableCORS", "true", \
     "--server.fileWatcherType", "none", "--server.runOnSave", "false", "--server.maxUploadSize", "500", \
     "--client.showErrorDetails", "type", "--client.toolbarMode", "viewer", "--browser.gatherUsageStats", "false"]
