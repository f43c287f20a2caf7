"""``python -m trunkserve.export quantise``: thin CLI over ``export.quantise.quantised_copy``, same keywords.

    python -m trunkserve.export quantise --repo model_repository --out model_repository_int8 [--scheme NAME] [--overwrite]

What each scheme costs in accuracy, and buys in speed: ``python -m trunkserve.loadtest.int8`` (reports/int8-accuracy.md).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .quant_schemes import DEFAULT_SCHEME, SCHEMES


def _quantise(args) -> int:
    from .quantise import quantised_copy  # deferred: ``--help`` stays free of torch and ONNX Runtime

    out = quantised_copy(repo=args.repo, out=args.out, scheme=args.scheme, overwrite=args.overwrite)
    print(f"wrote {out} ({args.scheme}: {SCHEMES[args.scheme].describe()}; accuracy cost: reports/int8-accuracy.md)")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("quantise", help="write an int8 copy of a built repository (any BERT width; open to hot-add)",
                       description="Schemes: " + " ".join(f"{name}: {s.describe()}." for name, s in SCHEMES.items()))
    p.add_argument("--repo", type=Path, default=Path("model_repository"), help="the built float32 repository (left as it is)")
    p.add_argument("--out", type=Path, default=Path("model_repository_int8"),
                   help="where the copy goes: empty, missing, or an earlier quantise output (replaced once complete)")
    p.add_argument("--scheme", default=DEFAULT_SCHEME, choices=list(SCHEMES),
                   help="which graphs and operators are quantised, and how (see above; accuracy cost of each: "
                        "reports/int8-accuracy.md)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace --out even if it holds something other than an earlier quantise output")
    p.set_defaults(func=_quantise)
