# One Dockerfile, one target per component, each on Debian bookworm with Debian's Python 3.11:
#   docker build --target operator -t ghcr.io/cutover/operator:0.1.0 .
#   docker build --target serving -t ghcr.io/cutover/serving:0.1.0 .
#   docker build --target gateway -t ghcr.io/cutover/gateway:0.1.0 .
#   docker build --target cli -t ghcr.io/cutover/cli:0.1.0 .
#   docker build --target serving --build-arg EXTRAS=serving,otlp,torch -t ghcr.io/cutover/serving-torch:0.1.0 .
#   docker build --target serving --build-arg EXTRAS=serving,otlp,tensorflow -t ghcr.io/cutover/serving-tensorflow:0.1.0 .
# BASE is any Debian bookworm image: the public debian:bookworm-slim by default. `make images`
# (hack/images) passes one made from Debian's archive with debootstrap, so the images the tests
# run come from no container registry; Python's packages come from PyPI either way.
ARG BASE=debian:bookworm-slim
# The serving target's extras from pyproject.toml (the cli and operator targets take none).
ARG EXTRAS=serving,otlp

# Debian's Python in a virtual environment of its own (/opt/cutover), tini as PID 1 (it passes
# SIGTERM on, so cutover drains, and reaps children), CA certificates (https OTLP collectors,
# model stores, and pip below), and the user the chart's and the serving pods' securityContext
# run as (runAsUser 10001).
FROM ${BASE} AS python
# Package versions come with the base's suite; pinning them would break at Debian's next point release.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates python3 python3-venv tini \
 && rm -rf /var/lib/apt/lists/* \
 && python3 -m venv /opt/cutover \
 && useradd --uid 10001 --create-home --shell /usr/sbin/nologin cutover
ENV PATH=/opt/cutover/bin:$PATH PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1

# The project's wheel, and the pinned requirements read from pyproject.toml: core.txt (every
# component) and extras.txt (EXTRAS). The requirements get layers of their own below, rebuilt
# only when pyproject.toml changes, not at every change to the source.
FROM python AS build
ARG EXTRAS
WORKDIR /src
COPY pyproject.toml README.md ./
RUN mkdir /requirements \
 && python3 -c 'import sys, tomllib; project = tomllib.load(open("pyproject.toml", "rb"))["project"]; \
extras = [e for e in sys.argv[1].split(",") if e]; \
open("/requirements/core.txt", "w").write("\n".join(project["dependencies"]) + "\n"); \
open("/requirements/extras.txt", "w").write("\n".join(d for e in extras for d in project["optional-dependencies"][e]) + "\n")' \
    "$EXTRAS"
COPY operator operator
COPY serving serving
RUN --mount=type=cache,target=/root/.cache/pip pip wheel --no-deps --wheel-dir /wheels .

FROM python AS dependencies
COPY --from=build /requirements/core.txt /tmp/
RUN --mount=type=cache,target=/root/.cache/pip pip install -r /tmp/core.txt && rm /tmp/core.txt

FROM dependencies AS runtime
COPY --from=build /wheels /tmp/wheels
RUN pip install --no-cache-dir --no-deps /tmp/wheels/*.whl && rm -rf /tmp/wheels
USER 10001
ENTRYPOINT ["tini", "--", "cutover"]

# The `cutover` CLI (`cutover crds`).
FROM runtime AS cli
CMD ["--help"]

# The operator.
FROM runtime AS operator
EXPOSE 8000
CMD ["operator"]

# The serving runtime: one model revision per pod (ONNX Runtime, Triton and LLM upstreams; add
# torch or tensorflow with --build-arg EXTRAS=serving,otlp,torch or serving,otlp,tensorflow). The
# operator passes `serve ...` as args.
FROM dependencies AS serving
COPY --from=build /requirements/extras.txt /tmp/
RUN --mount=type=cache,target=/root/.cache/pip pip install -r /tmp/extras.txt && rm /tmp/extras.txt
COPY --from=build /wheels /tmp/wheels
RUN pip install --no-cache-dir --no-deps /tmp/wheels/*.whl && rm -rf /tmp/wheels
USER 10001
EXPOSE 8080 8081
ENTRYPOINT ["tini", "--", "cutover"]
CMD ["serve", "--help"]

# The gateway: the serving target's packages (its gRPC proxy and tracing import grpcio,
# tritonclient and OpenTelemetry), started as `cutover gateway`.
FROM serving AS gateway
CMD ["gateway"]
