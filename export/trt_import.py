"""The one place the export imports TensorRT's Python bindings.

The exporter image pins the real wheel, `tensorrt-cu12-bindings==10.5.0` from pypi.org
(requirements/export.txt): it installs the module `tensorrt_bindings` only. The PyPI package
`tensorrt-cu12` that provides `import tensorrt` is an 18 KB sdist whose setup.py pip-installs
`tensorrt-cu12_libs`/`tensorrt-cu12_bindings` from https://pypi.nvidia.com into the build's
throwaway isolation environment, and whose `tensorrt/__init__.py` is only
`from tensorrt_bindings import *` with no declared dependency: installed that way,
`import tensorrt` raises ModuleNotFoundError (tensorrt-cu12 10.5.0 sdist, setup.py and
tensorrt/__init__.py). So: `tensorrt` where an environment has it (NVIDIA's images, a local
install), else `tensorrt_bindings`, the same module (tensorrt_bindings/__init__.py:
`from .tensorrt import *`, its .so loads the base image's libnvinfer.so.10), registered as
`tensorrt` in sys.modules so that what imports `tensorrt` itself (polygraphy's TrtRunner, the
plan certification) finds it too."""

from __future__ import annotations

import sys
from types import ModuleType

BINDINGS_REQUIREMENT = "tensorrt-cu12-bindings==10.5.0"


class TensorRTMissing(RuntimeError):
    """Neither `tensorrt` nor `tensorrt_bindings` imports here."""


def load_tensorrt() -> ModuleType:
    try:
        import tensorrt
    except ImportError as first:
        try:
            import tensorrt_bindings as tensorrt
        except ImportError as second:
            raise TensorRTMissing(
                f"TensorRT's Python bindings are not importable (import tensorrt: {first}; "
                f"import tensorrt_bindings: {second}); the exporter image installs {BINDINGS_REQUIREMENT} "
                "(requirements/export.txt) on the libnvinfer.so.10 of nvcr.io/nvidia/tensorrt:24.10-py3"
            ) from second
        sys.modules.setdefault("tensorrt", tensorrt)
    return tensorrt


if __name__ == "__main__":  # the exporter image's build check (docker/Dockerfile)
    print("tensorrt", load_tensorrt().__version__)
