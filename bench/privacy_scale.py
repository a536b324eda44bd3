"""The privacy table at camera scale: identity attacks on 500 people through every split and shipped profile.

    FROSTED_WEIGHTS=... python bench/privacy_scale.py [--scales 48,96,192] [--full-scales 96] [--probe-seconds 120]

Victims: ``shared/data/faces/lfw`` (500 people; each person's first photo is the gallery, their other photos are
placed in 1024x1024 frames at each face size, over scikit-image's scenes; ``--staging centred``: at the frame's
centre over the model's mean grey, REFERENCE.md's setting, to compare with its probe). Attacker:
``shared/data/faces/attacker`` (13,744 public faces, no person in common; checked). Attacks
(`privacy_attack.at_scale`): the identity probe (noise-aware ridge, and ridge + residual MLP trained contrastively
with fresh noise), and the face decoder (noise-aware ridge to the face's pixels; face SSIM, and dlib on the decoded
face). Conditions: clean, each profile at k = 1 and k = 30 (averaging), and k = 30 under the rotating secret. AP:
MIT+CMU folds 6-10 pooled AP@0.3 and dlib AP@0.5, the mean of 5 noise draws. Every shipped profile is attacked at
--full-scales; at the other scales only clean and the --focus profiles, which also get the costly attacks (MLP
probe, dlib on the decoded faces). ``--precision int8``: every frame, the attacker's and the victims', goes through
the int8 head the edge runs with ``--runtime openvino --precision int8`` (NNCF, the default calibration), at one
split; with ``--signed``, the one ``--runtime tensorrt --precision int8`` builds, run in ONNX Runtime.
Writes privacy_scale.{md,json,png} and privacy_scale-grid.png under --out (``--stem``).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch

from facesplit.detector import SplitDetector, at_split, load_detector
from facesplit.faceboxes import SPLITS
from facesplit.noise import DEFAULT_PROFILE
from facesplit.preprocess import InputSize
from facesplit.runtimes.factory import head_runtime
from facesplit.runtimes.int8 import int8_graph, signed_graph, signed_head_on_cpu
from privacy_attack.at_scale import ScaleConfig
from privacy_attack.people import read_faces, read_people
from privacy_attack.runtime_head import RuntimeHead
from privacy_attack.scale_report import (
    TableInputs,
    TablePlan,
    markdown,
    run_table,
    shipped_plan,
    with_files,
    write_outputs,
)
from privacy_attack.scene import FRAME, Backgrounds


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split(",") if v)


def int8_head(detector: SplitDetector, splits: list[str], threads: int, signed: bool) -> RuntimeHead:
    """The edge's int8 head at the one split asked for, on the whole 1024x1024 frames the victims are placed in:
    OpenVINO's, or with ``signed`` TensorRT's (its signed variant, run exactly by ONNX Runtime)."""
    if len(splits) != 1:
        raise SystemExit(f"--precision int8 attacks one split (a graph ends at one): --splits SPLIT, not {splits}")
    at = at_split(SplitDetector(detector.source, InputSize(*FRAME)), splits[0])
    if signed:
        path = signed_graph(int8_graph(at, runtime="tensorrt")[0])
        runtime = signed_head_on_cpu(at, threads)
    else:
        path = int8_graph(at)[0]
        runtime = head_runtime("openvino", at, threads, precision="int8")
    torch.set_num_threads(threads)  # the runtime left torch one thread; the probes train in torch after the crops
    return RuntimeHead(runtime, splits[0], path.name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shared", default=os.environ.get("FROSTED_SHARED", "../shared"))
    parser.add_argument("--splits", default=",".join(SPLITS))
    parser.add_argument("--scales", type=_ints, default=(96, 48, 192))  # the target's scale first
    parser.add_argument("--full-scales", type=_ints, default=(96,))
    parser.add_argument("--focus", default=f"{DEFAULT_PROFILE},alpha-0.4")
    parser.add_argument("--profile", action="append", default=[], metavar="FILE",
                        help="also attack this profile file (at its split, as a focus profile); repeatable")
    parser.add_argument("--no-shipped", action="store_true",
                        help="attack only clean and the --profile files, not the shipped profiles")
    parser.add_argument("--probe-seconds", type=float, default=120.0, help="the MLP probe's time budget")
    parser.add_argument("--probe-steps", type=int, default=None,
                        help="the MLP probe's step budget: the same attack on a busy or a quiet machine (with a "
                             "--probe-seconds large enough not to cut it short)")
    parser.add_argument("--attacker-placements", type=int, default=None,
                        help="frames each attacker face is placed in (default: 2; 1 with --staging centred)")
    parser.add_argument("--staging", choices=("scene", "centred"), default="scene",
                        help="scene: each face at a random position over scikit-image's scenes; centred: at the "
                             "frame's centre over the model's mean grey, REFERENCE.md's identity-probe setting")
    parser.add_argument("--limit-people", type=int, default=None, help="quick runs: the first N victims' photos")
    parser.add_argument("--no-ap", action="store_true")
    parser.add_argument("--seed", type=int, default=0,
                        help="another seed is a replication: other placements of every face, other noise draws and "
                             "other probe initialisations (the AP draws stay the same)")
    parser.add_argument("--precision", choices=("float32", "int8"), default="float32",
                        help="the head the frames go through: int8 is the edge's OpenVINO int8 head (one split, "
                             "--splits SPLIT)")
    parser.add_argument("--signed", action="store_true",
                        help="int8: attack the head TensorRT builds (the quantizers made signed), in ONNX Runtime")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="the int8 head's threads")
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    parser.add_argument("--stem", default="privacy_scale")
    args = parser.parse_args()
    if args.signed and args.precision != "int8":
        parser.error("--signed is for --precision int8")
    shared = Path(args.shared)
    faces = shared / "data" / "faces"
    detector = load_detector()
    victims = read_people(faces / "lfw")
    if args.limit_people:
        keep = sorted({v.identity for v in victims})[:args.limit_people]
        victims = [v for v in victims if v.identity in keep]
    splits, focus = args.splits.split(","), tuple(args.focus.split(","))
    base = (TablePlan({split: () for split in splits}, args.full_scales, focus) if args.no_shipped
            else shipped_plan(splits, focus, args.full_scales))
    plan = with_files(base, args.profile)
    centred = args.staging == "centred"
    backgrounds = Backgrounds.flat() if centred else Backgrounds.shipped()
    inputs = TableInputs(victims, read_faces([faces / "attacker"]), backgrounds, None if args.no_ap else shared)
    # on one flat frame at one position a second placement of a face is the same crop
    placements = args.attacker_placements or (1 if centred else 2)
    config = ScaleConfig(scales=args.scales, attacker_placements=placements, probe_seconds=args.probe_seconds,
                         probe_steps=args.probe_steps, centred=centred, seed=args.seed)
    def checkpoint(partial: dict) -> None:
        write_outputs(partial, Path(args.out), args.stem)

    head = None if args.precision == "float32" else int8_head(detector, splits, args.threads, args.signed)
    report = run_table(detector, inputs, plan, config, settings={"command": "bench/privacy_scale.py",
                                                                 "args": vars(args)}, checkpoint=checkpoint,
                       head=head)
    paths = write_outputs(report, Path(args.out), args.stem)
    print(markdown(report))
    print("wrote", ", ".join(map(str, paths)), f"(wall time {report['wall_time_s']} s)")


if __name__ == "__main__":
    main()
