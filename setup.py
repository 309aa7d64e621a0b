"""Builds rmtl._core from csrc/ with the NumPy C API, -O3 and OpenMP when available."""
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

SOURCES = sorted(os.path.join("csrc", f) for f in os.listdir("csrc") if f.endswith(".c"))


def _compiler_has_openmp(compiler: str) -> bool:
    """Compile and link a tiny OpenMP program to see whether -fopenmp works."""
    tmp = tempfile.mkdtemp()
    try:
        src = os.path.join(tmp, "t.c")
        with open(src, "w") as f:
            f.write("#include <omp.h>\nint main(void){return omp_get_max_threads() < 1;}\n")
        cmd = [compiler, "-fopenmp", src, "-o", os.path.join(tmp, "t")]
        return subprocess.run(cmd, capture_output=True).returncode == 0
    except OSError:
        return False
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class BuildExt(build_ext):
    def build_extensions(self):
        cc = self.compiler.compiler_so[0] if hasattr(self.compiler, "compiler_so") else "cc"
        omp = sys.platform != "win32" and _compiler_has_openmp(cc)
        for ext in self.extensions:
            ext.extra_compile_args += ["-O3", "-std=c99", "-fno-strict-aliasing"]
            if omp:
                ext.extra_compile_args.append("-fopenmp")
                ext.extra_link_args.append("-fopenmp")
        super().build_extensions()


setup(
    ext_modules=[
        Extension(
            "rmtl._core",
            sources=SOURCES,
            include_dirs=[np.get_include(), "csrc"],
            define_macros=[("_DEFAULT_SOURCE", None)],
        )
    ],
    cmdclass={"build_ext": BuildExt},
)
