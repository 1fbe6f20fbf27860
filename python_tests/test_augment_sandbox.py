"""The sandbox stops infinite loops, memory bombs, sockets, process creation, file reads and writes, and huge
output; a hostile generator cannot take its audit hook apart."""

import os
import subprocess
import sys

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
    """The generator runs in a network namespace of its own (it cannot read /proc/net/dev any more, but the link
    /proc/self/ns/net names its namespace), and a namespace made by that prefix has no interface but lo."""
    ns = run_generator("import os\ndef generate(s, n):\n    return [os.readlink('/proc/self/ns/net')]\n", 0, 1, LIM)
    assert ns[0].startswith("net:[") and ns[0] != os.readlink("/proc/self/ns/net")
    dev = subprocess.run(network_isolation() + ["cat", "/proc/net/dev"], capture_output=True, text=True, check=True)
    ifaces = [ln.split(":")[0].strip() for ln in dev.stdout.splitlines()[2:]]
    assert set(ifaces) <= {"lo"}
    with pytest.raises(SandboxError, match="reading files"):
        run_generator("def generate(s, n):\n    return [open('/proc/net/dev').read()]\n", 0, 1, LIM)


# --- reading files ---------------------------------------------------------------------------------------------------
# Each route is written as a hostile generator would write it: it returns what it read as its documents (or raises
# with it in the message, which ends up in the SandboxError). ``P`` is a file holding ``CONTENT``; ``D`` is a folder
# holding a file named ``NAME``. The same code run in this (unsandboxed) process must leak, so every route is real.

CONTENT = "mda-sandbox-secret-content-5e1f"
NAME = "mda-sandbox-secret-name-9c2d"

READ_ROUTES = {
    "builtins.open": "return [open(P).read()]",
    "io.open": "return [__import__('io').open(P).read()]",
    "_io.open": "return [__import__('_io').open(P).read()]",
    "io.FileIO": "return [__import__('io').FileIO(P).read().decode()]",
    "io.open_code": "return [__import__('io').open_code(P).read().decode()]",
    "FileIO via sys.stdin": "return [type(sys.stdin.buffer.raw)(P).read().decode()]",
    "os.open": "import os\n    return [os.read(os.open(P, os.O_RDONLY), 999).decode()]",
    "posix via sys.modules": "m = sys.modules['posix']\n    return [m.read(m.open(P, 0), 999).decode()]",
    "codecs.open": "return [__import__('codecs').open(P).read()]",
    "tokenize.open": "return [__import__('tokenize').open(P).read()]",
    "linecache": "import linecache\n    return [''.join(linecache.getlines(P))]",
    "__builtins__ of an allowed module": "return [__import__('random').__builtins__['open'](P).read()]",
    "sys.modules builtins": "return [sys.modules['builtins'].open(P).read()]",
    "__main__ builtins": "return [sys.modules['__main__'].__builtins__.open(P).read()]",
    "importlib loader get_data": (
        "e = sys.modules['_frozen_importlib_external']\n    return [e.SourceFileLoader('x', P).get_data(P).decode()]"
    ),
    "load the file as a module (its line in the SyntaxError)": (
        "b = sys.modules['_frozen_importlib']\n    e = sys.modules['_frozen_importlib_external']\n"
        "    spec = b.spec_from_loader('x', e.SourceFileLoader('x', P))\n    b.module_from_spec(spec).__spec__.loader"
        ".exec_module(b.module_from_spec(spec))\n    return []"
    ),
    "pathlib": "return [__import__('pathlib').Path(P).read_text()]",
    "gc finds the original open": (
        "gc = __import__('gc')\n    f = [o for o in gc.get_referents(vars(sys.modules['builtins']))"
        " if getattr(o, '__name__', '') == 'open'][0]\n    return [f(P).read()]"
    ),
    "gc through _imp.create_builtin": (
        "gc = sys.modules['_imp'].create_builtin(sys.modules['_frozen_importlib'].ModuleSpec('gc', None))\n"
        "    f = [o for o in gc.get_referents(vars(sys.modules['builtins'])) if getattr(o, '__name__', '') == 'open']"
        "\n    return [f[0](P).read()]"
    ),
    "ctypes libc read": (
        "import ctypes\n    libc = ctypes.CDLL(None)\n    fd = libc.open(P.encode(), 0)\n"
        "    buf = ctypes.create_string_buffer(999)\n    libc.read(fd, buf, 999)\n    return [buf.value.decode()]"
    ),
    "builtins rebound before opening": (
        "import builtins\n    builtins.type = lambda *a: str\n    builtins.len = lambda *a: 0\n"
        "    builtins.isinstance = lambda *a: False\n    return [open(P).read()]"
    ),
    "os.fdopen": "import os\n    return [os.fdopen(os.open(P, os.O_RDONLY)).read()]",
}

LIST_ROUTES = {
    "os.listdir": "import os\n    return os.listdir(D)",
    "os.scandir": "import os\n    return [e.name for e in os.scandir(D)]",
    "os.walk": "import os\n    return [f for _, _, fs in os.walk(D) for f in fs]",
    "glob": "return __import__('glob').glob(D + '/*')",
    "posix.listdir via sys.modules": "return sys.modules['posix'].listdir(D)",
    "importlib FileFinder": (
        "e = sys.modules['_frozen_importlib_external']\n    f = e.FileFinder(D)\n    f._fill_cache()\n"
        "    return sorted(f._path_cache)"
    ),
}


@pytest.fixture
def secrets(tmp_path):
    p = tmp_path / "key.txt"
    p.write_text(CONTENT + "\n")
    d = tmp_path / "home"
    d.mkdir()
    (d / NAME).write_text("x")
    return str(p), str(d)


def _attack(body: str, p: str, d: str) -> str:
    return f"import sys\nP, D = {p!r}, {d!r}\ndef generate(seed, n):\n    {body}\n"


_CONTROL = """
import sys
ns = {"__name__": "control"}
exec(compile(sys.stdin.read(), "<control>", "exec"), ns)
try:
    print("".join(ns["generate"](0, 1)))
except SyntaxError as e:
    print(e.text)
"""


def _unsandboxed(code: str) -> str:
    """What the same code returns in a plain python process (the control: the route must leak there)."""
    r = subprocess.run([sys.executable, "-c", _CONTROL], input=code, capture_output=True, text=True, timeout=60)
    return r.stdout + r.stderr


def _sandboxed(code: str) -> str:
    """What comes back from the sandbox: the documents, or the error's message."""
    try:
        return "".join(run_generator(code, 0, 1, LIM))
    except SandboxError as e:
        return str(e)


@pytest.mark.parametrize("route", sorted(READ_ROUTES))
def test_file_contents_never_come_back(secrets, route):
    code = _attack(READ_ROUTES[route], *secrets)
    if route != "ctypes libc read" or _ctypes_ok():
        assert CONTENT in _unsandboxed(code), f"the route {route!r} does not read the file outside the sandbox"
    assert CONTENT not in _sandboxed(code)


@pytest.mark.parametrize("route", sorted(LIST_ROUTES))
def test_folder_listings_never_come_back(secrets, route):
    code = _attack(LIST_ROUTES[route], *secrets)
    assert NAME in _unsandboxed(code), f"the route {route!r} does not list the folder outside the sandbox"
    assert NAME not in _sandboxed(code)


def _ctypes_ok() -> bool:
    try:
        import ctypes  # noqa: F401
    except ImportError:
        return False
    return True


def test_reads_are_refused_with_a_clear_message(secrets):
    with pytest.raises(SandboxError, match="reading files is not allowed"):
        run_generator(_attack(READ_ROUTES["builtins.open"], *secrets), 0, 1, LIM)


def test_inherited_descriptors_hold_nothing(secrets):
    code = (
        "import os\ndef generate(s, n):\n    out = []\n    for fd in range(0, 64):\n        try:\n"
        "            out.append('%d:%r' % (fd, os.read(fd, 4096)))\n        except OSError:\n            pass\n"
        "    return out\n"
    )
    docs = run_generator(code, 0, 1, LIM)
    assert docs == ["0:b''"]  # stdin is /dev/null; stdout and stderr are write ends; nothing else is open


def test_passwd_database_stays_closed():
    """pwd reads /etc/passwd through libc (no open event): importing it, or creating it with the import machinery's
    own functions, is refused; so is a str subclass posing as an allowed module name."""
    routes = [
        "import pwd\n    return [str(pwd.getpwall())]",
        "return [str(__import__('importlib').import_module('pwd').getpwall())]",
        "b = sys.modules['_frozen_importlib']\n    m = b.module_from_spec(b.spec_from_loader('pwd', b.BuiltinImporter))"
        "\n    b.BuiltinImporter.exec_module(m)\n    return [str(m.getpwall())]",
        "class E(str):\n        __str__ = lambda self: 'random'\n        __hash__ = lambda self: hash('random')\n"
        "        __eq__ = lambda self, o: True\n    return [str(__import__(E('pwd')).getpwall())]",
    ]
    for body in routes:
        code = f"import sys\ndef generate(seed, n):\n    {body}\n"
        assert "pw_shell" in _unsandboxed(code)
        assert "pw_shell" not in _sandboxed(code), body


@pytest.mark.parametrize(
    "name,body,why",
    [
        ("hook code", "f = lambda: 0\n    f.__code__ = (lambda: 1).__code__\n    return []", "__code__"),
        ("hook defaults", "f = lambda a=0: a\n    f.__defaults__ = (1,)\n    return []", "__defaults__"),
        ("tracing", "sys.settrace(lambda *a: None)\n    return []", "sys.settrace"),
        ("profiling", "sys.setprofile(lambda *a: None)\n    return []", "sys.setprofile"),
        ("frames of other threads", "return [str(sys._current_frames())]", "_current_frames"),
        ("crafted bytecode", "return [str((lambda: 0).__code__.replace(co_code=b'd\\x00S\\x00'))]", "code.__new__"),
        ("marshal", "return [str(sys.modules['marshal'].loads(b'N'))]", "marshal"),
        ("the hook's state in __main__", "return [str(sys.modules['__main__']._hook)]", "_hook"),
    ],
)
def test_the_hook_cannot_be_taken_apart(name, body, why):
    with pytest.raises(SandboxError, match=why):
        run_generator(f"import sys\ndef generate(seed, n):\n    {body}\n", 0, 1, LIM)


def test_allowlisted_modules_still_work():
    """Nothing a legitimate generator does opens a file or trips the hook: classes, dataclasses, enums, regexes,
    json, statistics, decorators."""
    code = (
        "import dataclasses, enum, functools, json, re, statistics, random, textwrap, collections\n"
        "@dataclasses.dataclass\nclass Run:\n    char: str\n    n: int = 2\n"
        "class Kind(enum.Enum):\n    A = 1\n"
        "@functools.lru_cache()\ndef rep(c, n):\n    return c * n\n"
        "def generate(seed, n):\n    r = random.Random(seed)\n"
        "    runs = [Run(r.choice('xyz'), r.randint(1, 3)) for _ in range(n)]\n"
        "    docs = [rep(x.char, x.n) + json.dumps({'k': Kind.A.name}) for x in runs]\n"
        "    docs.append(re.sub('a', 'b', 'aa') + str(statistics.mean([1, 2])))\n"
        "    return [textwrap.shorten(d, 50) for d in docs] + [str(collections.Counter('aab')['a'])]\n"
    )
    docs = run_generator(code, 3, 4, LIM)
    assert len(docs) == 6 and docs[-2:] == ["bb1.5", "2"] and all('{"k": "A"}' in d for d in docs[:4])
