# One Dockerfile, one target per component. Build with, for example:
#   docker build --target cli -t cutover:0.1.0 .
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY api api
COPY operator operator
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim AS runtime
RUN useradd --uid 10001 --create-home cutover
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER 10001

# The `cutover` CLI (`cutover crds`).
FROM runtime AS cli
ENTRYPOINT ["cutover"]

# The operator: `docker build --target operator -t ghcr.io/cutover/operator:0.1.0 .`
FROM runtime AS operator
EXPOSE 8000
ENTRYPOINT ["cutover"]
CMD ["operator"]
