import os
import shutil
import tempfile

# Tests run on the CPU with deterministic, small thread pools.
os.environ.setdefault("JAX_PLATFORMS", "cpu")

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
