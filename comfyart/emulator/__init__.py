"""A ComfyUI-compatible emulator for tests, demos and benchmarks.

Depends only on the standard library, aiohttp and Pillow (Debian's python3-aiohttp and python3-pil), so the
same code runs in the emulator container image built from Debian packages.
"""
