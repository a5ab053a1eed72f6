# The serving image: python -m service (no training extras, no Redis inside: the Redis or
# Redis Cluster is NICHEFEED_REDIS_URL; model bundles are mounted at NICHEFEED_MODELS_DIR).
#   docker build -t nichefeed .        Kubernetes: ops/k8s/ (README "Running in production")
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml ./
COPY protos ./protos
COPY core ./core
COPY service ./service
COPY training ./training
# gcc compiles the trees' kernel (core/quickscorer.c) into the wheel; the serving stage
# below needs no compiler. The gRPC stubs are generated, never checked in (Makefile: proto).
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev && rm -rf /var/lib/apt/lists/*
RUN pip install --no-cache-dir "grpcio-tools>=1.85" \
 && mkdir -p gen/nichefeed/v1 && touch gen/nichefeed/__init__.py gen/nichefeed/v1/__init__.py \
 && python -m grpc_tools.protoc -Iprotos --python_out=gen --grpc_python_out=gen --pyi_out=gen protos/nichefeed/v1/*.proto \
 && pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
RUN useradd --uid 10001 --no-create-home --shell /usr/sbin/nologin nichefeed
# LightGBM (a bundle's lambdarank scorer, core.scoring.TreeScorer) links the system's
# OpenMP runtime, which the slim image lacks.
RUN apt-get update && apt-get install -y --no-install-recommends libgomp1 && rm -rf /var/lib/apt/lists/*
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER 10001
ENV OMP_NUM_THREADS=1 \
    NICHEFEED_GRPC_ADDR=0.0.0.0:50051 \
    NICHEFEED_METRICS_ADDR=0.0.0.0:9464 \
    NICHEFEED_MODELS_DIR=/models
EXPOSE 50051 9464
# SIGTERM drains (service/__main__.py); exec form so it reaches the server.
ENTRYPOINT ["python", "-m", "service"]
