# syncd's container image: `syncd run` by default, any syncd command as arguments.
#
#   docker build -t labelstudio-syncd:0.1.0 .
#   docker run --rm labelstudio-syncd:0.1.0 --version
#   docker run -d --name syncd -p 127.0.0.1:9187:9187 \
#     -v /path/to/label-studio-data:/label-studio/data:ro -v syncd-state:/var/lib/syncd \
#     -e SYNCD_TARGET=s3://bucket/prefix --env-file syncd.env labelstudio-syncd:0.1.0
#   docker run --rm ... labelstudio-syncd:0.1.0 resync --config /etc/syncd/config.yaml
#
# The Kubernetes manifests in deploy/kubernetes expect it as ghcr.io/example/labelstudio-syncd:0.1.0:
# tag and push it to your registry under the name you put there (see deploy/README.md).

# Pinned: a rebuild gets the same Python. Pin the digest too (FROM python:...@sha256:...) to
# make the build fully reproducible.
FROM python:3.11.11-slim-bookworm

# LABEL_STUDIO_BASE_DATA_DIR: where Label Studio's own image keeps its data; mount that volume
# here (read-only) and syncd finds the SQLite database. XDG_STATE_HOME: a config without state:
# still puts the checkpoint on the state volume.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    LABEL_STUDIO_BASE_DATA_DIR=/label-studio/data \
    XDG_STATE_HOME=/var/lib/syncd

# A fixed non-root uid/gid, so volume permissions and Kubernetes' runAsUser can name it.
RUN groupadd --system --gid 10001 syncd \
 && useradd --system --uid 10001 --gid syncd --home-dir /var/lib/syncd --no-create-home \
      --shell /usr/sbin/nologin syncd \
 && install -d -o syncd -g syncd -m 0750 /var/lib/syncd \
 && install -d -m 0755 /etc/syncd

# The package, with the extras deployments need: PostgreSQL, S3, GCS and Azure, and numpy
# for the brush converter. (The README installs the same package, `pip install .`.)
WORKDIR /src
COPY pyproject.toml README.md ./
COPY syncd ./syncd
COPY converters ./converters
RUN pip install ".[all]" \
 && syncd --version \
 && rm -rf /src

COPY deploy/docker/config.yaml /etc/syncd/config.yaml

USER 10001:10001
WORKDIR /var/lib/syncd
VOLUME ["/var/lib/syncd"]
EXPOSE 9187

# /healthz of `syncd run` (the default command), with the standard library: the slim image
# has no curl. SYNCD_HEALTHCHECK_URL: another address when listen: is changed. A one-shot
# command (resync, check) serves nothing: run it with --no-healthcheck if it may outlast the
# start period.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(os.environ.get('SYNCD_HEALTHCHECK_URL', 'http://127.0.0.1:9187/healthz'), timeout=4)"]

ENTRYPOINT ["syncd"]
CMD ["run", "--config", "/etc/syncd/config.yaml"]
