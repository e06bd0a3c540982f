"""What every benchmark reports beside its figures: the CPU it ran on and the commit it measured."""
import os
import subprocess

HERE = os.path.dirname(os.path.abspath(__file__))


def cpu_name():
    """The CPU's model name from /proc/cpuinfo ("unknown CPU" where it has none)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def commit():
    """`git describe --always --dirty` of the checkout the benchmarks live in ("unknown" outside one)."""
    r = subprocess.run(["git", "describe", "--always", "--dirty", "--abbrev=12"], capture_output=True, text=True,
                       cwd=HERE)
    return r.stdout.strip() or "unknown"
