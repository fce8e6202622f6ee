"""ULMFiT with 100 labels: supervised, and semi-supervised with the other texts unlabelled.

The semi-supervised fit fine-tunes the language model on all training texts (``unlabeled=``),
while only 100 labels train the classifier (paper §5, Figure 3).

    python examples/low_shot.py [--csv my.csv]
"""
import argparse

from sklearn.model_selection import train_test_split

from data import add_data_arguments, load
from skulmfit import ULMFiTClassifier

parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
add_data_arguments(parser)
parser.add_argument("--labels", type=int, default=100)
args = parser.parse_args()
X_train, y_train, X_test, y_test = load(args)
X_few, X_rest, y_few, _ = train_test_split(X_train, y_train, train_size=args.labels, stratify=y_train,
                                           random_state=0)

supervised = ULMFiTClassifier(random_state=0).fit(X_few, y_few)
print(f"{args.labels} labels: accuracy {supervised.score(X_test, y_test):.3f}")
semi = ULMFiTClassifier(random_state=0).fit(X_few, y_few, unlabeled=X_rest)
print(f"{args.labels} labels + {len(X_rest)} unlabelled texts: accuracy {semi.score(X_test, y_test):.3f}")
