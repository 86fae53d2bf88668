"""Build hook for fastnn: compiles the Cython kernels (fastnn/backends/cython/*.pyx) in place.

Metadata lives in pyproject.toml. Flags: -O3, plus -march=native unless FASTNN_PORTABLE=1
(for wheels meant for other machines), plus -fopenmp when the compiler can build and link
an OpenMP program (it also turns on the OpenMP threads of the packed GEMM in fastnn/backends/cython/gemm.h); without it
the build still succeeds and ``prange`` runs serially
(``fastnn.backends.cython.openmp_threads()`` then reports 1).
"""
import os
import tempfile
from pathlib import Path

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext


def _compiles(compiler, flags) -> bool:
    """Whether ``compiler`` can compile and link a small OpenMP program with ``flags``."""
    src = "#include <omp.h>\nint main(void) { return omp_get_max_threads() > 0 ? 0 : 1; }\n"
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "check_openmp.c"
        path.write_text(src)
        try:
            objects = compiler.compile([str(path)], output_dir=tmp, extra_postargs=flags)
            compiler.link_executable(objects, str(Path(tmp) / "check_openmp"), extra_postargs=flags)
        except Exception:
            return False
    return True


class BuildExt(build_ext):
    def build_extensions(self):
        compile_args = ["-O3"]
        if os.environ.get("FASTNN_PORTABLE") != "1":
            compile_args.append("-march=native")
        link_args = []
        if _compiles(self.compiler, ["-fopenmp"]):
            compile_args.append("-fopenmp")
            link_args.append("-fopenmp")
        else:
            print("fastnn: the C compiler has no OpenMP; building the Cython kernels single-threaded")
        for ext in self.extensions:
            ext.extra_compile_args = compile_args + ext.extra_compile_args
            ext.extra_link_args = link_args + ext.extra_link_args
        super().build_extensions()


CYTHON_DIR = "fastnn/backends/cython"
HEADERS = [f"{CYTHON_DIR}/{h}" for h in ("gemm.h", "gemm_impl.h", "fma_peak.h", "sparse_row.h", "forward512.h",
                                          "forward_int8.h", "forward_pool.h", "team.h", "exp_vector.h")]
# One extension per .pyx, named as the numba backend's files (kernels, fused_step, fused_forward,
# augment); _shared.pxd holds the inlines they share.
extensions = [
    Extension(f"fastnn.backends.cython.{name}", [f"{CYTHON_DIR}/{name}.pyx"],
              include_dirs=[numpy.get_include(), CYTHON_DIR],
              depends=HEADERS + [f"{CYTHON_DIR}/_shared.pxd"],
              define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")])
    for name in ("kernels", "fused_step", "fused_forward", "augment")
]

setup(
    ext_modules=cythonize(extensions, compiler_directives={"language_level": "3"}),
    cmdclass={"build_ext": BuildExt},
)
