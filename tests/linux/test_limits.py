"""The open-file limit is raised to the hard limit at start."""

import resource
import subprocess
import sys


def test_the_soft_open_file_limit_is_raised_to_the_hard_limit() -> None:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    low = 256 if hard == resource.RLIM_INFINITY else min(256, hard)
    # in a child, so this process keeps its own limits
    code = (
        "import resource; from fluxify.linux.limits import raise_open_file_limit; "
        f"resource.setrlimit(resource.RLIMIT_NOFILE, ({low}, {hard})); "
        "print(raise_open_file_limit(), *resource.getrlimit(resource.RLIMIT_NOFILE))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True
    ).stdout.split()
    expected = str(hard) if hard != resource.RLIM_INFINITY else str(low)
    assert out == [expected, expected, str(hard)]
