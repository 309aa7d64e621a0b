"""Builds rmtl._core from csrc/ with the NumPy C API, -O3 and POSIX threads."""

import os
import sys

import numpy as np
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

SOURCES = sorted(os.path.join("csrc", f) for f in os.listdir("csrc") if f.endswith(".c"))


class BuildExt(build_ext):
    def build_extensions(self):
        for ext in self.extensions:
            # -fno-math-errno: sqrtf becomes one instruction and loops around it vectorize (the
            # core never reads errno; results are the same bits)
            ext.extra_compile_args += ["-O3", "-std=c99", "-fno-strict-aliasing", "-fno-math-errno"]
            # warnings on (.ci/warnings makes them errors in CI; not here, compilers differ);
            # the C API's fixed signatures leave parameters unused and its tables end in {NULL}
            ext.extra_compile_args += [
                "-Wall",
                "-Wextra",
                "-Wno-unused-parameter",
                "-Wno-missing-field-initializers",
            ]
            if sys.platform != "win32":  # the core's thread pool (csrc/pool.c)
                ext.extra_compile_args.append("-pthread")
                ext.extra_link_args.append("-pthread")
            if sys.platform.startswith("linux"):  # dladdr, dlopen (libc itself from glibc 2.34)
                ext.libraries.append("dl")
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
