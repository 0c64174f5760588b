# The image the KFP components and the TFX-on-Vertex executors run in.
#
#   docker build -t REGION-docker.pkg.dev/PROJECT/REPO/servopt:0.1.0 .
#   docker push REGION-docker.pkg.dev/PROJECT/REPO/servopt:0.1.0
#
# Debian trixie (glibc 2.41) installs the full TFX stack without this project's local
# overrides: ml-metadata 1.21 and tensorflow-data-validation 1.21, so `tfx.components`,
# KubeflowV2DagRunner and the Vertex executor entrypoint import. Every other package is
# pinned to the versions in uv.lock. TF Serving's model server is copied from the official
# image of the version uv.lock pins for tensorflow-serving-api, so the ServingBenchmark's
# `tfserving` backend can start it inside the pipeline.

ARG TF_SERVING_VERSION=2.19.1

FROM tensorflow/serving:${TF_SERVING_VERSION} AS tfserving

FROM python:3.11-slim-trixie

COPY --from=tfserving /usr/bin/tensorflow_model_server /usr/local/bin/tensorflow_model_server

ENV PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    TF_CPP_MIN_LOG_LEVEL=2

RUN pip install uv==0.13.9

WORKDIR /opt/servopt
COPY pyproject.toml uv.lock README.md ./

# Locked versions, minus the overrides that only exist for Debian 12 (ml-metadata 1.17.1);
# then the versions full TFX 1.21 asks for.
RUN uv export --frozen --no-dev --no-hashes --no-emit-project --format requirements-txt \
        -o /tmp/locked.txt \
    && grep -v '^ml-metadata==' /tmp/locked.txt > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt \
        ml-metadata==1.21.0 tensorflow-data-validation==1.21.0 tfx==1.21.0

COPY components ./components
COPY pipelines ./pipelines
# A normal install: the defaults ship inside the package (components/configs/), so nothing
# needs this directory at run time. The sources are removed so that every import, from
# any working directory, is the installed package's.
RUN pip install --no-deps . \
    && cd / && rm -rf /opt/servopt/components /opt/servopt/pipelines /opt/servopt/build \
    && python -c "import tfx.components, components.cli, pipelines.vertex_runner" \
    && python -c "from tfx.orchestration.kubeflow.v2.container import kubeflow_v2_run_executor" \
    && python -c "from components.core.gate import Thresholds; Thresholds.from_yaml()" \
    && servopt --help > /dev/null \
    && tensorflow_model_server --version

WORKDIR /workspace

# KFP and Vertex set the command per step; this default makes `docker run IMAGE` useful.
CMD ["servopt", "--help"]
