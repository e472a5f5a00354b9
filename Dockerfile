# The nbflow runtime image: runs `nbflow execute <run-id>` (papermill + ipykernel) for the
# Docker and Kubernetes runners.
#
#   docker build --network host --build-arg BASE_IMAGE=python:3.11-slim -t myregistry/nbflow:latest .
#
# BASE_IMAGE needs python3 (>= 3.11) with the venv module and a shell; update-ca-certificates
# is used when present. Extra CA certificates (*.crt) in docker/ca-certificates/ are trusted.
# Layers: (1) CA certificates + venv + the heavy dependencies, which only change when this
# file changes; (2) the project itself, so rebuilding after a code change takes seconds.
#
# Besides nbflow and papermill the image has the scientific basics most notebooks (and
# every notebook in examples/) import: numpy and pandas. A notebook that needs more gets
# an image of its own FROM this one: see docker/requirements.Dockerfile and
# docs/runners.md ("Adding a notebook's requirements").
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}

ENV LANG=C.UTF-8 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_CERT=/etc/ssl/certs/ca-certificates.crt \
    SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
    REQUESTS_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

COPY docker/ca-certificates/ /usr/local/share/ca-certificates/

RUN set -eu; \
    find /usr/local/share/ca-certificates -type f ! -name '*.crt' -delete; \
    if command -v update-ca-certificates >/dev/null; then update-ca-certificates >/dev/null; fi; \
    python3 -m venv /opt/venv; \
    pip install --upgrade "pip>=23" \
    && pip install \
        "hatchling>=1.21" \
        "papermill>=2.6" "ipykernel>=6.29" "nbclient>=0.10" "nbformat>=5.9" "ipywidgets>=8.1" \
        "pydantic>=2.6" "SQLAlchemy>=2.0" "alembic>=1.13" "httpx>=0.27" "croniter>=2" \
        "anyio>=4" "cloudpickle>=2" "hatch-jupyter-builder>=0.5" \
        "numpy>=1.26" "pandas>=2.1" \
    && python -m ipykernel install --sys-prefix --name python3

# The image runs notebooks, not JupyterLab: build hooks (the labextension's jlpm build) are
# off, and an unbuilt labextension directory is created empty so the wheel's shared-data
# mapping still resolves.
COPY . /src/nbflow
RUN mkdir -p /src/nbflow/jupyter_extension/nbflow_server/labextension \
    && HATCH_BUILD_NO_HOOKS=true pip install --no-build-isolation "/src/nbflow[notebook]" \
    && python -c "import nbflow, papermill, numpy, pandas"

CMD ["nbflow", "--help"]
