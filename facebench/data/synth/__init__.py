"""The embedded default's data: procedural faces written in the official on-disk formats, read by the same
adapters that read the real datasets (datasets.md).

- ``face3d``: the 3D face (shape, expression, pose, style) and its projection to the landmark layouts.
- ``faces``: sampling a scene and rendering it to an image with exact landmarks; image encoding.
- ``jobs``: rendering many images in order over a process pool, deterministic per image.
- ``landmarks``: 300-W and AFLW-Full trees; ``identities``: CASIA-WebFace and LFW;
  ``wider``: WIDER FACE scenes with many faces.
"""
