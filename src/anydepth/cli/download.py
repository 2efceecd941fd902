"""``anydepth download``: prefetch Hub weights into the Hugging Face cache (for offline use later)."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "download",
        help="prefetch checkpoints / encoder weights from the Hugging Face Hub into the cache",
        description=(
            "Download hf://ORG/REPO/FILE[@REVISION] names or official aliases (anydepth/dav2_sdt_vitb, "
            "anydepth/dav2_sdt_vitl, anydepth/da3_sdt_vitl) into the Hugging Face cache and print their local paths. Later runs (also with "
            "HF_HUB_OFFLINE=1) read them from the cache. Needs the 'hub' extra."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=(
            "examples:\n"
            "  anydepth download anydepth/dav2_sdt_vitb\n"
            "  anydepth download hf://ORG/REPO/model.safetensors@v1.0 --cache-dir /shared/hf-cache"
        ),
    )
    p.add_argument("names", nargs="+", metavar="NAME", help="hf://ORG/REPO/FILE[@REVISION] or an alias")
    p.add_argument(
        "--cache-dir", default=None, help="Hub cache directory (default: HF_HUB_CACHE or ~/.cache)"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from anydepth.hub import ALIASES, parse_hub_name, resolve_weights

    for name in args.names:
        if parse_hub_name(name) is None:
            raise ValueError(
                f"{name!r} is not a Hub name: expected hf://ORG/REPO/FILE[@REVISION] or one of {sorted(ALIASES)}"
            )
    for name in args.names:
        print(resolve_weights(name, cache_dir=args.cache_dir))
    return 0
