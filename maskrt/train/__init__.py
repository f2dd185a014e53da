"""Training and evaluating the network: everything ``maskrt train`` and ``maskrt eval`` run.

One concept per module:

* ``recipe.py``: :class:`Recipe` (what defines a run, the paper's by default) and its
  learning-rate schedule; plain Python, so the command line reads its defaults cheaply.
* ``data.py``: ImageFolder trees (``with_mask/``, ``without_mask/``) decoded the way scoring
  decodes images (:func:`maskrt.image.decode_image`).
* ``augment.py``: training-time augmentation and the batch stream.
* ``optim.py``: frozen stages (transfer learning) and the optimiser.
* ``checkpoint.py``: the resumable ``last.pt``.
* ``trainer.py``: :func:`train`, the loop, as named steps.
* ``plots.py``: learning curves and confusion-matrix figures.
* ``metrics.py``: accuracy, sensitivity, specificity (positive = without_mask).
* ``evaluate.py``: a model on an ImageFolder tree through :class:`maskrt.Engine`, and the gallery
  of its mistakes.

Importing this package imports none of them: torch, OpenCV and matplotlib load only with the
module that needs them.
"""
