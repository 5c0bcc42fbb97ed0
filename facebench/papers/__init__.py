"""The four papers, each in its own folder: ``model.py``, ``loss.py`` and ``task.py``, and beside them the
helpers only that paper uses.

- ``wing``: Wing loss (Feng et al., CVPR 2018): CNN-6/7 coordinate regression, the two-stage framework.
- ``awing``: Adaptive Wing loss (Wang et al., ICCV 2019): the stacked hourglass, its heatmap targets.
- ``cosface``: CosFace (Wang et al., CVPR 2018): the 64-layer CNN and the margin heads it compares.
- ``mtcnn``: MTCNN (Zhang et al., 2016): the cascade, its training crops, detection and its AP.

A paper imports the shared core (facebench.data, .metrics, .train, .config, ...); the shared core imports
no paper (tests/test_layers.py). The trainer finds a paper's task by the name config.TASK_CLASSES gives it.
The one edge between papers: the AWing task is the Wing landmark task with heatmap targets.
"""
