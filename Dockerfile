# One image for every clipstream role: the entrypoint is the `clipstream` command, the role is
# its argument (compose.yaml runs `api`, `worker`, `projector`, `scheduler` and `archiver`).
# Without arguments it runs `serve` on the embedded in-memory store: a demo, not a deployment.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
# Only what the package is built from (see .dockerignore): tests, benchmarks and docs stay out.
COPY pyproject.toml README.md ./
COPY engine ./engine
COPY api ./api
COPY projections ./projections
# /var/lib/clipstream/archive: where compose.yaml mounts the archive volume (a new volume takes
# the owner of the directory it is mounted on).
RUN pip install . \
    && rm -rf /src \
    && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin clipstream \
    && mkdir -p /var/lib/clipstream/archive \
    && chown clipstream /var/lib/clipstream/archive

WORKDIR /
USER clipstream
EXPOSE 8000
ENTRYPOINT ["clipstream"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000"]
