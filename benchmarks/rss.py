"""Resident memory of this process, for the benchmarks' peak-memory figures."""


def rss_mb() -> float:
    """Current resident set size (MB) from /proc/self/status (0 where there is no /proc)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return 0.0
    return 0.0
