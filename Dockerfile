# One image for every role; the `ml` extra (torch, diffusers, …) only where WITH_ML=1 (GPU workers).
FROM python:3.11-slim-bookworm
ARG WITH_ML=0
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
RUN apt-get update && apt-get install -y --no-install-recommends ffmpeg && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY pyproject.toml README.md ./
COPY config ./config
COPY annotate ./annotate
COPY alignment ./alignment
COPY workers ./workers
RUN if [ "$WITH_ML" = "1" ]; then pip install --no-cache-dir -e ".[ml,s3]"; else pip install --no-cache-dir -e ".[s3]"; fi
COPY manage.py ./
COPY templates ./templates
COPY static ./static
RUN DJANGO_SETTINGS_MODULE=config.settings.production SECRET_KEY=build ALLOWED_HOSTS=build \
    DATABASE_URL=postgres://build@build/build CELERY_BROKER_URL=redis://build:6379/0 \
    python manage.py collectstatic --noinput
EXPOSE 8000
CMD ["gunicorn", "config.wsgi", "-b", "0.0.0.0:8000", "--workers", "4", "--threads", "4"]
