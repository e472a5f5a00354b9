# An image for notebooks that need more than the nbflow image has (numpy and pandas):
# the nbflow image plus the packages in a requirements.txt, installed once at build time.
#
#   cd my-notebooks/                  # holds requirements.txt (pip's format)
#   docker build --network host -f /path/to/nbflow/docker/requirements.Dockerfile \
#     --build-arg NBFLOW_IMAGE=myregistry/nbflow:1.0 -t myregistry/nbflow-reports:1.0 .
#
# Then give the runs that image (job variable `image`, on the deployment or as the Docker /
# Kubernetes runner default). The packages go into the image's venv (/opt/venv), so the
# `python3` kernel of `nbflow execute` imports them; pip trusts the CA certificates the
# nbflow image was built with (PIP_CERT is set there). Only the build needs PyPI (or your
# index: --build-arg PIP_INDEX_URL=...); runs need no network beyond the nbflow server.
ARG NBFLOW_IMAGE=nbflow:latest
FROM ${NBFLOW_IMAGE}

ARG PIP_INDEX_URL
COPY requirements.txt /opt/nbflow-requirements.txt
# `pip check` fails the build when a requirement broke what nbflow, papermill or ipykernel
# need (pip installs what you ask, even if it replaces a version they depend on).
RUN pip install ${PIP_INDEX_URL:+--index-url "$PIP_INDEX_URL"} -r /opt/nbflow-requirements.txt \
    && pip check \
    && python -c "import nbflow, papermill"
