# One Dockerfile, one target per component. Build with, for example:
#   docker build --target operator -t ghcr.io/cutover/operator:0.1.0 .
#   docker build --target serving -t ghcr.io/cutover/serving:0.1.0 .
#   docker build --target serving --build-arg EXTRAS=serving,otlp,torch -t ghcr.io/cutover/serving-torch:0.1.0 .
#   docker build --target serving --build-arg EXTRAS=serving,otlp,tensorflow -t ghcr.io/cutover/serving-tensorflow:0.1.0 .
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator operator
COPY serving serving
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM python:3.11-slim AS base
RUN useradd --uid 10001 --create-home cutover

FROM base AS runtime
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER 10001

# The `cutover` CLI (`cutover crds`).
FROM runtime AS cli
ENTRYPOINT ["cutover"]

# The operator.
FROM runtime AS operator
EXPOSE 8000
ENTRYPOINT ["cutover"]
CMD ["operator"]

# The serving runtime: one model revision per pod (ONNX Runtime, Triton and LLM upstreams;
# add torch or tensorflow with --build-arg EXTRAS=serving,otlp,torch or serving,otlp,tensorflow). The
# operator passes `serve ...` as args.
FROM base AS serving
ARG EXTRAS=serving,otlp
COPY --from=build /wheels /wheels
RUN wheel="$(ls /wheels/cutover-*.whl)" && pip install --no-cache-dir "${wheel}[${EXTRAS}]" && rm -rf /wheels
USER 10001
EXPOSE 8080
ENTRYPOINT ["cutover"]
CMD ["serve", "--help"]
