"""Model registry, hyperparameters, pretrained models and benchmarks (installed as ``diffgym.zoo``)."""
