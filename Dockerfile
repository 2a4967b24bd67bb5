# meter's container image: `meter serve` against METER_DATABASE_URL, as a non-root user.
#
#   docker build -t meter .
#   docker run -p 50051:50051 -p 8080:8080 -e METER_DATABASE_URL=postgresql://... \
#       -e METER_CALLERS_FILE=/etc/meter/callers.toml -v ./callers.toml:/etc/meter/callers.toml:ro meter
#
# Two stages: the first installs meter into a virtual environment (docs/operate.md's "Installing
# without a container" runs these same RUN lines, and tests/test_container.py runs them and
# checks they are identical); the second copies only that environment onto a clean Python image:
# no pip cache, no sources, no compilers, no embedded PostgreSQL.
#
# The dependencies are their own layer, installed from requirements/image.txt (exact versions,
# written by `make lock`) before the sources are copied: a change to meter's code reuses it.
# The base image is pinned to a patch release; pin it by digest in your own registry
# (python:3.11.11-slim-bookworm@sha256:...), which this repository's machines cannot reach.
ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV VIRTUAL_ENV=/opt/meter
WORKDIR /src
RUN python3 -m venv "$VIRTUAL_ENV"
COPY requirements/image.txt ./requirements/image.txt
RUN "$VIRTUAL_ENV/bin/pip" install --no-cache-dir --disable-pip-version-check -r requirements/image.txt
COPY pyproject.toml ./
COPY src ./src
COPY generated ./generated
RUN "$VIRTUAL_ENV/bin/pip" install --no-cache-dir --disable-pip-version-check --no-deps .
RUN "$VIRTUAL_ENV/bin/meter" --help > /dev/null

FROM ${PYTHON_IMAGE}
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin meter
COPY --from=build /opt/meter /opt/meter
ENV PATH=/opt/meter/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    METER_GRPC_ADDR=0.0.0.0:50051 \
    METER_HTTP_ADDR=0.0.0.0:8080 \
    METER_CONNECT_ADDR=0.0.0.0:8081 \
    METER_LOG_FORMAT=json
USER meter
EXPOSE 50051 8080 8081
# 200 from /healthz once the database is reachable and migrated; 503 before and while draining.
# The probe is a few lines of the standard library (meter.health_probe), not the server stack:
# about 40 ms of CPU per check.
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 CMD ["python", "-m", "meter.health_probe"]
# SIGTERM drains: in-flight calls get METER_SHUTDOWN_GRACE_SECONDS (10 s) to finish; give
# `docker stop` / Kubernetes a longer grace than that.
STOPSIGNAL SIGTERM
ENTRYPOINT ["meter"]
CMD ["serve"]
