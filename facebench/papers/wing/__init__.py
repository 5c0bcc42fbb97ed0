"""Wing loss (Feng et al., CVPR 2018): model.py (CNN-6, CNN-7), loss.py (L2, L1, smooth L1, Wing),
task.py (coordinate regression on 300-W and AFLW); two_stage.py re-crops faces from CNN-6's predictions
for CNN-7; resnet50.py is the ResNet-50 regressor the paper also reports. Pose-based data balancing is a
preparation step (facebench/data/pdb.py), since the prepare stage writes the balanced split."""
