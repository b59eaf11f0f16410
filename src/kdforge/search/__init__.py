"""KD-Zero distiller search (Li et al., NeurIPS 2023): distillers as data (`program`), the operations they are
composed of (`ops`), the search space and evolution on Optuna (`space`, `evolve`), the evaluation of a candidate
with loss rejection and a short-training proxy (`evaluate`), the workers (`runner`) and reports (`report`)."""
