"""``anydepth export``: write a whole model (encoder + decoder) as ONNX with dynamic batch, height and width.

Examples::

  anydepth export --checkpoint ckpt.safetensors --encoder-weights dinov3_vits16.pth -o anydepth_s.onnx
  anydepth export --model sdt_test -o /tmp/sdt_test.onnx                  # random weights (smoke test)
  anydepth export --checkpoint ckpt.safetensors -o anydepth_s_fp16.onnx --fp16
  anydepth export --checkpoint ckpt.safetensors -o anydepth_512.onnx --static --size 512x512   # for TensorRT

The graph maps ``image`` float32 [B,3,H,W] RGB in [0, 1] (H, W multiples of the patch size) to ``depth``
float32 [B,1,H,W]; it is verified with onnxruntime at two sizes other than the export size before it is
written. ``--static`` fixes the shape to ``--batch`` x 3 x ``--size`` instead (size-only computations folded into
constants; what a one-profile TensorRT engine wants). Every export is checked against the TensorRT 10 ONNX
parser's documented operator support; findings are reported (``tensorrt`` in the printed report) and logged.
Run it with ``anydepth infer --backend onnxruntime --onnx FILE``.
"""

from __future__ import annotations

import argparse
import logging

from anydepth.atomic import json_text
from anydepth.cli.runner import CHECKPOINT_HELP, ENCODER_WEIGHTS_HELP

log = logging.getLogger(__name__)

FORMATS = ("onnx",)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="export a model to ONNX (dynamic batch/H/W)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", metavar="FILE", help=CHECKPOINT_HELP)
    src.add_argument("--model", metavar="PRESET", help="preset name (random decoder weights)")
    p.add_argument("--encoder-weights", metavar="FILE", help=ENCODER_WEIGHTS_HELP)
    p.add_argument("--format", default="onnx", choices=FORMATS, help="export format (default onnx)")
    p.add_argument("-o", "--output", required=True, metavar="FILE", help="output file (.onnx)")
    p.add_argument(
        "--fp16", action="store_true", help="float16 weights/activations, float32 I/O (GPU/TensorRT)"
    )
    p.add_argument("--opset", type=int, default=18, help="ONNX opset (default 18, minimum 18)")
    p.add_argument(
        "--size",
        metavar="HxW",
        help="example input size for export (default 4x4 patches); graph stays dynamic",
    )
    p.add_argument(
        "--static",
        action="store_true",
        help="fixed input shape --batch x 3 x --size (TensorRT one-profile engines; needed for VGGT models)",
    )
    p.add_argument("--batch", type=int, default=1, metavar="N", help="batch of a --static export (default 1)")
    p.add_argument("--no-verify", action="store_true", help="skip the onnxruntime parity check")
    p.add_argument("--tolerance", type=float, help="max abs diff allowed (default 1e-4 fp32, 5e-2 fp16)")
    p.add_argument("--threads", type=int, help="onnxruntime threads for the verification")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.add_argument("-q", "--quiet", action="store_true", help="errors only")
    p.set_defaults(func=run)


def _parse_hw(spec: str | None) -> tuple[int, int] | None:
    if spec is None:
        return None
    parts = spec.lower().replace("*", "x").split("x")
    try:
        vals = [int(v) for v in parts]
    except ValueError:
        raise ValueError(f"--size {spec!r}: expected N or HxW in pixels") from None
    if len(vals) == 1:
        return (vals[0], vals[0])
    if len(vals) == 2:
        return (vals[0], vals[1])
    raise ValueError(f"--size {spec!r}: expected N or HxW in pixels")


def run(args: argparse.Namespace) -> int:
    import anydepth
    from anydepth.export.onnx import export_onnx

    if args.static and not args.size:
        raise ValueError("--static needs --size HxW: the one input size of the exported graph")
    if args.batch != 1 and not args.static:
        raise ValueError("--batch applies to --static exports only (a dynamic export takes any batch)")
    if args.checkpoint:
        model = anydepth.load_model(args.checkpoint, encoder_weights=args.encoder_weights)
    else:
        model = anydepth.create_model(args.model, encoder_weights=args.encoder_weights)
        if args.encoder_weights is None:
            log.warning("--model %s without weights exports a randomly initialised network", args.model)
    report = export_onnx(
        model.cpu().eval(),
        args.output,
        export_hw=_parse_hw(args.size),
        opset=args.opset,
        fp16=args.fp16,
        verify=not args.no_verify,
        tolerance=args.tolerance,
        overwrite=args.overwrite,
        threads=args.threads,
        static=args.static,
        batch_size=args.batch,
    )
    errors = [t for t in report.tensorrt if t.startswith("error")]
    if errors:
        log.warning(
            "%s: TensorRT 10's ONNX parser documents %d unsupported construct(s), e.g. %s%s",
            report.path,
            len(errors),
            errors[0],
            "" if args.static else "; a --static export folds size-dependent operators",
        )
    if not args.quiet:
        print(json_text(report.to_dict(), nonfinite="null", indent=2))
    return 0
