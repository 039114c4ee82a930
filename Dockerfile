# The comfyart daemon.
#   docker build -t comfyart .
# Where no base image can be pulled (CI here), build on a local Debian bookworm image that has python3 and
# python3-venv, from wheels made beforehand:
#   pip wheel -r requirements.txt -c constraints.txt -w wheels
#   docker build --build-arg BASE=comfyart-daemon-base:bookworm --build-arg PIP_INSTALL_ARGS="--no-index --find-links /wheels" .
ARG BASE=python:3.11-slim-bookworm

FROM ${BASE} AS build
ARG PIP_INSTALL_ARGS=""
# constraints.txt always exists, so the optional wheels/ directory may be missing (its files land in /wheels)
COPY constraints.txt wheel[s] /wheels/
COPY requirements.txt /wheels/requirements.txt
# the comfyart command (docker exec … comfyart keys create …; the HEALTHCHECK): the package runs from /app on
# PYTHONPATH, so the command is a two-line script rather than an install that would need a build backend offline
RUN python3 -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-cache-dir --disable-pip-version-check ${PIP_INSTALL_ARGS} \
        -r /wheels/requirements.txt -c /wheels/constraints.txt \
 && find /opt/venv -name __pycache__ -prune -exec rm -rf {} + \
 && printf '#!/bin/sh\nexec /opt/venv/bin/python3 -m comfyart "$@"\n' > /opt/venv/bin/comfyart \
 && chmod 755 /opt/venv/bin/comfyart

FROM ${BASE}
COPY --from=build /opt/venv /opt/venv
COPY comfyart /app/comfyart
COPY config /app/config
# a user of its own; the Docker socket's group is added at run time (docker-compose.yml: group_add)
RUN mkdir -p /data && chown 10001:10001 /data
USER 10001:10001
WORKDIR /data
ENV PATH=/opt/venv/bin:$PATH PYTHONPATH=/app PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 \
    COMFYART_CONFIG=/app/config/container.yaml COMFYART_DATA_DIR=/data
VOLUME ["/data"]
EXPOSE 8100
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 CMD ["comfyart", "healthcheck"]
ENTRYPOINT ["python3", "-m", "comfyart"]
CMD ["serve"]
