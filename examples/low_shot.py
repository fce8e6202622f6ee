"""ULMFiT with 100 labels: supervised, and semi-supervised with the other texts unlabelled.

The semi-supervised fit fine-tunes the language model on all training texts (``unlabeled=``),
while only 100 labels train the classifier (paper §5, Figure 3).

    python examples/low_shot.py [--labels 100] [--csv my.csv]

Takes about 2 minutes on TREC-6 on a 2-core CPU without bf16 (an estimate from measured fit
times, on an otherwise idle machine): the semi-supervised fit reads all 5,452 training questions
into the language model, the supervised one only the 100 labelled ones. The default already
uses all of TREC-6: there is no larger run.
"""
import argparse
import time

from sklearn.model_selection import train_test_split

from data import add_data_arguments, load
from skulmfit import ULMFiTClassifier


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_arguments(parser)
    parser.add_argument("--labels", type=int, default=100, help="how many training texts keep their label")
    args = parser.parse_args(argv)
    X_train, y_train, X_test, y_test = load(args)
    X_few, X_rest, y_few, _ = train_test_split(X_train, y_train, train_size=args.labels, stratify=y_train,
                                               random_state=0)
    start = time.perf_counter()

    supervised = ULMFiTClassifier(random_state=0).fit(X_few, y_few)
    scores = {"supervised": supervised.score(X_test, y_test)}
    print(f"{args.labels} labels: accuracy {scores['supervised']:.3f}")
    semi = ULMFiTClassifier(random_state=0).fit(X_few, y_few, unlabeled=X_rest)
    scores["semi-supervised"] = semi.score(X_test, y_test)
    print(f"{args.labels} labels + {len(X_rest)} unlabelled texts: accuracy {scores['semi-supervised']:.3f} "
          f"({time.perf_counter() - start:.0f} s for both)")
    return scores


if __name__ == "__main__":
    main()
