"""Speed benchmarks: seqjax against the tutorials' own frameworks, measured
side by side in one process (``python -m benchmarks.run``)."""
