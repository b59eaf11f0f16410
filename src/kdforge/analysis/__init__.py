"""Analyses that explain distillation: bias-variance of ensembles (Yang et al. 2020; Zhou et al. 2021), gradient
variance under KD (Safaryan et al. 2023), calibration, and the HTML report. `kdforge analyze` / `kdforge report`."""
