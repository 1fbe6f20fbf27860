"""The sandbox stops infinite loops, memory bombs, sockets, process creation, file writes and huge output."""

import pytest

from mda_fast.augment.sandbox import SandboxError, SandboxLimits, network_isolation, run_generator

LIM = SandboxLimits(cpu_s=2, wall_s=3, memory_mb=256, max_output=20000)
GOOD = "import random\ndef generate(seed, n):\n    r = random.Random(seed)\n    return ['ab' * r.randint(1, 5) for _ in range(n)]\n"


def test_good_code_runs_and_is_deterministic():
    a = run_generator(GOOD, 1, 4, LIM)
    assert a == run_generator(GOOD, 1, 4, LIM) and len(a) == 4 and all(set(d) <= {"a", "b"} for d in a)


@pytest.mark.parametrize(
    "name,code,why",
    [
        ("loop", "def generate(s, n):\n    while True:\n        pass\n", "limit"),
        ("sleep", "import time\ndef generate(s, n):\n    time.sleep(60)\n", "wall-clock"),
        ("memory", "def generate(s, n):\n    x = 'a' * (2 * 10**9)\n    return [x]\n", "memory"),
        ("socket", "import socket\ndef generate(s, n):\n    return []\n", "socket"),
        ("raw_socket", "def generate(s, n):\n    return [str(__import__('_socket').socket())]\n", "_socket"),
        ("output", "def generate(s, n):\n    return ['x' * 100000]\n", "output"),
        ("system", "import os\ndef generate(s, n):\n    os.system('true')\n    return []\n", "os.system"),
        ("subprocess", "def generate(s, n):\n    import subprocess\n    return []\n", "subprocess"),
        ("bad_return", "def generate(s, n):\n    return 5\n", "list of str"),
        ("no_function", "x = 1\n", "generate"),
    ],
)
def test_bad_code_is_stopped(name, code, why):
    with pytest.raises(SandboxError, match=why):
        run_generator(code, 0, 2, LIM)


def test_file_writes_are_refused(tmp_path):
    target = tmp_path / "pwn"
    with pytest.raises(SandboxError, match="writing files"):
        run_generator(f"def generate(s, n):\n    open({str(target)!r}, 'w').write('x')\n    return []\n", 0, 1, LIM)
    assert not target.exists()


def test_environment_is_empty(monkeypatch):
    monkeypatch.setenv("MDA_SECRET_KEY", "hunter2")
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy:1")
    docs = run_generator("import os\ndef generate(s, n):\n    return sorted(os.environ)\n", 0, 1, LIM)
    assert "MDA_SECRET_KEY" not in docs and "HTTPS_PROXY" not in docs


@pytest.mark.skipif(network_isolation() is None, reason="no network namespace on this system")
def test_network_namespace_has_no_interfaces():
    docs = run_generator("def generate(s, n):\n    return [open('/proc/net/dev').read()]\n", 0, 1, LIM)
    ifaces = [ln.split(":")[0].strip() for ln in docs[0].splitlines()[2:]]
    assert set(ifaces) <= {"lo"}
