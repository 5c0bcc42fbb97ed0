"""Adaptive Wing loss (Wang et al., ICCV 2019): model.py (stacked hourglass with CoordConv and the boundary
head), loss.py (AWing, the weighted loss map, the heatmap baselines), task.py (heatmap regression, built on
the Wing paper's landmark task: the same data and evaluation); heatmaps.py draws the targets."""
