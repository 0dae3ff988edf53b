#!/usr/bin/env python3
"""Regenerate coord/_proto from proto/ (or, with --check, fail when the committed code is stale).

The generated modules import each other by package name (``from mvccpb import kv_pb2``); this script rewrites those
imports to ``coord._proto.<package>`` so the generated code lives inside the coord package.
"""

from __future__ import annotations

import argparse
import filecmp
import re
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "proto"
OUT_DIR = ROOT / "coord" / "_proto"
PACKAGES = ("etcdserverpb", "mvccpb", "authpb", "v3lockpb", "v3electionpb", "raftpb")
_GENERATED_NOTE = "Generated protobuf and gRPC code. Never edit by hand: run scripts/gen_proto.py."
_IMPORT = re.compile(r"^(from|import) (" + "|".join(PACKAGES) + r")\b", re.MULTILINE)


def generate(out: Path) -> None:
    from grpc_tools import protoc

    sources = sorted(str(p.relative_to(PROTO_DIR)) for p in PROTO_DIR.rglob("*.proto"))
    args = [
        "protoc",
        f"-I{PROTO_DIR}",
        f"--python_out={out}",
        f"--pyi_out={out}",
        f"--grpc_python_out={out}",
        f"--mypy_grpc_out={out}",
        *sources,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    for path in out.rglob("*.py*"):
        text = _IMPORT.sub(lambda m: f"{m.group(1)} coord._proto.{m.group(2)}", path.read_text())
        path.write_text(text)
    (out / "__init__.py").write_text(
        '"""Generated protobuf and gRPC code. Never edit by hand: run scripts/gen_proto.py."""\n'
    )
    for package in PACKAGES:
        (out / package / "__init__.py").write_text("")


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="compare with the committed code instead of writing")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        fresh = Path(tmp) / "_proto"
        fresh.mkdir()
        generate(fresh)
        if options.check:
            stale = sorted(
                name
                for name in _files(fresh) | _files(OUT_DIR)
                if not (OUT_DIR / name).is_file()
                or not (fresh / name).is_file()
                or not filecmp.cmp(fresh / name, OUT_DIR / name, shallow=False)
            )
            if stale:
                print("stale generated code (run scripts/gen_proto.py):", *stale, sep="\n  ")
                return 1
            return 0
        shutil.rmtree(OUT_DIR, ignore_errors=True)
        shutil.copytree(fresh, OUT_DIR)
    return 0


if __name__ == "__main__":
    sys.exit(main())
