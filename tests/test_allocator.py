"""medseg.runtime.allocator: the glibc malloc settings, their switch and their effect.

The settings change the whole process, so their effect is checked in a fresh Python process
(no torch import, about 0.1 s each) that asks glibc where a large block came from: ``mallinfo2``
counts the blocks served by ``mmap`` (``hblks``) and the bytes of the main heap (``arena``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from medseg.errors import MedsegError
from medseg.runtime import allocator
from medseg.runtime.allocator import ENV_VAR, allocator_mode, tune_allocator

TUNED = {"M_ARENA_MAX": 1, "M_MMAP_MAX": 0, "M_TRIM_THRESHOLD": -1}


def _is_glibc() -> bool:
    try:
        return (os.confstr("CS_GNU_LIBC_VERSION") or "").startswith("glibc")
    except (ValueError, OSError, AttributeError):
        return False


glibc_only = pytest.mark.skipif(not _is_glibc(), reason="the malloc settings apply to glibc only")

# Runs in a fresh process: tune (as $MEDSEG_MALLOC says, twice), then a 64 MiB block from the main
# thread and an 80 MiB block from a new thread (each more than the largest mmap threshold,
# 32 MiB), freed again; prints what was applied and where the blocks came from.
PROBE = """
import ctypes, json, threading
from medseg.runtime.allocator import tune_allocator

class Info(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL(None)
libc.mallinfo2.restype, libc.malloc.restype = Info, ctypes.c_void_p
libc.malloc.argtypes, libc.free.argtypes = (ctypes.c_size_t,), (ctypes.c_void_p,)
applied = [tune_allocator(), tune_allocator()]
out = {"applied": applied}

def block(name, size):
    before = libc.mallinfo2()
    p = libc.malloc(size)
    during = libc.mallinfo2()
    libc.free(p)
    after = libc.mallinfo2()
    out[name] = {"mmapped": during.hblks - before.hblks, "heap_kept": after.arena >= size}

block("main", 64 << 20)
t = threading.Thread(target=block, args=("thread", 80 << 20))
t.start()
t.join()
print(json.dumps(out))
"""


def probe(mode: str | None) -> dict:
    """PROBE's result in a fresh process with ``$MEDSEG_MALLOC`` = ``mode`` (None: unset)."""
    env = {k: v for k, v in os.environ.items() if k != ENV_VAR and not k.startswith("MALLOC_")}
    env.pop("GLIBC_TUNABLES", None)
    if mode is not None:
        env[ENV_VAR] = mode
    res = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=env, check=False)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


@pytest.mark.parametrize(
    ("value", "mode"),
    [(None, "tuned"), ("", "tuned"), ("tuned", "tuned"), ("default", "default"), (" Default ", "default")],
)
def test_mode_from_environment(value: str | None, mode: str) -> None:
    environ = {} if value is None else {ENV_VAR: value}
    assert allocator_mode(environ) == mode


def test_unknown_mode_is_a_user_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_VAR, "jemalloc")
    with pytest.raises(MedsegError) as err:
        tune_allocator()
    assert err.value.exit_code == 2
    assert str(err.value).startswith(f"{ENV_VAR}: unknown value 'jemalloc'; use 'tuned'")
    with pytest.raises(MedsegError):
        tune_allocator("tcmalloc")


def test_other_c_library_is_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    """musl, macOS and Windows have no CS_GNU_LIBC_VERSION: nothing is called, nothing reported."""

    def no_glibc(name: str) -> str:
        raise ValueError(f"unrecognized configuration name {name!r}")

    monkeypatch.setattr(allocator.os, "confstr", no_glibc)
    assert allocator.glibc_mallopt() is None
    assert tune_allocator("tuned") == {}
    monkeypatch.setattr(allocator.os, "confstr", lambda name: "musl 1.2.4")
    assert tune_allocator("tuned") == {}


@glibc_only
def test_default_keeps_glibc_behaviour() -> None:
    """MEDSEG_MALLOC=default: nothing applied, and large blocks are still mapped and unmapped."""
    out = probe("default")
    assert out["applied"] == [{}, {}]
    assert out["main"]["mmapped"] == 1
    assert out["thread"]["mmapped"] == 1


@glibc_only
@pytest.mark.parametrize("mode", [None, "tuned"])
def test_tuned_serves_large_blocks_from_the_heap_and_keeps_it(mode: str | None) -> None:
    """Unset or tuned: the settings are reported (the same on a second call), a large block comes
    from the main heap in the main thread and in a new thread, and the heap keeps it once freed."""
    out = probe(mode)
    assert out["applied"] == [TUNED, TUNED]
    for where in ("main", "thread"):
        assert out[where] == {"mmapped": 0, "heap_kept": True}, where
