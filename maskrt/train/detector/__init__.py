"""Fine-tuning the face detector (YuNet-n) on annotated scene photos (``maskrt[train]``).

* ``data.py``: augmented crops of scene photos, their faces and ignore regions;
* ``assign.py``: which output cells learn which face (SimOTA);
* ``loss.py``: objectness, class, box and landmark terms;
* ``model.py``: the shipped ONNX graph as a torch module, and its weights written back;
* ``fit.py``: the training loop, and the detector's figures on a split;
* ``__main__.py``: ``python -m maskrt.train.detector``, which regenerates the shipped detector.
"""
