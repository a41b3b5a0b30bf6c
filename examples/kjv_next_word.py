"""Next-word prediction over 11,862 classes: the King James Bible
===============================================================

A ``Pipeline`` of scikit-learn's ``HashingVectorizer`` (the previous three
words, position-tagged, hashed into 2**16 sparse features) and
``NCESoftmaxClassifier`` (noise-contrastive estimation: each training row
costs O(n_noise), not O(n_classes)). Trained on the first 90% of the text
(711,797 rows), it prints the held-out perplexity and accuracy of the full
softmax over the last 10%, and the words it expects after a few contexts.
About a minute on 2 CPU cores.

Needs the ``bible`` program of the Debian package ``bible-kjv``
(``apt-get update && apt-get install bible-kjv``).

Run: ``python examples/kjv_next_word.py [docs/kjv_next_word.png]`` (the
picture of the predictions, which needs matplotlib, is written when a file
name is given; that command refreshes the gallery's thumbnail in ``docs/``).
"""

# The documentation build does not run this example (no ``bible`` there, or
# the fast build): its thumbnail is that picture, made by the command above.
# sphinx_gallery_thumbnail_path = "kjv_next_word.png"

import sys
import time

import matplotlib.pyplot as plt
import numpy as np
from sklearn.feature_extraction.text import HashingVectorizer
from sklearn.pipeline import make_pipeline

from skebm import NCESoftmaxClassifier
from skebm.datasets import load_kjv_next_word

data = load_kjv_next_word()
model = make_pipeline(
    HashingVectorizer(n_features=2**16, token_pattern=r"\S+", alternate_sign=False, norm=None),
    NCESoftmaxClassifier(loss="nce", max_iter=5, early_stopping=False, random_state=0),
)
start = time.perf_counter()
model.fit(data.contexts_train, data.y_train)
seconds = time.perf_counter() - start
classifier = model[-1]
print(f"{len(data.y_train):,} rows, {len(classifier.classes_):,} classes: fitted in "
      f"{seconds:.0f} s ({len(data.y_train) * classifier.n_iter_ / seconds:,.0f} rows/s)")

# Test words never seen in training get no probability from any classifier
# over the training words: they are left out, and counted.
seen = np.isin(data.y_test, classifier.classes_)
contexts = [c for c, keep in zip(data.contexts_test, seen) if keep]
targets = np.searchsorted(classifier.classes_, data.y_test[seen])
log_p = np.concatenate([
    model.predict_log_proba(contexts[i:i + 5000])[np.arange(len(contexts[i:i + 5000])),
                                                  targets[i:i + 5000]]
    for i in range(0, len(contexts), 5000)])
print(f"held-out perplexity (full softmax) {np.exp(-log_p.mean()):.1f} over {seen.sum():,} "
      f"test rows ({(~seen).sum():,} with a word never seen in training left out)")
print(f"held-out accuracy {model.score(contexts, data.y_test[seen]):.3f}")

# %%
# The five words the model expects after a few contexts, and their probabilities.
queries = ["-3:in -2:the -1:beginning", "-3:and -2:god -1:said", "-3:the -2:son -1:of"]
figure, axes = plt.subplots(1, len(queries), figsize=(9, 2.6))
for ax, context in zip(axes, queries):
    proba = model.predict_proba([context])[0]
    best = np.argsort(proba)[::-1][:5]
    words = ", ".join(f"{classifier.classes_[i]} {proba[i]:.2f}" for i in best)
    print(f"{context!r:32} -> {words}")
    ax.barh(range(5)[::-1], proba[best])
    ax.set_yticks(range(5)[::-1], [str(classifier.classes_[i]) for i in best])
    ax.set_title(" ".join(word.split(":")[1] for word in context.split()) + " ...")
    ax.set_xlabel("p(next word)")
figure.tight_layout()
if sys.argv[1:]:
    figure.savefig(sys.argv[1], dpi=80)
