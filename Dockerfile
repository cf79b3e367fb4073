# The streamlearn worker image: `docker build -t streamlearn .`
#
#   docker run --rm streamlearn --help
#   docker run --rm -e STREAMLEARN_KAFKA__BOOTSTRAP_SERVERS=kafka:9092 \
#       -e STREAMLEARN_REDIS__URL=redis://redis:6379/0 -e STREAMLEARN_MODEL_KEY=... streamlearn run
#
# Two stages: the first builds a virtualenv (dependencies in their own layer, which only
# changes with pyproject.toml), the second copies that virtualenv onto a clean base.

ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

RUN python -m venv /opt/streamlearn
ENV PATH=/opt/streamlearn/bin:$PATH

WORKDIR /src

# 1. Dependencies (runtime + the parquet extra), read from pyproject.toml alone.
COPY pyproject.toml ./
RUN python -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; \
print('\n'.join(p['dependencies'] + p['optional-dependencies']['parquet']))" > /tmp/requirements.txt \
 && pip install -r /tmp/requirements.txt

# 2. The package itself (the six packages; README.md is not needed to build it).
COPY stream ./stream
COPY features ./features
COPY learners ./learners
COPY metrics ./metrics
COPY stack ./stack
COPY cli ./cli
RUN pip install --no-deps ".[parquet]" \
 && streamlearn --help > /dev/null


FROM ${PYTHON_IMAGE}

ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="streamlearn" \
      org.opencontainers.image.description="Real-time scoring and online learning: Kafka in, interaction features in Redis, River models, Prometheus out." \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="${PYTHON_IMAGE}"

RUN useradd --system --uid 10001 --user-group --create-home --home-dir /home/streamlearn \
      --shell /usr/sbin/nologin streamlearn

COPY --from=build /opt/streamlearn /opt/streamlearn

# /metrics must be reachable from outside the container (Prometheus scrapes it),
# hence 0.0.0.0 instead of the 127.0.0.1 default.
ENV PATH=/opt/streamlearn/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    MPLBACKEND=Agg \
    STREAMLEARN_METRICS__HOST=0.0.0.0 \
    STREAMLEARN_METRICS__PORT=9108

USER streamlearn
WORKDIR /home/streamlearn
EXPOSE 9108

# Healthy while the worker serves /metrics (no curl in the image: Python's urllib).
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/metrics' % os.environ.get('STREAMLEARN_METRICS__PORT', '9108'), timeout=4).read()"]

ENTRYPOINT ["streamlearn"]
CMD ["run"]
