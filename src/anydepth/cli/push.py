"""``anydepth push``: publish a checkpoint on the Hugging Face Hub with a model card."""

from __future__ import annotations

import argparse
import os


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "push",
        help="upload a checkpoint with a model card to a Hugging Face Hub repository",
        description=(
            "Upload a project checkpoint (.safetensors written by training or anydepth convert) to ORG/REPO as "
            "model.safetensors with README.md (model card: configuration, training data, metrics, licence), "
            "metrics.json (with --metrics) and SHA256SUMS. The repository is created if needed. Needs the 'hub' "
            "extra and a Hub token (huggingface-cli login or HF_TOKEN)."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=(
            "example:\n"
            "  anydepth push runs/b/model_best.safetensors me/anydepth-vitb --metrics runs/eval_b/metrics.json \\\n"
            "      --training-data 'filtered Hypersim + VKITTI2 + BlendedMVS + IRS + TartanAir (369K)'"
        ),
    )
    p.add_argument("checkpoint", help="project checkpoint (.safetensors)")
    p.add_argument("repo_id", metavar="ORG/REPO", help="target repository")
    p.add_argument("--metrics", default=None, help="metrics.json of an evaluation (anydepth eval)")
    p.add_argument("--training-data", default=None, help="text for the card's 'Training data' section")
    p.add_argument("--license", default="apache-2.0", help="licence of the weights (default apache-2.0)")
    p.add_argument("--private", action="store_true", help="create the repository as private")
    p.add_argument("--revision", default=None, help="branch to commit to (default main)")
    p.add_argument("--message", default=None, help="commit message")
    p.add_argument("--endpoint", default=os.environ.get("HF_ENDPOINT"), help="Hub URL (default HF_ENDPOINT)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from anydepth.hub import push_checkpoint

    url = push_checkpoint(
        args.checkpoint,
        args.repo_id,
        training_data=args.training_data,
        metrics=args.metrics,
        license=args.license,
        private=args.private,
        revision=args.revision,
        commit_message=args.message,
        endpoint=args.endpoint,
    )
    print(url)
    return 0
