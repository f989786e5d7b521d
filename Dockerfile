# Conveyor's container image (docs/install.md):
#
#   docker build -t conveyor .
#   docker compose up -d          # with PostgreSQL: compose.yaml
#
# Stage 1 builds the wheel (the Octo Pet Shop example inside it) and installs it into
# /opt/conveyor with exactly the versions of requirements.lock, every file checked against the
# lock's hashes (scripts/runtime_lock.py keeps the run-time part of the lock: no test tools).
# Stage 2 is python:3.11-slim with that environment, bubblewrap for the script sandbox and an
# unprivileged user; the data folder is the volume /var/lib/conveyor.

FROM python:3.11-slim AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PIP_NO_INPUT=1
WORKDIR /src
COPY pyproject.toml setup.py MANIFEST.in README.md requirements.lock ./
COPY scripts/runtime_lock.py scripts/
COPY conveyor/ conveyor/
COPY examples/octopetshop/ examples/octopetshop/
RUN python -m pip wheel --no-deps --wheel-dir /dist . \
 && python scripts/runtime_lock.py requirements.lock /dist/conveyor-*.whl > /dist/runtime.lock \
 && python -m venv /opt/conveyor \
 && /opt/conveyor/bin/pip install --require-hashes --only-binary :all: -r /dist/runtime.lock \
 && /opt/conveyor/bin/pip install --no-deps /dist/conveyor-*.whl \
 && /opt/conveyor/bin/pip check

FROM python:3.11-slim
# bubblewrap: scripts on the server run in its sandbox (docs/security.md). The user and group
# have fixed ids so that a volume's owner is the same in every build.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends bubblewrap \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 conveyor \
 && useradd --system --uid 10001 --gid conveyor --home-dir /var/lib/conveyor \
      --shell /usr/sbin/nologin conveyor \
 && install -d -o conveyor -g conveyor -m 0700 /var/lib/conveyor
COPY --from=build /opt/conveyor /opt/conveyor
ENV PATH="/opt/conveyor/bin:$PATH" \
    PYTHONUNBUFFERED=1 \
    CONVEYOR_DATA_DIR=/var/lib/conveyor
USER conveyor:conveyor
# Commands run in the container (`docker compose run --rm conveyor conveyor …`) start in the
# data folder, so a relative path lands on the volume too.
WORKDIR /var/lib/conveyor
VOLUME ["/var/lib/conveyor"]
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=4)"]
# SIGTERM lets running steps finish (CONVEYOR_STOP_GRACE_SECONDS) and hands the rest over.
STOPSIGNAL SIGTERM
# The database must exist and be current: `conveyor admin init` first (docs/install.md).
CMD ["conveyor", "server", "--host", "0.0.0.0", "--port", "8080"]
