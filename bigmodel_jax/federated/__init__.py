"""Federated training: many simulated clients, one compiled program per group of them.

    python -m bigmodel_jax.federated --config configs/fed_shakespeare.py --workdir runs/fed

clients.py turns each client's text into fixed-size windows and a round's clients into padded
groups; algorithms.py is the local training (vmap over clients, lax.scan over local steps) and
the server step (FedSGD, FedAvg, FedProx, FedAdam/FedYogi through optax) with DP-FedAvg's clipping
and noise (its budget: bigmodel_jax/privacy.py); run.py is the CLI with checkpoints and exact resume.
docs/federated.md has the method and the results.
"""
