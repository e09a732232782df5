import os
import shutil
import tempfile

# Tests run on the CPU with deterministic, small thread pools.
os.environ.setdefault("JAX_PLATFORMS", "cpu")

# The tests compile hundreds of small programs and run each briefly. XLA:CPU
# compiles them about 4x faster with its older fusion emitters at LLVM -O0
# (benchmarks/RESULTS.md, "XLA:CPU compile flags"): the fast tier takes half
# the time. Their values agree within the tests' tolerances; whether two
# different programs round alike is checked where the binaries compile
# (test_reliability's non-finite guard). SEQJAX_TEST_XLA_FLAGS overrides
# the choice (empty: XLA's defaults).
DEFAULT_TEST_XLA_FLAGS = ("--xla_backend_optimization_level=0 "
                          "--xla_cpu_use_fusion_emitters=false")
TEST_XLA_FLAGS = os.environ.get("SEQJAX_TEST_XLA_FLAGS",
                                DEFAULT_TEST_XLA_FLAGS)
if TEST_XLA_FLAGS not in os.environ.get("XLA_FLAGS", ""):  # workers inherit
  os.environ["XLA_FLAGS"] = " ".join(
      f for f in (os.environ.get("XLA_FLAGS", ""), TEST_XLA_FLAGS) if f)

# One persistent compilation cache for the whole session: the controller
# makes it, the workers and the binaries' subprocesses inherit it, so a
# program every end-to-end test builds compiles once. Compile counts are
# unchanged (a cache hit is still counted as the program's compile);
# tests/test_compile_cache.py uses directories of its own.
_OWN_CACHE = "SEQJAX_COMPILATION_CACHE_DIR" not in os.environ
if _OWN_CACHE:
  os.environ["SEQJAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(
      prefix="seqjax-test-xla-")

# The tests' own programs too: many tests rebuild the same small programs
# (a new jax.jit per test, the same shapes), and reading one back costs a
# fraction of compiling it (about a third of the CPU seconds of the model
# tests). Turned on before any test module compiles anything.
from seqjax import compile_cache  # pylint: disable=g-import-not-at-top

compile_cache.enable(os.environ["SEQJAX_COMPILATION_CACHE_DIR"])


def pytest_unconfigure(config):
  if _OWN_CACHE and not hasattr(config, "workerinput"):  # the controller
    shutil.rmtree(os.environ["SEQJAX_COMPILATION_CACHE_DIR"],
                  ignore_errors=True)
