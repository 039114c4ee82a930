# The ComfyUI emulator as a container image, on a Debian base that has python3, python3-aiohttp and python3-pil:
#   mmdebstrap --variant=apt --include=python3-minimal,python3-aiohttp,python3-pil bookworm - | docker import - comfyart-base:bookworm
#   docker build -f docker/emulator.Dockerfile --build-arg BASE=comfyart-base:bookworm -t comfyart-emulator .
ARG BASE=comfyart-base:bookworm
FROM ${BASE}
COPY comfyart/__init__.py /opt/comfyart/comfyart/__init__.py
COPY comfyart/emulator /opt/comfyart/comfyart/emulator
WORKDIR /opt/comfyart
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
CMD ["python3", "-m", "comfyart.emulator", "--host", "0.0.0.0", "--port", "8188"]
