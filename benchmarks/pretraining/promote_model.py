"""Copy a pretrained model (weights + card from ``python -m skulmfit.pretrain``) into the package under a
bundled name, so that ``pretrained=NAME`` finds it.

    python -m benchmarks.pretraining.promote_model cache/arms/b-sub8k/arm-b-sub8k.fwd.pt wiki-en-sub \
        --status "what the model is and how it was chosen"

The card keeps its training record and measurements; its name, file and checksum are rewritten, and
``--status`` (a sentence for the model-cards page: what it is, the figures it was chosen on) is set.
Run ``python -m benchmarks.pretraining.lm_eval skulmfit/weights/NAME.*.pt ... --update-cards`` afterwards.
Given a bundled model's own file, it only sets the status (when the default changes, for example).
"""
from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from skulmfit.pretrained import load_weights, sha256

WEIGHTS = Path(__file__).resolve().parents[2] / "skulmfit" / "weights"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("weights", type=Path, help="a .fwd.pt or .bwd.pt file with its .json card beside it")
    parser.add_argument("name", help="the bundled name, e.g. wiki-en-sub")
    parser.add_argument("--folder", type=Path, default=WEIGHTS, help="made if missing (a pair to validate, say)")
    parser.add_argument("--status", help="what the model is and the figures it was chosen on (kept if absent)")
    args = parser.parse_args()
    lm = load_weights(args.weights)  # refuses anything that is not a skulmfit weight file
    direction = "bwd" if lm.backwards else "fwd"
    target = args.folder / f"{args.name}.{direction}.pt"
    card = json.loads(args.weights.with_suffix(".json").read_text())
    if target.exists() and target.samefile(args.weights):  # already bundled: a new status only
        card.update(name=args.name, file=target.name, sha256=sha256(target))
    else:
        args.folder.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(args.weights, target)
        card.update(name=args.name, file=target.name, sha256=sha256(target), promoted_from=args.weights.name)
    if args.status:
        card["status"] = args.status
    target.with_suffix(".json").write_text(json.dumps(card, indent=2))
    print(f"{target} ({target.stat().st_size / 1e6:.1f} MB), card {target.with_suffix('.json').name}")


if __name__ == "__main__":
    main()
