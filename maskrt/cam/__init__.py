"""Class activation maps: where the CAM weights come from, the fused kernels, and their reference.

* :class:`CamWeights` (``weights.py``): the classifier weights of the deployed graph, read once,
  on the host and (cached per device) on the GPU. Every backend exposes the same object.
* :func:`cam_overlay` (``kernel.py``): NumPy arrays run the C++ kernel, torch CUDA tensors the
  CUDA kernel; :func:`cam_reference` (``reference.py``): the NumPy/OpenCV oracle.
* :func:`cam_overlay_boxes` (``kernel.py``): the CAM of every detected face drawn into its box of
  the full-size frames, one call for all faces; :func:`cam_reference_boxes`: its oracle.
* :class:`Explainer` (``explainer.py``): overlays and heat maps for a batch of results, on the
  device the features are on.
"""

from maskrt.cam.explainer import Explainer
from maskrt.cam.kernel import cam_overlay, cam_overlay_boxes
from maskrt.cam.reference import cam_reference, cam_reference_boxes
from maskrt.cam.weights import CamWeights

__all__ = ["CamWeights", "Explainer", "cam_overlay", "cam_overlay_boxes", "cam_reference", "cam_reference_boxes"]
