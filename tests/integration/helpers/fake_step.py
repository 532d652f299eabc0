"""A minimal step module for exercising the real `mammo` CLI path (staging, telemetry) without a model.

It copies its input folder's `*.txt` files and writes `--files` more (of `--size` bytes), so a test can make
the output as large as it needs for an upload to be interrupted part-way.
"""

from __future__ import annotations

from pathlib import Path

from common.artifacts import UnusableInput, atomic_write_bytes, require_success, step_output

HELP = "test step"
INPUT_ARGS = ("input",)
OUTPUT_ARG = "out"


def add_arguments(parser) -> None:
    parser.add_argument("--input", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--files", type=int, default=3)
    parser.add_argument("--size", type=int, default=100)
    parser.add_argument("--fail", action="store_true", help="raise UnusableInput after writing some files")
    parser.add_argument("--profile", default="ci")
    parser.add_argument("--started", default=None, help="a file to create when the step body starts")


def run(args) -> int:
    if args.started:
        Path(args.started).touch()
    require_success(args.input)
    copied = sorted(Path(args.input).glob("*.txt"))
    with step_output("fake", args.out, {"input": args.input}) as record:
        for path in copied:
            atomic_write_bytes(Path(args.out) / path.name, path.read_bytes())
        for i in range(args.files):
            atomic_write_bytes(Path(args.out) / "images" / f"img{i:03d}.bin", bytes([i % 256]) * args.size)
            if args.fail and i == 1:
                raise UnusableInput("fake step told to fail")
        record.counts.update({"images": args.files, "rejected": len(copied)})
    return 0
