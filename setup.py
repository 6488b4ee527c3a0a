# Metadata lives in pyproject.toml; cffi has no pyproject table for its build
# hook, so the C extension (fastconv._cext) is declared here.
from setuptools import setup

setup(cffi_modules=["fastconv/_build.py:ffibuilder"])
