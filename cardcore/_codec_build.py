"""Build cardcore/_codec.c, the compiled dynamic-code hot path, next to its source.

    python -m cardcore._codec_build          # `make install` runs it
    python -m cardcore._codec_build --require   # fail unless the module is built

Does nothing when the module is newer than its source. Uses the C compiler and flags
this Python was built with (``sysconfig``), so nothing beyond a compiler and the Python
headers is needed. Optional: when either is missing it says so and exits 0, and
cardcore.codes runs its pure-Python code (same answers, slower). Exit status 1 only when
``--require`` is given and the build failed.
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

SOURCE = Path(__file__).with_name("_codec.c")


def target() -> Path:
    return SOURCE.with_name("_codec" + sysconfig.get_config_var("EXT_SUFFIX"))


def build_command(output: Path) -> list[str]:
    config = sysconfig.get_config_var
    linker = shlex.split(config("LDSHARED") or "cc -shared")
    flags = shlex.split(config("CFLAGS") or "") + shlex.split(config("CCSHARED") or "")
    include = sysconfig.get_paths()["include"]
    return [*linker, *flags, "-I", include, str(SOURCE), "-o", str(output)]


def up_to_date() -> bool:
    output = target()
    return output.exists() and output.stat().st_mtime >= SOURCE.stat().st_mtime


def build() -> str | None:
    """Compile the module; None when built, else why it was not."""
    output = target()
    scratch = output.with_suffix(".building")
    command = build_command(scratch)
    if shutil.which(command[0]) is None:
        return f"no C compiler ({command[0]})"
    if not (Path(sysconfig.get_paths()["include"]) / "Python.h").exists():
        return "no Python headers (Python.h)"
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        scratch.unlink(missing_ok=True)
        return f"{command[0]} failed:\n{done.stderr.strip()}"
    scratch.replace(output)  # whole, never a half-written module for a running server
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--require", action="store_true", help="exit 1 when the module cannot be built")
    args = parser.parse_args(argv)
    if up_to_date():
        return 0
    problem = build()
    if problem is None:
        print(f"built {target().name}")
        return 0
    print(f"cardcore._codec not built ({problem}); dynamic codes run in pure Python", file=sys.stderr)
    return 1 if args.require else 0


if __name__ == "__main__":
    sys.exit(main())
