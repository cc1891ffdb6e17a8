# One Dockerfile for the four images, chosen by a build argument:
#   docker build --build-arg SERVICE=catalog_svc -t shopmesh/catalog .
#   (SERVICE = catalog_svc | inventory_svc | order_svc | gateway)
# Every image carries the whole Python code base (small) so the same image also runs its service's
# migrations (`python -m meshkit.migrate`) and batch jobs (`shopctl ...`); SERVICE only sets the default
# command. The Kubernetes manifests always name the command explicitly.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY . .
# dependencies and the `shopctl` console script into a virtualenv; the code itself is copied below,
# so non-Python files (migrations/*.sql) are where meshkit.migrate looks for them
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir . \
    && python -m compileall -q meshkit shopctl catalog_svc inventory_svc order_svc gateway generated

FROM ${PYTHON_IMAGE}
ARG SERVICE=gateway
RUN groupadd --system --gid 10001 shopmesh \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent shopmesh
COPY --from=build /opt/venv /opt/venv
COPY --from=build /src/meshkit /app/meshkit
COPY --from=build /src/shopctl /app/shopctl
COPY --from=build /src/catalog_svc /app/catalog_svc
COPY --from=build /src/inventory_svc /app/inventory_svc
COPY --from=build /src/order_svc /app/order_svc
COPY --from=build /src/gateway /app/gateway
COPY --from=build /src/generated /app/generated
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/app:/app/generated \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    SHOPMESH_MODULE=${SERVICE}
WORKDIR /app
USER 10001:10001
# the root filesystem is read-only in the pods: only /tmp (an emptyDir) is writable
CMD ["sh", "-c", "exec python -m \"$SHOPMESH_MODULE\""]
