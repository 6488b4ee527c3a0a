"""cffi builder of ``fastconv._cext`` (API mode), run by setup.py's ``cffi_modules``.

A flat script: ``ffibuilder = FFI()``, ``cdef``, ``set_source``. Environment knobs:

  FASTCONV_OPENMP=0    build without OpenMP (a serial module). Default: on when the
                       compiler accepts ``-fopenmp`` (tested on a tiny file).
  FASTCONV_NATIVE=1    add ``-march=native``, for local experiments only: the module may
                       then crash with SIGILL on another CPU. The default build is portable
                       and picks AVX-512 / AVX2 / generic microkernels at run time.
  FASTCONV_SANITIZE=1  ``-fsanitize=address,undefined -O1 -g``; import it with
                       ``LD_PRELOAD=$(gcc -print-file-name=libasan.so)``.

No ``-ffast-math``: the kernels rely on NaN and -0.0 semantics. Editable installs do not
rebuild on C changes: re-run ``pip install -e . --no-build-isolation`` (or
``python setup.py build_ext --inplace``).
"""
import glob
import os
import shlex
import subprocess
import sysconfig
import tempfile

from cffi import FFI

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_CSRC = os.path.join(_ROOT, "csrc")


def _rel(path):
    """Relative to the cwd when below it (setuptools prefers relative source paths)."""
    rel = os.path.relpath(path)
    return path if rel.startswith("..") else rel


def _compiler():
    cc = os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc"
    return shlex.split(cc)


def _has_openmp():
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "omp.c")
        with open(src, "w") as f:
            f.write("#include <omp.h>\nint main(void) { return omp_get_max_threads() < 1; }\n")
        try:
            res = subprocess.run(_compiler() + ["-fopenmp", src, "-o", os.path.join(tmp, "omp")],
                                 capture_output=True, timeout=60)
        except (OSError, subprocess.SubprocessError):
            return False
        return res.returncode == 0


_compile = ["-std=gnu11", "-O3", "-fno-math-errno", "-fno-strict-aliasing"]
_link = []
if os.environ.get("FASTCONV_OPENMP", "1") != "0" and _has_openmp():
    _compile.append("-fopenmp")
    _link.append("-fopenmp")
if os.environ.get("FASTCONV_NATIVE") == "1":
    _compile.append("-march=native")
if os.environ.get("FASTCONV_SANITIZE") == "1":
    _san = ["-fsanitize=address,undefined", "-fno-omit-frame-pointer", "-g"]
    _compile += _san + ["-O1"]
    _link += _san

ffibuilder = FFI()
ffibuilder.cdef(
    """
    void fc_sgemm(int trans_a, int trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                  const float *A, int64_t lda, const float *B, int64_t ldb, float beta,
                  float *C, int64_t ldc);
    int fc_sgemm_ex(int trans_a, int trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                    const float *A, int64_t lda, const float *B, int64_t ldb, float beta,
                    float *C, int64_t ldc, const float *bias_rows, int relu);
    void fc_sgemv(int trans, int64_t M, int64_t K, float alpha, const float *A, int64_t lda,
                  const float *x, float beta, float *y, const float *bias);
    void fc_sgemv_multi(int64_t nv, int64_t M, int64_t K, float alpha, const float *A,
                        int64_t lda, const float *X, int64_t ldx, float beta, float *Y,
                        int64_t ldy, const float *bias);
    void fc_gemm_blocking(int *mr, int *nr, int64_t *mc, int64_t *kc, int64_t *nc);
    int fc_conv2d(const float *x, const float *w, const float *bias, float *y,
                  int64_t N, int64_t C, int64_t H, int64_t W, int64_t K, int64_t R, int64_t S,
                  int64_t P, int64_t Q, int64_t stride_h, int64_t stride_w,
                  int64_t pad_top, int64_t pad_left, int64_t dil_h, int64_t dil_w,
                  int64_t groups, int relu);
    void fc_max_pool2d(const float *x, float *y, int64_t N, int64_t C, int64_t H, int64_t W,
                       int64_t P, int64_t Q, int64_t kh, int64_t kw, int64_t stride_h,
                       int64_t stride_w, int64_t pad_top, int64_t pad_left, int64_t dil_h,
                       int64_t dil_w);
    void fc_avg_pool2d(const float *x, float *y, int64_t N, int64_t C, int64_t H, int64_t W,
                       int64_t P, int64_t Q, int64_t kh, int64_t kw, int64_t stride_h,
                       int64_t stride_w, int64_t pad_top, int64_t pad_left, int64_t pad_bottom,
                       int64_t pad_right, int count_include_pad);
    void fc_global_avg_pool2d(const float *x, float *y, int64_t N, int64_t C, int64_t HW);
    void fc_relu(const float *x, float *y, int64_t n);
    void fc_softmax(const float *x, float *y, int64_t outer, int64_t L, int64_t inner);
    void fc_lrn(const float *x, float *y, int64_t N, int64_t C, int64_t L, int64_t size,
                float alpha, float beta, float k);
    void fc_batch_norm(const float *x, float *y, int64_t N, int64_t C, int64_t L,
                       const float *mean, const float *var, const float *weight,
                       const float *bias, float eps);
    void fc_set_num_threads(int n);
    int fc_get_num_threads(void);
    int fc_has_openmp(void);
    const char *fc_isa_name(void);
    const char *fc_build_flags(void);
    """
)
ffibuilder.set_source(
    "fastconv._cext",
    '#include "fastconv.h"\n'
    "static const char *fc_build_flags(void) { return %s; }\n"
    % ('"' + " ".join(_compile).replace('"', "") + '"'),
    sources=[_rel(p) for p in sorted(glob.glob(os.path.join(_CSRC, "*.c")))],
    include_dirs=[_rel(_CSRC)],
    depends=[_rel(os.path.join(_CSRC, "fastconv.h"))],
    extra_compile_args=_compile,
    extra_link_args=_link,
)

if __name__ == "__main__":
    ffibuilder.compile(tmpdir=_ROOT, verbose=True)
