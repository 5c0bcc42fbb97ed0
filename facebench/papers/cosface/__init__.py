"""CosFace (Wang et al., CVPR 2018): model.py (the 64-layer residual CNN), loss.py (the heads it compares:
Softmax, NSL, A-Softmax, LMCL, and ArcFace), task.py (train on an identity set, verify on LFW pairs)."""
