"""XLA_FLAGS for the tests that simulate 8 CPU devices in a subprocess.

The 8 devices' threads share this machine's cores with the other test
workers; XLA's default 40 s wait for a collective's participants aborts
the process when a loaded machine schedules one of them late, so the
wait is raised well above any test's own timeout."""

EIGHT_CPU_DEVICES = " ".join([
    "--xla_force_host_platform_device_count=8",
    "--xla_cpu_collective_call_terminate_timeout_seconds=900",
    "--xla_cpu_collective_timeout_seconds=900",
])
