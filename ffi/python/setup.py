"""Builds the `conclave` Python package from the Rust workspace.

`pip install ./ffi/python` (from the repository root) runs this: it builds the
`conclave-ffi` library and the workspace's `uniffi-bindgen` with cargo, generates the
Python module from the library, and puts both into the package. Settings, from the
environment:

* ``CONCLAVE_FFI_PROFILE``: the cargo profile, ``release`` (default) or ``dev`` (fast
  to build, for tests; CI uses it).
* ``CARGO``: the cargo binary (default: ``cargo`` on the PATH).
* ``CARGO_TARGET_DIR``: honoured, as cargo honours it.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.dist import Distribution

HERE = Path(__file__).resolve().parent
WORKSPACE = HERE.parent.parent


def library_name() -> str:
    if sys.platform == "darwin":
        return "libconclave_ffi.dylib"
    if sys.platform == "win32":
        return "conclave_ffi.dll"
    return "libconclave_ffi.so"


def executable(name: str) -> str:
    return name + (".exe" if sys.platform == "win32" else "")


class BuildWithCargo(build_py):
    """Runs the normal build, then adds the Rust library and its generated module."""

    def run(self) -> None:
        super().run()
        cargo = os.environ.get("CARGO", "cargo")
        profile = os.environ.get("CONCLAVE_FFI_PROFILE", "release")
        subprocess.run(
            [cargo, "build", "--locked", "--profile", profile,
             "-p", "conclave-ffi", "-p", "conclave-uniffi-bindgen"],
            cwd=WORKSPACE, check=True,
        )
        metadata = json.loads(subprocess.run(
            [cargo, "metadata", "--format-version", "1", "--no-deps", "--locked"],
            cwd=WORKSPACE, check=True, capture_output=True,
        ).stdout)
        out_dir = Path(metadata["target_directory"]) / ("debug" if profile == "dev" else profile)
        library = out_dir / library_name()
        package = Path(self.build_lib).resolve() / "conclave"
        package.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [str(out_dir / executable("uniffi-bindgen")), "generate",
             "--library", str(library), "--language", "python",
             "--out-dir", str(package)],
            cwd=WORKSPACE, check=True,
        )
        shutil.copy2(library, package / library.name)


class BinaryDistribution(Distribution):
    """The wheel carries a native library: tag it for this platform."""

    def has_ext_modules(self) -> bool:
        return True


setup(cmdclass={"build_py": BuildWithCargo}, distclass=BinaryDistribution)
