"""Analyses that explain distillation: bias-variance of ensembles (Yang et al. 2020; Zhou et al. 2021), gradient
variance under KD (Safaryan et al. 2023), calibration, the per-example minimiser of SLaM's loss variants
(slam_minimizer), and the HTML report. `kdforge analyze` / `kdforge report`."""
