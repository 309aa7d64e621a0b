"""The command line: ``python -m rmtl <command> ...``, one function per subcommand.

User errors (a missing path, a malformed file, an unknown option value) print one line to
stderr and exit with status 2, without a traceback.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import List, Optional

__all__ = ["main", "build_parser"]


def add_prepare(sub: "argparse._SubParsersAction") -> None:
    """``prepare``: raw dataset files -> one SessionData .npz file."""
    p = sub.add_parser("prepare", help="turn raw RetailRocket or KuaiRand files into a .npz dataset",
                       description="Load raw dataset files with rmtl's recipe (SPEC section 2) "
                                   "and save them as a SessionData .npz file.")
    p.add_argument("dataset", choices=("retailrocket", "kuairand"), help="which raw format")
    p.add_argument("--raw", required=True, metavar="DIR", help="directory holding the raw CSV files")
    p.add_argument("--out", required=True, metavar="FILE.npz", help="where to write the dataset")
    p.add_argument("--session-gap-minutes", type=float, default=30.0, metavar="M",
                   help="start a new session after a gap of more than M minutes (default 30)")
    p.add_argument("--variant", choices=("pure", "1k"), default="pure",
                   help="KuaiRand variant: file suffix _pure or _1k (default pure)")
    p.add_argument("--vocab-from", metavar="FILE.npz",
                   help="code values with the vocabulary of this prepared file (e.g. the training set)")
    p.set_defaults(func=run_prepare)


def run_prepare(args: argparse.Namespace) -> int:
    """Load, save and print a short summary."""
    from .data import SessionData
    from .datasets import load_kuairand, load_retailrocket

    vocab = None
    if args.vocab_from:
        vocab = SessionData.load(args.vocab_from).vocab
        if vocab is None:
            raise ValueError(f"--vocab-from: {args.vocab_from} holds no vocabulary")
    if args.dataset == "retailrocket":
        data = load_retailrocket(args.raw, args.session_gap_minutes, vocab=vocab)
    else:
        data = load_kuairand(args.raw, args.variant, args.session_gap_minutes, vocab=vocab)
    parent = os.path.dirname(os.path.abspath(args.out))
    if not os.path.isdir(parent):
        raise FileNotFoundError(f"--out: no such directory: {parent}")
    data.save(args.out)
    print(data.describe())
    print(f"saved {args.out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The parser with every subcommand (each adds itself with an add_<name> function)."""
    parser = argparse.ArgumentParser(prog="python -m rmtl",
                                     description="rmtl: multi-task recommendation with RL critics")
    sub = parser.add_subparsers(dest="command", required=True, metavar="command")
    add_prepare(sub)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    """Run the command line with argv (default sys.argv[1:]); returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (OSError, ValueError, ImportError) as e:
        print(f"rmtl {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"rmtl {args.command}: interrupted", file=sys.stderr)
        return 130
