"""Running Debian's python3-torch at the machine's speed.

Debian's PyTorch may use the reference BLAS (its linear layers 20-30x slower): reexec() re-runs the calling
process once with OpenBLAS (package libopenblas0-openmp) on LD_LIBRARY_PATH, OpenBLAS told the CPU's real
kernel level (the environment may cap it at Haswell), and passive OpenMP waiting (spinning threads lose
badly on a machine whose cores other jobs share). The system-wide BLAS choice is left alone. Call it first
thing in a script's __main__; it does nothing when already done or when OpenBLAS is not installed.
"""
import os
import sys

OPENBLAS_DIR = "/usr/lib/x86_64-linux-gnu/openblas-openmp"
DONE = "KILN_FAST_BLAS"


def coretype(cpuinfo):
    """OPENBLAS_CORETYPE for the CPU whose /proc/cpuinfo text is given, or None to leave OpenBLAS's own pick."""
    if " avx512_bf16" in cpuinfo:
        return "Cooperlake"
    if " avx512f" in cpuinfo:
        return "SkylakeX"
    return None


def reexec():
    if os.environ.get(DONE) or not os.path.isdir(OPENBLAS_DIR):
        return
    env = dict(os.environ)
    env[DONE] = "1"
    env["LD_LIBRARY_PATH"] = OPENBLAS_DIR + (":" + env["LD_LIBRARY_PATH"] if env.get("LD_LIBRARY_PATH") else "")
    try:
        with open("/proc/cpuinfo") as f:
            kind = coretype(f.read())
    except OSError:
        kind = None
    if kind:
        env["OPENBLAS_CORETYPE"] = kind
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    sys.stdout.flush()
    os.execve(sys.executable, [sys.executable] + sys.argv, env)
