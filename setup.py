"""Build hook for the cffi extension; the project metadata lives in pyproject.toml."""

from setuptools import setup

setup(cffi_modules=["cffi_build/build_ioctl.py:ffibuilder"])
