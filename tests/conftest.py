import os

# Tests run on the CPU with deterministic, small thread pools.
os.environ.setdefault("JAX_PLATFORMS", "cpu")

# The binaries' persistent compilation cache stays off in tests (their
# compile counts are asserted); tests/test_compile_cache.py turns it on.
os.environ.setdefault("SEQJAX_COMPILATION_CACHE_DIR", "")
