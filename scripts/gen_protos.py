"""Regenerate the Python code under gen/ from proto/, or check that it is current.

    python scripts/gen_protos.py          # rewrite gen/
    python scripts/gen_protos.py --check  # exit 1 if gen/ differs from what proto/ produces

buf lints and formats the protos but cannot run the grpc python plugin offline, so generation
uses grpcio-tools (pinned in pyproject's dev extra, so output is byte-for-byte reproducible).
google/api/*.proto are vendored only for buf; at runtime their code comes from
googleapis-common-protos, so they are not generated here.
"""

from __future__ import annotations

import argparse
import filecmp
import os
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO = ROOT / "proto"
GEN = ROOT / "gen"


def generate(out: Path) -> None:
    """Run protoc over every ohmygpu proto into `out`; raises RuntimeError when protoc fails."""
    import grpc_tools
    from grpc_tools import protoc

    well_known = Path(grpc_tools.__file__).parent / "_proto"
    sources = sorted(str(p.relative_to(PROTO)) for p in (PROTO / "ohmygpu").rglob("*.proto"))
    args = [
        "protoc",
        f"-I{PROTO}",
        f"-I{well_known}",
        f"--python_out={out}",
        f"--pyi_out={out}",
        f"--grpc_python_out={out}",
        *sources,
    ]
    if protoc.main(args) != 0:
        raise RuntimeError(f"protoc failed on {len(sources)} files under {PROTO}")


def _files(root: Path) -> set[str]:
    return {
        str(p.relative_to(root))
        for p in root.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }


def stale_files(tmp: Path) -> list[str]:
    """Files that differ between gen/ and a fresh generation in `tmp`."""
    want, have = _files(tmp), _files(GEN) if GEN.exists() else set()
    diff = sorted(want ^ have)
    diff += sorted(f for f in want & have if not filecmp.cmp(tmp / f, GEN / f, shallow=False))
    return diff


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if gen/ is stale")
    opts = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        generate(tmp)
        if opts.check:
            stale = stale_files(tmp)
            if stale:
                print("gen/ is stale; run: python scripts/gen_protos.py", file=sys.stderr)
                for name in stale:
                    print(f"  {name}", file=sys.stderr)
                return 1
            print("gen/ is up to date")
            return 0
        if GEN.exists():
            shutil.rmtree(GEN)
        shutil.copytree(tmp, GEN)
        print(f"generated {len(_files(GEN))} files into {os.path.relpath(GEN, ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
